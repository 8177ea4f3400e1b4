"""The row-stage kernels (engines/integer/rows.py) give forward.py's integers.

As tests/test_kernels.py: on a GPU with NACRITH_TEST_DEVICE=cuda, elsewhere in Triton's
interpreter in a process of its own. Each kernel is compared with the forward.py
function it replaces, run by torch on the CPU, on random rows that reach the bounds
(zero rows, int16 extremes, residuals near 2**62 / dim, shifts both ways).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_in_interpreter

pytest.importorskip("triton")
torch = pytest.importorskip("torch")

from nacrith.codec.quantize import EXP2_TABLE  # noqa: E402
from nacrith.engines.integer import forward, kernels, rows, spec  # noqa: E402
from nacrith.xp import TorchOps  # noqa: E402

DEVICE = os.environ.get("NACRITH_TEST_DEVICE", "cpu")
HERE = DEVICE != "cpu" or kernels.INTERPRETED
here = pytest.mark.skipif(not HERE, reason="run by test_in_the_interpreter, in a process with TRITON_INTERPRET=1")
o = TorchOps(torch.device("cpu"))
EPS = spec.float_ratio(1e-5)


@pytest.mark.skipif(HERE, reason="the kernels run in this process")
def test_in_the_interpreter():
    run_in_interpreter(__file__, "11 passed, 1 skipped")


def _dev(x):
    return torch.as_tensor(x).to(DEVICE)


def _eps(dev):
    em, ee = EPS
    return (torch.tensor(em, dtype=torch.int64, device=dev), ee, 62 - int(em).bit_length())


@here
def test_rope_is_rope_rows():
    rng = np.random.default_rng(1)
    half = 8
    ang = rng.uniform(0, 6.3, (spec.POS_BITS, half))
    base = np.stack([np.round(np.cos(ang) * 2**30), np.round(np.sin(ang) * 2**30)], -1).astype(np.int64)
    pos = np.array([0, 1, 2, 3, 511, 2048, (1 << spec.POS_BITS) - 1, *rng.integers(0, 1 << 26, 9)], np.int64)
    cos, sin = rows.rope(_dev(base), _dev(pos))
    want = forward.rope_rows(o, torch.from_numpy(base), torch.from_numpy(pos))
    assert torch.equal(cos.cpu(), want[0]) and torch.equal(sin.cpu(), want[1])


def _residuals(rng, T, dim):
    h = rng.integers(-(1 << 40), 1 << 40, (T, dim)) >> rng.integers(0, 40, (T, 1))
    h[0] = 0  # an empty row: norm of zeros
    h[1, :] = (1 << 62) // dim // 4  # near the bound of the sum of squares
    h[2, ::2] *= -1
    return h


@here
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("clear", [False, True])
def test_resid_norm_is_forward(add, clear):
    rng = np.random.default_rng(2 + add + 2 * clear)
    T, dim = 5, 72  # dim not a power of two: masked lanes
    h = _residuals(rng, T, dim)
    gamma = rng.integers(-(1 << 17), 1 << 17, dim)
    gshift = np.int64(16)
    y = rng.integers(-(1 << 50), 1 << 50, (T, dim))
    ye = rng.integers(-30, 10, T)
    th, tg = torch.from_numpy(h), torch.from_numpy(gamma)
    if add:
        wh, wa, we = forward.resid_norm(o, th, torch.from_numpy(y), torch.from_numpy(ye)[:, None], tg,
                                        torch.tensor(gshift), dim, _eps("cpu"))
    else:
        wh = th
        wa, we = forward.rmsnorm(o, th, tg, torch.tensor(gshift), dim, _eps("cpu"))
    dh, dy, dye = _dev(h.copy()), _dev(y.copy()), _dev(ye.copy())
    a = torch.zeros((T, dim), dtype=torch.int32, device=DEVICE)
    ae = torch.zeros(T, dtype=torch.int64, device=DEVICE)
    rows.resid_norm(dh, dy if add else None, dye if add else None, a, ae, _dev(gamma), _dev(gshift), _eps(DEVICE),
                    clear)
    assert torch.equal(dh.cpu(), wh)
    assert torch.equal(a.cpu().long(), wa) and torch.equal(ae.cpu(), we[:, 0])
    assert int(wa.abs().max()) >= 1 << 14  # the mantissas fill their 16 bits
    assert torch.equal(dy.cpu(), torch.zeros_like(dy.cpu()) if clear and add else torch.from_numpy(y))


@here
@pytest.mark.parametrize("R,clear", [(1, True), (3, False)])
def test_qkv_is_split_and_store(R, clear):
    """qkv_split's rotated queries (head-major, as attention reads them), keys and values
    stored at each row's lane and slot, unrotated keys of slot 0 as BOS."""
    rng = np.random.default_rng(R)
    L, nh, nkv, hd, C = 2, 6, 2, 16, 12
    g, T, N = nh // nkv, L * R, (nh + 2 * nkv) * hd
    y = rng.integers(-(1 << 45), 1 << 45, (T, N)) >> rng.integers(0, 45, (T, 1))
    y[0, :hd] = 0  # a zero head
    y[1, hd : 2 * hd] = -(1 << 45)
    ye = rng.integers(-40, 20, T)
    pos = rng.integers(0, 5000, T)
    ang = rng.uniform(0, 6.3, (spec.POS_BITS, hd // 2))
    base = np.stack([np.round(np.cos(ang) * 2**30), np.round(np.sin(ang) * 2**30)], -1).astype(np.int64)
    cos, sin = forward.rope_rows(o, torch.from_numpy(base), torch.from_numpy(pos))
    lane = np.repeat(np.arange(L), R)
    slot = np.tile(np.arange(R), L) + (0 if R > 1 else 4)  # R > 1: slot 0 among them (BOS)
    qr, qe, kr, ke, vm, ve, km = forward.qkv_split(o, torch.from_numpy(y), torch.from_numpy(ye)[:, None], cos, sin,
                                                   nh, nkv, hd)
    # windows full of a sentinel: the reference writes the rows' cells, the kernel must too
    K, V = (torch.full((L, nkv, C, hd), 7, dtype=torch.int16) for _ in range(2))
    KE, VE = (torch.full((L, nkv, C), 7, dtype=torch.int32) for _ in range(2))
    bos = torch.full((L, nkv, hd), 7, dtype=torch.int16)
    dK, dV, dKE, dVE, dbos = (x.clone().to(DEVICE) for x in (K, V, KE, VE, bos))
    li, sl = torch.from_numpy(lane), torch.from_numpy(slot)
    K[li, :, sl], KE[li, :, sl] = kr.to(torch.int16), ke.to(torch.int32)
    V[li, :, sl], VE[li, :, sl] = vm.to(torch.int16), ve.to(torch.int32)
    first = sl == 0
    bos[li[first]] = km[first].to(torch.int16)
    q_want = qr.reshape(L, R, nkv, g, hd).permute(0, 2, 1, 3, 4).reshape(L, nkv, R * g, hd)
    qe_want = qe.reshape(L, R, nkv, g).permute(0, 2, 1, 3).reshape(L, nkv, R * g)
    q = torch.zeros((L, nkv, R * g, hd), dtype=torch.int32, device=DEVICE)
    qe_d = torch.zeros((L, nkv, R * g), dtype=torch.int64, device=DEVICE)
    dy = _dev(y.copy())
    rows.qkv(dy, _dev(ye), _dev(cos), _dev(sin), _dev(lane), _dev(slot), q, qe_d, dK, dKE, dV, dVE, dbos, R, nh, nkv,
             clear)
    assert torch.equal(q.cpu().long(), q_want) and torch.equal(qe_d.cpu(), qe_want)
    for got, want in ((dK, K), (dV, V), (dKE, KE), (dVE, VE), (dbos, bos)):
        assert torch.equal(got.cpu(), want)
    assert bool((dy == 0).all()) == clear


@here
@pytest.mark.parametrize("R", [1, 4])
def test_merge_is_quantise_groups(R):
    rng = np.random.default_rng(10 + R)
    L, nh, nkv, hd = 2, 9, 3, 16  # nine heads: a padded head block
    g, T = nh // nkv, L * R
    pv = rng.integers(-(1 << 40), 1 << 40, (L, nkv, R * g, hd)) >> rng.integers(0, 40, (L, nkv, R * g, 1))
    oe = rng.integers(-40, 0, (L, nkv, R * g))
    pv[0, 0, 0] = 0  # a zero head
    pv[1, :, :g] = 0  # a zero row (the first row of lane 1)
    ov = torch.from_numpy(pv).reshape(L, nkv, R, g, hd).permute(0, 2, 1, 3, 4).reshape(T, nh, hd)
    ovE = torch.from_numpy(oe).reshape(L, nkv, R, g).permute(0, 2, 1, 3).reshape(T, nh)
    wa, we = forward.quantise_groups(o, ov, ovE, spec.ACT_BITS)
    dpv = _dev(pv.copy())
    a = torch.zeros((T, nh * hd), dtype=torch.int32, device=DEVICE)
    ae = torch.zeros(T, dtype=torch.int64, device=DEVICE)
    rows.merge(dpv, _dev(oe), a, ae, R, nh, clear=True)
    assert torch.equal(a.cpu().long(), wa) and torch.equal(ae.cpu(), we[:, 0])
    assert int(we[R if R > 1 else 1, 0]) == 0 and bool((dpv == 0).all())


@here
def test_swiglu_is_forward():
    rng = np.random.default_rng(5)
    T, F = 4, 40
    y = rng.integers(-(1 << 52), 1 << 52, (T, 2 * F)) >> rng.integers(0, 52, (T, 1))
    y[0, :F] = 1 << 52  # gates past the sigmoid's clamp
    y[1, F:] = 0  # a zero up half
    ye = rng.integers(-30, 5, T)
    ye[0] = 20
    wa, we = forward.swiglu(o, torch.from_numpy(y), torch.from_numpy(ye)[:, None], torch.from_numpy(EXP2_TABLE))
    dy = _dev(y.copy())
    a = torch.zeros((T, F), dtype=torch.int32, device=DEVICE)
    ae = torch.zeros(T, dtype=torch.int64, device=DEVICE)
    rows.swiglu(dy, _dev(ye), a, ae, _dev(EXP2_TABLE), clear=True)
    assert torch.equal(a.cpu().long(), wa) and torch.equal(ae.cpu(), we[:, 0])
    assert bool((dy == 0).all())


@here
def test_row_path_gives_the_staged_path_integers(model_path):
    """GroupBackend's twelve launches a layer (_hidden_rows) against its staged path
    (forward.py's functions around the same products and attention), the real model cut to
    two layers: encoder runs above and below 32 rows (kept zeroed buffers, and buffers made
    for the call), decoder steps, BOS at slot 0 and a window slide."""
    import dataclasses

    from nacrith.engines.integer import weights
    from nacrith.engines.integer.groups import Group, GroupBackend

    w = weights.load(model_path)
    w = dataclasses.replace(w, n_layer=2, layers=w.layers[:2])
    rng = np.random.default_rng(7)
    L, C, S = 2, 24, 8
    toks = torch.from_numpy(rng.integers(0, w.n_vocab, (L, 25))).to(DEVICE)
    toks[:, 0] = 1  # BOS-like first input of every lane
    got = {}
    for rk in (False, True):
        be = GroupBackend(w, L, C, DEVICE)
        be.row_kernels = rk
        G, out, i = Group(be, C, S), [], 0
        for R in (17, 1, 2, 4, 1):  # 34 rows; steps of 2, 4 and 8 rows; the last after the slide
            G.make_room()
            with torch.no_grad():
                a, e = G.run(toks[:, i : i + R])
            out.append((a.cpu().long(), e.cpu().reshape(-1)))
            i += R
        got[rk] = out
    for (a0, e0), (a1, e1) in zip(got[False], got[True]):
        assert torch.equal(a0, a1) and torch.equal(e0, e1)
