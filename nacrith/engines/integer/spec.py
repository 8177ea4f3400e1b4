"""The integer engine's arithmetic: constants and tables, version 1.

Everything the model computes is an integer function of the token ids and the
model file; the numbers below define it (docs/integer-engine.md is the prose
version). Any change that can change one integer takes a new VERSION; the
header stores the version and a digest of every table, and a decoder refuses a
file whose digest differs from its own.

Tables are made from Python's `decimal` (correctly rounded exp and ln; cos and
sin from series below, evaluated at 60 digits), never from libm, and checked
against their digests when loaded.
"""

from __future__ import annotations

import decimal
import hashlib
import struct

import numpy as np

from ...codec.quantize import EXP2_TABLE, LOG2E_FIX, TABLE_BITS

VERSION = 1

ACT_BITS = 16  # matmul inputs: int16 mantissas, one power-of-two exponent per row
QK_BITS = 12  # query and key mantissas, one exponent per (token, head)
V_BITS = 12  # value mantissas, one exponent per (token, head)
P_BITS = 16  # attention probabilities: floor(2**16 * w / sum(w)), so they sum to <= 2**16
RESID = 24  # residual stream: int64 in units of 2**-24
WEIGHT_UNIT = 24  # weights as integers in units of 2**-24 (exact for f16 block scales)
GAMMA_BITS = 16  # norm weights: round(gamma * 2**16)
NORM_BITS = 26  # RMSNorm pre-shift: max |x| brought into [2**25, 2**26)
LOGIT_UNIT = 16  # logits leave the model as int64 in units of 2**-16 nats (codec.quantize)
ROPE_FIX = 30  # base rotations in Q30; products compose in int64
ROPE_BITS = 15  # rotations applied in Q15
POS_BITS = 26  # positions below 2**26
EXACT = 1 << 53  # every float64 matmul sum stays below this, so it is exact in any order

_PREC = 60


def _ctx() -> decimal.Context:
    return decimal.Context(prec=_PREC, rounding=decimal.ROUND_HALF_EVEN)


def _pi(ctx: decimal.Context) -> decimal.Decimal:
    """Machin's formula, 16 atan(1/5) - 4 atan(1/239)."""

    tiny = decimal.Decimal(10) ** -(_PREC + 5)

    def atan_inv(n: int) -> decimal.Decimal:
        x = ctx.divide(1, n)
        x2 = ctx.multiply(x, x)
        total, term, k = x, x, 1
        while True:
            term = ctx.multiply(term, -x2)
            add = ctx.divide(term, 2 * k + 1)
            if abs(add) < tiny:
                return total
            total = ctx.add(total, add)
            k += 1

    return ctx.subtract(ctx.multiply(16, atan_inv(5)), ctx.multiply(4, atan_inv(239)))


def _cos_sin(angle: decimal.Decimal, ctx: decimal.Context, pi: decimal.Decimal):
    """cos and sin by their Taylor series after reducing the angle into [-pi, pi]."""
    two_pi = ctx.multiply(2, pi)
    turns = ctx.divide_int(ctx.add(angle, pi), two_pi)
    x = ctx.subtract(angle, ctx.multiply(turns, two_pi))
    x2 = ctx.multiply(x, x)
    c = s = decimal.Decimal(0)
    tc, ts, k = decimal.Decimal(1), x, 0
    tiny = decimal.Decimal(10) ** -(_PREC + 5)
    while abs(tc) > tiny or abs(ts) > tiny:
        c, s = ctx.add(c, tc), ctx.add(s, ts)
        tc = ctx.divide(ctx.multiply(tc, -x2), (2 * k + 1) * (2 * k + 2))
        ts = ctx.divide(ctx.multiply(ts, -x2), (2 * k + 2) * (2 * k + 3))
        k += 1
    return c, s


def rope_base(theta: float, head_dim: int) -> np.ndarray:
    """int64 [POS_BITS, head_dim // 2, 2]: round(2**30 * (cos, sin)(2**b * theta**(-2i/d)))."""
    ctx = _ctx()
    pi = _pi(ctx)
    ln_theta = ctx.ln(decimal.Decimal(theta))  # the GGUF float, exactly
    scale = decimal.Decimal(1 << ROPE_FIX)
    out = np.zeros((POS_BITS, head_dim // 2, 2), dtype=np.int64)
    for i in range(head_dim // 2):
        freq = ctx.exp(ctx.divide(ctx.multiply(-2 * i, ln_theta), head_dim))
        for b in range(POS_BITS):
            c, s = _cos_sin(ctx.multiply(1 << b, freq), ctx, pi)
            out[b, i, 0] = int(ctx.multiply(c, scale).to_integral_value())
            out[b, i, 1] = int(ctx.multiply(s, scale).to_integral_value())
    return out


SCORE_FIX = 24  # the score scale in Q24: |q.k| < 2**29 times it stays below 2**51
SCORE_CAP = 1 << 40  # scores are clamped to +-2**40 units of 2**-16 bits (never met in practice)


def score_scale(head_dim: int) -> int:
    """round(2**24 * log2(e) / sqrt(head_dim)): a q.k dot product in bits, Q24."""
    ctx = _ctx()
    log2e = ctx.divide(1, ctx.ln(decimal.Decimal(2)))
    v = ctx.divide(ctx.multiply(log2e, 1 << SCORE_FIX), ctx.sqrt(decimal.Decimal(head_dim)))
    return int(v.to_integral_value())


def float_ratio(x: float) -> tuple[int, int]:
    """A finite float as mantissa * 2**exponent, both integers, exactly."""
    num, den = float(x).as_integer_ratio()
    return num, -(den.bit_length() - 1)


def digest(rope: np.ndarray, scale: int, eps: tuple[int, int]) -> str:
    """SHA-256 over the version, the constants and every table the engine uses."""
    h = hashlib.sha256()
    consts = (VERSION, ACT_BITS, QK_BITS, V_BITS, P_BITS, RESID, WEIGHT_UNIT, GAMMA_BITS, NORM_BITS,
              LOGIT_UNIT, ROPE_FIX, ROPE_BITS, POS_BITS, LOG2E_FIX, TABLE_BITS, SCORE_FIX, SCORE_CAP, scale, *eps)
    h.update(struct.pack(f"<{len(consts)}q", *consts))
    h.update(EXP2_TABLE.astype("<i8").tobytes())
    h.update(rope.astype("<i8").tobytes())
    return h.hexdigest()
