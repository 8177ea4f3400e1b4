"""Exact integer helpers of the integer engine, on any ops (nacrith/xp.py).

The forward (forward.py) is written once against these. Every function is exact
integer arithmetic on int64; where a float appears (a square-root estimate, the
exponent of a float64) its result is corrected to the exact integer, so numpy,
torch on a CPU and torch on a GPU give the same integers.
"""

from __future__ import annotations


from ...xp import NumpyOps, TorchOps, ops_for  # noqa: F401 (re-exported for the engine's modules)


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
