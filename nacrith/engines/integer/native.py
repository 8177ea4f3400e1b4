"""The fast CPU backend: the whole forward in C (native.c), one call per evaluation.

The kernels are built with the package (pyproject's ext-modules) and loaded with
ctypes. `threads` OpenMP threads split each step; the integers are those of the
numpy reference whatever the thread count or instruction set (tests compare).
Weights are held as int8 blocks in the kernels' panel layout (about 170 MB for
SmolLM2 instead of the reference's 1 GB of float64).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os

import numpy as np

from ...codec.quantize import EXP2_TABLE
from ...errors import EngineError, OutOfMemoryError
from .ops import NumpyOps
from .reference import KVCache

_P = ctypes.c_void_p
_I = ctypes.c_int64
_LIB = None


class _QMat(ctypes.Structure):
    _fields_ = [("N", _I), ("K", _I), ("qp", _P), ("dp", _P), ("mp", _P)]


class _Model(ctypes.Structure):
    _fields_ = [(n, _I) for n in ("n_layer", "dim", "n_head", "n_kv", "head_dim", "ffn", "eps_m", "eps_e",
                                  "eps_cap", "score")] + [(n, _P) for n in ("rope", "exp2", "gamma", "gshift", "mats")]


class _Cache(ctypes.Structure):
    _fields_ = [("lanes", _I), ("ctx", _I), ("k", _P), ("v", _P), ("ke", _P), ("ve", _P), ("bos", _P)]


def library():
    """The loaded kernels, or None when the extension was not built."""
    global _LIB
    if _LIB is None:
        found = importlib.util.find_spec("nacrith.engines.integer._native")
        if found is None or not found.origin:
            return None
        lib = ctypes.CDLL(found.origin)
        lib.nc_forward.argtypes = [_P, _P, _I, _P, _P, _P, _P, _P, _P, ctypes.c_int]
        lib.nc_logits.argtypes = [_P, _I, _P, _P, _P, ctypes.c_int]
        lib.nc_matmul.argtypes = [_P, _I, _P, _P, ctypes.c_int]
        lib.nc_code_rows.argtypes = [_I, _I] + [_P] * 8 + [_I, _I] + [_P] * 4 + [ctypes.c_int]
        for f in (lib.nc_forward, lib.nc_logits, lib.nc_matmul, lib.nc_code_rows):
            f.restype = ctypes.c_int
        lib.nc_set_simd.argtypes = [ctypes.c_int]
        lib.nc_set_simd.restype = ctypes.c_int
        lib.nc_set_simd(0 if os.environ.get("NACRITH_NO_SIMD") else 1)
        _LIB = lib
    return _LIB


def set_simd(on: bool) -> bool:
    """AVX2 kernels (True, where the CPU has them) or the portable ones; returns whether
    AVX2 is in use. Both give the same integers (tests)."""
    return bool(library().nc_set_simd(1 if on else 0))


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_P)


class Panel:
    """One linear weight in the kernels' layout: 8 outputs x 32 inputs per 256-byte panel,
    inputs paired; block scales grouped the same way. Outputs are padded to a multiple
    of 8 with zero rows."""

    def __init__(self, bw):
        n, k = bw.shape
        pad = -n % 8
        q, d, m = bw.q, bw.d, bw.m
        if pad:
            q = np.concatenate([q, np.zeros((pad, k), np.int8)])
            d = np.concatenate([d, np.zeros((pad, d.shape[1]), np.int64)])
            m = np.concatenate([m, np.zeros((pad, m.shape[1]), np.int64)])
        if int(np.abs(d).max()) >= 1 << 31 or int(np.abs(m).max()) >= 1 << 31:
            raise OverflowError("block scales beyond int32")
        N, nb = n + pad, k // 32
        self.n = n
        self.qp = np.ascontiguousarray(q.reshape(N // 8, 8, nb, 16, 2).transpose(0, 2, 3, 1, 4))
        self.dp = np.ascontiguousarray(d.reshape(N // 8, 8, nb).transpose(0, 2, 1).astype(np.int32))
        self.mp = np.ascontiguousarray(m.reshape(N // 8, 8, nb).transpose(0, 2, 1).astype(np.int32))
        self.c = _QMat(N, k, _ptr(self.qp), _ptr(self.dp), _ptr(self.mp))


def panels(w) -> list[Panel]:
    """The kernels' layout of every linear weight, made once per loaded model."""
    if getattr(w, "_panels", None) is None:
        w._panels = [Panel(bw) for bw in w.linears()]
    return w._panels


class Native:
    """The forward of native.c over a KVCache; same interface as reference.Reference."""

    def __init__(self, w, lanes: int, context: int, threads: int | None = None):
        lib = library()
        if lib is None:
            raise EngineError("the integer engine's C kernels are not built")
        self.lib = lib
        self.w = w
        self.ops = NumpyOps()
        self.threads = max(1, threads or len(os.sched_getaffinity(0)))
        self.cache = KVCache(w, lanes, context)
        self.panels = panels(w)
        self._mats = (_QMat * len(self.panels))(*[p.c for p in self.panels])
        gam = [g for ly in w.layers for g in (ly.attn_norm, ly.ffn_norm)] + [w.out_norm]
        self._gamma = np.ascontiguousarray(np.concatenate(gam).astype(np.int64))
        shifts = [s for ly in w.layers for s in (ly.attn_norm_shift, ly.ffn_norm_shift)] + [w.out_norm_shift]
        self._gshift = np.asarray(shifts, dtype=np.int64)
        self._rope = np.ascontiguousarray(w.rope.astype(np.int64))
        self._exp2 = np.ascontiguousarray(EXP2_TABLE.astype(np.int64))
        em, ee = w.eps
        self.model = _Model(w.n_layer, w.dim, w.n_head, w.n_kv, w.head_dim, w.ffn, em, ee, 62 - int(em).bit_length(),
                            w.score, _ptr(self._rope), _ptr(self._exp2), _ptr(self._gamma), _ptr(self._gshift),
                            ctypes.cast(self._mats, _P))
        c = self.cache
        self._cache = _Cache(lanes, context, _ptr(c.k), _ptr(c.v), _ptr(c.ke), _ptr(c.ve), _ptr(c.bos))

    def hidden(self, tokens, lane, slot, pos):
        T = len(tokens)
        h = np.ascontiguousarray(self.w.embed.dense(np.asarray(tokens)) << 0, dtype=np.int64)
        args = [np.ascontiguousarray(x, dtype=np.int64) for x in (lane, slot, pos)]
        a = np.empty((T, self.w.dim), dtype=np.int16)
        e = np.empty((T, 1), dtype=np.int64)
        rc = self.lib.nc_forward(ctypes.byref(self.model), ctypes.byref(self._cache), T, _ptr(h), *map(_ptr, args),
                                 _ptr(a), _ptr(e), self.threads)
        if rc:
            raise OutOfMemoryError("integer engine: out of memory")
        return a.astype(np.int64), e

    def logits(self, a, e):
        T = a.shape[0]
        a16 = np.ascontiguousarray(a, dtype=np.int16)
        e64 = np.ascontiguousarray(e, dtype=np.int64)
        out = self.panels[-1]
        z = np.empty((T, out.c.N), dtype=np.int64)
        if self.lib.nc_logits(ctypes.byref(self.model), T, _ptr(a16), _ptr(e64), _ptr(z), self.threads):
            raise OutOfMemoryError("integer engine: out of memory")
        return z[:, : out.n] if out.n != out.c.N else z

    def matmul(self, index: int, a) -> np.ndarray:
        """a @ W for linear weight number `index` of weights.linears() (tests)."""
        p = self.panels[index]
        a16 = np.ascontiguousarray(a, dtype=np.int16)
        y = np.empty((a16.shape[0], p.c.N), dtype=np.float64)
        if self.lib.nc_matmul(ctypes.byref(p.c), a16.shape[0], _ptr(a16), _ptr(y), self.threads):
            raise OutOfMemoryError("integer engine: out of memory")
        return y[:, : p.n].astype(np.int64)


def code_rows(z, lanes, pred, target=None, slots=None, threads: int = 1):
    """Frequencies, (start, freq, symbol) and the bias heads' update for rows of logits, in
    C: the integers of predictors/online.Online with only its bias heads (or none) on.
    `pred` is that Online (its arrays are updated in place), or None for no predictors."""
    lib = library()
    z = np.ascontiguousarray(z, dtype=np.int64)
    T, V = z.shape
    ln = np.ascontiguousarray(lanes, dtype=np.int64)
    start, freq, sym = (np.zeros(T, np.int64) for _ in range(3))
    if pred is None:
        width = int(ln.max()) + 1
        prev, tcount, bias, ctxb, blr, clr = np.zeros(width, np.int64), np.zeros(width, np.int64), None, None, 0, 0
    else:
        prev = np.ascontiguousarray(pred.recent[:, -1])
        tcount = pred.t
        bias, ctxb, blr, clr = pred.bias, pred.ctxb, pred.cfg.bias_lr, pred.cfg.ctx_bias
    tg = None if target is None else np.ascontiguousarray(target, dtype=np.int64)
    sl = None if slots is None else np.ascontiguousarray(slots, dtype=np.int64)
    nul = ctypes.c_void_p(0)
    rc = lib.nc_code_rows(T, V, _ptr(z), _ptr(ln), nul if tg is None else _ptr(tg), nul if sl is None else _ptr(sl),
                          nul if bias is None else _ptr(bias), nul if ctxb is None else _ptr(ctxb), _ptr(prev),
                          _ptr(tcount), blr, clr, _ptr(_EXP2), _ptr(start), _ptr(freq), _ptr(sym), threads)
    if rc:
        raise OutOfMemoryError("integer engine: out of memory")
    if pred is not None:
        pred.recent[:, -1] = prev
    return start, freq, sym


_EXP2 = np.ascontiguousarray(EXP2_TABLE.astype(np.int64))
