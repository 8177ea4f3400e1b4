"""Triton kernels for the integer engine's row stages: one launch per stage of a layer.

forward.py's elementwise work between the products (the norms, the split of the qkv
rows into rotated heads, the merge of attention's heads, the gated unit, the rotation
angles) runs here as one program per row (or per row and head), with every step the
int64 arithmetic of ops.py and forward.py: bit lengths from the float64 exponent and
corrected, round-half-up shifts, floor divisions, a corrected square root. The
integers are therefore forward.py's; tests/test_rows.py compares them with forward.py's
functions on torch, at the bounds too.

Why: a decoder step of two lanes was 919 launches (torch.compile makes a few kernels of
every stage, and every product's zeroed result is one more), each a few microseconds
whatever its work. Here a layer is twelve: four products, five row stages, three
attention passes. A product of few rows adds its parts into a zeroed buffer (atomics);
the row stage that reads the buffer zeroes it again (`clear`), so no launch is spent
on zeroing. A reader passes a barrier before it zeroes: several warps hold copies of a
cell, and without it one warp's zeroing overtook another's read on an H100 (with it
tests/test_rows.py passes there, 2026-12-07). The default on a GPU; NACRITH_ROW_KERNELS=0
(groups.py) takes the compiled stages instead.
"""

from __future__ import annotations

from ...codec.quantize import LOG2E_FIX, TABLE_BITS
from . import spec
from .kernels import launch

try:
    import triton
    import triton.language as tl

    from .kernels import _quotient, ready
except ImportError:  # pragma: no cover - groups.py keeps its compiled stages instead
    triton = None

_SIGMOID_CLAMP = 1 << 31  # forward._SIGMOID_CLAMP


if triton is not None:

    @triton.jit
    def _bitlen(a):
        """ops.bitlen: the bit length of a >= 0 (0 for 0), from the float64 exponent,
        corrected where the conversion rounded up to the next power of two."""
        b = ((a.to(tl.float64).to(tl.int64, bitcast=True) >> 52) & 0x7FF) - 1022
        b = tl.where(a == 0, 0, b)
        over = (a >> tl.minimum(tl.maximum(b - 1, 0), 62)) == 0
        return b - (over & (b > 0)).to(tl.int64)

    @triton.jit
    def _shift(a, s):
        """ops.shift: round(a * 2**-s), halves up, for any integer s (s < 0: left shift)."""
        s = s.to(tl.int64)
        right = tl.minimum(tl.maximum(s, 0), 62)
        left = tl.minimum(tl.maximum(-s, 0), 62)
        half = ((right * 0 + 1) << right) >> 1
        return tl.where(s > 0, (a + half) >> right, a << left)

    @triton.jit
    def _round(a, n: tl.constexpr):
        """ops.shift by a constant n > 0."""
        return (a + (1 << (n - 1))) >> n

    @triton.jit
    def _isqrt(n):
        """ops.isqrt: floor(sqrt(n)), a float64 estimate corrected to the exact value."""
        r = tl.sqrt(n.to(tl.float64)).to(tl.int64)
        r = r - (r * r > n).to(tl.int64)
        r = r - (r * r > n).to(tl.int64)
        r = r + ((r + 1) * (r + 1) <= n).to(tl.int64)
        r = r + ((r + 1) * (r + 1) <= n).to(tl.int64)
        return r

    @triton.jit
    def _quantise(x, bits: tl.constexpr):
        """ops.quantise over one row (or head): mantissas below 2**(bits-1) and their exponent."""
        e = _bitlen(tl.max(tl.abs(x), axis=0)) - (bits - 1)
        lim = (1 << (bits - 1)) - 1
        return tl.minimum(tl.maximum(_shift(x, e), -lim), lim), e

    @triton.jit
    def _resid_norm_kernel(H, Y, YE, A, AE, G, GS, EPS, dim, ee, cap, ADD: tl.constexpr, CLEAR: tl.constexpr,
                           BLOCK: tl.constexpr, NORM: tl.constexpr, RES: tl.constexpr, UNIT: tl.constexpr,
                           BITS: tl.constexpr, PDL: tl.constexpr):
        """forward.resid_norm (ADD) or forward.rmsnorm of one row; the residual kept in H."""
        ready(PDL)
        r = tl.program_id(0).to(tl.int64)
        c = tl.arange(0, BLOCK)
        m = c < dim
        h = tl.load(H + r * dim + c, mask=m, other=0)
        if ADD:
            y = tl.load(Y + r * dim + c, mask=m, other=0)
            if CLEAR:
                tl.debug_barrier()  # every warp has read its row first
                tl.store(Y + r * dim + c, tl.zeros([BLOCK], tl.int64), mask=m)
            h = h + _shift(y, -(tl.load(YE + r) - UNIT + RES))
            tl.store(H + r * dim + c, h, mask=m)
        s = tl.maximum(_bitlen(tl.max(tl.abs(h), axis=0)) - NORM, -NORM)
        x = tl.where(s >= 0, h >> tl.minimum(tl.maximum(s, 0), 62), h << tl.minimum(tl.maximum(-s, 0), 62))
        mean = tl.sum(x * x, axis=0) // dim  # non-negative: `//` floors
        em = tl.load(EPS)
        k = ee + 2 * (RES - s)
        eps_x = tl.where(k >= 0, em << tl.minimum(tl.maximum(k, 0), cap), em >> tl.minimum(tl.maximum(-k, 0), 62))
        root = _isqrt(mean + eps_x)
        g = tl.load(G + c, mask=m, other=0)
        # |x * g| < 2**26 * |gamma| and root >= 1: far inside _quotient's bounds
        a, e = _quantise(_quotient(x * g, root, 1.0 / root.to(tl.float64)), BITS)
        tl.store(A + r * dim + c, a.to(tl.int32), mask=m)
        tl.store(AE + r, e - tl.load(GS))

    @triton.jit
    def _qkv_kernel(Y, YE, COS, SIN, LANE, SLOT, QM, QE, K, KE, V, VE, BOS, l_r, t_r, R, C, N,
                    NH: tl.constexpr, NKV: tl.constexpr, G: tl.constexpr, HD: tl.constexpr, CLEAR: tl.constexpr,
                    QK: tl.constexpr, VB: tl.constexpr, UNIT: tl.constexpr, RB: tl.constexpr, PDL: tl.constexpr):
        """forward.qkv_split and the key/value store of one row's head: a query head into
        QM/QE (head-major, kernels.attention's layout), a key head rotated into K/KE at its
        lane's slot (unrotated into BOS at slot 0), a value head into V/VE."""
        ready(PDL)
        t = tl.program_id(0).to(tl.int64)
        j = tl.program_id(1)
        i = tl.arange(0, HD // 2)
        at = Y + t * N + j * HD + 2 * i
        ya = tl.load(at)
        yb = tl.load(at + 1)
        if CLEAR:
            # a head is fewer cells than the program's threads: copies of a cell sit in several
            # warps, and one warp must not zero it before another has read it
            tl.debug_barrier()
            tl.store(at, tl.zeros([HD // 2], tl.int64))
            tl.store(at + 1, tl.zeros([HD // 2], tl.int64))
        top = tl.maximum(tl.max(tl.abs(ya), axis=0), tl.max(tl.abs(yb), axis=0))
        bits = tl.where(j < NH + NKV, QK, VB).to(tl.int64)
        ex = _bitlen(top) - (bits - 1)
        lim = (1 << (bits - 1)) - 1
        ma = tl.minimum(tl.maximum(_shift(ya, ex), -lim), lim)
        mb = tl.minimum(tl.maximum(_shift(yb, ex), -lim), lim)
        ee = ex + tl.load(YE + t) - UNIT
        lane = tl.load(LANE + t * l_r)
        slot = tl.load(SLOT + t * t_r)
        cs = tl.load(COS + t * (HD // 2) + i)
        sn = tl.load(SIN + t * (HD // 2) + i)
        ra = _round(ma * cs - mb * sn, RB)
        rb = _round(ma * sn + mb * cs, RB)
        if j < NH:
            idx = ((lane * NKV + j // G) * R + (t - lane * R)) * G + j % G
            tl.store(QM + idx * HD + 2 * i, ra.to(tl.int32))
            tl.store(QM + idx * HD + 2 * i + 1, rb.to(tl.int32))
            tl.store(QE + idx, ee)
        elif j < NH + NKV:
            hk = lane * NKV + (j - NH)
            cell = hk * C + slot
            tl.store(K + cell * HD + 2 * i, ra.to(tl.int16))
            tl.store(K + cell * HD + 2 * i + 1, rb.to(tl.int16))
            tl.store(KE + cell, ee.to(tl.int32))
            if slot == 0:
                tl.store(BOS + hk * HD + 2 * i, ma.to(tl.int16))
                tl.store(BOS + hk * HD + 2 * i + 1, mb.to(tl.int16))
        else:
            cell = (lane * NKV + (j - NH - NKV)) * C + slot
            tl.store(V + cell * HD + 2 * i, ma.to(tl.int16))
            tl.store(V + cell * HD + 2 * i + 1, mb.to(tl.int16))
            tl.store(VE + cell, ee.to(tl.int32))

    @triton.jit
    def _merge_kernel(PV, OE, A, AE, R, NH: tl.constexpr, NKV: tl.constexpr, G: tl.constexpr, HD: tl.constexpr,
                      BH: tl.constexpr, CLEAR: tl.constexpr, BITS: tl.constexpr, PDL: tl.constexpr):
        """forward.quantise_groups of one row's attention heads (head-major, as
        kernels.attention leaves them) into one row of int16 mantissas."""
        ready(PDL)
        t = tl.program_id(0).to(tl.int64)
        lane = t // R
        h = tl.arange(0, BH)
        hm = h < NH
        idx = ((lane * NKV + h // G) * R + (t - lane * R)) * G + h % G
        d = tl.arange(0, HD)
        at = PV + idx[:, None] * HD + d[None, :]
        m = tl.load(at, mask=hm[:, None], other=0)
        if CLEAR:
            tl.debug_barrier()  # as in _qkv_kernel
            tl.store(at, tl.zeros([BH, HD], tl.int64), mask=hm[:, None])
        e = tl.load(OE + idx, mask=hm, other=0)
        top = tl.max(tl.abs(m), axis=1)
        lead = tl.where(hm & (top > 0), e + _bitlen(top), -(1 << 40))
        E = tl.max(lead, axis=0) - (BITS - 1)
        lim = (1 << (BITS - 1)) - 1
        out = tl.minimum(tl.maximum(_shift(m, (E - e)[:, None]), -lim), lim)
        tl.store(A + t * (NH * HD) + h[:, None] * HD + d[None, :], out.to(tl.int32), mask=hm[:, None])
        tl.store(AE + t, tl.where(E < -(1 << 39), 0, E))

    @triton.jit
    def _swiglu_kernel(Y, YE, A, AE, TABLE, F, CLEAR: tl.constexpr, BLOCK: tl.constexpr, UNIT: tl.constexpr,
                       BITS: tl.constexpr, L2E: tl.constexpr, TB: tl.constexpr, CLAMP: tl.constexpr, PDL: tl.constexpr):
        """forward.swiglu of one row: silu(gate) * up as mantissas and an exponent."""
        ready(PDL)
        t = tl.program_id(0).to(tl.int64)
        c = tl.arange(0, BLOCK)
        m = c < F
        yg = tl.load(Y + t * 2 * F + c, mask=m, other=0)
        yu = tl.load(Y + t * 2 * F + F + c, mask=m, other=0)
        if CLEAR:
            tl.debug_barrier()
            tl.store(Y + t * 2 * F + c, tl.zeros([BLOCK], tl.int64), mask=m)
            tl.store(Y + t * 2 * F + F + c, tl.zeros([BLOCK], tl.int64), mask=m)
        e = tl.load(YE + t)
        g = tl.minimum(tl.maximum(_shift(yg, -(e - UNIT + 16)), -CLAMP), CLAMP)  # Q16 nats
        um, ue = _quantise(yu, BITS)
        s = (g * L2E) >> 16  # forward.sigmoid_q24: 1 / (1 + 2**-s), Q24
        a = tl.abs(s)
        w = tl.load(TABLE + ((a & 0xFFFF) >> (16 - TB))) >> tl.minimum(a >> 16, 62)
        den = (1 << 30) + w
        small = _quotient(w << 24, den, 1.0 / den.to(tl.float64))  # below 2**24
        sig = tl.where(s >= 0, (1 << 24) - small, small)
        p, e2 = _quantise(((g * sig) >> 24) * um, BITS)
        tl.store(A + t * F + c, p.to(tl.int32), mask=m)
        tl.store(AE + t, e2 + ue + e - UNIT - 16)

    @triton.jit
    def _rope_kernel(POS, BASE, COS, SIN, p_r, HALF: tl.constexpr, NB: tl.constexpr, FIX: tl.constexpr,
                     RB: tl.constexpr, PDL: tl.constexpr):
        """forward.rope_rows of one row: its position's rotation composed from the base
        rotations of its set bits in Q30, lowest bit first, then rounded to Q15."""
        ready(PDL)
        t = tl.program_id(0).to(tl.int64)
        i = tl.arange(0, HALF)
        pos = tl.load(POS + t * p_r)
        c = tl.full([HALF], 1 << FIX, tl.int64)
        s = tl.zeros([HALF], tl.int64)
        for b in tl.static_range(NB):
            cb = tl.load(BASE + (b * HALF + i) * 2)
            sb = tl.load(BASE + (b * HALF + i) * 2 + 1)
            on = ((pos >> b) & 1) == 1
            nc = _round(c * cb - s * sb, FIX)
            ns = _round(s * cb + c * sb, FIX)
            c = tl.where(on, nc, c)
            s = tl.where(on, ns, s)
        tl.store(COS + t * HALF + i, _round(c, FIX - RB))
        tl.store(SIN + t * HALF + i, _round(s, FIX - RB))


def _block(n: int) -> int:
    return triton.next_power_of_2(n)


def rope(base, pos):
    """forward.rope_rows(o, base, pos): (cos, sin) int64 [rows, half]."""
    import torch

    T, half = pos.shape[0], base.shape[1]
    cos = torch.empty((T, half), dtype=torch.int64, device=pos.device)
    sin = torch.empty_like(cos)
    _rope_kernel[(T,)](pos, base, cos, sin, pos.stride(0), HALF=half, NB=spec.POS_BITS, FIX=spec.ROPE_FIX,
                       RB=spec.ROPE_BITS, **launch(pos.device))
    return cos, sin


def resid_norm(h, y, ye, a, ae, gamma, gshift, eps, clear: bool = False) -> None:
    """forward.resid_norm with y (h updated in place), or forward.rmsnorm of h with y None:
    mantissas into a (int32 [T, dim]) and exponents into ae (int64 [T]). gamma [dim] and
    gshift (one element) int64 tensors; eps = (mantissa as a one-element int64 tensor,
    exponent, cap) as Forward keeps it. clear: zero y after reading it."""
    T, dim = h.shape
    em, ee, cap = eps
    add = y is not None
    _resid_norm_kernel[(T,)](h, y if add else h, ye if add else ae, a, ae, gamma, gshift, em, dim, ee, cap,
                             ADD=add, CLEAR=clear and add, BLOCK=_block(dim), NORM=spec.NORM_BITS, RES=spec.RESID,
                             UNIT=spec.WEIGHT_UNIT, BITS=spec.ACT_BITS, **launch(h.device))


def qkv(y, ye, cos, sin, lane, slot, q, qe, K, KE, V, VE, bos, R: int, nh: int, nkv: int, clear: bool = False) -> None:
    """forward.qkv_split of the qkv product's rows y [T, (nh + 2 nkv) hd] (exponents ye
    [T]) and the store of their keys and values: queries into q [L, nkv, R g, hd] (int32)
    and qe [L, nkv, R g] (int64), rotated keys and values into the windows K, V [L, nkv,
    C, hd] (int16) and KE, VE [L, nkv, C] (int32) at (lane, slot), unrotated keys of
    slot 0 into bos [L, nkv, hd]."""
    T, N = y.shape
    hd = K.shape[3]
    _qkv_kernel[(T, nh + 2 * nkv)](y, ye, cos, sin, lane, slot, q, qe, K, KE, V, VE, bos, lane.stride(0),
                                   slot.stride(0), R, K.shape[2], N, NH=nh, NKV=nkv, G=nh // nkv, HD=hd,
                                   CLEAR=clear, QK=spec.QK_BITS, VB=spec.V_BITS, UNIT=spec.WEIGHT_UNIT,
                                   RB=spec.ROPE_BITS, **launch(y.device))


def merge(pv, oe, a, ae, R: int, nh: int, clear: bool = False) -> None:
    """forward.quantise_groups of attention's heads (pv [L, nkv, R g, hd], oe [L, nkv,
    R g], head-major) into a (int32 [T, nh hd]) and ae (int64 [T])."""
    L, nkv, _, hd = pv.shape
    _merge_kernel[(L * R,)](pv, oe, a, ae, R, NH=nh, NKV=nkv, G=nh // nkv, HD=hd, BH=_block(nh), CLEAR=clear,
                            BITS=spec.ACT_BITS, **launch(pv.device))


def swiglu(y, ye, a, ae, table, clear: bool = False) -> None:
    """forward.swiglu of y [T, 2F] (exponents ye [T]) into a (int32 [T, F]) and ae [T]."""
    T, F2 = y.shape
    _swiglu_kernel[(T,)](y, ye, a, ae, table, F2 // 2, CLEAR=clear, BLOCK=_block(F2 // 2), UNIT=spec.WEIGHT_UNIT,
                         BITS=spec.ACT_BITS, L2E=LOG2E_FIX, TB=TABLE_BITS, CLAMP=_SIGMOID_CLAMP,
                         **launch(y.device))
