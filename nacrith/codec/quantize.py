"""Float logits -> integer frequencies that sum to exactly 2**PRECISION.

Determinism contract: the only float operation is the first one, scaling
float32 logits by a power of two and flooring them, which is exact in IEEE
arithmetic.  Everything after it (the softmax, the normalisation, the rounding)
is int64 arithmetic with a fixed exp2 table, so numpy and torch, on any
machine, give the same integers for the same logits.

Steps, for logits x over a vocabulary of V tokens:
  q = floor(x * 2**LOGIT_BITS)                 fixed-point logits
  d = max(q) - q                               >= 0, natural-log units
  e = (d * LOG2E_FIX) >> LOGIT_BITS            the same distance in bits (Q16)
  w = EXP2_TABLE[frac(e)] >> int(e)            2**-e in Q30, 0 once e >= 31
  f = 1 + floor(w * (2**24 - V) / sum(w))      every token keeps at least 1
  the rounding remainder goes to the most probable token (lowest index on ties).
"""

from __future__ import annotations

import decimal
import hashlib
import math

import numpy as np

from ..errors import NonFiniteLogitsError

PRECISION = 24
TOTAL = 1 << PRECISION
LOGIT_BITS = 16
TABLE_BITS = 12  # resolution of the fractional exponent: 2**-12 bit
WEIGHT_BITS = 30  # the top token weighs 2**30
# log2(e) in Q16, rounded: 1.4426950408889634 * 65536 = 94548.46
LOG2E_FIX = 94548
MAX_SHIFT = 62


def decimal_table(value) -> np.ndarray:
    """value(ctx, ln2, x) for x = j / 2**TABLE_BITS, j = 0 .. 2**TABLE_BITS - 1, rounded to
    int64. decimal's exp and ln are correctly rounded, so such a table is the same on
    every platform (float pow need not be); each table's digest is checked after it."""
    ctx = decimal.Context(prec=40)
    ln2 = ctx.ln(decimal.Decimal(2))
    size = 1 << TABLE_BITS
    out = []
    for j in range(size):
        v = value(ctx, ln2, decimal.Decimal(j) / size)
        out.append(int(v.to_integral_value(rounding=decimal.ROUND_HALF_EVEN)))
    return np.array(out, dtype=np.int64)


def _exp2_table() -> np.ndarray:  # 2**-x in Q30
    scale = decimal.Decimal(1 << WEIGHT_BITS)
    return decimal_table(lambda ctx, ln2, x: ctx.exp(ctx.multiply(-x, ln2)) * scale)


EXP2_TABLE = _exp2_table()
TABLE_SHA256 = "b8ac697007f4aa90e8156a53c33aefa77c86f751c033192c3f28fcd076c995f8"
_digest = hashlib.sha256(EXP2_TABLE.astype("<i8").tobytes()).hexdigest()
if _digest != TABLE_SHA256:  # pragma: no cover - would mean a broken decimal module
    raise RuntimeError("exp2 table differs from the reference; refusing to code")


def table_digest() -> str:
    """SHA-256 of the exp2 table; part of the engine profile of every file."""
    return _digest


_TOP_WEIGHT = int(EXP2_TABLE[0])  # 2**30


def fixed(logits):
    """floor(x * 2**LOGIT_BITS) as int64 for float32/float16 logits (numpy or torch;
    exact: a power-of-two scaling and a floor). int64 logits (the integer engine's,
    already in these units) pass through. Non-finite logits are refused."""
    if isinstance(logits, np.ndarray):
        if logits.dtype == np.int64:
            return logits
        x = np.asarray(logits, dtype=np.float32)
        if not np.all(np.isfinite(x)):
            raise NonFiniteLogitsError("model produced non-finite logits")
        return np.floor(x * np.float32(1 << LOGIT_BITS)).astype(np.int64)
    import torch

    if logits.dtype == torch.int64:
        return logits
    return torch.floor(logits.float() * float(1 << LOGIT_BITS)).to(torch.int64)


def freqs_fixed(ops, q, table):
    """The integer softmax: frequencies [N, V] summing to TOTAL, every one >= 1, from
    fixed-point logits q [N, V] (units of 2**-LOGIT_BITS nats), on numpy or torch
    (xp.NumpyOps / xp.TorchOps). The one copy every engine and predictor uses."""
    d = ops.amax(q, -1) - q
    e = (d * LOG2E_FIX) >> LOGIT_BITS
    whole = ops.clip(e >> LOGIT_BITS, 0, MAX_SHIFT)
    frac = (e & ((1 << LOGIT_BITS) - 1)) >> (LOGIT_BITS - TABLE_BITS)
    w = table[frac] >> whole
    vocab = q.shape[-1]
    if vocab >= TOTAL:
        raise ValueError("vocabulary too large for the coder precision")
    f = 1 + ops.fdiv(w * (TOTAL - vocab), ops.rowsum(w))
    rest = TOTAL - ops.rowsum(f)
    # the remainder goes to the most probable token, the lowest index on ties: the
    # largest weight is always table[0] (the top logit has distance 0). Written with
    # where/amin, which torch.compile fuses (a scatter or argmax there did not compile).
    idx = ops.arange(vocab)
    top = ops.amin(ops.where(w == _TOP_WEIGHT, idx, vocab), -1)
    return f + ops.where(idx == top, rest, 0)


def frequencies(logits: np.ndarray) -> np.ndarray:
    """Integer frequencies (int64, shape like logits) for one or more rows of float32
    (or int64 fixed-point) logits. Each row sums to TOTAL and every entry is >= 1."""
    from ..xp import NumpyOps

    q = fixed(np.asarray(logits))
    squeeze = q.ndim == 1
    f = freqs_fixed(NumpyOps(), np.atleast_2d(q), EXP2_TABLE)
    return f[0] if squeeze else f


def frequencies_torch(logits):
    """The same integers as `frequencies`, computed with torch (any device)."""
    import torch

    from ..xp import TorchOps

    if logits.dtype != torch.int64 and not bool(torch.isfinite(logits.float()).all()):
        raise NonFiniteLogitsError("model produced non-finite logits")
    q = fixed(logits)
    squeeze = q.dim() == 1
    f = freqs_fixed(TorchOps(q.device), q.unsqueeze(0) if squeeze else q, table_torch(q.device))
    return f[0] if squeeze else f


def max_tokens(coded_bytes: int, vocab: int) -> int:
    """The most tokens that `coded_bytes` of coded data can hold over a vocabulary of
    `vocab`: every token keeps a frequency >= 1, so even the most probable one costs
    at least log2(TOTAL / (TOTAL - vocab + 1)) bits. A count above this bound cannot come
    from an encoder (with 256 bits for the coders' state and a 1% margin), so a
    header claiming one is forged or damaged; no decoder runs the model for it."""
    if not 2 <= vocab < TOTAL:
        return 0
    floor_bits = math.log2(TOTAL / (TOTAL - vocab + 1))
    return int((8 * coded_bytes + 256) * 1.01 / floor_bits)


def cost_bits(freqs: np.ndarray, symbol: int) -> float:
    """Bits an ideal coder spends on `symbol` under these frequencies."""
    return PRECISION - float(np.log2(freqs[symbol]))


# -- row-wise lookups for the GPU lanes ----------------------------------------------
# The same integers as `frequencies`, but only what the coder needs crosses back:
# (start, freq) of a known symbol for the encoder, or the symbol whose interval
# holds a slot for the decoder. Plain tensor ops, so that torch.compile may fuse
# them; integer ops give the same results fused or not.


def freqs_torch(x, table):
    """Integer frequency rows [N, V] from float logits on any torch device."""
    from ..xp import TorchOps

    return freqs_fixed(TorchOps(x.device), fixed(x), table)


def lookup_torch(logits, symbols, table):
    """(start, freq) of `symbols` ([N] int64) under each row of `logits` ([N, V], float32
    or float16: widening to float32 is exact, so the integers are those of `frequencies`)."""
    return lookup_freqs_torch(freqs_torch(logits, table), symbols)


def lookup_freqs_torch(f, symbols):
    """(start, freq) of `symbols` under integer frequency rows f ([N, V])."""
    import torch

    idx = torch.arange(f.shape[-1], device=f.device)
    start = torch.where(idx < symbols.unsqueeze(1), f, 0).sum(dim=-1)
    freq = f.gather(1, symbols.unsqueeze(1)).squeeze(1)
    return start, freq


def search_torch(logits, slots, table):
    """The symbol whose interval holds each slot, with its (start, freq)."""
    return search_freqs_torch(freqs_torch(logits, table), slots)


def search_freqs_torch(f, slots):
    """search_torch for integer frequency rows f ([N, V])."""
    import torch

    cdf = torch.cumsum(f, dim=-1)
    sym = torch.searchsorted(cdf, slots.unsqueeze(1), right=True).clamp_(max=f.shape[-1] - 1)
    end = cdf.gather(1, sym)
    freq = f.gather(1, sym)
    return sym.squeeze(1), (end - freq).squeeze(1), freq.squeeze(1)


def table_torch(device):
    import torch

    return torch.as_tensor(EXP2_TABLE, device=device)


def lookup_numpy(f: np.ndarray, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, freq) of `symbols` ([N]) under integer frequency rows f ([N, V])."""
    below = np.arange(f.shape[-1])[None, :] < symbols[:, None]
    return np.where(below, f, 0).sum(axis=-1), f[np.arange(f.shape[0]), symbols]


def search_numpy(f: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The symbol whose interval holds each slot, with its (start, freq)."""
    cdf = np.cumsum(f, axis=-1)
    sym = np.minimum((cdf <= slots[:, None]).sum(axis=-1), f.shape[-1] - 1)
    rows = np.arange(f.shape[0])
    freq = f[rows, sym]
    return sym, cdf[rows, sym] - freq, freq
