"""The Triton kernels (engines/integer/products.py, attention.py, kernels.py) give the integers of the float64 products.

On a GPU (NACRITH_TEST_DEVICE=cuda) they run as they do for users; elsewhere in Triton's
interpreter, which runs the same kernel code with numpy: this file runs itself again in a
process with TRITON_INTERPRET=1 (Triton reads it as it compiles the kernels at import, so
it cannot be set for this process without changing every later test's engine). Without
Triton the engine keeps its float64 products and these tests are skipped. Inputs are
random at the bounds the engine guarantees (int16 activations, mantissas of 12 bits
rotated, probabilities up to 2**16), with the extremes put in on purpose.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_in_interpreter

pytest.importorskip("triton")
torch = pytest.importorskip("torch")

from nacrith.codec.quantize import EXP2_TABLE  # noqa: E402
from nacrith.engines.integer import attention, groups, kernels, products, spec, weights  # noqa: E402
from nacrith.xp import TorchOps  # noqa: E402

DEVICE = os.environ.get("NACRITH_TEST_DEVICE", "cpu")
# the kernel tests run here on a GPU or when the kernels were made by the interpreter;
# otherwise test_in_the_interpreter runs them in a process of their own
HERE = DEVICE != "cpu" or kernels.INTERPRETED
here = pytest.mark.skipif(not HERE, reason="run by test_in_the_interpreter, in a process with TRITON_INTERPRET=1")


@pytest.mark.skipif(HERE, reason="the kernels run in this process")
def test_in_the_interpreter():
    run_in_interpreter(__file__, "63 passed, 1 skipped")  # 11 products, 44 attentions, 5 bias-head steps, 2 stores, 1


def _exact_product(a: np.ndarray, bw) -> np.ndarray:
    return (a.astype(object) @ bw.dense().T.astype(object)).astype(np.int64)  # Python integers


@here
@pytest.mark.parametrize("rows,gemm", [(1, "triton"), (3, "triton"), (17, "triton"), (70, "triton"), (70, "cublas")])
@pytest.mark.parametrize("kind", ["q4_1", "q8_0"])
def test_block_linear_is_the_exact_product(rows, gemm, kind, monkeypatch):
    """Blocks (cut for few rows), and limbs by the Triton kernel or by one library product
    (cuBLAS on a GPU, torch's CPU product here) cut into slices of 32 rows."""
    monkeypatch.setattr(products, "_LIMB_ROWS", 64)  # 70 rows by limbs (1,024 by default: the same integers)
    monkeypatch.setattr(products, "_LIMB_GEMM", gemm)
    monkeypatch.setattr(products, "_GEMM_ROWS", 32)  # 70 rows: three slices of 24, 24 and 22
    rng = np.random.default_rng(rows)
    n, k = 200, 256  # n not a multiple of the tile: masked columns; 8 blocks: cut for few rows
    if kind == "q4_1":  # nibbles and a negative offset, as the model's weights
        q = rng.integers(0, 16, (n, k))
        d = rng.integers(1, 1 << 17, (n, k // 32))
        m = -8 * d + rng.integers(-999, 999, (n, k // 32))
    else:
        q = rng.integers(-127, 128, (n, k))
        d = rng.integers(1, 1 << 16, (n, k // 32))
        m = np.zeros_like(d)
    q[0], q[1] = q.max(), q.min()
    bw = weights.BlockWeight(q.astype(np.int8), d, m)
    a = rng.integers(-32767, 32768, (rows, k))
    a[0, :] = 32767  # the extremes of int16 activations: the halves' edge cases
    if rows > 1:
        a[1, :] = -32767
    W = products.BlockMatrix.of(bw, DEVICE)
    assert products.cuts(rows, W) == (rows <= 32)  # both ways of summing are compared
    assert W.limbs is not None and products._by_limbs(rows, W) == (rows >= 64)  # ... and the limbs
    y = products.block_linear(torch.from_numpy(a).to(DEVICE), W)
    assert y.dtype == torch.int64
    assert np.array_equal(y.cpu().numpy(), _exact_product(a, bw))


@here
def test_limbs_hold_the_widest_weights_and_refuse_wider(monkeypatch):
    """Weights whose w' needs all of three limbs (the top limb at +-127) give the exact
    product by limbs; a matrix one bit wider has none and takes the blocks, still exact; one
    as wide after its common shift (2**6) has limbs again."""
    monkeypatch.setattr(products, "_LIMB_ROWS", 33)
    rng = np.random.default_rng(5)
    n, k, rows = 130, 96, 40
    q = rng.integers(-127, 128, (n, k))
    q[:, 0], q[:, 1] = 127, -127
    for d_top, t, has in ((1 << 16) - 1, 0, True), ((1 << 17) - 1, 0, False), (((1 << 16) - 1) << 6, 6, True):
        d = np.full((n, k // 32), d_top)  # odd: no common shift; the third as wide once shifted by 6
        bw = weights.BlockWeight(q.astype(np.int8), d, np.zeros_like(d))
        W = products.BlockMatrix.of(bw, DEVICE)
        assert (W.limbs is not None) == has
        assert products._by_limbs(rows, W) == has
        if has:
            assert int(W.limbs[2].abs().max()) == 127 and int(W.shift.min()) == int(W.shift.max()) == t
            dev = lambda x: torch.from_numpy(x).to(DEVICE)  # noqa: E731 (made 7 outputs at a time: the same)
            parts = products._limbs(dev(bw.q), dev(bw.d), dev(bw.m), rows=7)
            assert all(torch.equal(x, y) for x, y in zip(parts, (W.limbs, W.colsum, W.shift)))
        a = rng.integers(-32767, 32768, (rows, k))
        a[0], a[1] = 32767, -32767
        y = products.block_linear(torch.from_numpy(a).to(DEVICE), W)
        assert np.array_equal(y.cpu().numpy(), _exact_product(a, bw))


@here
@pytest.mark.parametrize("R,s0,shift,C", [(1, 0, -24, 200), (1, 37, -24, 200), (1, 199, -30, 200), (2, 60, -24, 200),
                                          (5, 90, -20, 200), (40, 3, -26, 200), (30, 150, -8, 200), (1, 140, -24, 150),
                                          (1, 120, -8, 200), (1, 70, -64, 200), (5, 30, 24, 200)])
@pytest.mark.parametrize("cache,f64", [(False, False), (True, False), (False, True), (True, True)])
def test_attention_is_the_float64_attention(R, s0, shift, C, cache, f64, monkeypatch):
    """groups.attention on int16 windows (the kernels) and on float64 ones. Rows at slots s0 .. s0 + R - 1 of every lane, against windows of 200 slots whose
    later slots hold stale values (masked); exponents chosen around `shift` so the scores
    range from flat to saturated (shift -8: clamped at SCORE_CAP; -64: shifted right past
    62 bits, all 0; +24: the left shift held at 11 bits). 150 slots: three key
    splits, fewer than the power of two the passes read their partial values as. R = 1
    and 2 (3 and 6 rows a kv head) take the elementwise products, R >= 5 the int8 dots
    (attention._FEW_ROWS). f64: the scores scaled in float64 and the weights in int32
    (NACRITH_F64_SCORES). cache:
    passes 2 and 3 read pass 1's scores back (attention.score_cache) instead of computing them."""
    monkeypatch.setenv("NACRITH_SCORE_CACHE", "1" if cache else "0")
    monkeypatch.setenv("NACRITH_F64_SCORES", "1" if f64 else "0")
    assert attention.score_cache(1) == cache
    rng = np.random.default_rng(R * 1000 + s0)
    L, nkv, g, hd = 2, 3, 3, 64
    nh, T = nkv * g, L * R
    dev = torch.device(DEVICE)
    lim = 2897  # rotated 12-bit mantissas reach sqrt(2) * 2**11
    t = lambda x, dt: torch.from_numpy(x).to(dt).to(dev)  # noqa: E731
    K = t(rng.integers(-lim, lim + 1, (L, nkv, C, hd)), torch.int16)
    V = t(rng.integers(-2047, 2048, (L, nkv, C, hd)), torch.int16)
    V[0, 0, : s0 + R, 0] = 2047  # one value column at its bound
    KE = t(rng.integers(shift // 2 - 3, shift // 2 + 3, (L, nkv, C)), torch.int32)
    VE = t(rng.integers(-12, -4, (L, nkv, C)), torch.int32)
    qr = t(rng.integers(-lim, lim + 1, (T, nh, hd)), torch.int64)
    qe = t(rng.integers(shift // 2 - 3, shift // 2 + 3, (T, nh)), torch.int64)
    slot = (torch.arange(R).repeat(L) + s0).to(dev)
    table = torch.as_tensor(EXP2_TABLE, device=dev)
    score = spec.score_scale(hd)
    o, slots = TorchOps(dev), torch.arange(C, device=dev)
    out, oe = groups.attention(o, qr, qe, K, V, KE, VE, slots, slot, score, table)  # int16 windows: the kernels
    want, want_e = groups.attention(o, qr, qe, K.double(), V.double(), KE, VE, slots, slot, score, table)
    assert torch.equal(out, want) and torch.equal(oe, want_e)
    assert want.abs().max() > 0


def test_the_kernels_are_used_only_where_they_run(monkeypatch):
    cuda = torch.device("cuda")
    modern = torch.cuda.is_available() and torch.cuda.get_device_capability(cuda) >= (8, 0)
    monkeypatch.delenv("NACRITH_KERNELS", raising=False)
    assert kernels.available(cuda) == (kernels.INTERPRETED or modern)
    assert kernels.available(torch.device("cpu")) == kernels.INTERPRETED
    monkeypatch.setenv("NACRITH_KERNELS", "0")
    assert not kernels.available(cuda) and not kernels.available(torch.device("cpu"))


def _online_pair(V: int, lanes: int, cfg, dev):
    from nacrith.predictors.bias_kernel import BiasSteps
    from nacrith.predictors.online import Online

    mine = Online(cfg, lanes, V, 64, TorchOps(dev))
    return Online(cfg, lanes, V, 64, TorchOps(dev)), mine, BiasSteps(mine, torch.as_tensor(EXP2_TABLE, device=dev))


def _logits(rng, steps, lanes, V, dev):
    """Fixed-point logits from flat to peaked (ties at the top included), as the model gives."""
    z = rng.integers(-(20 << 16), 12 << 16, (steps, lanes, V))
    z[:, 0, :7] = 12 << 16  # a tie for the most probable token: the lowest index takes the rest
    z[1, 1, :] = 5  # one flat row
    return torch.from_numpy(z).to(dev)


@here
@pytest.mark.parametrize("V,bias_lr,ctx_bias", [(3001, 30000, 20000), (700, 0, 65536), (2048, 65536, 0),
                                                (49152, 10000, 10000)])
def test_bias_kernel_encodes_as_the_predictors(V, bias_lr, ctx_bias):
    """BiasSteps.encode: (start, freq) of every step's target and the heads' state after
    them equal Online.freqs / update followed by the coder's lookup, step by step."""
    from nacrith.codec.quantize import lookup_freqs_torch
    from nacrith.predictors.online import OnlineConfig

    rng = np.random.default_rng(V)
    dev, lanes = torch.device(DEVICE), 3
    steps = 3 if V > 10000 else 12
    ref, mine, kern = _online_pair(V, lanes, OnlineConfig(bias_lr=bias_lr, ctx_bias=ctx_bias), dev)
    z = _logits(rng, steps, lanes, V, dev)
    tg = torch.from_numpy(rng.integers(0, V, (steps, lanes))).to(dev)
    tg[:, 2] = tg[0, 2]  # one lane repeats its token: the biases grow towards the cap
    st, fr = torch.zeros_like(tg), torch.zeros_like(tg)
    kern.encode(z, tg, st, fr, steps)
    for s in range(steps):
        ref.cheap()
        want_st, want_fr = lookup_freqs_torch(ref.freqs(z[s]), tg[s])
        ref.update(tg[s])
        assert torch.equal(st[s], want_st) and torch.equal(fr[s], want_fr), s
    for a, b in zip(ref._all(), mine._all()):
        assert torch.equal(a, b)
    assert (fr > 1).any() and (mine.bias if bias_lr else mine.ctxb).abs().max() > 0


@here
def test_bias_kernel_decodes_as_the_predictors():
    """BiasSteps.decode: the symbol of every slot, its interval, and the state after it,
    against search_freqs_torch on Online's frequencies; slots at both ends included."""
    from nacrith.codec.quantize import TOTAL, search_freqs_torch
    from nacrith.predictors.online import OnlineConfig

    rng = np.random.default_rng(5)
    dev, lanes, V, steps = torch.device(DEVICE), 3, 5000, 10
    ref, mine, kern = _online_pair(V, lanes, OnlineConfig(bias_lr=20000, ctx_bias=30000), dev)
    z = _logits(rng, steps, lanes, V, dev)
    slots = torch.from_numpy(rng.integers(0, TOTAL, (steps, lanes))).to(dev)
    slots[0, 0], slots[0, 1] = 0, TOTAL - 1
    sym, st, fr = (torch.zeros(lanes, dtype=torch.int64, device=dev) for _ in range(3))
    for s in range(steps):
        kern.decode(z[s].contiguous(), slots[s].contiguous(), sym, st, fr)
        ref.cheap()
        want = search_freqs_torch(ref.freqs(z[s]), slots[s])
        ref.update(want[0])
        assert all(torch.equal(a, b) for a, b in zip((sym, st, fr), want)), s
    for a, b in zip(ref._all(), mine._all()):
        assert torch.equal(a, b)


@here
@pytest.mark.parametrize("expanded", [False, True])
def test_store_writes_what_indexed_assignment_writes(expanded):
    """kernels.store against GroupBackend's indexed assignment, rows of several lanes
    (lane-major runs, or the decoder's one slot for every lane: an expanded tensor)."""
    rng = np.random.default_rng(7)
    dev = torch.device(DEVICE)
    L, nkv, C, hd = 3, 3, 50, 64
    R = 1 if expanded else 4
    T = L * R
    lane = torch.arange(L, device=dev).repeat_interleave(R)
    slot = torch.tensor([17], device=dev).expand(T) if expanded else (torch.arange(R).repeat(L) + 9).to(dev)
    kr = torch.from_numpy(rng.integers(-2897, 2898, (T, nkv, hd))).to(dev)
    vm = torch.from_numpy(rng.integers(-2047, 2048, (T, nkv, hd))).to(dev)
    ke = torch.from_numpy(rng.integers(-40, 10, (T, nkv))).to(dev)
    ve = torch.from_numpy(rng.integers(-40, 10, (T, nkv))).to(dev)
    windows = lambda: [torch.from_numpy(rng.integers(-99, 99, shape)).to(dt).to(dev)  # noqa: E731
                       for shape, dt in [((L, nkv, C, hd), torch.int16), ((L, nkv, C), torch.int32)] * 2]
    mine = windows()
    want = [x.clone() for x in mine]
    kernels.store(mine[0], mine[1], mine[2], mine[3], lane, slot, kr, ke, vm, ve[:, :])
    for w, x in zip(want, (kr, ke, vm, ve)):
        w[lane, :, slot] = x.to(w.dtype)
    assert all(torch.equal(a, b) for a, b in zip(mine, want))
