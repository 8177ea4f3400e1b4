"""Triton kernels for the integer engine on a GPU: the same integers, fewer and faster kernels.

Two operations replace the float64 products of groups.py:

- `block_linear`: y = a @ W for int16 activations and the weights' own int8 blocks
  (weights.py: w * 2**24 = d * q + m per block of 32). Int8 tensor cores take the
  activations as two int8 halves, a = 256 * hi + (lo + 128) with hi = a >> 8 and
  lo = (a & 255) - 128, so a block's sum is 256 * (hi . q) + (lo . q) + 128 * sum(q):
  integers below 2**27 in int32. Each block's sum is scaled by d and the block's sum of
  activations by m in float64, integers below 2**53 (weights.py checks the bound), so
  exact in any order. With few rows the inner dimension is cut among programs too, whose
  sums are added into the result with int64 atomics: integers, so in any order. The
  weights stay int8 on the device (135 MB instead of 1 GB).
- `attention`: the integer softmax of forward.py over a window, in three kernels, one
  pass over the keys each (the maximum score, the sum of the weights, then the
  probabilities and their product with the values), so no score matrix is ever stored. Query and key mantissas
  (below 2**12 after rotation) enter the int8 dots as 64 * hi + lo (three products a
  score: _scores), values likewise,
  probabilities (at most 2**16) as three 7-bit pieces; every dot is exact in int32.

- `block_linear` of many rows (an encoder run, a decoder step of many lanes): the
  weights' integers in full, w[n] = w'[n] * 2**t[n] with t[n] the trailing zeros common to
  output n (so w' fits 22 bits for SmolLM2, 27-28 without the shift), as three balanced
  int8 limbs w' = 2**16 w2 + 2**8 w1 + w0; each of the six limb products runs over the
  whole inner dimension in int32 (|sum| <= 2 * 128 * 128 * K < 2**31 for K < 2**16), with
  no per-block float64 scaling, which held the block kernel near 70 int8 TOPS.

Both take the place of their float64 versions only where Triton runs on a CUDA device of
compute capability 8.0 or later (`available`; NACRITH_KERNELS=0 keeps the float64
products); tests/test_kernels.py compares their integers with the float64 products', on a
GPU or in Triton's interpreter.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from . import spec

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the float64 products are used instead
    triton = None


# Set when this module was imported: triton.jit reads it as it decorates the kernels.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

# Programmatic dependent launch (Hopper and later; NACRITH_PDL=0 turns it off): a kernel is started
# while the one before it finishes, and waits (griddepcontrol.wait) for that one's
# completion before it touches memory, so a decoder step's hundreds of small launches
# overlap their start-up. Every kernel here waits first: the one before it had waited for
# its own predecessor, so each sees all earlier work. Timing only: no integer changes.
_PDL_OK = False
if triton is not None and not INTERPRETED:
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
        from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait  # noqa: F401 (ready)

        _PDL_OK = "launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {})
    except ImportError:  # an older Triton: launches as before
        pass
_LAUNCH = {}


def launch(device) -> dict:
    """The launch keywords of every kernel here for tensors on `device`: PDL (constexpr)
    and, where it is on, Triton's launch_pdl."""
    import torch

    if torch.compiler.is_compiling():  # traced into a compiled graph: Inductor cannot analyse the wait
        return dict(PDL=False)
    key = getattr(device, "index", None)
    if key not in _LAUNCH:
        on = _PDL_OK and os.environ.get("NACRITH_PDL", "1") != "0"
        if on:
            on = getattr(device, "type", "") == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0)
        _LAUNCH[key] = dict(PDL=True, launch_pdl=True) if on else dict(PDL=False)
    return _LAUNCH[key]


def available(device) -> bool:
    """Whether the kernels run for tensors on `device`: a CUDA device of compute capability
    8.0 or later, or any device when Triton's interpreter made them (tests)."""
    if triton is None or os.environ.get("NACRITH_KERNELS", "1") == "0":
        return False
    if INTERPRETED:
        return True
    if getattr(device, "type", str(device)) != "cuda":
        return False
    import torch

    # int8 dots with int32 sums: Ampere (8.0) and later; older GPUs keep the float64 products
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)


if triton is not None:

    @triton.jit
    def ready(PDL: tl.constexpr):
        """The first step of every kernel here and in rows.py (see `launch`)."""
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()

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
    def _limb_kernel(A, W, CS, SH, Y, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                     PDL: tl.constexpr):
        """y = a @ w for many rows: a = 256 hi + lo + 128 (hi, lo int8), w' = 2**16 w2 + 2**8 w1
        + w0, so a.w' = 2**24 hi.w2 + 2**16 (hi.w1 + lo.w2) + 2**8 (hi.w0 + lo.w1) + lo.w0
        + 128 sum(w'), each dot over all of K in int32; then shifted by t (BlockMatrix)."""
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
        cs = tl.load(CS + rn, mask=ncol, other=0)
        sh = tl.load(SH + rn, mask=ncol, other=0)
        y = (s24.to(tl.int64) << 24) + (s16.to(tl.int64) << 16) + (s8.to(tl.int64) << 8) + s0.to(tl.int64)
        y = (y + 128 * cs[None, :]) << sh[None, :]
        tl.store(Y + rm[:, None] * N + rn[None, :], y, mask=mrow[:, None] & ncol[None, :])


if triton is not None:

    @triton.jit
    def _limb_sum_kernel(P, CS, SH, Y, M, N, BM: tl.constexpr, BN: tl.constexpr, PDL: tl.constexpr):
        """_limb_kernel's sum from the six limb products of a library product: P [2M, 3N] int32,
        rows [hi; lo] against columns [w0 | w1 | w2]."""
        ready(PDL)
        rm = tl.program_id(0) * BM + tl.arange(0, BM)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        ok = (rm < M)[:, None] & (rn < N)[None, :]
        hi = P + rm[:, None].to(tl.int64) * (3 * N) + rn[None, :]
        lo = P + (rm[:, None] + M).to(tl.int64) * (3 * N) + rn[None, :]
        h0 = tl.load(hi, mask=ok, other=0).to(tl.int64)
        h1 = tl.load(hi + N, mask=ok, other=0).to(tl.int64)
        h2 = tl.load(hi + 2 * N, mask=ok, other=0).to(tl.int64)
        g0 = tl.load(lo, mask=ok, other=0).to(tl.int64)
        g1 = tl.load(lo + N, mask=ok, other=0).to(tl.int64)
        g2 = tl.load(lo + 2 * N, mask=ok, other=0).to(tl.int64)
        y = (h2 << 24) + ((h1 + g2) << 16) + ((h0 + g1) << 8) + g0
        cs = tl.load(CS + rn, mask=rn < N, other=0)
        sh = tl.load(SH + rn, mask=rn < N, other=0)
        tl.store(Y + rm[:, None].to(tl.int64) * N + rn[None, :], (y + 128 * cs[None, :]) << sh[None, :], mask=ok)


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


if triton is not None:

    @triton.jit
    def _scores(q, qe, K, KE, base, j, jm, scale, HD: tl.constexpr, FIX: tl.constexpr, CAP: tl.constexpr,
                DOT: tl.constexpr, F64: tl.constexpr):
        """Scores (units of 2**-16 bits, forward.score_bits) of the rows q [BM, HD] (int32)
        against keys j. DOT: q.k = 4096 hh + 64 (hl + lh) + ll in three int8 products, not
        four: hl + lh is (hi + lo).(hi + lo) - hh - ll, and hi + lo is at most 45 + 63 for the
        rotated mantissas (|m| <= 2,897), an int8 for any |m| < 4,160. Otherwise (a few rows:
        a decoder step's query heads) elementwise int32 products, |q.k| < 64 * 2,897**2 < 2**30:
        an int8 product pads the rows to 16, and the int64 work after it would run on all 16."""
        dh = tl.arange(0, HD)
        if DOT:
            k = tl.load(K + base * HD + j[None, :] * HD + dh[:, None], mask=jm[None, :], other=0).to(tl.int32)
            q_hi, q_lo = (q >> 6).to(tl.int8), (q & 63).to(tl.int8)
            hh = tl.dot(q_hi, (k >> 6).to(tl.int8), out_dtype=tl.int32)
            ll = tl.dot(q_lo, (k & 63).to(tl.int8), out_dtype=tl.int32)
            q_s = ((q >> 6) + (q & 63)).to(tl.int8)
            s = hh * 4096 + (tl.dot(q_s, ((k >> 6) + (k & 63)).to(tl.int8), out_dtype=tl.int32) - hh - ll) * 64 + ll
        else:
            k = tl.load(K + base * HD + j[:, None] * HD + dh[None, :], mask=jm[:, None], other=0).to(tl.int32)
            s = tl.sum(q[:, None, :] * k[None, :, :], axis=2)
        ke = tl.load(KE + base + j, mask=jm, other=0).to(tl.int64)
        if F64:
            return _scaled_f64(s, qe, ke, scale, FIX, CAP)
        sh = tl.maximum(FIX - 16 - qe[:, None] - ke[None, :], -11)
        x = s.to(tl.int64) * scale
        right = tl.minimum(tl.maximum(sh, 0), 62)
        left = tl.minimum(tl.maximum(-sh, 0), 62)
        half = (tl.full(sh.shape, 1, tl.int64) << right) >> 1
        y = tl.where(sh > 0, (x + half) >> right, x << left)
        return tl.minimum(tl.maximum(y, -CAP), CAP)

    @triton.jit
    def _scaled_f64(s, qe, ke, scale, FIX: tl.constexpr, CAP: tl.constexpr):
        """_scores' scaling, the same integers in float64: round-half-up(s * scale * 2**-sh),
        sh = max(FIX - 16 - qe - ke, -11), clamped to +-CAP, as floor(fma(s, scale * 2**-sh,
        0.5)). |s * scale| < 2**52 and 2**-sh is a power of two, so the product is exact, and so
        is the sum with 0.5 wherever it is below 2**41 (at most 42 bits from 2**40 to 2**-1, or
        52 bits of s * scale when shifted right); above, rounding cannot cross CAP = 2**40, which
        clamps both. sh is held to [-11, 1000]: past 62 the integer shift gives 0 as 2**-1000
        does, and 2**-1000 is a normal double, so nothing underflows."""
        t = tl.minimum(tl.maximum(qe[:, None] + ke[None, :] - (FIX - 16), -1000), 11)  # -sh
        m = ((t + 1023) << 52).to(tl.float64, bitcast=True) * scale  # 2**-sh * scale: exact
        y = tl.floor(tl.fma(s.to(tl.float64), m, 0.5))
        return tl.minimum(tl.maximum(y, -CAP * 1.0), CAP * 1.0).to(tl.int64)

    @triton.jit
    def _weights(bits, mx, masked, TABLE, F64: tl.constexpr):
        """exp2 weights 2**-(max - score) in Q30 from the table, masked keys 0 (forward.softmax_p),
        as int64. F64 (TABLE then int32): in int32, the same integers: every entry is at most
        2**30, so a shift of 31 or more gives 0 whatever the distance past 31 * 2**16."""
        d = tl.where(masked, 0, mx[:, None] - bits)
        if F64:
            dc = tl.minimum(d, 31 << 16).to(tl.int32)
            w = (tl.load(TABLE + ((dc & 0xFFFF) >> 4)) >> (dc >> 16)).to(tl.int64)
        else:
            w = tl.load(TABLE + ((d & 0xFFFF) >> 4)) >> tl.minimum(d >> 16, 62)
        return tl.where(masked, 0, w)

    @triton.jit
    def _rows(Qm, QE, SLOT, lh, R, RG, G: tl.constexpr, NKV: tl.constexpr, HD: tl.constexpr, BM: tl.constexpr):
        """This program's query rows: index, validity, slot, mantissas (int32), exponents."""
        i = tl.program_id(1) * BM + tl.arange(0, BM)
        im = i < RG
        slot = tl.load(SLOT + (lh // NKV) * R + i // G, mask=im, other=-1)
        dh = tl.arange(0, HD)
        q = tl.load(Qm + (lh * RG + i[:, None]) * HD + dh[None, :], mask=im[:, None], other=0).to(tl.int32)
        qe = tl.load(QE + lh * RG + i, mask=im, other=0)
        return i, im, slot, q, qe

    @triton.jit
    def _part(sp, lh, i, RG):
        """Where row i of (lane, kv head) lh keeps split sp's partial value: [S, L * kv * RG]."""
        return sp * (tl.num_programs(0) * RG) + lh * RG + i

    @triton.jit
    def _cells(SC, lh, i, im, RG, C, j, jm):
        """Where pass 1 keeps the scores of rows i against keys j (SC [L * kv, RG, C]), and which are real."""
        return SC + (lh * RG + i[:, None]) * C + j[None, :], im[:, None] & jm[None, :]

    @triton.jit
    def _att_max(Qm, QE, K, KE, VE, SLOT, MX, EM, SC, RG, R, C, CH, scale, G: tl.constexpr, NKV: tl.constexpr,
                 HD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, FIX: tl.constexpr, CAP: tl.constexpr,
                 CACHE: tl.constexpr, DOT: tl.constexpr, F64: tl.constexpr, PDL: tl.constexpr):
        """Pass 1, keys [s * CH, (s + 1) * CH): each row's largest score and value exponent
        (CACHE: and the scores, into SC [L * kv, RG, C], for the passes after it)."""
        ready(PDL)
        lh, sp = tl.program_id(0), tl.program_id(2)
        i, im, slot, q, qe = _rows(Qm, QE, SLOT, lh, R, RG, G, NKV, HD, BM)
        base = lh * C
        end = tl.minimum(tl.max(slot, axis=0) + 1, sp * CH + CH)  # keys past every row's slot: never read
        low = -(1 << 62)
        mx = tl.full([BM], low, tl.int64)
        em = tl.full([BM], -(1 << 40), tl.int64)
        for j0 in range(sp * CH, end, BN):
            j = j0 + tl.arange(0, BN)
            jm = j < end
            masked = j[None, :] > slot[:, None]
            bits = _scores(q, qe, K, KE, base, j, jm, scale, HD, FIX, CAP, DOT, F64)
            if CACHE:
                at, ok = _cells(SC, lh, i, im, RG, C, j, jm)
                tl.store(at, bits, mask=ok)
            mx = tl.maximum(mx, tl.max(tl.where(masked, low, bits), axis=1))
            ve = tl.load(VE + base + j, mask=jm, other=0).to(tl.int64)
            em = tl.maximum(em, tl.max(tl.where(masked, -(1 << 40), ve[None, :]), axis=1))
        at = _part(sp, lh, i, RG)
        tl.store(MX + at, mx, mask=im)
        tl.store(EM + at, em, mask=im)

    @triton.jit
    def _bits(q, qe, K, KE, SC, lh, i, im, RG, C, base, j, jm, scale, HD: tl.constexpr, FIX: tl.constexpr,
              CAP: tl.constexpr, CACHE: tl.constexpr, DOT: tl.constexpr, F64: tl.constexpr):
        """The scores of pass 1 again: read back (CACHE) or computed anew."""
        if CACHE:
            at, ok = _cells(SC, lh, i, im, RG, C, j, jm)
            bits = tl.load(at, mask=ok, other=0)
        else:
            bits = _scores(q, qe, K, KE, base, j, jm, scale, HD, FIX, CAP, DOT, F64)
        return bits

    @triton.jit
    def _quotient(num, den, inv):
        """floor(num / den) for den > 0, |num| < 2**62 and |num / den| < 2**50, from inv =
        1 / den in float64: the estimate is within 2**-50 * |num / den| + 1 of the quotient,
        so after the conversion (toward zero) it is off by at most one, which the remainder
        corrects. An int64 division is emulated in some hundred instructions, per element:
        it was most of the values pass (the probabilities, below 2**16), and of rows.py's
        norm and gated unit."""
        q = (num.to(tl.float64) * inv).to(tl.int64)
        r = num - q * den
        return q + (r >= den).to(tl.int64) - (r < 0).to(tl.int64)

    @triton.jit
    def _reduced(P, lh, i, im, RG, S, start, SB: tl.constexpr, MAXIMUM: tl.constexpr):
        """The maximum (or sum) over the S splits' partial values of each row, read as one
        [SB, rows] tile: a loop of S loads, each waiting for the last, was most of a decoder
        step's values pass (S = 32 splits, three reductions)."""
        sp = tl.arange(0, SB)
        at = _part(sp[:, None], lh, i[None, :], RG)
        v = tl.load(P + at, mask=(sp[:, None] < S) & im[None, :], other=start)
        return tl.max(v, axis=0) if MAXIMUM else tl.sum(v, axis=0)

    @triton.jit
    def _att_sum(Qm, QE, K, KE, SLOT, TABLE, MX, TOT, SC, RG, R, C, CH, S, scale, G: tl.constexpr,
                 NKV: tl.constexpr, HD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, FIX: tl.constexpr,
                 CAP: tl.constexpr, SB: tl.constexpr, CACHE: tl.constexpr, DOT: tl.constexpr, F64: tl.constexpr,
                PDL: tl.constexpr):
        """Pass 2: each row's sum of weights over the split's keys."""
        ready(PDL)
        lh, sp = tl.program_id(0), tl.program_id(2)
        i, im, slot, q, qe = _rows(Qm, QE, SLOT, lh, R, RG, G, NKV, HD, BM)
        mx = _reduced(MX, lh, i, im, RG, S, -(1 << 62), SB, True)
        base = lh * C
        end = tl.minimum(tl.max(slot, axis=0) + 1, sp * CH + CH)
        total = tl.zeros([BM], tl.int64)
        for j0 in range(sp * CH, end, BN):
            j = j0 + tl.arange(0, BN)
            jm = j < end
            masked = j[None, :] > slot[:, None]
            bits = _bits(q, qe, K, KE, SC, lh, i, im, RG, C, base, j, jm, scale, HD, FIX, CAP, CACHE, DOT, F64)
            total += tl.sum(_weights(bits, mx, masked, TABLE, F64), axis=1)
        tl.store(TOT + _part(sp, lh, i, RG), total, mask=im)

    @triton.jit
    def _att_values(Qm, QE, K, KE, V, VE, SLOT, TABLE, MX, EM, TOT, PV, OE, SC, RG, R, C, CH, S, scale,
                    G: tl.constexpr, NKV: tl.constexpr, HD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                    FIX: tl.constexpr, CAP: tl.constexpr, PB: tl.constexpr, SB: tl.constexpr, CACHE: tl.constexpr,
                    DOT: tl.constexpr, F64: tl.constexpr, PDL: tl.constexpr):
        """Pass 3: the probabilities of the split's keys times their values (int32, exact)."""
        ready(PDL)
        lh, sp = tl.program_id(0), tl.program_id(2)
        i, im, slot, q, qe = _rows(Qm, QE, SLOT, lh, R, RG, G, NKV, HD, BM)
        mx = _reduced(MX, lh, i, im, RG, S, -(1 << 62), SB, True)
        em = _reduced(EM, lh, i, im, RG, S, -(1 << 40), SB, True)
        total = tl.maximum(_reduced(TOT, lh, i, im, RG, S, 0, SB, False), 1)  # 0 only for rows past the run
        inv = 1.0 / total.to(tl.float64)
        base = lh * C
        end = tl.minimum(tl.max(slot, axis=0) + 1, sp * CH + CH)
        dh = tl.arange(0, HD)
        acc = tl.zeros([BM, HD], tl.int32)
        for j0 in range(sp * CH, end, BN):
            j = j0 + tl.arange(0, BN)
            jm = j < end
            masked = j[None, :] > slot[:, None]
            bits = _bits(q, qe, K, KE, SC, lh, i, im, RG, C, base, j, jm, scale, HD, FIX, CAP, CACHE, DOT, F64)
            p = _quotient(_weights(bits, mx, masked, TABLE, F64) << PB, total[:, None], inv[:, None])
            ve = tl.load(VE + base + j, mask=jm, other=0).to(tl.int64)
            p = (p >> tl.minimum(tl.maximum(em[:, None] - ve[None, :], 0), 62)).to(tl.int32)
            v = tl.load(V + (base + j[:, None]) * HD + dh[None, :], mask=jm[:, None], other=0).to(tl.int32)
            if DOT:
                v_hi = (v >> 6).to(tl.int8)
                v_lo = (v & 63).to(tl.int8)
                for piece in tl.static_range(3):
                    pp = ((p >> (7 * piece)) & 127).to(tl.int8)
                    part = tl.dot(pp, v_hi, out_dtype=tl.int32) * 64 + tl.dot(pp, v_lo, out_dtype=tl.int32)
                    acc += part << (7 * piece)
            else:  # a row's probabilities sum to at most 2**16 and |v| < 2**11: every sum below 2**27
                acc += tl.sum(p[:, :, None] * v[None, :, :], axis=1)
        # the splits' products (exact integers) added into the result in any order
        tl.atomic_add(PV + (lh * RG + i[:, None]) * HD + dh[None, :], acc.to(tl.int64), mask=im[:, None],
                      sem="relaxed")
        if sp == 0:
            tl.store(OE + lh * RG + i, em - PB, mask=im)  # the rows' common value exponent


if triton is not None:

    @triton.jit
    def _store_kernel(KR, KE, VM, VE, LANE, SLOT, K, KEW, V, VEW, s_r, s_h, e_r, l_r, t_r, C, NKV: tl.constexpr,
                      HD: tl.constexpr, PDL: tl.constexpr):
        """One row's key and value of one kv head into its lane's window at its slot."""
        ready(PDL)
        r, h = tl.program_id(0), tl.program_id(1)
        lane = tl.load(LANE + r * l_r)
        slot = tl.load(SLOT + r * t_r)  # (strides: the decoder's slots are one value expanded)
        dh = tl.arange(0, HD)
        cell = (lane * NKV + h) * C + slot
        tl.store(K + cell * HD + dh, tl.load(KR + r * s_r + h * s_h + dh).to(tl.int16))
        tl.store(V + cell * HD + dh, tl.load(VM + r * s_r + h * s_h + dh).to(tl.int16))
        tl.store(KEW + cell, tl.load(KE + r * e_r + h).to(tl.int32))
        tl.store(VEW + cell, tl.load(VE + r * e_r + h).to(tl.int32))


def store(K, KE, V, VE, lane, slot, kr, ke, vm, ve) -> None:
    """Rows' keys and values (kr, vm [T, kv, hd], exponents ke, ve [T, kv]) into the
    windows K, V [L, kv, C, hd] (int16) and KE, VE [L, kv, C] (int32) at (lane, slot):
    one kernel for what indexed assignment does in eight."""
    T, nkv, hd = kr.shape
    C = K.shape[2]
    if kr.stride() != vm.stride() or ke.stride() != ve.stride() or kr.stride(2) != 1 or ke.stride(1) != 1:
        kr, vm, ke, ve = (x.contiguous() for x in (kr, vm, ke, ve))
    _store_kernel[(T, nkv)](kr, ke, vm, ve, lane, slot, K, KE, V, VE, kr.stride(0), kr.stride(1), ke.stride(0),
                            lane.stride(0), slot.stride(0), C, NKV=nkv, HD=hd, **launch(K.device))


def _splits(programs: int, C: int, BN: int) -> int:
    """Key ranges per row tile: enough programs to fill a GPU (about 2,048), at least one
    key tile each. Depends on the shapes only, and no integer depends on it (the splits'
    partial maxima and sums are exact)."""
    return max(1, min(triton.cdiv(C, BN), triton.cdiv(2048, programs)))


def score_cache(nbytes: int) -> bool:
    """Whether attention keeps pass 1's scores for passes 2 and 3, so that the keys are
    read and multiplied once a call instead of three times: where the scores of a call take
    at most NACRITH_SCORE_CACHE_MB (256: a decoder step of 311 lanes is 46 MB, an encoder
    run of 25 lanes x 128 rows 472 MB). On by default: a decoder step with full windows took
    1.59 / 4.08 / 29.8 ms at 2 / 25 / 311 lanes against 1.76 / 4.99 / 38.8 without (H100,
    benchmarks/results/gpu-lanes-h100-cache.md); NACRITH_SCORE_CACHE=0 turns it off. The
    integers are the same either way (tests/test_kernels.py)."""
    if os.environ.get("NACRITH_SCORE_CACHE", "1") == "0":
        return False
    return nbytes <= int(os.environ.get("NACRITH_SCORE_CACHE_MB", "256")) << 20


_TABLES32 = {}


def _table32(table):
    """The exp2 table as int32 (every entry at most 2**30), made once per table."""
    import torch

    key = (table.data_ptr(), table.device)
    if key not in _TABLES32:  # the table kept with its copy: its address is not reused
        _TABLES32[key] = (table, table.to(torch.int32))
    return _TABLES32[key][1]


# rows of a (lane, kv head) up to which attention multiplies elementwise rather than with int8 dots
_FEW_ROWS = int(os.environ.get("NACRITH_FEW_ROWS", "8"))


def attention(q, qe, K, V, KE, VE, slot, R: int, score: int, table, pv=None):
    """groups.attention's integers for rows head-major: q [L, kv, RG, hd] (RG = R steps x
    the kv head's query heads), qe [L, kv, RG], every lane at the same slots (`slot`
    [L * R], lane-major), against the windows K, V [L, kv, C, hd] (int16), KE, VE
    [L, kv, C]. Returns (pv [L, kv, RG, hd] int64, oe [L, kv, RG] int64).

    The keys are cut into S ranges, each its own program in every pass, so one lane's
    window still fills the GPU; each pass reads the partial maxima or sums of the one
    before, and the values' partial products are added into the result (exact integers).
    pv, where given, is that result's buffer, all zeros (rows.merge zeroes it after use)."""
    import torch

    L, nkv, C, hd = K.shape
    RG = q.shape[2]
    dev = q.device
    q = q.to(torch.int32).contiguous()
    qe = qe.to(torch.int64).contiguous()
    slot = slot.contiguous()
    small = RG <= _FEW_ROWS  # a decoder step: 3 rows a kv head for SmolLM2 (_scores, DOT)
    BM, BN = (max(2, triton.next_power_of_2(RG)), 32) if small else ((16 if RG <= 16 else (32 if RG <= 32 else 64)), 64)
    tiles = triton.cdiv(RG, BM)
    S = _splits(L * nkv * tiles, C, BN)
    CH = triton.cdiv(triton.cdiv(C, S), BN) * BN
    S = triton.cdiv(C, CH)
    grid = (L * nkv, tiles, S)
    mx = torch.empty((S, L * nkv * RG), dtype=torch.int64, device=dev)
    em, tot = torch.empty_like(mx), torch.empty_like(mx)
    if pv is None:
        pv = torch.zeros((L, nkv, RG, hd), dtype=torch.int64, device=dev)
    oe = torch.empty((L, nkv, RG), dtype=torch.int64, device=dev)
    cache = score_cache(L * nkv * RG * C * 8)
    f64 = os.environ.get("NACRITH_F64_SCORES", "0") == "1"
    if f64:
        table = _table32(table)
    sc = torch.empty((L * nkv, RG, C), dtype=torch.int64, device=dev) if cache else mx  # (mx: unread)
    c = dict(G=RG // R, NKV=nkv, HD=hd, BM=BM, BN=BN, FIX=spec.SCORE_FIX, CAP=spec.SCORE_CAP, CACHE=cache,
             DOT=not small, F64=f64, num_stages=1, **launch(dev))
    _att_max[grid](q, qe, K, KE, VE, slot, mx, em, sc, RG, R, C, CH, score, **c)
    SB = triton.next_power_of_2(S)
    _att_sum[grid](q, qe, K, KE, slot, table, mx, tot, sc, RG, R, C, CH, S, score, SB=SB, **c)
    _att_values[grid](q, qe, K, KE, V, VE, slot, table, mx, em, tot, pv, oe, sc, RG, R, C, CH, S, score,
                      PB=spec.P_BITS, SB=SB, **c)
    return pv, oe
