"""The bias heads' step (online.py) fused with the integer softmax and the coder's lookup,
as Triton kernels: the same integers as Online.freqs / update and quantize.freqs_fixed.

On a GPU the predictors' step is hundreds of small kernels over [lanes, vocab] per token,
and the encoder takes thousands of steps one after another (each depends on the biases
the last one learned). Here a step is six launches, each over (lane, vocabulary tile):
the biased logits; the exp2 weights; the frequencies; the coded interval (the decoder
searches the symbol whose interval holds the rANS slot); the biases' update; the step's
token kept as the next step's context. Each tile leaves its maximum, sums and most
probable token in a small partials table that the next launch reduces per lane, so every
integer is the same whatever the tiling. The encoder replays one captured step per token.
(A first version ran one program per lane through all steps: two lanes kept two of the
H200's 132 SMs busy, 57% of a compression's GPU time.)

Only the predictor settings of the defaults are covered: the bias head and the context
bias head, either or both (`covers`); the N-gram, match and mixer keep Online's torch code.
The context table has 2^18 >= vocabulary slots per lane, so no two tokens share one.
"""

from __future__ import annotations

from ..codec.quantize import LOG2E_FIX, LOGIT_BITS, MAX_SHIFT, TABLE_BITS, TOTAL
from .online import _HASH_MUL, _M32, _MIX_MUL, BIAS_CAP, CTX_BIAS_BITS

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Online's torch code is used instead
    triton = None

BLOCK = 1024  # vocabulary entries per program (SmolLM2: 48 tiles a lane)
LOW = -(1 << 62)


def covers(cfg) -> bool:
    """Whether the kernels compute these predictors (the bias heads alone)."""
    return triton is not None and not (cfg.ngram or cfg.match_min or cfg.sse_rate or cfg.skip)


if triton is not None:
    LOW_ = tl.constexpr(LOW)

    @triton.jit
    def _where(S, PREV, V, CS: tl.constexpr, BLOCK: tl.constexpr):
        """This program's lane, step, vocabulary entries and their context-table slots."""
        lane, tile = tl.program_id(0), tl.program_id(1)
        v = tile * BLOCK + tl.arange(0, BLOCK)
        prev = tl.load(PREV + lane)
        h = ((13 ^ (prev + 1)) * 0x2545F491) & 0xFFFFFFFF
        off = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
        cslot = lane.to(tl.int64) * CS + ((off + v) & (CS - 1))
        return lane, tile, tl.load(S), v, v < V, lane.to(tl.int64) * V + v, cslot

    @triton.jit
    def _logits(Z, S, PREV, B, C, SQ, PM, L, V, P, HAS_B: tl.constexpr, HAS_C: tl.constexpr,
                CS: tl.constexpr, BLOCK: tl.constexpr):
        lane, tile, s, v, ok, at, cslot = _where(S, PREV, V, CS, BLOCK)
        q = tl.load(Z + (s * L + lane).to(tl.int64) * V + v, mask=ok, other=0)
        if HAS_B:
            q += tl.load(B + at, mask=ok, other=0)
        if HAS_C:
            q += tl.load(C + cslot, mask=ok, other=0)
        tl.store(SQ + at, q, mask=ok)
        tl.store(PM + lane * P + tile, tl.max(tl.where(ok, q, LOW_), axis=0))

    @triton.jit
    def _weights(S, PREV, SQ, SW, PM, PW, PT, TABLE, V, P, PB: tl.constexpr, CS: tl.constexpr,
                 BLOCK: tl.constexpr, LOG2E: tl.constexpr, LB: tl.constexpr, TB: tl.constexpr,
                 MS: tl.constexpr):
        lane, tile, s, v, ok, at, cslot = _where(S, PREV, V, CS, BLOCK)
        ps = tl.arange(0, PB)
        m = tl.max(tl.load(PM + lane * P + ps, mask=ps < P, other=LOW_), axis=0)
        q = tl.load(SQ + at, mask=ok, other=0)
        e = ((m - q) * LOG2E) >> LB
        whole = tl.minimum(tl.maximum(e >> LB, 0), MS)
        w = tl.load(TABLE + ((e & ((1 << LB) - 1)) >> (LB - TB))) >> whole
        w = tl.where(ok, w, 0)
        tl.store(SW + at, w, mask=ok)
        tl.store(PW + lane * P + tile, tl.sum(w, axis=0))
        tl.store(PT + lane * P + tile, tl.min(tl.where(ok & (w == (1 << 30)), v, V), axis=0))

    @triton.jit
    def _freqs(S, PREV, SW, SF, PW, PF, V, P, PB: tl.constexpr, CS: tl.constexpr,
               BLOCK: tl.constexpr, TOT: tl.constexpr):
        """1 + floor(w * (TOTAL - V) / total); the rest goes to the most probable token."""
        lane, tile, s, v, ok, at, cslot = _where(S, PREV, V, CS, BLOCK)
        ps = tl.arange(0, PB)
        total = tl.sum(tl.load(PW + lane * P + ps, mask=ps < P, other=0), axis=0)
        w = tl.load(SW + at, mask=ok, other=0)
        f = tl.where(ok, 1 + _fdiv(w * (TOT - V), total), 0)
        tl.store(SF + at, f, mask=ok)
        tl.store(PF + lane * P + tile, tl.sum(f, axis=0))

    @triton.jit
    def _rest(lane, tile, v, ok, at, SF, PF, PT, V, P, PB: tl.constexpr, TOT: tl.constexpr, BLOCK: tl.constexpr):
        """This tile's frequencies with the rest added, and the frequencies of all tiles before it."""
        ps = tl.arange(0, PB)
        pf = tl.load(PF + lane * P + ps, mask=ps < P, other=0)
        top = tl.min(tl.load(PT + lane * P + ps, mask=ps < P, other=V), axis=0)
        rest = TOT - tl.sum(pf, axis=0)
        f = tl.load(SF + at, mask=ok, other=0) + tl.where(v == top, rest, 0)
        base = tl.sum(tl.where(ps < tile, pf, 0), axis=0) + tl.where(top < tile * BLOCK, rest, 0)
        return f, base

    @triton.jit
    def _interval(S, PREV, TG, SLOT, SYM, ST, FR, SF, PF, PT, L, V, P, PB: tl.constexpr,
                  CS: tl.constexpr, BLOCK: tl.constexpr, TOT: tl.constexpr, SEARCH: tl.constexpr):
        """The target's (start, freq); or the symbol whose interval holds the slot (slot <
        TOTAL: exactly one tile holds it), and its (start, freq)."""
        lane, tile, s, v, ok, at, cslot = _where(S, PREV, V, CS, BLOCK)
        f, base = _rest(lane, tile, v, ok, at, SF, PF, PT, V, P, PB, TOT, BLOCK)
        k = s * L + lane
        ends = base + tl.cumsum(f, axis=0)
        if SEARCH:
            slot = tl.load(SLOT + lane)
            if (base <= slot) & (slot < base + tl.sum(f, axis=0)):
                y = tl.min(tl.where(ok & (ends > slot), v, V), axis=0)
                tl.store(SYM + k, y)
                tl.store(ST + k, tl.sum(tl.where(v == y, ends - f, 0), axis=0))
                tl.store(FR + k, tl.sum(tl.where(v == y, f, 0), axis=0))
        else:
            y = tl.load(TG + k)
            if y // BLOCK == tile:
                tl.store(ST + k, tl.sum(tl.where(v == y, ends - f, 0), axis=0))
                tl.store(FR + k, tl.sum(tl.where(v == y, f, 0), axis=0))

    @triton.jit
    def _learn(S, PREV, TG, SYM, B, C, SF, PF, PT, L, V, P, lr, clr, PB: tl.constexpr,
               HAS_B: tl.constexpr, HAS_C: tl.constexpr, CS: tl.constexpr, BLOCK: tl.constexpr,
               TOT: tl.constexpr, CAP: tl.constexpr, SEARCH: tl.constexpr):
        """One gradient step of each bias head: bias -= lr * p, bias[y] += lr, clipped."""
        lane, tile, s, v, ok, at, cslot = _where(S, PREV, V, CS, BLOCK)
        f, base = _rest(lane, tile, v, ok, at, SF, PF, PT, V, P, PB, TOT, BLOCK)
        y = tl.load((SYM if SEARCH else TG) + s * L + lane)
        if HAS_B:
            b = tl.load(B + at, mask=ok, other=0)
            b = b - ((f * lr) >> 24) + tl.where(v == y, lr, 0)
            tl.store(B + at, tl.minimum(tl.maximum(b, -CAP), CAP), mask=ok)
        if HAS_C:
            c = tl.load(C + cslot, mask=ok, other=0)
            c = c - ((f * clr) >> 24) + tl.where(v == y, clr, 0)
            tl.store(C + cslot, tl.minimum(tl.maximum(c, -CAP), CAP), mask=ok)

    @triton.jit
    def _next(S, PREV, TG, SYM, L, LB_: tl.constexpr, SEARCH: tl.constexpr, ADVANCE: tl.constexpr):
        """The step's tokens become the next step's context; the step index moves on."""
        lanes = tl.arange(0, LB_)
        s = tl.load(S)
        y = tl.load((SYM if SEARCH else TG) + s * L + lanes, mask=lanes < L)
        tl.store(PREV + lanes, y, mask=lanes < L)
        if ADVANCE:
            tl.store(S, s + 1)

    @triton.jit
    def _fdiv(num, den):
        """floor(num / den) for 0 <= num < 2**62, den > 0: a float64 quotient, corrected
        by one either way (integer division is slow on a GPU)."""
        q = (num.to(tl.float64) / den.to(tl.float64)).to(tl.int64)
        r = num - q * den
        return q - (r < 0).to(tl.int64) + (r >= den).to(tl.int64)


class BiasSteps:
    """The kernels' view of an Online (bias heads only): its tensors are read and updated
    in place, so the object stays what Online's own step would have left."""

    def __init__(self, pred, table):
        import torch

        if not covers(pred.cfg) or pred.V > 1 << CTX_BIAS_BITS:
            raise ValueError("the kernels cover the bias heads alone, vocabularies up to 2^18")
        self.p, self.t, self.table = pred, torch, table
        L, V = pred.L, pred.V
        dev = pred.t.device
        self.P = triton.cdiv(V, BLOCK)
        z = lambda *shape: torch.zeros(shape, dtype=torch.int64, device=dev)  # noqa: E731
        self.sq, self.sw, self.sf = z(L, V), z(L, V), z(L, V)
        self.pm, self.pw, self.pt, self.pf = (z(L, self.P) for _ in range(4))
        self.s, self.none = z(1), z(1)  # the encoder's step index; a zero for what a launch does not use
        self.graphs = {}  # the encoder's captured step, by its tensors

    def _step(self, z, tg, slot, st, fr, sym, s, search: bool) -> None:
        p = self.p
        cfg, L, V, P = p.cfg, p.L, p.V, self.P
        prev = p.recent[:, -1]  # the previous token (width 1: no N-gram or match)
        if not prev.is_contiguous():
            raise ValueError("the previous tokens must be one contiguous column")
        b = p.bias if p.bias is not None else self.none
        c = p.ctxb if p.ctxb is not None else self.none
        heads = dict(HAS_B=p.bias is not None, HAS_C=p.ctxb is not None)
        k = dict(CS=1 << CTX_BIAS_BITS, BLOCK=BLOCK, num_warps=4)
        pb = triton.next_power_of_2(P)
        grid = (L, P)
        _logits[grid](z, s, prev, b, c, self.sq, self.pm, L, V, P, **heads, **k)
        _weights[grid](s, prev, self.sq, self.sw, self.pm, self.pw, self.pt, self.table, V, P, PB=pb,
                       LOG2E=LOG2E_FIX, LB=LOGIT_BITS, TB=TABLE_BITS, MS=MAX_SHIFT, **k)
        _freqs[grid](s, prev, self.sw, self.sf, self.pw, self.pf, V, P, PB=pb, TOT=TOTAL, **k)
        _interval[grid](s, prev, tg, slot, sym, st, fr, self.sf, self.pf, self.pt, L, V, P, PB=pb,
                        TOT=TOTAL, SEARCH=search, **k)
        _learn[grid](s, prev, tg, sym, b, c, self.sf, self.pf, self.pt, L, V, P, cfg.bias_lr, cfg.ctx_bias,
                     PB=pb, TOT=TOTAL, CAP=BIAS_CAP, SEARCH=search, **heads, **k)
        _next[(1,)](s, prev, tg, sym, L, LB_=triton.next_power_of_2(L), SEARCH=search,
                    ADVANCE=s is self.s)

    def _encode_step(self, z, tg, st, fr):
        """One encoder step as a callable: on a GPU a captured graph (its first run compiles
        the kernels; the heads' state is put back before capturing)."""
        step = lambda: self._step(z, tg, self.none, st, fr, self.none, self.s, False)  # noqa: E731
        if z.device.type != "cuda":
            return step
        key = tuple(x.data_ptr() for x in (z, tg, st, fr))
        if key not in self.graphs:
            torch, p = self.t, self.p
            state = [x for x in (p.bias, p.ctxb, p.recent) if x is not None]
            saved = [x.clone() for x in state]
            self.s.zero_()
            step()
            for x, y in zip(state, saved):
                x.copy_(y)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                step()
            self.graphs[key] = g.replay
        return self.graphs[key]

    def encode(self, z, targets, starts, freqs, steps: int) -> None:
        """z [>= steps, L, V] int64 logits, targets [>= steps, L]: (start, freq) of each
        step's target into starts, freqs [>= steps, L], the heads learning as they go."""
        step = self._encode_step(z, targets, starts, freqs)
        self.s.zero_()
        for _ in range(steps):
            step()
        self.p.t += steps

    def decode(self, z, slots, sym, starts, freqs) -> None:
        """One step: z [L, V] logits, slots [L] -> the symbols, their starts and frequencies."""
        self._step(z, self.none, slots, starts, freqs, sym, self.none, True)  # step 0, never advanced
        self.p.t += 1


assert _M32 == 0xFFFFFFFF and _HASH_MUL == 0x2545F491 and _MIX_MUL == 0x45D9F3B  # the kernels' literals
