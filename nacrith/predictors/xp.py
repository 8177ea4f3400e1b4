"""The few array operations on which numpy and torch differ, behind one interface.

The online predictors are written once against `Ops` and run on numpy arrays
(llama.cpp lanes, CPU) or torch tensors (GPU groups). Everything is int64 and
every operation used is exact integer arithmetic, so both give the same integers.
"""

from __future__ import annotations

import numpy as np


class NumpyOps:
    name = "numpy"

    def zeros(self, shape):
        return np.zeros(shape, dtype=np.int64)

    def arange(self, n):
        return np.arange(n, dtype=np.int64)

    def const(self, values):
        return np.asarray(values, dtype=np.int64)

    where = staticmethod(np.where)

    @staticmethod
    def clip(a, lo, hi):
        return np.clip(a, lo, hi)

    @staticmethod
    def fdiv(num, den):
        """Floor division of non-negative int64 values (den > 0)."""
        return num // den

    @staticmethod
    def rowsum(a):
        return a.sum(axis=-1, keepdims=True)

    @staticmethod
    def argmax(a):
        return np.argmax(a, axis=-1)  # numpy returns the first index on ties

    @staticmethod
    def cumsum(a):
        return np.cumsum(a, axis=-1)


class TorchOps:
    name = "torch"

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def zeros(self, shape):
        return self.torch.zeros(shape, dtype=self.torch.int64, device=self.device)

    def arange(self, n):
        return self.torch.arange(n, dtype=self.torch.int64, device=self.device)

    def const(self, values):
        return self.torch.as_tensor(np.asarray(values, dtype=np.int64), device=self.device)

    def where(self, c, a, b):
        # Python ints stay scalars: making tensors of them here would copy from the
        # host inside a captured CUDA graph
        return self.torch.where(c, a, b)

    def clip(self, a, lo, hi):
        return self.torch.clamp(a, lo, hi)

    def fdiv(self, num, den):
        # a float64 estimate (off by at most one for num < 2**62), then corrected:
        # GPUs divide 64-bit integers slowly
        t = self.torch
        q = t.floor(num.double() / den.double()).to(t.int64)
        r = num - q * den
        return q - (r < 0).to(t.int64) + (r >= den).to(t.int64)

    @staticmethod
    def rowsum(a):
        return a.sum(dim=-1, keepdim=True)

    def argmax(self, a):
        # torch.argmax does not promise the first index on ties; take it explicitly
        t = self.torch
        idx = t.arange(a.shape[-1], device=a.device)
        return t.where(a == a.amax(dim=-1, keepdim=True), idx, a.shape[-1]).amin(dim=-1)

    def cumsum(self, a):
        return self.torch.cumsum(a, dim=-1)


def ops_for(array) -> NumpyOps | TorchOps:
    if isinstance(array, np.ndarray):
        return NumpyOps()
    return TorchOps(array.device)


def rowmax(a):
    return a.max(axis=-1, keepdims=True) if isinstance(a, np.ndarray) else a.amax(dim=-1, keepdim=True)
