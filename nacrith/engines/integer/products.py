"""The integer engine's matrix products on a GPU (Triton; kernels.py says where they run).

`block_linear`: y = a @ W for int16 activations, exactly, in int64:

- Blocks (the weights' own int8 blocks of 32, weights.py: w * 2**24 = d * q + m). Int8
  tensor cores take the activations as two int8 halves, a = 256 * hi + (lo + 128) with
  hi = a >> 8 and lo = (a & 255) - 128, so a block's sum is 256 * (hi . q) + (lo . q) +
  128 * sum(q): integers below 2**27 in int32. Each block's sum is scaled by d and the
  block's sum of activations by m in float64, integers below 2**53 (weights.py checks the
  bound), so exact in any order. With few rows the inner dimension is cut among programs
  too, whose sums are added into the result with int64 atomics: integers, so in any order.
  The weights stay int8 on the device (135 MB instead of 1 GB).
- Limbs, for many rows (an encoder run, its logits): the weights' integers in full,
  w[n] = w'[n] * 2**t[n] with t[n] the trailing zeros common to output n (so w' fits 22
  bits for SmolLM2, 27-28 without the shift), as three balanced int8 limbs w' = 2**16 w2 +
  2**8 w1 + w0; each of the six limb products runs over the whole inner dimension in int32
  (|sum| <= 2 * 128 * 128 * K < 2**31 for K < 2**16), with no per-block float64 scaling,
  which held the block kernel near 70 int8 TOPS.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from .kernels import INTERPRETED, launch

try:
    import triton
    import triton.language as tl

    from .kernels import ready
except ImportError:  # pragma: no cover - the float64 products are used instead
    triton = None


if triton is not None:

    @triton.jit
    def _linear_kernel(A, Q, QS, D, MN, Y, M, N, K, BPK, BM: tl.constexpr, BN: tl.constexpr,
                       PARTIAL: tl.constexpr, PDL: tl.constexpr):
        ready(PDL)
        pm = tl.program_id(0)
        pn = tl.program_id(1)
        pk = tl.program_id(2)  # blocks [pk * BPK, (pk + 1) * BPK) of the inner dimension
        rm = pm * BM + tl.arange(0, BM)
        rn = pn * BN + tl.arange(0, BN)
        rk = tl.arange(0, 32)
        mrow = rm < M
        ncol = rn < N
        acc = tl.zeros([BM, BN], dtype=tl.float64)
        for b in range(pk * BPK, tl.minimum(pk * BPK + BPK, K // 32)):
            a = tl.load(A + rm[:, None] * K + (b * 32 + rk)[None, :], mask=mrow[:, None], other=0).to(tl.int32)
            hi = a >> 8
            lo = (a & 255) - 128
            q = tl.load(Q + (b * 32 + rk)[:, None] * N + rn[None, :], mask=ncol[None, :], other=0)
            sh = tl.dot(hi.to(tl.int8), q, out_dtype=tl.int32)
            sl = tl.dot(lo.to(tl.int8), q, out_dtype=tl.int32)
            qs = tl.load(QS + b * N + rn, mask=ncol, other=0)
            s = sh * 256 + sl + 128 * qs[None, :]
            asum = tl.sum(a, axis=1)
            d = tl.load(D + b * N + rn, mask=ncol, other=0.0)
            m = tl.load(MN + b * N + rn, mask=ncol, other=0.0)
            acc += s.to(tl.float64) * d[None, :] + asum.to(tl.float64)[:, None] * m[None, :]
        out = rm[:, None] * N + rn[None, :]
        if PARTIAL:  # a part of the inner dimension: its sum (an exact integer) added in, in any order
            tl.atomic_add(Y + out, acc.to(tl.int64), mask=mrow[:, None] & ncol[None, :], sem="relaxed")
        else:
            tl.store(Y + out, acc.to(tl.int64), mask=mrow[:, None] & ncol[None, :])


class BlockMatrix(NamedTuple):
    """A BlockWeight on the device in the kernels' layouts: q [K, N] int8, and per block
    (K / 32 rows) the sum of q (int32), d and m (float64, exact integers); and for products
    of many rows the limbs (int8 [3, K, N]: w0, w1, w2), the column sums of w' (int64 [N])
    and the shifts t (int64 [N]), or None where w' does not fit three limbs. A tuple, so
    that a compiled stage takes it as tensors and serves every layer."""

    q: object
    qs: object
    d: object
    m: object
    limbs: object = None
    colsum: object = None
    shift: object = None

    @classmethod
    def of(cls, bw, device) -> "BlockMatrix":
        import numpy as np
        import torch

        n, k = bw.q.shape
        dev = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device)  # noqa: E731
        qs = bw.q.astype(np.int32).reshape(n, k // 32, 32).sum(axis=2)
        q, d, m = dev(bw.q.T), dev(bw.d.T.astype(np.float64)), dev(bw.m.T.astype(np.float64))
        return cls(q, dev(qs.T), d, m, *_limbs(dev(bw.q), dev(bw.d), dev(bw.m)))


def _limbs(q, d, m, rows: int = 4096):
    """(limbs, colsum, shift) of w * 2**24 = d q + m (q [N, K] int8, d, m [N, K / 32] int64
    on the device), or Nones where some w' is too wide or K too long for int32 sums. Made
    `rows` outputs at a time: the int64 temporaries of the logits' 49,152 would be 1.6 GB."""
    import torch

    n, k = q.shape
    if k >= 1 << 15:
        return None, None, None
    limbs = torch.empty((3, k, n), dtype=torch.int8, device=q.device)
    colsum = torch.empty(n, dtype=torch.int64, device=q.device)
    shift = torch.empty(n, dtype=torch.int64, device=q.device)
    for r0 in range(0, n, rows):
        sl = slice(r0, min(n, r0 + rows))
        w = (q[sl].to(torch.int64).reshape(-1, k // 32, 32) * d[sl, :, None] + m[sl, :, None]).reshape(-1, k)
        low = torch.where(w == 0, torch.full_like(w, 1 << 62), w & -w)  # lowest set bit of each weight
        t = torch.log2(low.amin(dim=1).double()).to(torch.int64)  # of a power of two: exact
        t = torch.where((w != 0).any(dim=1), t, torch.zeros_like(t))
        wp = w >> t[:, None]  # exact: every weight of output n is a multiple of 2**t[n]
        w0 = ((wp + 128) & 255) - 128
        rest = (wp - w0) >> 8
        w1 = ((rest + 128) & 255) - 128
        w2 = (rest - w1) >> 8
        if int(w2.abs().max()) > 127:
            return None, None, None
        limbs[:, :, sl] = torch.stack([w0, w1, w2]).to(torch.int8).transpose(1, 2)
        colsum[sl], shift[sl] = wp.sum(dim=1), t
    return limbs, colsum, shift


if triton is not None:

    @triton.jit
    def _limb_total(s24, s16, s8, s0, CS, SH, rn, ncol):
        """a.w from the int32 sums of the limb products by their weight (2**24, 2**16, 2**8, 1):
        plus 128 sum(w') for the activations' offset, shifted by t (BlockMatrix)."""
        cs = tl.load(CS + rn, mask=ncol, other=0)
        sh = tl.load(SH + rn, mask=ncol, other=0)
        y = (s24.to(tl.int64) << 24) + (s16.to(tl.int64) << 16) + (s8.to(tl.int64) << 8) + s0.to(tl.int64)
        return (y + 128 * cs[None, :]) << sh[None, :]

    @triton.jit
    def _limb_kernel(A, W, CS, SH, Y, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                     PDL: tl.constexpr):
        """y = a @ w for many rows: a = 256 hi + lo + 128 (hi, lo int8), w' = 2**16 w2 + 2**8 w1
        + w0, so a.w' = 2**24 hi.w2 + 2**16 (hi.w1 + lo.w2) + 2**8 (hi.w0 + lo.w1) + lo.w0
        + 128 sum(w'), each dot over all of K in int32 (_limb_total)."""
        ready(PDL)
        rm = tl.program_id(0) * BM + tl.arange(0, BM)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        mrow = rm < M
        ncol = rn < N
        s24 = tl.zeros([BM, BN], dtype=tl.int32)
        s16 = tl.zeros([BM, BN], dtype=tl.int32)
        s8 = tl.zeros([BM, BN], dtype=tl.int32)
        s0 = tl.zeros([BM, BN], dtype=tl.int32)
        for k0 in range(0, K, BK):
            kk = k0 + rk
            km = kk < K
            a = tl.load(A + rm[:, None] * K + kk[None, :], mask=mrow[:, None] & km[None, :], other=0).to(tl.int32)
            hi = (a >> 8).to(tl.int8)
            lo = ((a & 255) - 128).to(tl.int8)
            at = W + kk[:, None] * N + rn[None, :]
            wm = km[:, None] & ncol[None, :]
            w0 = tl.load(at, mask=wm, other=0)
            w1 = tl.load(at + K * N, mask=wm, other=0)
            w2 = tl.load(at + 2 * K * N, mask=wm, other=0)
            s24 += tl.dot(hi, w2, out_dtype=tl.int32)
            s16 += tl.dot(hi, w1, out_dtype=tl.int32) + tl.dot(lo, w2, out_dtype=tl.int32)
            s8 += tl.dot(hi, w0, out_dtype=tl.int32) + tl.dot(lo, w1, out_dtype=tl.int32)
            s0 += tl.dot(lo, w0, out_dtype=tl.int32)
        y = _limb_total(s24, s16, s8, s0, CS, SH, rn, ncol)
        tl.store(Y + rm[:, None] * N + rn[None, :], y, mask=mrow[:, None] & ncol[None, :])

    @triton.jit
    def _limb_sum_kernel(P, CS, SH, Y, M, N, BM: tl.constexpr, BN: tl.constexpr, PDL: tl.constexpr):
        """_limb_kernel's sum from the six limb products of a library product: P [2M, 3N] int32,
        rows [hi; lo] against columns [w0 | w1 | w2] (pairs summed in int32: each below 2**26)."""
        ready(PDL)
        rm = tl.program_id(0) * BM + tl.arange(0, BM)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        ncol = rn < N
        ok = (rm < M)[:, None] & ncol[None, :]
        hi = P + rm[:, None].to(tl.int64) * (3 * N) + rn[None, :]
        lo = P + (rm[:, None] + M).to(tl.int64) * (3 * N) + rn[None, :]
        h0 = tl.load(hi, mask=ok, other=0)
        h1 = tl.load(hi + N, mask=ok, other=0)
        h2 = tl.load(hi + 2 * N, mask=ok, other=0)
        g0 = tl.load(lo, mask=ok, other=0)
        g1 = tl.load(lo + N, mask=ok, other=0)
        g2 = tl.load(lo + 2 * N, mask=ok, other=0)
        y = _limb_total(h2, h1 + g2, h0 + g1, g0, CS, SH, rn, ncol)
        tl.store(Y + rm[:, None].to(tl.int64) * N + rn[None, :], y, mask=ok)


# NACRITH_LIMB_GEMM=cublas (opt-in, not yet timed on a GPU): the six limb products as one int8
# library product (torch._int_mm, cuBLAS on a GPU) of [hi; lo] against [w0 | w1 | w2], summed by
# _limb_sum_kernel; its int32 sums are exact in any order, as in _limb_kernel.
_LIMB_GEMM = os.environ.get("NACRITH_LIMB_GEMM", "triton")
_GEMM_ROWS = 8192  # rows of one library product: its [2 rows, 3 N] int32 result, 600 MB at N = 3,072
_WIDE = {}


def _wide(W: BlockMatrix):
    """The limbs side by side, [K, 3N] int8 (contiguous: cuBLAS reads a strided operand wrongly),
    made once per matrix (the source kept with it, so its address is not reused)."""
    key = W.limbs.data_ptr()
    if key not in _WIDE:
        _WIDE[key] = (W.limbs, W.limbs.permute(1, 0, 2).reshape(W.limbs.shape[1], -1).contiguous())
    return _WIDE[key][1]


def _library_limbs(a, W: BlockMatrix, y) -> None:
    """y = a @ W by _wide's one int8 product a slice of rows at a time (each more than 16 rows,
    as cuBLAS wants, since a limb product is taken from _LIMB_ROWS = 1,024 rows on)."""
    import torch

    M, N = y.shape
    cuts = triton.cdiv(M, _GEMM_ROWS)
    step = triton.cdiv(M, cuts)
    wide = _wide(W)
    for r0 in range(0, M, step):
        part = a[r0 : r0 + step]
        m = part.shape[0]
        p = torch._int_mm(torch.cat([part >> 8, (part & 255) - 128]).to(torch.int8), wide)
        grid = (triton.cdiv(m, 64), triton.cdiv(N, 128))
        _limb_sum_kernel[grid](p, W.colsum, W.shift, y[r0 : r0 + m], m, N, BM=64, BN=128, **launch(a.device))


# Rows from which a product takes the limbs (_limb_kernel) rather than the blocks. On an H100
# (benchmarks/results/gpu-linear-h100-limbs.md) limbs in 128 x 64 tiles ran 1.0-1.4x the
# blocks' speed from 3,200 rows (37-53 against 33-38 TOPS of 2 M N K) and from 0.75x to 1.25x
# at 256; both stay far below the int8 tensor cores' rate (their int32 sums spill registers).
_LIMB_ROWS = int(os.environ.get("NACRITH_LIMB_ROWS", "1024"))


def _limb_tiles(M: int, N: int) -> tuple[int, int, int, int]:
    """(rows, columns, inner, warps) of the limb kernel's tiles (gpu_linear.py times others:
    64 x 128 and 128 x 128 spilled 126 and more registers a thread and ran at half the speed)."""
    if INTERPRETED:
        return 32, 64, 64, 4
    return 128, 64, 64, 8


def _tiles(M: int, N: int) -> tuple[int, int, int]:
    """(rows, columns, warps) of a product's tiles for M rows (benchmarks/gpu_linear.py
    times others; the tiling changes no integer)."""
    if INTERPRETED:  # it pays per program
        return (16 if M <= 16 else (32 if M <= 32 else 64)), 128, 4
    if M <= 32:  # narrow tiles spread few rows over more SMs
        return (16 if M <= 16 else 32), 32, 4
    # 32 x 64: the float64 sums of a 64 x 128 tile spilled registers (100 a thread), and the
    # products of 256 to 39,808 rows ran at 40-57 int8 TOPS against 66-77 with these (H100,
    # benchmarks/results/gpu-linear-h100.md)
    return 32, 64, 4


# programs a cut product aims at: enough to fill an H100/H200's SMs; the interpreter runs
# them one after another, and any cut gives the same integers
_PROGRAMS = 64 if INTERPRETED else 1024


def _inner_cuts(M: int, N: int, blocks: int) -> int:
    """Programs the inner dimension's `blocks` blocks of 32 are cut among: few rows (the
    decoder's steps) cut it, so that a narrow product still runs on every SM; its partial
    sums are exact (below 2**53) and added with atomics into a zeroed result."""
    if M > 32:
        return 1
    BM, BN, _ = _tiles(M, N)
    tiles = triton.cdiv(M, BM) * triton.cdiv(N, BN)
    SK = max(1, min(blocks // 2, triton.cdiv(_PROGRAMS, tiles)))
    return triton.cdiv(blocks, triton.cdiv(blocks, SK))


def _by_limbs(M: int, W: BlockMatrix) -> bool:
    return W.limbs is not None and M >= _LIMB_ROWS


def cuts(M: int, W: BlockMatrix) -> bool:
    """Whether block_linear of M rows adds its result into a zeroed buffer."""
    return not _by_limbs(M, W) and _inner_cuts(M, W.q.shape[1], W.q.shape[0] // 32) > 1


def block_linear(a, W: BlockMatrix, out=None):
    """a [M, K] (int16 values, any integer dtype) @ W -> int64 [M, N], exactly. out, where
    given, is the result's buffer, all zeros where the inner dimension is cut (`cuts`)."""
    import torch

    M, K = a.shape
    N = W.q.shape[1]
    if K != W.q.shape[0]:
        raise ValueError("inner dimensions differ")
    a = a.to(torch.int32).contiguous()
    if _by_limbs(M, W):
        y = out if out is not None else torch.empty((M, N), dtype=torch.int64, device=a.device)
        if _LIMB_GEMM == "cublas":
            _library_limbs(a, W, y)
            return y
        BM, BN, BK, warps = _limb_tiles(M, N)
        grid = (triton.cdiv(M, BM), triton.cdiv(N, BN))
        _limb_kernel[grid](a, W.limbs, W.colsum, W.shift, y, M, N, K, BM=BM, BN=BN, BK=BK, num_warps=warps,
                           **launch(a.device))
        return y
    BM, BN, warps = _tiles(M, N)
    blocks = K // 32
    SK = _inner_cuts(M, N, blocks)
    BPK = triton.cdiv(blocks, SK)
    grid = (triton.cdiv(M, BM), triton.cdiv(N, BN), SK)
    y = out if out is not None else (torch.empty if SK == 1 else torch.zeros)((M, N), dtype=torch.int64,
                                                                            device=a.device)
    _linear_kernel[grid](a, W.q, W.qs, W.d, W.m, y, M, N, K, BPK, BM=BM, BN=BN, PARTIAL=SK > 1, num_warps=warps,
                         **launch(a.device))
    return y

