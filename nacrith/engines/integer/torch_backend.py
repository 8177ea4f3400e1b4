"""The torch backend (CPU or CUDA): the generic forward on int64 tensors, matrix
products in float64 of integers below 2**53, so exact on any device.

This is the reference arithmetic run by torch, with the weights dense float64 on the
device (about 1 GB for SmolLM2). On a GPU, groups.py replaces the products and the
attention with the Triton kernels of products.py and attention.py (int8 blocks, the same
integers).
"""

from __future__ import annotations

import numpy as np

from . import spec
from .forward import Forward, score_bits, softmax_p
from .ops import TorchOps
from .reference import KVCache


class TorchBackend:
    def __init__(self, w, lanes: int, context: int, device: str = "cpu", fuse=None, kv_dtype=None):
        import torch

        self.t = torch
        self.w = w
        self.dev = torch.device(device)
        self.ops = TorchOps(self.dev)
        self.cache = KVCache(w, lanes, context, xp=torch, dev=self.dev, kv_dtype=kv_dtype)
        self.exp2 = self.ops.asarray(__import__("nacrith.codec.quantize", fromlist=["EXP2_TABLE"]).EXP2_TABLE)
        lw = {"qkv": "wqkv", "o": "wo", "ffn_up": "w13", "ffn_down": "w2"}
        self.mats = {}
        for li, ly in enumerate(w.layers):
            for name, attr in lw.items():
                self.mats[li, name] = self._dense(getattr(ly, attr))
        self.mats[None, "logits"] = self._dense(w.output)
        self._embed = w.embed
        self.fwd = Forward(w, self, fuse)

    def _dense(self, bw):
        return self.t.from_numpy(bw.dense().T.astype(np.float64)).to(self.dev)

    def hidden(self, tokens, lane, slot, pos):
        return self.fwd.hidden(tokens, lane, slot, pos)

    def logits(self, a, e):
        return self.fwd.logits(a, e)

    def embed(self, tokens):
        return self.ops.asarray(self._embed.dense(tokens.cpu().numpy()))

    def linear(self, li, name, a):
        return (a.to(self.t.float64) @ self.mats[li, name]).to(self.t.int64)

    def store(self, li, lane, slot, kr, ke, vm, ve, km, bos) -> None:
        c, t = self.cache, self.t
        c.k[li, lane, :, slot] = kr.to(t.int16)
        c.ke[li, lane, :, slot] = ke.to(t.int32)
        c.v[li, lane, :, slot] = vm.to(t.int16)
        c.ve[li, lane, :, slot] = ve.to(t.int32)
        if bool(bos.any()):
            c.bos[li, lane[bos]] = km[bos].to(t.int16)

    def attend(self, li, lane, slot, qr, qe):
        t, w, c, o = self.t, self.w, self.cache, self.ops
        T = qr.shape[0]
        g = w.n_head // w.n_kv
        out = t.zeros((T, w.n_head, w.head_dim), dtype=t.int64, device=self.dev)
        oe = t.zeros((T, w.n_head), dtype=t.int64, device=self.dev)
        for ln in t.unique(lane).tolist():
            rows = t.nonzero(lane == ln).flatten()
            n = int(slot[rows].max()) + 1
            K = c.k[li, ln, :, :n].to(t.float64)
            V = c.v[li, ln, :, :n].to(t.float64)
            KE = c.ke[li, ln, :, :n].to(t.int64)
            VE = c.ve[li, ln, :, :n].to(t.int64)
            m = len(rows)
            q = qr[rows].reshape(m, w.n_kv, g, w.head_dim).permute(1, 0, 2, 3).reshape(w.n_kv, m * g, w.head_dim)
            s = (q.to(t.float64) @ K.transpose(1, 2)).to(t.int64).reshape(w.n_kv, m, g, n).permute(1, 0, 2, 3)
            qe_ = qe[rows].reshape(m, w.n_kv, g)[..., None]
            bits = score_bits(o, s, qe_, KE[None, :, None, :], w.score)
            masked = (t.arange(n, device=self.dev)[None, :] > slot[rows][:, None])[:, None, None, :]
            p = softmax_p(o, bits, masked, self.exp2)
            ve = t.where(masked, -(1 << 40), VE[None, :, None, :])
            em = ve.amax(dim=-1, keepdim=True)
            p = p >> t.clamp(em - ve, 0, 62)
            pv = p.to(t.float64).permute(1, 0, 2, 3).reshape(w.n_kv, m * g, n) @ V
            out[rows] = pv.to(t.int64).reshape(w.n_kv, m, g, w.head_dim).permute(1, 0, 2, 3).reshape(m, w.n_head, w.head_dim)
            oe[rows] = (em[..., 0] - spec.P_BITS).expand(m, w.n_kv, g).reshape(m, w.n_head)
        return out, oe
