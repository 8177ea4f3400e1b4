"""The integer engine on a torch device (a GPU, or the CPU): lanes in lockstep groups.

The integers are those of the numpy reference and the C kernels (forward.py: a
row's result depends only on its lane's window), so how the work is cut here
changes no bit of a file. What is cut differently, for a GPU:

- Groups. Chunks are taken `lanes` at a time; every lane of a group starts from
  BOS together and all advance together, so every lane sits at the same window
  slot and position and the windows slide together. Attention then runs for the
  whole group in two batched products over the full window, with the slots not
  yet filled masked (a masked slot adds 0 to every sum and maximum, so the
  integers are those of a window of the exact length). Lanes past their chunk's
  end step on padding that nothing reads.
- Encoder. Every token is known, so each call evaluates a run of `block` inputs
  of every lane (lanes x block rows through the matrix products at once).
- Coding on the device. The integer softmax, the online predictors and the
  (start, freq) lookup (encoder) or the rANS search and state update (decoder)
  run on the device; only starts and frequencies (or tokens) come back.
"""

from __future__ import annotations

import numpy as np

from ...codec import rans
from ...codec.quantize import PRECISION, lookup_freqs_torch, search_freqs_torch, freqs_torch, table_torch
from ...predictors.online import Online
from . import kernels, products, rows, spec
from . import attention as attention_kernels
from .forward import (qkv_split, quantise_groups, resid_norm, rmsnorm, rope_rows, rotate, score_bits, shift,
                      softmax_p, swiglu)
from ..torch_float.groups import groups  # noqa: F401 (the same cut into groups as the torch engine)
from .torch_backend import TorchBackend

GROUP_LANES = 256  # lanes of a group on a CPU where the engine is not told (fewer for fewer chunks)
MAX_LANES = 1024  # ... and the most on a GPU (group_lanes)
_LOGIT_ROWS = 2048  # logits rows held at once (393 KB each for SmolLM2)


def lane_bytes(w, context: int) -> int:
    """Device memory one lane holds, roughly: its key and value windows (int16 mantissas,
    int32 exponents) and a few vocabulary rows of int64 (logits, the predictors' state)."""
    kv = w.n_layer * w.n_kv * context * (2 * 2 * w.head_dim + 2 * 4)
    return kv + 16 * 8 * w.n_vocab


def group_lanes(w, context: int, device) -> int:
    """Lanes of a group where the engine is not told. A group's steps run one after
    another, so on a GPU the fewer groups the better: as many lanes as half its memory
    holds, at most MAX_LANES (dickens in 32 KiB chunks is 311 lanes, one group instead of
    two). Half its total, not its free memory: a warm runner's own cache must not change
    the count and with it the runner. The bytes are the same for any lane count (module
    docstring)."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return GROUP_LANES
    _, total = torch.cuda.mem_get_info(dev)
    return max(1, min(MAX_LANES, total // 2 // lane_bytes(w, context)))


class GroupBackend(TorchBackend):
    """TorchBackend for rows that come lane-major ([lanes, run] flattened), every lane
    at the same slots: attention batched over the whole group."""

    def __init__(self, w, lanes: int, context: int, device: str):
        import os

        import torch

        fuse = None
        # NACRITH_COMPILE: "all" (default on a GPU) compiles the decoder's one-row-per-lane
        # steps and the encoder's runs, each padded to `block` rows per lane (Group.run), so
        # one shape per lane count: run eagerly, their integer norms and tables are tens of
        # thousands of tiny kernels per run. "steps" compiles the steps only (the first
        # compression's few minutes of compiling saved); "0" neither; "always" both, also
        # on a CPU (tests). The integers are the same in every mode.
        mode = os.environ.get("NACRITH_COMPILE", "all")
        if mode == "always" or (torch.device(device).type == "cuda" and mode != "0"):
            fuse = lambda fn: torch.compile(fn, dynamic=False)  # noqa: E731
            torch._dynamo.config.recompile_limit = 64  # a few shapes per group size, many sizes
            torch._dynamo.config.accumulated_recompile_limit = 4096
            _persistent_compile_cache()
        self.compile_runs = mode in ("all", "always")
        self.block = 0  # rows per lane of the encoder's runs (set by GroupRunner)
        # With the Triton kernels (products.py, attention.py) the weights stay int8 blocks and
        # the keys and values int16. Without, both are float64 holding the same integers: the float64
        # products read them as they are, with no conversion of the window at every step.
        self.kernels = kernels.available(torch.device(device))
        # ... and the row stages are rows.py's kernels (NACRITH_ROW_KERNELS=0: the compiled
        # stages instead): nothing per layer is compiled, so runs need no padding, and a
        # decoder step is 409 launches instead of 919. Their readers pass a barrier before
        # they zero a product (rows.py, CLEAR): without it a warp zeroed cells another had not
        # yet read (wrong integers on an H100); with it tests/test_rows.py passes there.
        self.row_kernels = self.kernels and os.environ.get("NACRITH_ROW_KERNELS", "1") != "0"
        self.pad_runs = fuse is not None and self.compile_runs and not self.row_kernels  # Group.run
        self._small = {}  # rows.py's buffers of calls of few rows (_buffers)
        self._dirty = False
        kv = None if self.kernels else torch.float64
        super().__init__(w, lanes, context, device, fuse, kv_dtype=kv)
        t = self.t
        f = fuse or (lambda fn: fn)
        self.f_pre, self.f_post, self.f_logits = f(layer_in), f(layer_out), f(final_logits)
        self.f_rope = f(rope_rows)
        e = w.embed
        self._eq = t.from_numpy(e.q).to(self.dev)
        self._ed = t.from_numpy(e.d).to(self.dev)
        self._em = t.from_numpy(e.m).to(self.dev)
        self.at_start = False  # the run begins at slot 0 (its first rows are BOS)
        self.slots = t.arange(context, device=self.dev)

    def _dense(self, bw):
        if self.kernels:
            return products.BlockMatrix.of(bw, self.dev)
        return super()._dense(bw)

    def embed(self, tokens):
        q = self._eq[tokens].to(self.t.int64)
        T, k = q.shape
        q = q.reshape(T, k // 32, 32) * self._ed[tokens][:, :, None] + self._em[tokens][:, :, None]
        return q.reshape(T, k)

    def store(self, li, lane, slot, kr, ke, vm, ve, km, bos) -> None:
        c, t = self.cache, self.t
        if self.kernels:
            kernels.store(c.k[li], c.ke[li], c.v[li], c.ve[li], lane, slot, kr, ke, vm, ve)
        else:
            c.k[li, lane, :, slot] = kr.to(c.k.dtype)
            c.ke[li, lane, :, slot] = ke.to(t.int32)
            c.v[li, lane, :, slot] = vm.to(c.v.dtype)
            c.ve[li, lane, :, slot] = ve.to(t.int32)
        if self.at_start:  # known on the host: no device sync (CUDA graphs)
            L = c.lanes
            c.bos[li] = km.reshape(L, -1, *km.shape[1:])[:, 0].to(t.int16)

    def hidden(self, tokens, lane, slot, pos):
        """Forward.hidden's steps, with each layer in two stages (the products, and the
        elementwise work around them), so that a compiled stage is a handful of kernels
        and serves every layer; or in twelve launches (row_kernels: _hidden_rows)."""
        if self.row_kernels:
            return self._hidden_rows(tokens, lane, slot, pos)
        o, w, F, c = self.ops, self.w, self.fwd, self.cache
        fused = self._fused(tokens.shape[0])
        pre, post = (self.f_pre, self.f_post) if fused else (layer_in, layer_out)
        norm, rope = (F.f_norm, self.f_rope) if fused else (rmsnorm, rope_rows)
        h = shift(o, self.embed(tokens), F._embed_shift)
        cos, sin = rope(o, F.rope, pos)
        an, ans = F.gam[0][:2]
        a, e = norm(o, h, an, ans, w.dim, F.eps)
        for li in range(w.n_layer):
            fn, fns = F.gam[li][2:]
            gn, gns = F.gam[li + 1][:2] if li + 1 < w.n_layer else F.out_norm
            m = lambda name: self.mats[li, name]  # noqa: E731
            qr, qe, kr, ke, vm, ve, km = pre(o, a, e, m("qkv"), cos, sin, w.n_head, w.n_kv, w.head_dim)
            self.store(li, lane, slot, kr, ke, vm, ve, km, None)
            h, a, e = post(o, h, qr, qe, c.k[li], c.v[li], c.ke[li], c.ve[li], self.slots, slot,
                           m("o"), m("ffn_up"), m("ffn_down"), fn, fns, gn, gns, w.dim, F.eps,
                           w.score, F.exp2)
        return a, e

    def _buffers(self, T: int) -> dict:
        """Buffers of a T-row call. Few rows (a decoder step, captured in a CUDA graph): kept,
        zeroed once, and zeroed again by the row stage that reads each (so the products'
        cut sums and attention's values start from zeros); more rows: made for the call."""
        t, w, L = self.t, self.w, self.cache.lanes
        small = T <= 32
        if small and T in self._small:
            b = self._small[T]
            if self._dirty:  # an earlier call stopped between a product and its reader
                for x in b.values():
                    x.zero_()
            return b
        hd, nh, nkv = w.head_dim, w.n_head, w.n_kv
        ff = self.mats[0, "ffn_up"].q.shape[1]
        make = t.zeros if small else t.empty  # more rows: no product is cut (products.cuts)
        z = lambda *shape, dt=t.int64: make(shape, dtype=dt, device=self.dev)  # noqa: E731
        b = dict(qkv=z(T, (nh + 2 * nkv) * hd), o=z(T, w.dim), up=z(T, ff), down=z(T, w.dim),
                 pv=z(L, nkv, T // L * (nh // nkv), hd), q=z(L, nkv, T // L * (nh // nkv), hd, dt=t.int32),
                 qe=z(L, nkv, T // L * (nh // nkv)), a=z(T, w.dim, dt=t.int32), af=z(T, ff // 2, dt=t.int32),
                 ae=z(T))
        if small:
            self._small[T] = b
        return b

    def _hidden_rows(self, tokens, lane, slot, pos):
        """hidden's integers in twelve launches a layer (rows.py): the four products, the
        split of the qkv rows with the key/value store, attention's three passes, the
        merge of its heads, the two residual norms and the gated unit."""
        w, F, c, M = self.w, self.fwd, self.cache, self.mats
        T = tokens.shape[0]
        R = T // c.lanes
        b = self._buffers(T)
        self._dirty = True
        clear = T <= 32
        cut = lambda li, name: clear and products.cuts(T, M[li, name])  # noqa: E731
        slot = slot.contiguous()
        h = shift(self.ops, self.embed(tokens), F._embed_shift).contiguous()
        cos, sin = rows.rope(F.rope, pos)
        a, af, ae = b["a"], b["af"], b["ae"]
        an, ans = F.gam[0][:2]
        rows.resid_norm(h, None, None, a, ae, an, ans, F.eps)
        for li in range(w.n_layer):
            fn, fns = F.gam[li][2:]
            gn, gns = F.gam[li + 1][:2] if li + 1 < w.n_layer else F.out_norm
            y = products.block_linear(a, M[li, "qkv"], b["qkv"])
            rows.qkv(y, ae, cos, sin, lane, slot, b["q"], b["qe"], c.k[li], c.ke[li], c.v[li], c.ve[li],
                     c.bos[li], R, w.n_head, w.n_kv, cut(li, "qkv"))
            pv = b["pv"] if clear else self.t.zeros_like(b["pv"])
            pv, oe = attention_kernels.attention(b["q"], b["qe"], c.k[li], c.v[li], c.ke[li], c.ve[li], slot, R,
                                                 w.score, F.exp2, pv)
            rows.merge(pv, oe, a, ae, R, w.n_head, clear)
            y = products.block_linear(a, M[li, "o"], b["o"])
            rows.resid_norm(h, y, ae, a, ae, fn, fns, F.eps, cut(li, "o"))
            y = products.block_linear(a, M[li, "ffn_up"], b["up"])
            rows.swiglu(y, ae, af, ae, F.exp2, cut(li, "ffn_up"))
            y = products.block_linear(af, M[li, "ffn_down"], b["down"])
            rows.resid_norm(h, y, ae, a, ae, gn, gns, F.eps, cut(li, "ffn_down"))
        self._dirty = False
        return a, ae[:, None]

    def logits(self, a, e):
        fn = self.f_logits if self._fused(a.shape[0]) else final_logits
        return fn(self.ops, a, e, self.mats[None, "logits"])

    def _fused(self, rows: int) -> bool:
        """Whether a call of `rows` rows takes the compiled stages: a decoder step (one row
        per lane) always does, an encoder run (block rows per lane) unless NACRITH_COMPILE=steps;
        other shapes (the last logits of a group) run eagerly rather than compile once more."""
        L = self.cache.lanes
        return rows == L or (self.compile_runs and rows == L * self.block)


def _persistent_compile_cache() -> None:
    """Keep what torch.compile makes under the user's cache folder rather than /tmp, so
    that a later process (after a reboot too) loads it instead of compiling again.
    TORCHINDUCTOR_CACHE_DIR, where set, wins."""
    import os
    from pathlib import Path

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(base / "nacrith" / "torchinductor"))


def _product(a, W):
    """An exact integer product: every partial sum is an integer below 2**53 (weights.py).
    W is a float64 matrix of the weights' integers, or their int8 blocks (products.py)."""
    if isinstance(W, products.BlockMatrix):
        return products.block_linear(a, W)
    return (a.to(W.dtype) @ W).to(a.dtype)


def layer_in(o, a, e, W, cos, sin, nh: int, nkv: int, hd: int):
    return qkv_split(o, _product(a, W), e, cos, sin, nh, nkv, hd)


def layer_out(o, h, qr, qe, K, V, KE, VE, slots, slot, Wo, W13, W2, fn, fns, gn, gns, dim: int, eps,
              score: int, table):
    """Attention over the group's windows, the output projection and the feed-forward."""
    ov, oe = attention(o, qr, qe, K, V, KE, VE, slots, slot, score, table)
    a, e = quantise_groups(o, ov, oe, spec.ACT_BITS)
    h, a, e = resid_norm(o, h, _product(a, Wo), e, fn, fns, dim, eps)
    a, e = swiglu(o, _product(a, W13), e, table)
    return resid_norm(o, h, _product(a, W2), e, gn, gns, dim, eps)


def final_logits(o, a, e, W):
    return shift(o, _product(a, W), -(e - spec.WEIGHT_UNIT + spec.LOGIT_UNIT))


def attention(o, qr, qe, K, V, KE, VE, slots, slot, score: int, table):
    """Rows lane-major ([L, R] flattened, every lane at the same slots) against the
    windows K, V [L, kv, C, hd] (float64 of int16 values, or int16 for the Triton
    kernels), KE, VE [L, kv, C]. Both paths take the rows head-major ([L, kv, R*g])."""
    L, nkv, C, hd = K.shape
    T, nh = qr.shape[0], qr.shape[1]
    R, g = T // L, nh // nkv
    q = qr.reshape(L, R, nkv, g, hd).permute(0, 2, 1, 3, 4).reshape(L, nkv, R * g, hd)
    if not K.is_floating_point():
        e = qe.reshape(L, R, nkv, g).permute(0, 2, 1, 3).reshape(L, nkv, R * g)
        pv, oe = attention_kernels.attention(q, e, K, V, KE, VE, slot, R, score, table)
        oe = oe.reshape(L, nkv, R, g).permute(0, 2, 1, 3).reshape(T, nh)
    else:
        s = (q.to(K.dtype) @ K.transpose(2, 3)).to(qe.dtype)  # [L, kv, R*g, C], exact
        s = s.reshape(L, nkv, R, g, C).permute(0, 2, 1, 3, 4)  # [L, R, kv, g, C]
        ke = KE.to(qe.dtype)[:, None, :, None, :]
        ve = VE.to(qe.dtype)[:, None, :, None, :]
        p, em = attention_probs(o, s, qe.reshape(L, R, nkv, g)[..., None], ke, ve, slots, slot.reshape(L, R), score,
                                table)
        pv = p.to(V.dtype).permute(0, 2, 1, 3, 4).reshape(L, nkv, R * g, C) @ V  # [L, kv, R*g, hd], exact
        oe = (em[..., 0, 0] - spec.P_BITS)[..., None].expand(L, R, nkv, g).reshape(T, nh)
    out = pv.to(qe.dtype).reshape(L, nkv, R, g, hd).permute(0, 2, 1, 3, 4).reshape(T, nh, hd)
    return out, oe


def attention_probs(o, s, qe, KE, VE, slots, slot, scale: int, table):
    """Dot products s [L, R, kv, g, C] -> probabilities scaled to the values' common
    exponent em [L, R, kv, 1, 1] (Reference.attend's steps, over the full window with
    the slots after each row's own masked)."""
    bits = score_bits(o, s, qe, KE, scale)
    masked = (slots[None, None, :] > slot[:, :, None])[:, :, None, None, :]
    p = softmax_p(o, bits, masked, table)
    ve = o.where(masked, -(1 << 40), VE)
    em = o.amax(ve, -1)
    return p >> o.clip(em - ve, 0, 62), em


class Group:
    """One group's windows: every lane has evaluated `done` inputs (BOS included) and
    keeps those from `first` on (after BOS, which stays in slot 0)."""

    def __init__(self, be: GroupBackend, context: int, slide: int):
        if not 1 <= slide < context - 1:
            raise ValueError("slide must be at least 1 and less than context - 1")
        self.be, self.context, self.slide = be, context, slide
        self.done, self.first = 0, 1

    def next_slot(self) -> int:
        return self.done - self.first + 1

    def room(self) -> int:
        return self.context - self.next_slot()

    def make_room(self) -> None:
        """Slide every window (Lanes.make_room, for all lanes at once)."""
        if self.room() > 0:
            return
        c, end, d = self.be.cache, self.next_slot(), self.slide
        for a in (c.k, c.v, c.ke, c.ve):
            a[:, :, :, 1 : end - d] = a[:, :, :, 1 + d : end].clone()
        self.first += d
        o, w = self.be.ops, self.be.w
        cos, sin = rope_rows(o, self.be.fwd.rope, o.asarray([self.first - 1] * w.n_layer))
        bos = o.i64(c.bos)  # [layers, lanes, kv, hd]
        rot = rotate(o, bos.reshape(w.n_layer, -1, w.head_dim), cos, sin)
        c.k[:, :, :, 0] = rot.reshape(bos.shape).to(c.k.dtype)

    def run(self, tokens, rows: int = 0):
        """tokens [lanes, R] (int64 tensor), the next R inputs of every lane -> final-norm
        rows (a, e), lane-major. With rows > R each lane's run is padded to `rows` copies of
        its last input (same token, slot and position): a copy computes and stores exactly
        what the input does, so the window is unchanged, and every run has one shape."""
        be, t = self.be, self.be.t
        L, R = tokens.shape
        if not 0 < R <= self.room():
            raise ValueError("a run must be non-empty and fit the window")
        Rp = max(R, rows)
        if Rp > R:
            tokens = t.cat([tokens, tokens[:, -1:].expand(L, Rp - R)], 1)
        s0, p0 = self.next_slot(), self.done
        dev = be.dev
        lane = t.arange(L, device=dev).repeat_interleave(Rp)
        steps = t.arange(Rp, device=dev).clamp(max=R - 1).repeat(L)
        be.at_start = s0 == 0
        a, e = be.hidden(tokens.reshape(-1), lane, steps + s0, steps + p0)
        self.done += R
        if Rp > R:
            a, e = (x.reshape(L, Rp, -1)[:, :R].reshape(L * R, -1) for x in (a, e))
        return a, e


class GroupRunner:
    """The integer model on one device, for groups of up to `lanes` chunks."""

    def __init__(self, w, settings, bos: int, lanes: int, device: str, block: int = 128):
        import torch

        self.t = torch
        self.w, self.settings, self.bos = w, settings, bos
        self.lanes, self.block = lanes, block
        self.be = GroupBackend(w, lanes, settings.context, device)
        self.be.block = block
        self.dev = self.be.dev
        self.table = table_torch(self.dev)
        self.cap = self.wcap = 0  # the decoder's buffers (_buffers)
        self.graph = None
        self.e_cap, self.e_z, self.e_pred, self.e_graph = 0, None, None, None  # the encoder's (_coder)
        self.e_kern = self.d_kern = None

    def _predictor(self, steps: int):
        cfg = self.settings.predictors
        return Online(cfg, self.lanes, self.w.n_vocab, steps + 1, self.be.ops) if cfg.any else None

    def _group(self) -> Group:
        return Group(self.be, self.settings.context, self.settings.slide)

    def encode(self, token_lists):
        """(payloads, bits) of up to `lanes` chunks."""
        t, L = self.t, self.lanes
        n = len(token_lists)
        if not 0 < n <= L:
            raise ValueError("a group holds 1..lanes chunks")
        counts = np.zeros(L, np.int64)
        counts[:n] = [len(x) for x in token_lists]
        steps = int(counts.max())
        inputs = np.zeros((L, steps), np.int64)
        targets = np.zeros((L, steps), np.int64)
        for j, toks in enumerate(token_lists):
            inputs[j, 0] = self.bos
            inputs[j, 1 : len(toks)] = toks[:-1]
            targets[j, : len(toks)] = toks
        inputs = t.from_numpy(inputs).to(self.dev)
        targets = t.from_numpy(targets).to(self.dev)
        starts = t.zeros((steps, L), dtype=t.int64, device=self.dev)
        freqs = t.ones((steps, L), dtype=t.int64, device=self.dev)
        per = max(1, min(self.block, _LOGIT_ROWS // L))  # steps of logits at once
        G = self._group()
        pred = self._coder(steps, per) if self.settings.predictors.any else None
        with t.no_grad():
            if pred is not None:
                step = None if self.e_kern else self._code_runner()  # captured before the reset below
                pred.reset()
            while G.done < steps:
                G.make_room()
                p0 = G.done
                R = min(G.room(), self.block, steps - p0)
                a, e = G.run(inputs[:, p0 : p0 + R], self.block if self.be.pad_runs else 0)
                a, e = a.reshape(L, R, -1), e.reshape(L, R, -1)
                for i0 in range(0, R, per):
                    i1 = min(R, i0 + per)
                    rows_a = a[:, i0:i1].transpose(0, 1).reshape(-1, a.shape[-1])  # step-major
                    rows_e = e[:, i0:i1].transpose(0, 1).reshape(-1, e.shape[-1])
                    z = self.be.logits(rows_a, rows_e).reshape(i1 - i0, L, -1)
                    tg = targets[:, p0 + i0 : p0 + i1].T
                    if pred is None:
                        f = freqs_torch(z.reshape((i1 - i0) * L, -1), self.table)
                        st, fr = lookup_freqs_torch(f, tg.reshape(-1))
                        starts[p0 + i0 : p0 + i1] = st.reshape(i1 - i0, L)
                        freqs[p0 + i0 : p0 + i1] = fr.reshape(i1 - i0, L)
                    else:  # the predictors take the steps one by one
                        k = i1 - i0
                        self.e_z[:k], self.e_tg[:k] = z, tg
                        if self.e_kern:  # k steps, one captured step replayed each
                            self.e_kern.encode(self.e_z, self.e_tg, self.e_st, self.e_fr, k)
                        else:
                            self.e_i.zero_()
                            for _ in range(k):
                                step()
                        starts[p0 + i0 : p0 + i1], freqs[p0 + i0 : p0 + i1] = self.e_st[:k], self.e_fr[:k]
        st, fr = starts.cpu().numpy(), freqs.cpu().numpy()
        valid = np.arange(steps)[:, None] < counts[None, :]
        fr = np.where(valid, fr, 1)
        payloads = rans.encode_lanes(st, fr, counts)[:n]
        bits = np.where(valid, PRECISION - np.log2(fr), 0.0).sum(axis=0)
        return payloads, [float(b) for b in bits[:n]]

    def _coder(self, steps: int, per: int):
        """The encoder's predictor step state: logits and targets of `per` steps in, (start,
        freq) out, step index on the device; remade (and recaptured) when it must grow."""
        t, L = self.t, self.lanes
        if self.e_pred is None or steps > self.e_cap or per > self.e_z.shape[0]:
            self.e_cap = max(self.e_cap, 1 << max(0, steps - 1).bit_length())
            per = max(per, self.e_z.shape[0] if self.e_z is not None else 0)
            z = lambda *shape: t.zeros(shape, dtype=t.int64, device=self.dev)  # noqa: E731
            self.e_z, self.e_tg, self.e_st, self.e_fr = z(per, L, self.w.n_vocab), z(per, L), z(per, L), z(per, L)
            self.e_i = z(1)
            self.e_pred = self._predictor(self.e_cap)
            self.e_kern = self._bias_kernel(self.e_pred)
            self.e_graph = None
        return self.e_pred

    def _bias_kernel(self, pred):
        """The bias heads' fused step (predictors/bias_kernel.py) where it covers the
        settings and the kernels run; None: Online's torch step."""
        from ...predictors import bias_kernel

        if pred is None or not self.be.kernels or not bias_kernel.covers(pred.cfg):
            return None
        return bias_kernel.BiasSteps(pred, self.table)

    def _code_step(self) -> None:
        z = self.e_z.index_select(0, self.e_i).squeeze(0)
        tg = self.e_tg.index_select(0, self.e_i).squeeze(0)
        pred = self.e_pred
        pred.cheap()
        st, fr = lookup_freqs_torch(pred.freqs(z), tg)
        pred.update(tg)
        self.e_st.index_copy_(0, self.e_i, st[None])
        self.e_fr.index_copy_(0, self.e_i, fr[None])
        self.e_i.add_(1)

    def _code_runner(self):
        if self.e_graph is None and self.dev.type == "cuda":
            self.e_i.zero_()
            self.e_graph = self._capture(self._code_step)
        return self._code_step if self.e_graph is None else self.e_graph.replay

    def _capture(self, fn):
        """fn run twice off the capture (kernel choices, compiles), then captured once."""
        t = self.t
        s = t.cuda.Stream()
        s.wait_stream(t.cuda.current_stream())
        with t.cuda.stream(s):
            for _ in range(2):
                fn()
        t.cuda.current_stream().wait_stream(s)
        g = t.cuda.CUDAGraph()
        with t.cuda.graph(g):
            fn()
        return g

    # -- decoder: one step of every lane per call, captured once in a CUDA graph --------

    def _buffers(self, steps: int, width: int) -> None:
        """Device state of the decoder step, with room for `steps` steps and `width` words per
        lane; rounded up to powers of two so that later groups replay the same graph."""
        if steps <= self.cap and width <= self.wcap:
            return
        t, L, dev = self.t, self.lanes, self.dev
        self.cap = max(self.cap, 1 << max(0, steps - 1).bit_length())
        self.wcap = max(self.wcap, 1 << max(1, width - 1).bit_length())
        z = lambda *shape: t.zeros(shape, dtype=t.int64, device=dev)  # noqa: E731
        self.d_words, self.d_x, self.d_ptr, self.d_cnt = z(L, self.wcap), z(L), z(L), z(L)
        self.d_tok, self.d_slot, self.d_pos, self.d_out = z(L), z(1), z(1), z(self.cap, L)
        self.d_lane = t.arange(L, device=dev)
        self.d_sym, self.d_st, self.d_fr = z(L), z(L), z(L)
        self.d_pred = self._predictor(self.cap)
        self.d_kern = self._bias_kernel(self.d_pred)
        self.graph = None

    def _decode_step(self) -> None:
        L, be = self.lanes, self.be
        a, e = be.hidden(self.d_tok, self.d_lane, self.d_slot.expand(L), self.d_pos.expand(L))
        z = be.logits(a, e)
        slot = self.d_x & rans.MASK
        pred = self.d_pred
        if pred is None:
            sym, start, freq = search_freqs_torch(freqs_torch(z, self.table), slot)
        elif self.d_kern:
            self.d_kern.decode(z.contiguous(), slot, self.d_sym, self.d_st, self.d_fr)
            sym, start, freq = self.d_sym, self.d_st, self.d_fr
        else:
            pred.cheap()
            sym, start, freq = search_freqs_torch(pred.freqs(z), slot)
            pred.update(sym)
        rans.advance_torch(self.d_x, self.d_ptr, self.d_words, slot, start, freq, self.d_cnt > self.d_pos)
        self.d_out.index_copy_(0, self.d_pos, sym[None])
        self.d_tok.copy_(sym)

    def _step(self):
        """The decoder step past slot 0: replayed from a CUDA graph on a GPU."""
        if self.dev.type != "cuda":
            return self._decode_step
        if self.graph is None:
            self.be.at_start = False
            self.d_slot.fill_(1)
            self.d_pos.fill_(1)
            self.graph = self._capture(self._decode_step)
        return self.graph.replay

    def decode(self, counts, payloads):
        """Token lists of up to `lanes` chunks; a damaged stream raises CorruptDataError."""
        t, L = self.t, self.lanes
        n = len(counts)
        if not 0 < n <= L or len(payloads) != n:
            raise ValueError("a group holds 1..lanes chunks")
        words, lens = rans.stream_words(payloads, L)
        cnt = np.zeros(L, np.int64)
        cnt[:n] = counts
        steps = int(cnt.max())
        with t.no_grad():
            self._buffers(steps, words.shape[1])
            step = self._step()  # captured before the state below is set: capture runs the step
            w = np.zeros((L, self.wcap), np.int64)
            w[:, : words.shape[1]] = words
            self.d_words.copy_(t.from_numpy(w))
            self.d_cnt.copy_(t.from_numpy(cnt))
            self.d_x.copy_(rans.decoder_state(self.d_words))
            self.d_ptr.fill_(2)
            self.d_tok.fill_(self.bos)
            if self.d_pred is not None:
                self.d_pred.reset()
            G = self._group()
            for i in range(steps):
                G.make_room()
                self.d_slot.fill_(G.next_slot())
                self.d_pos.fill_(i)
                self.be.at_start = i == 0
                if i == 0:
                    self._decode_step()  # stores BOS's unrotated key: not the captured step
                else:
                    step()
                G.done += 1
            self.be.at_start = False
            xs, ps, out = self.d_x.cpu().numpy(), self.d_ptr.cpu().numpy(), self.d_out[:steps].cpu().numpy()
        return rans.lane_results(xs, ps, lens, out, counts)
