"""Online predictors: integer identity numpy/torch, distribution invariants, that each
predictor learns, and round trips through both engines with each one on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import nacrith
from conftest import assert_same_bitstream, golden_here
from nacrith.engines.llama_cpp import lanes
from nacrith.codec.quantize import EXP2_TABLE, TOTAL, frequencies
from nacrith.formats import container
from nacrith.predictors.online import (
    LOG2_TABLE, ONE, Online, OnlineConfig, ilog2, squash,
)
from nacrith.xp import NumpyOps, TorchOps
from nacrith.settings import PREDICTORS_ON, Settings

DATA = Path(__file__).parent / "data"
ALL = OnlineConfig(bias_lr=2000, ngram=4, match_min=4, table_bits=10, sse_rate=3000, skip=60000, ctx_bias=3000)


def _stream(rng, steps, lanes, vocab, period=23):
    """Noisy logits over a token stream that repeats with a period, so that the
    N-gram and match models have something to find."""
    base = rng.integers(0, vocab, period)
    toks = np.stack([np.roll(np.tile(base, steps // period + 1)[:steps], 3 * j) for j in range(lanes)], 1)
    x = rng.standard_normal((steps, lanes, vocab)) * rng.uniform(0.5, 6, (steps, lanes, 1))
    x[np.arange(steps)[:, None], np.arange(lanes)[None, :], toks] += 1.5
    return x.astype(np.float32), toks


def _run(pred, logits, toks, torch_side=False):
    costs, skips = [], 0
    for i in range(len(toks)):
        pred.cheap()
        if pred.enabled_skip and bool(pred.skip_mask().all()):
            f = pred.skipped_freqs()
            skips += 1
        else:
            f = pred.freqs(torch.from_numpy(logits[i]) if torch_side else logits[i])
        f = f.numpy() if torch_side else f
        assert (f.sum(axis=1) == TOTAL).all() and f.min() >= 1
        y = toks[i]
        costs.append(f[np.arange(len(y)), y].copy())
        pred.update(torch.from_numpy(y) if torch_side else y)
    return np.array(costs), skips


def test_numpy_and_torch_give_the_same_integers():
    rng = np.random.default_rng(1)
    x, toks = _stream(rng, 160, 3, 700)
    a, sa = _run(Online(ALL, 3, 700, 161), x, toks)
    b, sb = _run(Online(ALL, 3, 700, 161, TorchOps("cpu")), x, toks, torch_side=True)
    assert (a == b).all() and sa == sb and sa > 0  # the skip path was taken too


def test_lane_by_lane_calls_equal_all_lanes_at_once():
    rng = np.random.default_rng(2)
    x, toks = _stream(rng, 80, 2, 500)
    cfg = OnlineConfig(bias_lr=2000, ngram=3, match_min=3, table_bits=9, sse_rate=3000, ctx_bias=5000)
    together, _ = _run(Online(cfg, 2, 500, 81), x, toks)
    p = Online(cfg, 2, 500, 81)
    for i in range(80):
        for lane in (1, 0):
            ids = np.array([lane])
            p.cheap(ids)
            f = p.freqs(x[i, lane : lane + 1], ids)
            assert f[0, toks[i, lane]] == together[i, lane]
            p.update(toks[i, lane : lane + 1], ids)


def test_the_integer_softmax_follows_its_definition():
    """codec/quantize.py's steps, one row at a time in Python integers, against the
    vectorised softmax on numpy and torch (the one copy every engine uses)."""
    from nacrith.codec.quantize import LOG2E_FIX, MAX_SHIFT, TOTAL, fixed, freqs_fixed

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 2000)) * 7).astype(np.float32)
    x[0, :4] = x[0].max()  # ties at the top
    q = fixed(x)
    for row, got in zip(q.tolist(), frequencies(x).tolist()):
        top = max(row)
        w = []
        for v in row:
            e = ((top - v) * LOG2E_FIX) >> 16
            w.append(int(EXP2_TABLE[(e & 0xFFFF) >> 4]) >> min(e >> 16, MAX_SHIFT))
        f = [1 + wi * (TOTAL - len(row)) // sum(w) for wi in w]
        f[w.index(max(w))] += TOTAL - sum(f)
        assert got == f
    t = freqs_fixed(TorchOps("cpu"), torch.from_numpy(q), torch.from_numpy(EXP2_TABLE))
    assert (t.numpy() == frequencies(x)).all()


def test_log2_and_squash_tables():
    ops = NumpyOps()
    xs = np.array([1 << k for k in range(31)], dtype=np.int64)
    assert (ilog2(ops, xs, LOG2_TABLE) == np.arange(31) << 16).all()
    s = np.array([-20 * ONE, -ONE, 0, ONE, 20 * ONE], dtype=np.int64)
    p = squash(ops, s, EXP2_TABLE)
    assert p[2] == TOTAL // 2 and (np.diff(p) > 0).all()
    assert p[1] + p[3] == TOTAL and abs(p[3] - TOTAL * 2 // 3) <= 1


@hsettings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([OnlineConfig(sse_rate=65536), ALL,
                                                   OnlineConfig(bias_lr=65536, ngram=1, sse_rate=1, table_bits=8),
                                                   OnlineConfig(ctx_bias=65536)]))
def test_every_distribution_is_valid(seed, cfg):
    """Extreme logits and rates still give frequencies >= 1 that sum to 2**24."""
    rng = np.random.default_rng(seed)
    x, toks = _stream(rng, 30, 2, 300, period=int(rng.integers(1, 9)))
    x *= rng.choice([0.0, 1.0, 40.0])
    _run(Online(cfg, 2, 300, 31), x, toks)


def _cost(cfg, x, toks):
    costs, _ = _run(Online(cfg, x.shape[1], x.shape[2], len(toks) + 1), x, toks)
    return float((24 - np.log2(costs)).sum())


def test_each_predictor_learns_a_repeating_stream():
    rng = np.random.default_rng(4)
    x, toks = _stream(rng, 300, 2, 800)
    plain = _cost(OnlineConfig(), x, toks)
    for cfg in (OnlineConfig(bias_lr=10000), OnlineConfig(ctx_bias=10000), OnlineConfig(sse_rate=3000, ngram=3),
                OnlineConfig(sse_rate=3000, match_min=4)):
        assert _cost(cfg, x, toks) < 0.95 * plain, cfg


def test_context_bias_learns_what_follows_each_token():
    """One token's successor depends on it alone: the context bias head learns each pair,
    the plain bias head (one vector for every context) cannot."""
    rng = np.random.default_rng(7)
    vocab, steps = 400, 600
    alphabet = rng.choice(vocab, 20, replace=False)  # as often as each other: no unigram to learn
    succ = dict(zip(alphabet.tolist(), rng.permutation(alphabet).tolist()))  # next = succ[prev]
    toks = np.zeros((steps, 1), dtype=np.int64)
    toks[0] = alphabet[0]
    for i in range(1, steps):
        toks[i] = succ[int(toks[i - 1, 0])] if rng.random() < 0.9 else rng.choice(alphabet)
    x = (rng.standard_normal((steps, 1, vocab)) * 0.5).astype(np.float32)
    plain = _cost(OnlineConfig(bias_lr=10000), x, toks)
    ctx = _cost(OnlineConfig(bias_lr=10000, ctx_bias=10000), x, toks)
    assert ctx < 0.8 * plain, (ctx, plain)


def test_invalid_combinations_are_refused():
    with pytest.raises(ValueError, match="mixer"):
        OnlineConfig(ngram=3).validate()
    with pytest.raises(ValueError, match="N-gram or match"):
        OnlineConfig(sse_rate=100, skip=100).validate()
    with pytest.raises(ValueError, match="llama.cpp engine"):
        Settings(schedule=2, context=64, slide=16, lanes=2, sse_rate=9, ngram=2, skip=9).validate()


# -- through the engines ----------------------------------------------------------------

TEXT = (DATA / "golden.txt").read_bytes()[:400]
REPEATED = TEXT * 3


@pytest.mark.parametrize("cfg", [
    dict(bias_lr=3000),
    dict(ctx_bias=3000),
    dict(sse_rate=3000),
    dict(sse_rate=3000, ngram=3, table_bits=10),
    dict(sse_rate=3000, match_min=4, table_bits=10),
])
def test_round_trip_with_each_predictor(small, cfg):
    blob = nacrith.compress(TEXT, **small, **cfg)
    header, _ = container.read_header(blob)
    st_ = Settings.from_header(header.settings)
    assert {k: getattr(st_, k) for k in cfg} == cfg and st_.online == 1
    assert nacrith.decompress(blob) == TEXT


def test_skip_round_trip_and_the_model_is_skipped():
    opts = dict(context=64, slide=16, chunk_bytes=4096, lanes=2, sse_rate=3000, match_min=4, ngram=2,
                table_bits=10, skip=40000)
    lanes.COUNTS.reset()
    blob = nacrith.compress(REPEATED, **opts)
    skipped = lanes.COUNTS.skipped
    assert 0 < skipped < lanes.COUNTS.tokens
    lanes.COUNTS.reset()
    assert nacrith.decompress(blob) == REPEATED
    assert lanes.COUNTS.skipped == skipped  # the decoder skipped the same tokens


def test_predictors_shrink_repeated_text():
    opts = dict(context=64, slide=16, chunk_bytes=4096, lanes=1)
    plain = nacrith.compress(REPEATED, **opts)
    tuned = nacrith.compress(REPEATED, **opts, **{**PREDICTORS_ON, "table_bits": 12})
    assert len(tuned) < len(plain)
    assert nacrith.decompress(tuned) == REPEATED


def test_torch_engine_round_trip_with_all_predictors():
    opts = dict(engine="torch", device="cpu", context=32, slide=8, chunk_bytes=300, chunk_tokens=0, lanes=3)
    blob = nacrith.compress(TEXT, **opts, **{**PREDICTORS_ON, "table_bits": 10})
    assert nacrith.Decompressor(device="cpu").decompress(blob) == TEXT


def test_online_golden_file():
    """Pins the predictors' integers (ONLINE_VERSION 1): decodes, and is reproduced."""
    golden = golden_here("golden-online.nc")
    text = (DATA / "golden.txt").read_bytes()
    assert nacrith.decompress(golden) == text
    header, _ = container.read_header(golden)
    st_ = Settings.from_header(header.settings)
    assert st_.online == 1 and st_.ngram and st_.match_min and st_.bias_lr and st_.sse_rate
    from dataclasses import asdict

    kept = {k: v for k, v in asdict(st_).items() if k not in ("schedule", "online")}
    assert_same_bitstream(nacrith.compress(text, engine=st_.engine, **kept), golden)


def test_cli_flags_turn_predictors_off():
    from nacrith.cli import predictor_options

    assert predictor_options("llama", False, False, False, True, False, None) == dict(
        sse_rate=0, ngram=0, match_min=0, skip=0)
    assert predictor_options("llama", True, False, False, False, False, 5)["bias_lr"] == 0
    assert predictor_options("llama", False, True, True, False, False, 5)["skip"] == 0
    assert predictor_options("llama", False, False, False, False, False, None, no_ctx_bias=True) == dict(ctx_bias=0, skip=0)


def test_a_header_cannot_ask_for_huge_tables():
    with pytest.raises(ValueError, match="table_bits"):
        Settings(lanes=256, sse_rate=1, ngram=6, match_min=4, table_bits=22).validate()
    Settings(lanes=8, sse_rate=1, ngram=6, match_min=4, table_bits=16).validate()
    with pytest.raises(ValueError, match="ctx_bias"):  # 2**18 slots a lane
        Settings(schedule=2, lanes=1024, context=512, slide=128, ctx_bias=1).validate()
