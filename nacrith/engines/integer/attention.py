"""The integer engine's attention on a GPU (Triton; kernels.py says where it runs).

`attention`: the integer softmax of forward.py over a window, in three kernels, one pass
over the keys each (the maximum score, the sum of the weights, then the probabilities and
their product with the values). Query and key mantissas (below 2**12 after rotation) enter
the int8 dots as 64 * hi + lo (three products a score: _scores), values likewise,
probabilities (at most 2**16) as three 7-bit pieces; every dot is exact in int32. A few
rows (a decoder step) multiply elementwise in int32 instead; pass 1 may keep its scores
for the passes after it (score_cache).
"""

from __future__ import annotations

import os

from . import spec
from .kernels import launch

try:
    import triton
    import triton.language as tl

    from .kernels import _quotient, ready
except ImportError:  # pragma: no cover - the float64 products are used instead
    triton = None


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
    if small:
        BM, BN = max(2, triton.next_power_of_2(RG)), 32
    else:
        BM, BN = (16 if RG <= 16 else (32 if RG <= 32 else 64)), 64
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
