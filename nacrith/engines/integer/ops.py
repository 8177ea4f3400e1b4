"""Integer primitives of the integer engine, for numpy arrays and torch tensors.

The forward (forward.py) is written once against these. Every function is exact
integer arithmetic on int64; where a float appears (a square-root estimate, a
float64 matrix product of integers below 2**53) its result is either corrected
to the exact integer or exact by construction, so numpy, torch on a CPU and
torch on a GPU give the same integers.
"""

from __future__ import annotations

import numpy as np


class NumpyOps:
    name = "numpy"
    int64 = np.int64

    @staticmethod
    def asarray(a):
        return np.asarray(a, dtype=np.int64)

    @staticmethod
    def zeros(shape):
        return np.zeros(shape, dtype=np.int64)

    @staticmethod
    def amax(a, axis, keepdims=True):
        return a.max(axis=axis, keepdims=keepdims)

    @staticmethod
    def sum(a, axis, keepdims=True):
        return a.sum(axis=axis, keepdims=keepdims)

    where = staticmethod(np.where)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def clip(a, lo, hi):
        return np.clip(a, lo, hi)

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

        self.t = torch
        self.device = torch.device(device)
        self.int64 = torch.int64

    def asarray(self, a):
        return self.t.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)

    def zeros(self, shape):
        return self.t.zeros(shape, dtype=self.t.int64, device=self.device)

    @staticmethod
    def amax(a, axis, keepdims=True):
        return a.amax(dim=axis, keepdim=keepdims)

    @staticmethod
    def sum(a, axis, keepdims=True):
        return a.sum(dim=axis, keepdim=keepdims)

    def where(self, c, a, b):
        return self.t.where(c, a, b)

    def minimum(self, a, b):
        return self.t.minimum(a, b) if hasattr(b, "shape") else self.t.clamp(a, max=b)

    def maximum(self, a, b):
        return self.t.maximum(a, b) if hasattr(b, "shape") else self.t.clamp(a, min=b)

    def clip(self, a, lo, hi):
        return self.t.clamp(a, lo, hi)

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


def ops_for(array):
    if isinstance(array, np.ndarray):
        return NumpyOps()
    return TorchOps(array.device)


# -- exact helpers on any ops ---------------------------------------------------------


def bitlen(o, a):
    """Bit length of non-negative int64 values (0 for 0). frexp of the float64 value,
    corrected where the conversion rounded up to the next power of two."""
    b = o.frexp_exp(a)
    b = o.where(a == 0, 0, b)
    over = (a >> o.clip(b - 1, 0, 62)) == 0  # a < 2**(b-1): the float rounded up
    return b - o.i64(over & (b > 0))


def shift(o, a, s):
    """round(a * 2**-s), halves rounded up, for any integer s (s < 0: exact left shift)."""
    right = o.clip(s, 0, 62)
    left = o.clip(-s, 0, 62)
    half = (right * 0 + 1 << right) >> 1
    return o.where(s > 0, (a + half) >> right, a << left)


def isqrt(o, n):
    """floor(sqrt(n)) for 0 <= n < 2**62: a float estimate, corrected to the exact value."""
    r = o.floor_sqrt_estimate(n)
    for _ in range(2):
        r = r - o.i64(r * r > n)
    for _ in range(2):
        r = r + o.i64((r + 1) * (r + 1) <= n)
    return r


def quantise(o, x, bits: int, axes):
    """Mantissas |m| < 2**(bits-1) with one exponent per group (the axes reduced):
    x ~ m * 2**e. e = bitlen(max |x|) - (bits - 1), negative for small groups."""
    top = abs(x)
    for ax in sorted(axes, reverse=True):
        top = o.amax(top, ax)
    e = bitlen(o, top) - (bits - 1)
    lim = (1 << (bits - 1)) - 1
    return o.clip(shift(o, x, e), -lim, lim), e


def floor_div(a, b):
    """Floor division of int64 values (b > 0); `//` floors for numpy and torch alike."""
    return a // b
