"""Online predictors between the model's logits and the coder.

Per lane (one chunk), all state restarting with the chunk:

1. Bias head: an integer bias per vocabulary entry added to the model's fixed-point
   log-probabilities, moved after every token by one step of gradient descent on the
   coding loss (bias -= lr * (p - onehot)), so document-specific errors of the model
   fade out.
   A second, context bias head does the same per previous token: a hashed table
   of biases for (previous token, next token) pairs, so corrections that hold
   only after one token (a name's second half, a word's usual successor in this
   document) are learned where they apply.
2. Token N-gram: orders 1..N over token ids, one hashed table per order holding the
   last successor seen after that context and how many times in a row it was right.
3. Match model: the most recent earlier occurrence of the last `match_min` tokens;
   while its predictions come true it keeps following, and its length grows.
4. Secondary estimation (the mixer): the most specific prediction (match, else the
   highest N-gram order, else the model's own top token) names a candidate token c.
   An adaptive table per context (which predictor, its length or count, whether the
   model's top token agrees) maps the model's log-odds of c to new log-odds, by
   interpolation between learned points trained online on whether c came; the
   other tokens share the rest of the range in proportion to the model's weights.
5. LLM skip: where the cheap predictors alone have been reliable in this context,
   the model is not run for the token; the candidate is coded from the learned
   reliability and everything else uniformly (the token still enters the model's
   window later, with the next one).

Determinism: every quantity is int64, every operation integer arithmetic (the
log2 and exp2 tables are made with `decimal` and checked), and the code is written
once against `xp.Ops`, so numpy and torch produce the same integers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..codec.quantize import EXP2_TABLE, MAX_SHIFT, TABLE_BITS, TOTAL, decimal_table, fixed, freqs_fixed
from ..xp import NumpyOps

ONE = 1 << 16  # Q16: bias in natural-log units, log-odds in bits, rates
MAX_ORDER = 6
COUNT_CAP = 15
MATCH_STEPS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48)  # length buckets of the match model
SSE_LO, SSE_HI = -16, 12  # interpolation points at every whole bit of log-odds
N_POINTS = SSE_HI - SSE_LO + 1
CTX_ORDER = 1  # context ids: 0 = the model alone, then N-gram orders, then match
CTX_MATCH = CTX_ORDER + MAX_ORDER * (COUNT_CAP + 1)
N_CTX = CTX_MATCH + len(MATCH_STEPS) + 1
BIAS_CAP = 8 * ONE
# Context bias table: 2**18 slots per lane. A previous token's biases occupy
# `vocab` consecutive slots from a hashed offset (wrapping around), so one row
# never holds an index twice and different contexts overlap only in part.
CTX_BIAS_BITS = 18
SSE_CAP = 32 * ONE
MAX_SKIP = 7  # consecutive skipped tokens per lane, so skipped tokens fit a slide
_M32 = (1 << 32) - 1
_HASH_MUL = 0x2545F491
_MIX_MUL = 0x45D9F3B


LOG2_TABLE = decimal_table(lambda ctx, ln2, x: ctx.ln(1 + x) / ln2 * ONE)  # log2(1 + j/4096) in Q16
LOG2_SHA256 = "735b7303826e42490c6fc264c51f0664083112edc75e303bcdb870382b3f7c2b"


def log2_table_digest() -> str:
    return hashlib.sha256(LOG2_TABLE.astype("<i8").tobytes()).hexdigest()


if log2_table_digest() != LOG2_SHA256:  # pragma: no cover - would mean a broken decimal module
    raise RuntimeError("log2 table differs from the reference; refusing to code")


@dataclass(frozen=True)
class OnlineConfig:
    """The predictor settings (all stored in the file header; 0 = off)."""

    bias_lr: int = 0  # bias head step, Q16 nats per unit of gradient
    ngram: int = 0  # highest N-gram order (orders 1..ngram)
    match_min: int = 0  # tokens a match must share before it predicts
    table_bits: int = 16  # log2 of the slots of each hashed table, per lane
    sse_rate: int = 0  # learning rate of the secondary estimation, Q16
    skip: int = 0  # skip the model where the reliability (Q16) is at least this
    ctx_bias: int = 0  # context bias head step, Q16 nats per unit of gradient

    def validate(self) -> "OnlineConfig":
        if not 0 <= self.bias_lr <= ONE:
            raise ValueError("bias_lr must be between 0 and 65536")
        if not 0 <= self.ngram <= MAX_ORDER:
            raise ValueError(f"ngram must be between 0 and {MAX_ORDER}")
        if self.match_min and not 2 <= self.match_min <= 32:
            raise ValueError("match_min must be 0 or between 2 and 32")
        if not 8 <= self.table_bits <= 22:
            raise ValueError("table_bits must be between 8 and 22")
        if not 0 <= self.sse_rate <= ONE:
            raise ValueError("sse_rate must be between 0 and 65536")
        if (self.ngram or self.match_min) and not self.sse_rate:
            raise ValueError("the N-gram and match predictions reach the coder through the mixer (sse_rate > 0)")
        if not 0 <= self.ctx_bias <= ONE:
            raise ValueError("ctx_bias must be between 0 and 65536")
        if not 0 <= self.skip <= ONE:
            raise ValueError("skip must be between 0 and 65536")
        if self.skip and not (self.ngram or self.match_min):
            raise ValueError("skipping the model needs the N-gram or match predictor")
        return self

    @property
    def any(self) -> bool:
        return bool(self.bias_lr or self.sse_rate or self.ctx_bias)


# -- fixed-point helpers (any Ops) -------------------------------------------------------


def ilog2(ops, x, log2_table):
    """log2(x) in Q16 for integers 1 <= x < 2**31 (12-bit mantissa table)."""
    n = x * 0
    for k in range(1, 31):
        n = n + (x >= (1 << k))
    mant = (x << (30 - n)) >> (30 - TABLE_BITS)
    return (n << 16) + log2_table[mant & ((1 << TABLE_BITS) - 1)]


def squash(ops, s, exp2_table):
    """Probability in Q24 of log-odds s (Q16 bits): 1 / (1 + 2**-s)."""
    a = ops.where(s < 0, -s, s)
    whole = ops.clip(a >> 16, 0, MAX_SHIFT)
    w = exp2_table[(a & (ONE - 1)) >> (16 - TABLE_BITS)] >> whole  # 2**-a in Q30
    small = ops.fdiv(w << 24, (1 << 30) + w)
    return ops.where(s >= 0, TOTAL - small, small)


def _hash(ops, h, tok):
    return ((h ^ (tok + 1)) * _HASH_MUL) & _M32


def _finish_hash(h, bits):
    h = ((h ^ (h >> 16)) * _MIX_MUL) & _M32
    h = h ^ (h >> 16)
    return h & ((1 << bits) - 1), (h >> bits) + 1  # slot, check (never 0: 0 = empty)


class Online:
    """The predictors' state for `lanes` lanes, on numpy (ops=None) or torch (TorchOps).

    Per step: `cheap()` reads the N-gram and match state; then either `freqs(logits)`
    (the model ran) or, where `skip_mask()` allows, `skipped_freqs()`; then
    `update(tokens)`. `ids` (numpy only) restricts a call to some lanes; torch runs
    always take every lane.
    """

    def __init__(self, cfg: OnlineConfig, lanes: int, vocab: int, cap: int, ops=None):
        self.cfg = cfg.validate()
        self.ops = ops = ops or NumpyOps()
        self.L, self.V, self.cap = lanes, vocab, cap
        self.exp2 = ops.const(EXP2_TABLE)
        self.vidx = ops.arange(vocab)
        self.log2 = ops.const(LOG2_TABLE)
        z = ops.zeros
        self.t = z((lanes,))
        self.recent = z((lanes, max(cfg.ngram, cfg.match_min, 1)))
        self.bias = z((lanes, vocab)) if cfg.bias_lr else None
        if cfg.ctx_bias and vocab > 1 << CTX_BIAS_BITS:
            raise ValueError("the context bias head needs a vocabulary of at most 2**18 tokens")
        self.ctxb = z((lanes, 1 << CTX_BIAS_BITS)) if cfg.ctx_bias else None
        size = 1 << cfg.table_bits
        self.grams = [z((lanes, size)) for _ in range(cfg.ngram)]
        if cfg.match_min:
            self.mtable = z((lanes, size))
            self.hist = z((lanes, cap))
            self.ptr, self.mlen = z((lanes,)), z((lanes,))
        if cfg.sse_rate:
            self.points = z((lanes, N_CTX * 2 * N_POINTS))
        if cfg.skip:
            self.nskip = z((lanes,))
            self.reliab = z((lanes, N_CTX))
        self._init_points = ops.const(np.tile((np.arange(N_POINTS) + SSE_LO) << 16, N_CTX * 2))
        self._slots: list = []  # what cheap() found, for update()
        self._skipped = False
        self.reset()

    @property
    def enabled_skip(self) -> bool:
        return bool(self.cfg.skip)

    # -- state ------------------------------------------------------------------------

    def _all(self):
        arrays = [self.t, self.recent, *self.grams]
        if self.bias is not None:
            arrays.append(self.bias)
        if self.ctxb is not None:
            arrays.append(self.ctxb)
        if self.cfg.match_min:
            arrays += [self.mtable, self.hist, self.ptr, self.mlen]
        if self.cfg.skip:
            arrays += [self.nskip, self.reliab]
        return arrays

    def reset(self, ids=None) -> None:
        """Empty the state of lanes `ids` (all lanes if None): a new chunk starts."""
        for a in self._all():
            if ids is None:
                a[...] = 0
            else:
                a[ids] = 0
        if self.cfg.sse_rate:
            if ids is None:
                self.points[...] = self._init_points
            else:
                self.points[ids] = self._init_points

    @staticmethod
    def _rows(a, ids):
        return a if ids is None else a[ids]

    def _lanes(self, ids):
        return self.ops.arange(self.L) if ids is None else ids

    # -- cheap predictions --------------------------------------------------------------

    def cheap(self, ids=None) -> None:
        """Look up the N-gram orders and the match model for the lanes' next token."""
        ops, cfg = self.ops, self.cfg
        rows = self._lanes(ids)
        n = rows.shape[0]
        t = self._rows(self.t, ids)
        recent = self._rows(self.recent, ids)
        width = recent.shape[1]
        cand = ops.zeros((n,)) - 1
        ctx = ops.zeros((n,))
        self._slots = []
        h = ops.zeros((n,)) + 7
        for k in range(1, cfg.ngram + 1):
            h = _hash(ops, h, recent[:, width - k])
            slot, chk = _finish_hash(h, cfg.table_bits)
            e = self.grams[k - 1][rows, slot]
            known = (t >= k) & ((e >> 32) == chk)
            cand = ops.where(known, e & 0xFFFFFF, cand)
            count = (e >> 24) & 0xFF
            ctx = ops.where(known, CTX_ORDER + (k - 1) * (COUNT_CAP + 1) + count, ctx)
            self._slots.append((slot, chk, t >= k))
        if cfg.match_min:
            mlen = self._rows(self.mlen, ids)
            live = mlen > 0
            guess = self.hist[rows, ops.clip(self._rows(self.ptr, ids), 0, self.cap - 1)]
            bucket = mlen * 0
            for step in MATCH_STEPS:
                bucket = bucket + (mlen >= step)
            cand = ops.where(live, guess, cand)
            ctx = ops.where(live, CTX_MATCH + bucket, ctx)
            self._guess = ops.where(live, guess, -1)
        self.cand, self.ctx = cand, ctx

    def skip_mask(self, ids=None):
        """Lanes whose next token the cheap predictors code alone (call after cheap())."""
        rows = self._lanes(ids)
        r = self.reliab[rows, self.ctx]
        return (self.ctx > 0) & (r >= self.cfg.skip) & (self._rows(self.nskip, ids) < MAX_SKIP)

    def skipped_freqs(self, ids=None):
        """The distribution of a skipped step: the candidate at its learned reliability,
        every other token alike."""
        ops = self.ops
        rows = self._lanes(ids)
        n, V = rows.shape[0], self.V
        fc = ops.clip(self.reliab[rows, self.ctx] << 8, 1, TOTAL - (V - 1))
        other = ops.fdiv(TOTAL - fc, ops.zeros((n,)) + (V - 1))
        f = ops.zeros((n, V)) + other[:, None]
        r = ops.arange(n)
        f[r, self.cand] = TOTAL - other * (V - 1)
        self._skipped = True
        return f

    # -- the model's distribution, refined ------------------------------------------------

    def freqs(self, logits, ids=None):
        """Frequencies for the lanes' next token from the model's logits ([n, V] float32,
        or float16 on a GPU: widening is exact) after cheap()."""
        ops, cfg = self.ops, self.cfg
        rows = self._lanes(ids)
        n = rows.shape[0]
        r = ops.arange(n)
        q = fixed(logits)
        if self.bias is not None:
            q = q + self._rows(self.bias, ids)
        if self.ctxb is not None:
            self._cidx = self._ctx_slots(ids)
            q = q + self.ctxb[rows[:, None], self._cidx]
        f = freqs_fixed(ops, q, self.exp2)
        self._skipped = False
        self._f_model = f if self.bias is not None or self.ctxb is not None else None
        if not cfg.sse_rate:
            return f
        top = ops.argmax(f)
        c = ops.where(self.cand >= 0, self.cand, top)
        ctx = self.ctx * 2 + (c == top)
        fc = f[r, c]
        s = ilog2(ops, fc, self.log2) - ilog2(ops, TOTAL - fc, self.log2)
        pos = ops.clip(s, SSE_LO << 16, (SSE_HI << 16) - 1) - (SSE_LO << 16)
        j = ctx * N_POINTS + (pos >> 16)
        w1 = pos & (ONE - 1)
        a0, a1 = self.points[rows, j], self.points[rows, j + 1]
        p = squash(ops, (a0 * (ONE - w1) + a1 * w1) >> 16, self.exp2)
        self._sse = (c, j, w1, p)
        # c gets p; the others share the rest in proportion to (f - 1), each keeping 1
        V = self.V
        target = ops.clip(p, 1, TOTAL - (V - 1))
        spare_old = (TOTAL - fc) - (V - 1)
        spare_new = (TOTAL - target) - (V - 1)
        g = 1 + ops.fdiv((f - 1) * spare_new[:, None], ops.clip(spare_old, 1, TOTAL)[:, None])
        g = ops.where(self.vidx == c[:, None], 0, g)
        g[r, c] = TOTAL - ops.rowsum(g)[:, 0]
        return ops.where((spare_old > 0)[:, None], g, f)

    def _ctx_slots(self, ids):
        """[n, vocab] slots of the context bias table for the lanes' previous token."""
        prev = self._rows(self.recent, ids)[:, -1]
        h = _hash(self.ops, prev * 0 + 13, prev)
        off = ((h ^ (h >> 16)) * _MIX_MUL) & _M32
        return (off[:, None] + self.vidx[None, :]) & ((1 << CTX_BIAS_BITS) - 1)

    # -- learning -------------------------------------------------------------------------

    def update(self, tokens, ids=None) -> None:
        """Learn from the lanes' actual next tokens ([n] int64) and advance them."""
        ops, cfg = self.ops, self.cfg
        rows = self._lanes(ids)
        y = tokens
        if self.bias is not None and not self._skipped:
            b = self._rows(self.bias, ids) - ((self._f_model * cfg.bias_lr) >> 24)
            b[ops.arange(rows.shape[0]), y] += cfg.bias_lr
            b = ops.clip(b, -BIAS_CAP, BIAS_CAP)
            if ids is None:
                self.bias[...] = b
            else:
                self.bias[ids] = b
        if self.ctxb is not None and not self._skipped:
            cols = self._cidx
            c = self.ctxb[rows[:, None], cols] - ((self._f_model * cfg.ctx_bias) >> 24)
            c[ops.arange(rows.shape[0]), y] += cfg.ctx_bias
            self.ctxb[rows[:, None], cols] = ops.clip(c, -BIAS_CAP, BIAS_CAP)
        if cfg.skip:  # the skip's own state: reliability per context, skips in a row
            hit = (self.cand >= 0) & (self.cand == y)
            r = self.reliab[rows, self.ctx]
            r = r + ((hit * ONE - r) >> 5)
            self.reliab[rows, self.ctx] = ops.where(self.ctx > 0, r, self.reliab[rows, self.ctx])
            # (x * 0, not 0: a scalar would be copied from the host inside a CUDA graph)
            self.nskip[rows] = self.nskip[rows] + 1 if self._skipped else self.nskip[rows] * 0
        if cfg.sse_rate:
            if not self._skipped:
                c, j, w1, p = self._sse
                err = ((c == y) * TOTAL - p) * cfg.sse_rate >> 24  # Q16 log-odds step
                self.points[rows, j] = ops.clip(
                    self.points[rows, j] + ((err * (ONE - w1)) >> 16), -SSE_CAP, SSE_CAP)
                self.points[rows, j + 1] = ops.clip(
                    self.points[rows, j + 1] + ((err * w1) >> 16), -SSE_CAP, SSE_CAP)
        for k, (slot, chk, ok) in enumerate(self._slots):
            table = self.grams[k]
            e = table[rows, slot]
            same = (e >> 32) == chk
            count = ops.where(same & ((e & 0xFFFFFF) == y), ops.clip(((e >> 24) & 0xFF) + 1, 0, COUNT_CAP), 0)
            table[rows, slot] = ops.where(ok, (chk << 32) | (count << 24) | y, e)
        t = self._rows(self.t, ids)
        recent = self._rows(self.recent, ids)
        width = recent.shape[1]
        if width > 1:
            recent[:, : width - 1] = recent[:, 1:].clone() if ops.name == "torch" else recent[:, 1:].copy()
        recent[:, width - 1] = y
        if ids is not None:
            self.recent[ids] = recent
        if cfg.match_min:
            self._update_match(rows, ids, t, y)
        if ids is None:
            self.t += 1
        else:
            self.t[ids] = t + 1

    def _update_match(self, rows, ids, t, y) -> None:
        ops, cfg = self.ops, self.cfg
        self.hist[rows, ops.clip(t, 0, self.cap - 1)] = y
        mlen, ptr = self._rows(self.mlen, ids), self._rows(self.ptr, ids)
        hit = (mlen > 0) & (self._guess == y)
        mlen = ops.where(hit, mlen + 1, 0)
        ptr = ops.where(hit, ptr + 1, 0)
        recent = self._rows(self.recent, ids)
        width = recent.shape[1]
        h = t * 0 + 11
        for k in range(cfg.match_min):
            h = _hash(ops, h, recent[:, width - 1 - k])
        slot, chk = _finish_hash(h, cfg.table_bits)
        ok = t + 1 >= cfg.match_min
        e = self.mtable[rows, slot]
        found = ok & (mlen == 0) & ((e >> 32) == chk)
        ptr = ops.where(found, e & _M32, ptr)
        mlen = ops.where(found, 1, mlen)
        self.mtable[rows, slot] = ops.where(ok, (chk << 32) | (t + 1), e)
        if ids is None:
            self.mlen[...] = mlen
            self.ptr[...] = ptr
        else:
            self.mlen[ids] = mlen
            self.ptr[ids] = ptr
