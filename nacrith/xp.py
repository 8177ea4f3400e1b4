"""The few array operations on which numpy and torch differ, behind one interface.

The online predictors, the integer quantiser and the integer engine are written
once against `NumpyOps` / `TorchOps` and so run on numpy arrays (CPU) or torch
tensors (CPU or GPU). Everything is int64; every operation used is exact integer
arithmetic, or a float estimate corrected to the exact integer, so both give the
same integers.
"""

from __future__ import annotations

import numpy as np


class NumpyOps:
    name = "numpy"
    int64 = np.int64

    @staticmethod
    def asarray(values):
        return np.asarray(values, dtype=np.int64)

    const = asarray

    @staticmethod
    def zeros(shape):
        return np.zeros(shape, dtype=np.int64)

    @staticmethod
    def arange(n):
        return np.arange(n, dtype=np.int64)

    where = staticmethod(np.where)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def clip(a, lo, hi):
        return np.clip(a, lo, hi)

    @staticmethod
    def amax(a, axis, keepdims=True):
        return a.max(axis=axis, keepdims=keepdims)

    @staticmethod
    def amin(a, axis, keepdims=True):
        return a.min(axis=axis, keepdims=keepdims)

    @staticmethod
    def sum(a, axis, keepdims=True):
        return a.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def rowsum(a):
        return a.sum(axis=-1, keepdims=True)

    @staticmethod
    def fdiv(num, den):
        """Floor division of non-negative int64 values (den > 0)."""
        return num // den

    @staticmethod
    def argmax(a):
        return np.argmax(a, axis=-1)  # numpy returns the first index on ties

    @staticmethod
    def cumsum(a):
        return np.cumsum(a, axis=-1)

    @staticmethod
    def cat(arrays, axis):
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def f64(a):
        return a.astype(np.float64)

    @staticmethod
    def i64(a):
        return a.astype(np.int64)

    @staticmethod
    def frexp_exp(a):
        return np.frexp(a.astype(np.float64))[1].astype(np.int64)

    @staticmethod
    def floor_sqrt_estimate(a):
        return np.floor(np.sqrt(a.astype(np.float64))).astype(np.int64)


class TorchOps:
    name = "torch"

    def __init__(self, device):
        import torch

        self.torch = self.t = torch
        self.device = torch.device(device)
        self.int64 = torch.int64

    def asarray(self, values):
        return self.t.as_tensor(np.asarray(values, dtype=np.int64), device=self.device)

    const = asarray

    def zeros(self, shape):
        return self.t.zeros(shape, dtype=self.t.int64, device=self.device)

    def arange(self, n):
        return self.t.arange(n, dtype=self.t.int64, device=self.device)

    def where(self, c, a, b):
        # Python ints stay scalars: making tensors of them here would copy from the
        # host inside a captured CUDA graph
        return self.t.where(c, a, b)

    def minimum(self, a, b):
        return self.t.minimum(a, b) if hasattr(b, "shape") else self.t.clamp(a, max=b)

    def maximum(self, a, b):
        return self.t.maximum(a, b) if hasattr(b, "shape") else self.t.clamp(a, min=b)

    def clip(self, a, lo, hi):
        return self.t.clamp(a, lo, hi)

    @staticmethod
    def amax(a, axis, keepdims=True):
        return a.amax(dim=axis, keepdim=keepdims)

    @staticmethod
    def amin(a, axis, keepdims=True):
        return a.amin(dim=axis, keepdim=keepdims)

    @staticmethod
    def sum(a, axis, keepdims=True):
        return a.sum(dim=axis, keepdim=keepdims)

    @staticmethod
    def rowsum(a):
        return a.sum(dim=-1, keepdim=True)

    def fdiv(self, num, den):
        # a float64 estimate (off by at most one for num < 2**62), then corrected:
        # GPUs divide 64-bit integers slowly
        t = self.t
        q = t.floor(num.double() / den.double()).to(t.int64)
        r = num - q * den
        return q - (r < 0).to(t.int64) + (r >= den).to(t.int64)

    def argmax(self, a):
        # torch.argmax does not promise the first index on ties; take it explicitly
        t = self.t
        idx = t.arange(a.shape[-1], device=a.device)
        return t.where(a == a.amax(dim=-1, keepdim=True), idx, a.shape[-1]).amin(dim=-1)

    def cumsum(self, a):
        return self.t.cumsum(a, dim=-1)

    def cat(self, arrays, axis):
        return self.t.cat(arrays, dim=axis)

    def f64(self, a):
        return a.to(self.t.float64)

    def i64(self, a):
        return a.to(self.t.int64)

    def frexp_exp(self, a):
        return self.t.frexp(a.to(self.t.float64)).exponent.to(self.t.int64)

    def floor_sqrt_estimate(self, a):
        return self.t.floor(self.t.sqrt(a.to(self.t.float64))).to(self.t.int64)


def ops_for(array) -> NumpyOps | TorchOps:
    if isinstance(array, np.ndarray):
        return NumpyOps()
    return TorchOps(array.device)


def rowmax(a):
    return a.max(axis=-1, keepdims=True) if isinstance(a, np.ndarray) else a.amax(dim=-1, keepdim=True)
