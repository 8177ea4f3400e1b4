"""A compact Llama forward in torch, loaded from the same GGUF file as llama.cpp.

One decode step advances every lane of a group by one token. All lanes of a
group sit at the same position (they start together from BOS), so the rotary
angles and the attention mask are shared, and the KV cache is one dense tensor
per layer: [lanes, kv_heads, context, head_dim].

The weights are the GGUF's quantised values, dequantised once. llama.cpp
stores attn_q / attn_k with the rows of each head interleaved for its RoPE
(pairs of adjacent dimensions); `_unpermute` puts them back in the half-split
order that `rope` below uses.

Determinism: nothing here is bit-stable across GPUs or library versions, only
run to run on one of them, which is why the engine profile names the device,
dtype and versions and a file is only decoded under the same profile.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import UnsupportedInputError


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise UnsupportedInputError(f"GGUF file lacks {key}")
        return default
    return f.contents()


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


class TorchLlama:
    """SmolLM2-style Llama (RMSNorm, RoPE, GQA, SwiGLU, tied or separate output)."""

    def __init__(self, path: str, device: str = "cpu", dtype: torch.dtype | None = None):
        import gguf

        reader = gguf.GGUFReader(path)
        arch = _field(reader, "general.architecture")
        if arch != "llama":
            raise UnsupportedInputError(f"the torch engine runs Llama models, not {arch!r}")
        self.n_layer = int(_field(reader, "llama.block_count"))
        self.dim = int(_field(reader, "llama.embedding_length"))
        self.n_head = int(_field(reader, "llama.attention.head_count"))
        self.n_kv = int(_field(reader, "llama.attention.head_count_kv", self.n_head))
        self.eps = float(_field(reader, "llama.attention.layer_norm_rms_epsilon"))
        self.theta = float(_field(reader, "llama.rope.freq_base", 10000.0))
        self.head_dim = self.dim // self.n_head
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)

        raw = {t.name: t for t in reader.tensors}

        def load(name, transpose=True, n_head=None):
            t = raw[name]
            a = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            if n_head:
                a = _unpermute(a, n_head)
            a = torch.from_numpy(np.ascontiguousarray(a.T if transpose else a))
            return a.to(self.device, self.dtype)

        def norm(name):
            t = raw[name]
            return torch.from_numpy(np.array(t.data, dtype=np.float32)).to(self.device)

        self.emb = load("token_embd.weight", transpose=False)  # [V, dim]
        self.n_vocab = self.emb.shape[0]
        self.out = load("output.weight", transpose=False) if "output.weight" in raw else self.emb
        self.out_norm = norm("output_norm.weight")
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            wq = load(p + "attn_q.weight", n_head=self.n_head)
            wk = load(p + "attn_k.weight", n_head=self.n_kv)
            wv = load(p + "attn_v.weight")
            self.layers.append(
                dict(
                    attn_norm=norm(p + "attn_norm.weight"),
                    wqkv=torch.cat([wq, wk, wv], dim=1).contiguous(),
                    wo=load(p + "attn_output.weight"),
                    ffn_norm=norm(p + "ffn_norm.weight"),
                    w13=torch.cat([load(p + "ffn_gate.weight"), load(p + "ffn_up.weight")], dim=1).contiguous(),
                    w2=load(p + "ffn_down.weight"),
                )
            )
        half = self.head_dim // 2
        # Angles in float64 so that the tables do not depend on float32 pow/cos quirks.
        self.inv_freq = self.theta ** (-np.arange(half, dtype=np.float64) * 2.0 / self.head_dim)

    # -- cache -------------------------------------------------------------------------

    def new_cache(self, lanes: int, context: int) -> Cache:
        return Cache(self, lanes, context)

    def rope_rows(self, positions) -> tuple[torch.Tensor, torch.Tensor]:
        """Per position: cos repeated over both halves, and sin signed for rotate-half
        (-sin on the first half, +sin on the second), in the model's dtype."""
        ang = np.outer(np.asarray(positions, dtype=np.float64), self.inv_freq)
        cos = np.concatenate([np.cos(ang), np.cos(ang)], axis=1)
        sin = np.concatenate([-np.sin(ang), np.sin(ang)], axis=1)
        conv = lambda a: torch.from_numpy(a.astype(np.float32)).to(self.device, self.dtype)
        return conv(cos), conv(sin)

    # -- forward -----------------------------------------------------------------------

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self.dim,), w, self.eps).to(self.dtype)

    @staticmethod
    def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate half-split pairs of the last dimension (tables from `rope_rows`)."""
        hd = x.shape[-1]
        swapped = x.unflatten(-1, (2, hd // 2)).flip(-2).flatten(-2)
        return torch.addcmul(x * cos, swapped, sin)

    def step(self, tokens: torch.Tensor, pos: torch.Tensor, cache: Cache) -> torch.Tensor:
        """Logits ([lanes, vocab], the model's dtype) for one token per lane at `pos`.

        `pos` is a 1-element int64 tensor on the model's device so that the whole
        step can be captured in a CUDA graph and replayed at any position.
        """
        n, hd, nh, nkv = tokens.shape[0], self.head_dim, self.n_head, self.n_kv
        cos = cache.cos.index_select(0, pos)  # [1, hd]
        sin = cache.sin.index_select(0, pos)
        mask = torch.where(cache.slots <= pos, 0.0, float("-inf")).to(self.dtype).view(1, 1, 1, -1)
        x = self.emb.index_select(0, tokens).float()  # residual stream in float32
        for i, ly in enumerate(self.layers):
            h = self._rms(x, ly["attn_norm"]) @ ly["wqkv"]
            qk = self.rope(h[:, : (nh + nkv) * hd].view(n, nh + nkv, hd), cos, sin)
            cache.k[i].index_copy_(2, pos, qk[:, nh:].unsqueeze(2))
            cache.v[i].index_copy_(2, pos, h[:, (nh + nkv) * hd :].view(n, nkv, 1, hd))
            # the query heads that share a KV head form that head's "query rows"
            q = qk[:, :nh].reshape(n, nkv, nh // nkv, hd)
            o = F.scaled_dot_product_attention(q, cache.k[i], cache.v[i], attn_mask=mask)
            x = x + o.reshape(n, nh * hd) @ ly["wo"]
            gu = self._rms(x, ly["ffn_norm"]) @ ly["w13"]
            g, u = gu.chunk(2, dim=-1)
            x = x + (F.silu(g) * u) @ ly["w2"]
        # float16 logits on a GPU; the lookups widen them (exactly) to float32
        return self._rms(x, self.out_norm) @ self.out.T


class Cache:
    """Per-layer K and V for a group of lanes, plus the shared rotary tables."""

    def __init__(self, model: TorchLlama, lanes: int, context: int):
        shape = (lanes, model.n_kv, context, model.head_dim)
        self.model = model
        self.context = context
        self.k = [torch.zeros(shape, dtype=model.dtype, device=model.device) for _ in range(model.n_layer)]
        self.v = [torch.zeros(shape, dtype=model.dtype, device=model.device) for _ in range(model.n_layer)]
        self.cos, self.sin = model.rope_rows(range(context))
        self.slots = torch.arange(context, device=model.device)
        self._back: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # rotations by -drop

    def slide(self, keep: int, drop: int, end: int) -> None:
        """Forget positions [keep, keep+drop) and move [keep+drop, end) down by `drop`,
        re-rotating the keys to their new positions (what llama.cpp's K-shift does)."""
        if drop not in self._back:  # made once: a host->device copy waits for the GPU
            self._back[drop] = self.model.rope_rows([-drop])
        cos, sin = self._back[drop]
        for k, v in zip(self.k, self.v):
            src = slice(keep + drop, end)
            dst = slice(keep, end - drop)
            k[:, :, dst] = TorchLlama.rope(k[:, :, src].clone(), cos, sin)
            v[:, :, dst] = v[:, :, src].clone()
