"""The bias heads' step (online.py) fused with the integer softmax and the coder's lookup,
as one Triton kernel: the same integers as Online.freqs / update and quantize.freqs_fixed.

On a GPU the predictors' step is hundreds of small kernels over [lanes, vocab] per token;
the encoder takes thousands of steps one after another (each depends on the biases the
last one learned). Here one program per lane walks through a whole piece of steps in
one launch: per step four passes over the vocabulary (the biased logits and their
maximum; the exp2 weights and their sum; the frequencies, the target's start and
frequency; the biases' update). The decoder's variant searches the symbol whose
interval holds the rANS slot in a fifth pass, before the update.

Only the predictor settings of the defaults are covered: the bias head and the context
bias head, either or both (`covers`); the N-gram, match and mixer keep Online's torch
code. A program's passes go through its own lane's rows only; a barrier separates them,
so that every thread reads what the others wrote (the context table's slots move with
the previous token).
"""

from __future__ import annotations

from ..codec.quantize import LOG2E_FIX, LOGIT_BITS, MAX_SHIFT, TABLE_BITS, TOTAL
from .online import _HASH_MUL, _M32, _MIX_MUL, BIAS_CAP, CTX_BIAS_BITS

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Online's torch code is used instead
    triton = None

BLOCK = 8192  # vocabulary entries per tile (SmolLM2: 6 tiles a pass)


def covers(cfg) -> bool:
    """Whether the kernel computes these predictors (the bias heads alone)."""
    return triton is not None and not (cfg.ngram or cfg.match_min or cfg.sse_rate or cfg.skip)


if triton is not None:

    @triton.jit
    def _steps(Z, TG, SLOT, ST, FR, SYM, B, C, PREV, TABLE, SQ, SW, steps, L, V, lr, clr,
               HAS_B: tl.constexpr, HAS_C: tl.constexpr, SEARCH: tl.constexpr, BLOCK: tl.constexpr,
               CS: tl.constexpr, CAP: tl.constexpr, TOT: tl.constexpr, LOG2E: tl.constexpr,
               LB: tl.constexpr, TB: tl.constexpr, MS: tl.constexpr):
        lane = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        row = lane.to(tl.int64) * V
        low = -(1 << 62)
        for s in range(steps):
            at = s * L + lane
            z = Z + at.to(tl.int64) * V
            prev = tl.load(PREV + lane)
            h = ((13 ^ (prev + 1)) * 0x2545F491) & 0xFFFFFFFF
            off = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
            cbase = lane.to(tl.int64) * CS
            # 1: the biased logits (kept in SQ) and their maximum
            mx = tl.full([BLOCK], low, tl.int64)
            for v0 in range(0, V, BLOCK):
                v = v0 + cols
                ok = v < V
                q = tl.load(z + v, mask=ok, other=0)
                if HAS_B:
                    q += tl.load(B + row + v, mask=ok, other=0, cache_modifier=".cg")
                if HAS_C:
                    q += tl.load(C + cbase + ((off + v) & (CS - 1)), mask=ok, other=0, cache_modifier=".cg")
                tl.store(SQ + row + v, q, mask=ok)
                mx = tl.maximum(mx, tl.where(ok, q, low))
            m = tl.max(mx, axis=0)
            tl.debug_barrier()
            # 2: the exp2 weights (kept in SW), their sum, the most probable token
            wsum = tl.zeros([BLOCK], tl.int64)
            tops = tl.full([BLOCK], V, tl.int64)
            for v0 in range(0, V, BLOCK):
                v = v0 + cols
                ok = v < V
                q = tl.load(SQ + row + v, mask=ok, other=0, cache_modifier=".cg")
                e = ((m - q) * LOG2E) >> LB
                whole = tl.minimum(tl.maximum(e >> LB, 0), MS)
                w = tl.load(TABLE + ((e & ((1 << LB) - 1)) >> (LB - TB))) >> whole
                w = tl.where(ok, w, 0)
                tl.store(SW + row + v, w, mask=ok)
                wsum += w
                tops = tl.minimum(tops, tl.where(w == (1 << 30), v, V))
            total = tl.sum(wsum, axis=0)
            top = tl.min(tops, axis=0)
            tl.debug_barrier()
            # 3: the frequencies 1 + floor(w * (TOTAL - V) / total), their sum; the target's
            fsum = tl.zeros([BLOCK], tl.int64)
            if not SEARCH:
                y = tl.load(TG + at)
                below = tl.zeros([BLOCK], tl.int64)
                fy = tl.zeros([BLOCK], tl.int64)
            for v0 in range(0, V, BLOCK):
                v = v0 + cols
                ok = v < V
                w = tl.load(SW + row + v, mask=ok, other=0, cache_modifier=".cg")
                f = tl.where(ok, 1 + _fdiv(w * (TOT - V), total), 0)
                fsum += f
                if not SEARCH:
                    below += tl.where(v < y, f, 0)
                    fy += tl.where(v == y, f, 0)
            rest = TOT - tl.sum(fsum, axis=0)  # to the most probable token
            if SEARCH:  # 3b: the symbol whose interval holds the slot (slot < TOTAL: one does)
                slot = tl.load(SLOT + lane)
                base = tl.sum(tl.zeros([BLOCK], tl.int64), axis=0)
                y, start, freq, found = base, base, base, base
                for v0 in range(0, V, BLOCK):
                    v = v0 + cols
                    ok = v < V
                    w = tl.load(SW + row + v, mask=ok, other=0, cache_modifier=".cg")
                    f = tl.where(ok, 1 + _fdiv(w * (TOT - V), total) + tl.where(v == top, rest, 0), 0)
                    hit = tl.min(tl.where(ok & (base + tl.cumsum(f, axis=0) > slot), v, V), axis=0)
                    take = (found == 0) & (hit < V)
                    y = tl.where(take, hit, y)
                    start = tl.where(take, base + tl.sum(tl.where(v < hit, f, 0), axis=0), start)
                    freq = tl.where(take, tl.sum(tl.where(v == hit, f, 0), axis=0), freq)
                    found = tl.where(take, 1, found)
                    base += tl.sum(f, axis=0)
                tl.store(SYM + at, y)
            else:
                start = tl.sum(below, axis=0) + tl.where(top < y, rest, 0)
                freq = tl.sum(fy, axis=0) + tl.where(top == y, rest, 0)
            tl.store(ST + at, start)
            tl.store(FR + at, freq)
            # 4: one gradient step of each bias head: bias -= lr * p, bias[y] += lr
            for v0 in range(0, V, BLOCK):
                v = v0 + cols
                ok = v < V
                w = tl.load(SW + row + v, mask=ok, other=0, cache_modifier=".cg")
                f = 1 + _fdiv(w * (TOT - V), total) + tl.where(v == top, rest, 0)
                if HAS_B:
                    b = tl.load(B + row + v, mask=ok, other=0, cache_modifier=".cg")
                    b = b - ((f * lr) >> 24) + tl.where(v == y, lr, 0)
                    tl.store(B + row + v, tl.minimum(tl.maximum(b, -CAP), CAP), mask=ok)
                if HAS_C:
                    ci = C + cbase + ((off + v) & (CS - 1))
                    c = tl.load(ci, mask=ok, other=0, cache_modifier=".cg")
                    c = c - ((f * clr) >> 24) + tl.where(v == y, clr, 0)
                    tl.store(ci, tl.minimum(tl.maximum(c, -CAP), CAP), mask=ok)
            tl.store(PREV + lane, y)
            tl.debug_barrier()

    @triton.jit
    def _fdiv(num, den):
        """floor(num / den) for 0 <= num < 2**62, den > 0: a float64 quotient, corrected
        by one either way (integer division is slow on a GPU)."""
        q = (num.to(tl.float64) / den.to(tl.float64)).to(tl.int64)
        r = num - q * den
        return q - (r < 0).to(tl.int64) + (r >= den).to(tl.int64)


class BiasSteps:
    """The kernel's view of an Online (bias heads only): its tensors are read and updated
    in place, so the object stays what Online's own step would have left."""

    def __init__(self, pred, table):
        import torch

        if not covers(pred.cfg):
            raise ValueError("the kernel covers the bias heads alone")
        self.p, self.t, self.table = pred, torch, table
        L, V = pred.L, pred.V
        dev = pred.t.device
        self.sq = torch.empty((L, V), dtype=torch.int64, device=dev)
        self.sw = torch.empty_like(self.sq)
        self.none = torch.zeros(1, dtype=torch.int64, device=dev)

    def _launch(self, z, tg, slot, st, fr, sym, steps: int, search: bool) -> None:
        p = self.p
        cfg = p.cfg
        prev = p.recent[:, -1]  # the previous token (width 1: no N-gram or match)
        if not prev.is_contiguous():
            raise ValueError("the previous tokens must be one contiguous column")
        b = p.bias if p.bias is not None else self.none
        c = p.ctxb if p.ctxb is not None else self.none
        _steps[(p.L,)](z, tg, slot, st, fr, sym, b, c, prev, self.table, self.sq, self.sw, steps, p.L, p.V,
                       cfg.bias_lr, cfg.ctx_bias, HAS_B=p.bias is not None, HAS_C=p.ctxb is not None,
                       SEARCH=search, BLOCK=BLOCK, CS=1 << CTX_BIAS_BITS, CAP=BIAS_CAP, TOT=TOTAL,
                       LOG2E=LOG2E_FIX, LB=LOGIT_BITS, TB=TABLE_BITS, MS=MAX_SHIFT, num_warps=16)
        p.t += steps

    def encode(self, z, targets, starts, freqs, steps: int) -> None:
        """z [>= steps, L, V] int64 logits, targets [>= steps, L]: (start, freq) of each
        step's target into starts, freqs [>= steps, L], the heads learning as they go."""
        n = self.none
        self._launch(z, targets, n, starts, freqs, n, steps, False)

    def decode(self, z, slots, sym, starts, freqs) -> None:
        """One step: z [L, V] logits, slots [L] -> the symbols, their starts and frequencies."""
        self._launch(z, self.none, slots, starts, freqs, sym, 1, True)


assert _M32 == 0xFFFFFFFF and _HASH_MUL == 0x2545F491 and _MIX_MUL == 0x45D9F3B  # the kernel's literals
