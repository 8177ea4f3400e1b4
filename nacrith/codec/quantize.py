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

import numpy as np

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


def _check_logits(logits: np.ndarray) -> None:
    if not np.all(np.isfinite(logits)):
        raise FloatingPointError("model produced non-finite logits")


def frequencies(logits: np.ndarray) -> np.ndarray:
    """Integer frequencies (int64, shape like logits) for one or more rows.

    `logits` is float32 of shape (V,) or (N, V). Each row sums to TOTAL and
    every entry is >= 1.
    """
    x = np.asarray(logits, dtype=np.float32)
    _check_logits(x)
    squeeze = x.ndim == 1
    x = np.atleast_2d(x)
    vocab = x.shape[-1]
    if vocab >= TOTAL:
        raise ValueError("vocabulary too large for the coder precision")
    q = np.floor(x * np.float32(1 << LOGIT_BITS)).astype(np.int64)
    d = q.max(axis=-1, keepdims=True) - q
    e = (d * LOG2E_FIX) >> LOGIT_BITS
    whole = np.minimum(e >> LOGIT_BITS, MAX_SHIFT)
    frac = (e & ((1 << LOGIT_BITS) - 1)) >> (LOGIT_BITS - TABLE_BITS)
    w = EXP2_TABLE[frac] >> whole
    spare = TOTAL - vocab
    s = w.sum(axis=-1, keepdims=True)
    f = 1 + (w * spare) // s
    rest = TOTAL - f.sum(axis=-1)
    top = np.argmax(w, axis=-1)
    rows = np.arange(x.shape[0])
    f[rows, top] += rest
    return f[0] if squeeze else f


def frequencies_torch(logits):
    """The same integers as `frequencies`, computed with torch (any device)."""
    import torch

    x = logits.to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError("model produced non-finite logits")
    squeeze = x.dim() == 1
    if squeeze:
        x = x.unsqueeze(0)
    vocab = x.shape[-1]
    table = torch.as_tensor(EXP2_TABLE, device=x.device)
    q = torch.floor(x * float(1 << LOGIT_BITS)).to(torch.int64)
    d = q.max(dim=-1, keepdim=True).values - q
    e = (d * LOG2E_FIX) >> LOGIT_BITS
    whole = torch.clamp(e >> LOGIT_BITS, max=MAX_SHIFT)
    frac = (e & ((1 << LOGIT_BITS) - 1)) >> (LOGIT_BITS - TABLE_BITS)
    w = table[frac] >> whole
    spare = TOTAL - vocab
    s = w.sum(dim=-1, keepdim=True)
    f = 1 + torch.div(w * spare, s, rounding_mode="floor")
    rest = TOTAL - f.sum(dim=-1)
    # torch.argmax does not promise the first index on ties; take it explicitly.
    idx = torch.arange(vocab, device=x.device).expand_as(w)
    top = torch.where(w == w.max(dim=-1, keepdim=True).values, idx, vocab).min(dim=-1).values
    f[torch.arange(x.shape[0], device=x.device), top] += rest
    return f[0] if squeeze else f


def cost_bits(freqs: np.ndarray, symbol: int) -> float:
    """Bits an ideal coder spends on `symbol` under these frequencies."""
    return PRECISION - float(np.log2(freqs[symbol]))


# -- row-wise lookups for the GPU lanes ----------------------------------------------
# The same integers as `frequencies`, but only what the coder needs crosses back:
# (start, freq) of a known symbol for the encoder, or the symbol whose interval
# holds a slot for the decoder. Written with plain tensor ops so that torch.compile
# may fuse them; integer ops give the same results fused or not.


def _weights_torch(x, table):
    import torch

    q = torch.floor(x.float() * float(1 << LOGIT_BITS)).to(torch.int64)
    d = q.amax(dim=-1, keepdim=True) - q
    e = (d * LOG2E_FIX) >> LOGIT_BITS
    whole = torch.clamp(e >> LOGIT_BITS, max=MAX_SHIFT)
    frac = (e & ((1 << LOGIT_BITS) - 1)) >> (LOGIT_BITS - TABLE_BITS)
    return table[frac] >> whole


def _floor_div(num, den):
    """num // den for non-negative int64 num < 2**62 and den > 0, without the GPU's
    slow 64-bit division: a float64 estimate (off by at most one), then corrected."""
    import torch

    q = torch.floor(num.double() / den.double()).to(torch.int64)
    r = num - q * den
    return q - (r < 0).to(torch.int64) + (r >= den).to(torch.int64)


def _freqs_torch(x, table):
    """Frequencies and the index of the top token (lowest index among the largest weights)."""
    import torch

    w = _weights_torch(x, table)
    vocab = x.shape[-1]
    f = 1 + _floor_div(w * (TOTAL - vocab), w.sum(dim=-1, keepdim=True))
    rest = TOTAL - f.sum(dim=-1, keepdim=True)
    idx = torch.arange(vocab, device=x.device)
    # the largest weight is always table[0] (the top logit has distance 0)
    top = torch.where(w == int(EXP2_TABLE[0]), idx, vocab).amin(dim=-1, keepdim=True)
    return f + torch.where(idx == top, rest, 0)


def lookup_torch(logits, symbols, table):
    """(start, freq) of `symbols` ([N] int64) under each row of `logits` ([N, V], float32
    or float16: widening to float32 is exact, so the integers are those of `frequencies`)."""
    return lookup_freqs_torch(_freqs_torch(logits, table), symbols)


def lookup_freqs_torch(f, symbols):
    """(start, freq) of `symbols` under integer frequency rows f ([N, V])."""
    import torch

    idx = torch.arange(f.shape[-1], device=f.device)
    start = torch.where(idx < symbols.unsqueeze(1), f, 0).sum(dim=-1)
    freq = f.gather(1, symbols.unsqueeze(1)).squeeze(1)
    return start, freq


def search_torch(logits, slots, table):
    """The symbol whose interval holds each slot, with its (start, freq)."""
    return search_freqs_torch(_freqs_torch(logits, table), slots)


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
