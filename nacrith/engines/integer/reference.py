"""The numpy reference backend: exact float64 matrix products of the integer weights.

It keeps every weight as a dense float64 matrix of its integers (about 1 GB for
SmolLM2), which is what makes its products plainly exact: each sum stays below
2**53 (weights.py checks the bound). The fast CPU backend (native.py) computes the
same integers with C kernels over the int8 blocks.
"""

from __future__ import annotations

import numpy as np

from . import spec
from .forward import Forward, score_bits, softmax_p
from .ops import NumpyOps


class KVCache:
    """Rotated keys, values and their exponents for `lanes` windows of `context` slots,
    plus each lane's unrotated BOS key (re-rotated when its window slides). Keys and values
    are int16, or `kv_dtype` (a float type holding the same integers)."""

    def __init__(self, w, lanes: int, context: int, xp=np, dev=None, kv_dtype=None):
        self.w, self.lanes, self.context = w, lanes, context
        shape = (w.n_layer, lanes, w.n_kv, context)
        kw = {} if dev is None else {"device": dev}
        i16, i32 = (np.int16, np.int32) if xp is np else (xp.int16, xp.int32)
        self.k = xp.zeros(shape + (w.head_dim,), dtype=kv_dtype or i16, **kw)
        self.v = xp.zeros(shape + (w.head_dim,), dtype=kv_dtype or i16, **kw)
        self.ke = xp.zeros(shape, dtype=i32, **kw)
        self.ve = xp.zeros(shape, dtype=i32, **kw)
        self.bos = xp.zeros((w.n_layer, lanes, w.n_kv, w.head_dim), dtype=i16, **kw)

    def store(self, li, lane, slot, kr, ke, vm, ve, km, bos) -> None:
        self.k[li, lane, :, slot] = kr
        self.ke[li, lane, :, slot] = ke
        self.v[li, lane, :, slot] = vm
        self.ve[li, lane, :, slot] = ve
        if bool(bos.any()):
            self.bos[li, lane[bos]] = km[bos]

    def drop(self, lane: int, keep: int, drop: int, end: int) -> None:
        """Slots [keep + drop, end) move to [keep, end - drop)."""
        for a in (self.k, self.v, self.ke, self.ve):
            a[:, lane, :, keep : end - drop] = a[:, lane, :, keep + drop : end].copy() if isinstance(a, np.ndarray) \
                else a[:, lane, :, keep + drop : end].clone()


class Reference:
    """numpy backend: dense float64 weights, attention lane by lane."""

    def __init__(self, w, lanes: int, context: int):
        self.w = w
        self.ops = NumpyOps()
        self.cache = KVCache(w, lanes, context)
        self._dense = {}
        self.fwd = Forward(w, self)

    def hidden(self, tokens, lane, slot, pos):
        return self.fwd.hidden(tokens, lane, slot, pos)

    def logits(self, a, e):
        return self.fwd.logits(a, e)

    def _mat(self, li, name):
        key = (li, name)
        if key not in self._dense:
            w = self.w
            lw = {"qkv": "wqkv", "o": "wo", "ffn_up": "w13", "ffn_down": "w2"}
            bw = w.output if name == "logits" else getattr(w.layers[li], lw[name])
            self._dense[key] = bw.dense().T.astype(np.float64)
        return self._dense[key]

    def embed(self, tokens):
        return self.w.embed.dense(np.asarray(tokens))

    def linear(self, li, name, a):
        return (a.astype(np.float64) @ self._mat(li, name)).astype(np.int64)

    def store(self, *args) -> None:
        self.cache.store(*args)

    def attend(self, li, lane, slot, qr, qe):
        w, c = self.w, self.cache
        T = qr.shape[0]
        g = w.n_head // w.n_kv
        o = np.zeros((T, w.n_head, w.head_dim), np.int64)
        oe = np.zeros((T, w.n_head), np.int64)
        for ln in np.unique(lane):
            rows = np.nonzero(lane == ln)[0]
            n = int(slot[rows].max()) + 1
            K = c.k[li, ln, :, :n].astype(np.float64)  # [kv, n, hd]
            V = c.v[li, ln, :, :n].astype(np.float64)
            KE = c.ke[li, ln, :, :n].astype(np.int64)
            VE = c.ve[li, ln, :, :n].astype(np.int64)
            t = len(rows)
            q = qr[rows].reshape(t, w.n_kv, g, w.head_dim).transpose(1, 0, 2, 3).reshape(w.n_kv, t * g, w.head_dim)
            s = (q.astype(np.float64) @ K.transpose(0, 2, 1)).astype(np.int64)  # [kv, t*g, n]
            s = s.reshape(w.n_kv, t, g, n).transpose(1, 0, 2, 3)  # [t, kv, g, n]
            qe_ = qe[rows].reshape(t, w.n_kv, g)[..., None]
            bits = score_bits(self.ops, s, qe_, KE[None, :, None, :], w.score)
            masked = (np.arange(n)[None, :] > slot[rows][:, None])[:, None, None, :]
            p = softmax_p(self.ops, bits, masked, self._exp2())
            ve = np.where(masked, -(1 << 40), VE[None, :, None, :])
            em = ve.max(axis=-1, keepdims=True)
            p = p >> np.clip(em - ve, 0, 62)
            out = (p.astype(np.float64).transpose(1, 0, 2, 3).reshape(w.n_kv, t * g, n) @ V).astype(np.int64)
            o[rows] = out.reshape(w.n_kv, t, g, w.head_dim).transpose(1, 0, 2, 3).reshape(t, w.n_head, w.head_dim)
            oe[rows] = np.broadcast_to(em[..., 0] - spec.P_BITS, (t, w.n_kv, g)).reshape(t, w.n_head)
        return o, oe

    def _exp2(self):
        from ...codec.quantize import EXP2_TABLE

        return EXP2_TABLE
