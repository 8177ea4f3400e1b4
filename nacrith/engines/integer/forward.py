"""The integer engine's forward: token ids -> logits in units of 2**-16 nats, exactly.

Written once against `ops` (numpy or torch); a backend supplies only the two
heavy parts, `linear` (an exact integer matrix product) and `attend` (integer
attention over one lane's window), so every backend computes the same integers.
docs/integer-engine.md states the arithmetic in prose; spec.py holds the numbers.

Rows. A call evaluates rows; row t is one input token of lane `lane[t]` at window
slot `slot[t]`, rotated at absolute position `pos[t]`. Rows of one lane are at
consecutive slots, so the encoder can give a whole run of a chunk in one call and
the decoder one row per lane: each row's result depends only on its lane's window
(every other step is per row), so both get the same integers.

Window. Slot 0 holds BOS. A lane's window holds BOS and its latest inputs; when a
new input would not fit, the `slide` oldest after BOS are dropped (Window.slide).
Keys are rotated once, at their input's absolute index; BOS is re-rotated from its
unrotated key at each slide, to sit just before the first kept input. So every
query sees every key at the distance llama.cpp's shifted window gives it, and no
kept key is ever re-rounded.
"""

from __future__ import annotations

import numpy as np

from ...codec.quantize import EXP2_TABLE, LOG2E_FIX, TABLE_BITS
from . import spec
from .ops import bitlen, floor_div, isqrt, quantise, shift

_SIGMOID_CLAMP = 1 << 31  # gate inputs beyond +-32768 nats are clamped (sigmoid is 0 or 1 there)


def rmsnorm(o, h, g, g_shift: int, dim: int, eps):
    """h: residual rows (int64, units 2**-RESID). Returns int16 mantissas a and the
    per-row exponent e (value a * 2**e) of h / rms(h) * gamma."""
    top = o.amax(abs(h), -1)
    s = o.maximum(bitlen(o, top) - spec.NORM_BITS, -spec.NORM_BITS)
    x = o.where(s >= 0, h >> o.clip(s, 0, 62), h << o.clip(-s, 0, 62))  # floor
    ss = o.sum(x * x, -1)
    mean = floor_div(ss, dim)
    # eps in units of x**2: x = h * 2**-s, h in 2**-RESID, so eps * 2**(2 * (RESID - s))
    em, ee, cap = eps
    k = ee + 2 * (spec.RESID - s)
    eps_x = o.where(k >= 0, em << o.clip(k, 0, cap), em >> o.clip(-k, 0, 62))  # saturating
    r = isqrt(o, mean + eps_x)
    y = floor_div(x * g, r)  # h / rms * gamma, in units of 2**-g_shift
    a, e = quantise(o, y, spec.ACT_BITS, (-1,))
    return a, e - g_shift


def rope_rows(o, base, pos):
    """(cos, sin) in Q15, [rows, half], of each position's rotation: the base rotations
    (spec.rope_base) of its set bits composed in Q30, lowest bit first."""
    c = pos[:, None] * 0 + (1 << spec.ROPE_FIX)
    s = pos[:, None] * 0
    for b in range(spec.POS_BITS):
        cb, sb = base[b, :, 0], base[b, :, 1]
        nc = shift(o, c * cb - s * sb, c * 0 + spec.ROPE_FIX)
        ns = shift(o, s * cb + c * sb, c * 0 + spec.ROPE_FIX)
        on = ((pos >> b) & 1)[:, None] == 1
        c, s = o.where(on, nc, c), o.where(on, ns, s)
    k = c * 0 + (spec.ROPE_FIX - spec.ROPE_BITS)
    return shift(o, c, k), shift(o, s, k)


def rotate(o, m, cos, sin):
    """Rotate pairs (2i, 2i+1) of m [rows, heads, head_dim] by per-row (cos, sin) [rows, half]."""
    a, b = m[..., 0::2], m[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    k = a * 0 + spec.ROPE_BITS
    ra = shift(o, a * c - b * s, k)
    rb = shift(o, a * s + b * c, k)
    out = o.cat([ra[..., None], rb[..., None]], -1)
    return out.reshape(m.shape)


def sigmoid_q24(o, s_bits, table):
    """1 / (1 + 2**-s) in units of 2**-24, s in units of 2**-16 bits."""
    a = abs(s_bits)
    whole = o.clip(a >> 16, 0, 62)
    w = table[(a & 0xFFFF) >> (16 - TABLE_BITS)] >> whole  # 2**-a in Q30
    small = floor_div(w << 24, (1 << 30) + w)
    return o.where(s_bits >= 0, (1 << 24) - small, small)


def softmax_p(o, bits, masked, table):
    """Attention probabilities from scores in units of 2**-16 bits: floor(2**P_BITS * w / sum w)
    with w = 2**-(max - score) (the exp2 table), masked entries 0."""
    low = -(1 << 62)
    b = o.where(masked, low, bits)
    d = o.amax(b, -1) - b
    d = o.where(masked, 0, d)
    w = table[(d & 0xFFFF) >> (16 - TABLE_BITS)] >> o.clip(d >> 16, 0, 62)
    w = o.where(masked, 0, w)
    return floor_div(w << spec.P_BITS, o.sum(w, -1))


def score_bits(o, s, qe, ke, scale: int):
    """q.k dot products s (exact, |s| < 2**29) -> scores in units of 2**-16 bits:
    round(s * 2**(qe + ke) * scale * 2**-24 * 2**16), clamped to +-SCORE_CAP. The left
    shift is capped at 11, where every result is past the clamp already."""
    sh = o.maximum(spec.SCORE_FIX - 16 - qe - ke, -11)
    return o.clip(shift(o, s * scale, sh), -spec.SCORE_CAP, spec.SCORE_CAP)


def qkv_split(o, y, e, cos, sin, nh: int, nkv: int, hd: int):
    """The qkv product's rows (value y * 2**(e - 24)) -> rotated query mantissas and
    exponents, rotated and unrotated key mantissas, value mantissas, with exponents."""
    T = y.shape[0]
    q = y[:, : nh * hd].reshape(T, nh, hd)
    k = y[:, nh * hd : (nh + nkv) * hd].reshape(T, nkv, hd)
    v = y[:, (nh + nkv) * hd :].reshape(T, nkv, hd)
    ev = e[:, :, None] - spec.WEIGHT_UNIT
    qm, qe = quantise(o, q, spec.QK_BITS, (-1,))
    km, ke = quantise(o, k, spec.QK_BITS, (-1,))
    vm, ve = quantise(o, v, spec.V_BITS, (-1,))
    qe, ke, ve = (qe + ev)[..., 0], (ke + ev)[..., 0], (ve + ev)[..., 0]
    return rotate(o, qm, cos, sin), qe, rotate(o, km, cos, sin), ke, vm, ve, km


def resid_norm(o, h, y, e, g, g_shift, dim: int, eps):
    """Add a product's rows (value y * 2**(e - 24)) to the residual, then RMSNorm it."""
    h = h + shift(o, y, -(e - spec.WEIGHT_UNIT + spec.RESID))
    a, e = rmsnorm(o, h, g, g_shift, dim, eps)
    return h, a, e


def swiglu(o, y, e, table):
    """The gate/up product's rows -> silu(gate) * up as int16 mantissas and exponents."""
    F = y.shape[1] // 2
    g = o.clip(shift(o, y[:, :F], -(e - spec.WEIGHT_UNIT + 16)), -_SIGMOID_CLAMP, _SIGMOID_CLAMP)  # Q16 nats
    um, ue = quantise(o, y[:, F:], spec.ACT_BITS, (-1,))
    sig = sigmoid_q24(o, (g * LOG2E_FIX) >> 16, table)
    p = ((g * sig) >> 24) * um  # silu(g) * up, value p * 2**(ue - 24 - 16)
    a, e2 = quantise(o, p, spec.ACT_BITS, (-1,))
    return a, e2 + ue + e - spec.WEIGHT_UNIT - 16


def _plain(fn):
    return fn


class Forward:
    """The model over rows (see module docstring), on a backend.

    The elementwise stages between the products are plain functions of tensors, so a
    backend may hand `fuse` (torch.compile) to have each made one kernel or a few;
    the integers are the same either way."""

    def __init__(self, weights, backend, fuse=None):
        self.w = weights
        self.be = backend
        o = self.o = backend.ops
        self.exp2 = o.asarray(EXP2_TABLE)
        self.rope = o.asarray(weights.rope)
        em, ee = weights.eps
        self.eps = (o.asarray(em), ee, 62 - int(em).bit_length())
        # shifts as arrays: a compiled stage then serves every layer
        self.gam = [(o.asarray(ly.attn_norm), o.asarray(ly.attn_norm_shift), o.asarray(ly.ffn_norm),
                     o.asarray(ly.ffn_norm_shift)) for ly in weights.layers]
        self.out_norm = (o.asarray(weights.out_norm), o.asarray(weights.out_norm_shift))
        # made once: a host-to-device copy inside a step would break CUDA graph capture
        self._embed_shift = o.asarray(spec.WEIGHT_UNIT - spec.RESID)
        f = fuse or _plain
        self.f_norm, self.f_qkv, self.f_groups = f(rmsnorm), f(qkv_split), f(quantise_groups)
        self.f_resid, self.f_swiglu, self.f_logits = f(resid_norm), f(swiglu), f(shift)

    def hidden(self, tokens, lane, slot, pos):
        """Rows -> the final norm's output (int16 mantissas, per-row exponent)."""
        o, w, be = self.o, self.w, self.be
        nh, nkv, hd, dim = w.n_head, w.n_kv, w.head_dim, w.dim
        h = shift(o, be.embed(tokens), self._embed_shift)
        cos, sin = rope_rows(o, self.rope, pos)
        bos = slot == 0
        an, ans = self.gam[0][:2]
        a, e = self.f_norm(o, h, an, ans, dim, self.eps)
        for li in range(w.n_layer):
            fn, fns = self.gam[li][2:]
            gn, gns = self.gam[li + 1][:2] if li + 1 < w.n_layer else self.out_norm
            y = be.linear(li, "qkv", a)  # value y * 2**(e - 24)
            qr, qe, kr, ke, vm, ve, km = self.f_qkv(o, y, e, cos, sin, nh, nkv, hd)
            be.store(li, lane, slot, kr, ke, vm, ve, km, bos)
            ov, oe = be.attend(li, lane, slot, qr, qe)
            a, e = self.f_groups(o, ov, oe, spec.ACT_BITS)
            h, a, e = self.f_resid(o, h, be.linear(li, "o", a), e, fn, fns, dim, self.eps)
            a, e = self.f_swiglu(o, be.linear(li, "ffn_up", a), e, self.exp2)
            h, a, e = self.f_resid(o, h, be.linear(li, "ffn_down", a), e, gn, gns, dim, self.eps)
        return a, e

    def logits(self, a, e):
        """Final-norm rows -> logits, int64 in units of 2**-16 nats."""
        y = self.be.linear(None, "logits", a)
        return self.f_logits(self.o, y, -(e - spec.WEIGHT_UNIT + spec.LOGIT_UNIT))


def quantise_groups(o, m, e, bits: int):
    """Rows of groups (m [rows, groups, n], exponents e [rows, groups]) -> int mantissas
    [rows, groups * n] under one exponent per row, rounded."""
    top = o.amax(abs(m), -1)[..., 0]  # [rows, groups]
    lead = o.where(top > 0, e + bitlen(o, top), -(1 << 40))
    E = o.amax(lead, -1) - (bits - 1)  # [rows, 1]
    lim = (1 << (bits - 1)) - 1
    out = o.clip(shift(o, m, (E - e)[:, :, None]), -lim, lim)
    return out.reshape(m.shape[0], -1), o.where(E < -(1 << 39), 0, E)
