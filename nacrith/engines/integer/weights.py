"""A GGUF Llama model as exact integers.

Every linear weight is held as blocks of 32 along its input dimension:
    w[n, k] * 2**24 = d[n, b] * q[n, k] + m[n, b]      (b = k // 32)
with q int8 and d, m integers. For the f16-scaled block formats (Q4_0, Q4_1,
Q5_0, Q5_1, Q8_0) this is the GGUF's own value exactly: an f16 is a multiple of
2**-24. F16, BF16 and F32 tensors are requantised once at load to 8-bit blocks,
deterministically in integers: W = round(w * 2**24), d = ceil(max|W| / 127),
q = round(W / d), m = 0. Norm weights become round(gamma * 2**s) with one s per
tensor (the largest |gamma| lands in [2**19, 2**20)).

Bounds are checked here, from the shapes and values alone: with int16
activations every output of every product stays below 2**53, so float64 sums
of these integers are exact in any order (and the C kernels' per-block int32
sums cannot overflow). A model that breaks a bound is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ...errors import UnsupportedInputError
from . import spec

BLOCK = 32


@dataclass
class BlockWeight:
    """w * 2**24 = d * q + m, blocks of 32 along the input dimension."""

    q: np.ndarray  # int8 [n_out, n_in]
    d: np.ndarray  # int64 [n_out, n_in // 32]
    m: np.ndarray  # int64 [n_out, n_in // 32]

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape

    def dense(self, rows=slice(None)) -> np.ndarray:
        """int64 [n_out, n_in]: the weights in units of 2**-24."""
        q, d, m = self.q[rows], self.d[rows], self.m[rows]
        n, k = q.shape
        w = q.reshape(n, k // BLOCK, BLOCK).astype(np.int64) * d[:, :, None] + m[:, :, None]
        return w.reshape(n, k)

    def row_bound(self) -> int:
        """An upper bound of sum_k |w[n, k]| (units 2**-24) over all rows n."""
        n, k = self.q.shape
        qabs = np.abs(self.q.reshape(n, k // BLOCK, BLOCK).astype(np.int64)).sum(axis=2)
        return int((np.abs(self.d) * qabs + BLOCK * np.abs(self.m)).sum(axis=1).max())


def _f16_units(raw: np.ndarray) -> np.ndarray:
    """f16 bit patterns -> exact int64 multiples of 2**-24."""
    v = raw.view(np.float16).astype(np.float64) * (1 << spec.WEIGHT_UNIT)
    if not np.all(np.isfinite(v)):
        raise UnsupportedInputError("the model has a non-finite block scale")
    return v.astype(np.int64)  # exact: every finite f16 is a multiple of 2**-24


def _halves(b: np.ndarray, at: int) -> np.ndarray:
    return _f16_units(np.ascontiguousarray(b[:, :, at : at + 2]).view(np.uint16)[..., 0])


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """16 bytes per block -> 32 values: low nibbles are elements 0..15, high 16..31."""
    return np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.int16)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """4 bytes per block -> the fifth bit of each of the 32 elements (Q5 formats)."""
    word = np.ascontiguousarray(qh).view("<u4")[..., 0].astype(np.int64)
    return ((word[..., None] >> np.arange(32)) & 1).astype(np.int16)


def _requantise(w_units: np.ndarray) -> BlockWeight:
    """Integer weights (units 2**-24) -> 8-bit blocks: d = ceil(max|W| / 127), q = round(W / d)."""
    n, k = w_units.shape
    blocks = w_units.reshape(n, k // BLOCK, BLOCK)
    d = np.maximum((np.abs(blocks).max(axis=2) + 126) // 127, 1)
    q = (2 * blocks + d[:, :, None]) // (2 * d[:, :, None])  # round half up, in integers
    return BlockWeight(q.reshape(n, k).astype(np.int8), d, np.zeros_like(d))


def from_tensor(t) -> BlockWeight:
    """A gguf_file.Tensor (2-D) as blocks."""
    data = t.data
    rows = data.shape[0]
    if t.type_name in ("F32", "F16", "BF16"):
        f = t.floats()
        if f.shape[1] % BLOCK or not np.all(np.isfinite(f)):
            raise UnsupportedInputError(f"tensor {t.name}: cannot be used by the integer engine")
        return _requantise(np.rint(f * (1 << spec.WEIGHT_UNIT)).astype(np.int64))
    sizes = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34}
    kind = t.type_name
    if kind not in sizes:
        raise UnsupportedInputError(
            f"tensor {t.name} is {kind}; the integer engine reads Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16 and F32"
        )
    b = np.asarray(data).reshape(rows, -1, sizes[kind])
    d = _halves(b, 0)
    if kind == "Q4_0":
        q, m = _nibbles(b[:, :, 2:18]), -8 * d
    elif kind == "Q4_1":
        q, m = _nibbles(b[:, :, 4:20]), _halves(b, 2)
    elif kind == "Q5_0":
        q, m = _nibbles(b[:, :, 6:22]) | (_high_bits(b[:, :, 2:6]) << 4), -16 * d
    elif kind == "Q5_1":
        q, m = _nibbles(b[:, :, 8:24]) | (_high_bits(b[:, :, 4:8]) << 4), _halves(b, 2)
    else:
        q, m = b[:, :, 2:34].copy().view(np.int8).astype(np.int16), np.zeros_like(d)
    return BlockWeight(q.reshape(rows, -1).astype(np.int8), d, m)


def gamma(values) -> tuple[np.ndarray, int]:
    """Norm weights -> (round(gamma * 2**s), s) with max |gamma| * 2**s in [2**19, 2**20)."""
    g = np.asarray(values, dtype=np.float64)
    top = float(np.abs(g).max())
    if not np.all(np.isfinite(g)) or top == 0.0:
        raise UnsupportedInputError("the model has an unusable norm weight")
    s = 20 - np.frexp(top)[1]
    return np.rint(np.ldexp(g, s)).astype(np.int64), int(s)


@dataclass
class Layer:
    attn_norm: np.ndarray
    attn_norm_shift: int
    ffn_norm: np.ndarray
    ffn_norm_shift: int
    wqkv: BlockWeight  # q, k and v projections, outputs stacked
    wo: BlockWeight
    w13: BlockWeight  # gate and up, stacked
    w2: BlockWeight


@dataclass
class IntWeights:
    path: str
    n_layer: int
    dim: int
    n_head: int
    n_kv: int
    head_dim: int
    ffn: int
    n_vocab: int
    eps: tuple[int, int]  # the GGUF's float epsilon as mantissa * 2**exponent
    rope: np.ndarray  # spec.rope_base
    score: int  # spec.score_scale
    embed: BlockWeight  # [vocab, dim]
    output: BlockWeight  # [vocab, dim] (the embedding when tied)
    out_norm: np.ndarray
    out_norm_shift: int
    layers: list[Layer] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return spec.digest(self.rope, self.score, self.eps)

    def linears(self):
        for ly in self.layers:
            yield from (ly.wqkv, ly.wo, ly.w13, ly.w2)
        yield self.output


def _stack(*ws: BlockWeight) -> BlockWeight:
    return BlockWeight(*(np.concatenate([getattr(w, f) for w in ws]) for f in ("q", "d", "m")))


def _field(reader, key, default=None):
    v = reader.fields.get(key)
    if v is None:
        if default is None:
            raise UnsupportedInputError(f"the GGUF file lacks {key}")
        return default
    return v


@lru_cache(maxsize=8)
def _rope(theta: float, head_dim: int) -> np.ndarray:
    return spec.rope_base(theta, head_dim)


def load(path: str | os.PathLike) -> IntWeights:
    """Read a GGUF Llama model into integer form, or refuse it with a clear reason."""
    from .gguf_file import GGUFFile

    reader = GGUFFile(str(path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise UnsupportedInputError(f"the integer engine runs Llama models, not {arch!r}")
    n_layer = int(_field(reader, "llama.block_count"))
    dim = int(_field(reader, "llama.embedding_length"))
    n_head = int(_field(reader, "llama.attention.head_count"))
    n_kv = int(_field(reader, "llama.attention.head_count_kv", n_head))
    head_dim = dim // n_head
    if dim % n_head or n_head % n_kv or head_dim % 2 or dim % BLOCK:
        raise UnsupportedInputError("the model's head layout is not supported by the integer engine")
    if int(_field(reader, "llama.rope.dimension_count", head_dim)) != head_dim:
        raise UnsupportedInputError("partial rotary embeddings are not supported by the integer engine")
    eps = spec.float_ratio(float(_field(reader, "llama.attention.layer_norm_rms_epsilon")))
    theta = float(_field(reader, "llama.rope.freq_base", 10000.0))
    raw = reader.tensors

    def need(name):
        if name not in raw:
            raise UnsupportedInputError(f"the GGUF file lacks tensor {name}")
        return raw[name]

    embed = from_tensor(need("token_embd.weight"))
    output = from_tensor(raw["output.weight"]) if "output.weight" in raw else embed
    on, ons = gamma(need("output_norm.weight").floats())
    w = IntWeights(
        path=str(path), n_layer=n_layer, dim=dim, n_head=n_head, n_kv=n_kv, head_dim=head_dim, ffn=0,
        n_vocab=embed.shape[0], eps=eps, rope=_rope(theta, head_dim), score=spec.score_scale(head_dim),
        embed=embed, output=output, out_norm=on, out_norm_shift=ons,
    )
    for i in range(n_layer):
        p = f"blk.{i}."
        an, ans = gamma(need(p + "attn_norm.weight").floats())
        fn, fns = gamma(need(p + "ffn_norm.weight").floats())
        gate, up = from_tensor(need(p + "ffn_gate.weight")), from_tensor(need(p + "ffn_up.weight"))
        w.layers.append(Layer(
            an, ans, fn, fns,
            _stack(from_tensor(need(p + "attn_q.weight")), from_tensor(need(p + "attn_k.weight")),
                   from_tensor(need(p + "attn_v.weight"))),
            from_tensor(need(p + "attn_output.weight")), _stack(gate, up), from_tensor(need(p + "ffn_down.weight")),
        ))
        w.ffn = gate.shape[0]
    _check(w)
    return w


def _check(w: IntWeights) -> None:
    shapes = {
        "qkv": (w.layers[0].wqkv.shape, ((w.n_head + 2 * w.n_kv) * w.head_dim, w.dim)),
        "output projection": (w.layers[0].wo.shape, (w.dim, w.dim)),
        "gate/up": (w.layers[0].w13.shape, (2 * w.ffn, w.dim)),
        "down": (w.layers[0].w2.shape, (w.dim, w.ffn)),
        "logits": (w.output.shape, (w.n_vocab, w.dim)),
    }
    for name, (got, want) in shapes.items():
        if got != want:
            raise UnsupportedInputError(f"the model's {name} weight has shape {got}, expected {want}")
    if w.ffn % BLOCK:
        raise UnsupportedInputError("the model's feed-forward width is not a multiple of 32")
    if w.dim > 2048:  # RMSNorm's sum of squares: dim * 2**(2 * NORM_BITS) must stay below 2**63
        raise UnsupportedInputError("the integer engine supports models of width up to 2048")
    act = 1 << (spec.ACT_BITS - 1)
    for lw in w.linears():
        if lw.row_bound() * act >= spec.EXACT:
            raise UnsupportedInputError("the model's weights are too large for exact integer products")
    for g in [w.out_norm] + [ly.attn_norm for ly in w.layers] + [ly.ffn_norm for ly in w.layers]:
        if int(np.abs(g).max()) >= 1 << 21:
            raise UnsupportedInputError("a norm weight is out of range")
