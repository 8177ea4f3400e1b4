"""The torch engine: model, integer lookups, rANS, lanes, workers (CPU in CI;
NACRITH_TEST_DEVICE=cuda runs the same tests on a GPU)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import nacrith
from nacrith import api
from nacrith.codec import rans
from nacrith.codec.quantize import frequencies, lookup_torch, search_torch, table_torch
from nacrith.errors import CorruptDataError, ModelMismatchError
from nacrith.formats import container

DEVICE = os.environ.get("NACRITH_TEST_DEVICE", "cpu")
SMALL = dict(engine="torch", device=DEVICE, context=32, slide=8, chunk_bytes=300, chunk_tokens=0, lanes=3)


@pytest.fixture(scope="module")
def text():
    here = os.path.dirname(__file__)
    return open(os.path.join(here, "..", "examples", "sample.txt"), "rb").read()[:1400]


def _random_logits(rng, rows, vocab):
    x = rng.standard_normal((rows, vocab)) * rng.uniform(0.1, 12, (rows, 1))
    x[0, :5] = x[0].max()  # ties at the top
    x[1] = 0.0  # a flat row
    return x.astype(np.float32)


def test_lookups_match_numpy_reference():
    rng = np.random.default_rng(3)
    logits = _random_logits(rng, 6, 3000)
    f = frequencies(logits)
    cdf = np.cumsum(f, axis=1)
    table = table_torch(DEVICE)
    lg = torch.from_numpy(logits).to(DEVICE)
    sym = torch.from_numpy(rng.integers(0, 3000, 6)).to(DEVICE)
    start, freq = (t.cpu().numpy() for t in lookup_torch(lg, sym, table))
    rows = np.arange(6)
    s = sym.cpu().numpy()
    assert (freq == f[rows, s]).all() and (start == cdf[rows, s] - f[rows, s]).all()
    slots = torch.from_numpy(cdf[rows, s] - 1).to(DEVICE)  # the last slot of each symbol
    got, st_, fr = (t.cpu().numpy() for t in search_torch(lg, slots, table))
    assert (got == s).all() and (st_ == start).all() and (fr == freq).all()


@hsettings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, (1 << 24) - 2), st.integers(1, 1 << 24)), max_size=40), min_size=1, max_size=4))
def test_rans_round_trip(lanes):
    """Any (start, freq) sequences code and decode back, lane by lane."""
    seqs = [[(s, max(1, min(f, (1 << 24) - s))) for s, f in lane] for lane in lanes]
    steps = max(1, max(map(len, seqs)))
    starts = np.zeros((steps, len(seqs)), np.int64)
    freqs = np.ones((steps, len(seqs)), np.int64)
    for j, q in enumerate(seqs):
        for t, (s, f) in enumerate(q):
            starts[t, j], freqs[t, j] = s, f
    counts = [len(q) for q in seqs]
    payloads = rans.encode_lanes(starts, freqs, counts)
    words, lens = rans.stream_words(payloads, len(seqs))
    w = torch.from_numpy(words)
    x = rans.decoder_state(w)
    ptr = torch.full((len(seqs),), 2)
    for t in range(steps):
        slot = x & rans.MASK
        active = torch.tensor([t < n for n in counts])
        want = torch.from_numpy(starts[t])
        ok = (slot >= want) & (slot < want + torch.from_numpy(freqs[t]))
        assert bool((ok | ~active).all())
        rans.advance_torch(x, ptr, w, slot, want, torch.from_numpy(freqs[t]), active)
    assert (x.numpy() == rans.LOW).all() and (ptr.numpy() == lens).all()


def test_model_close_to_llama_cpp(model_path):
    """Same weights, other arithmetic: the coding cost of real text (with a window
    slide) agrees with llama.cpp's within 2%."""
    from nacrith.engines.llama_cpp.model import LlamaModel
    from nacrith.engines.torch_float.workers import _model

    lm = LlamaModel(str(model_path), n_ctx=32)
    tm = _model(str(model_path), DEVICE)
    toks = [lm.bos] + lm.tokenize(b"It was the best of times, it was the worst of times, it was the age of "
                                  b"wisdom, it was the age of foolishness, it was the epoch of belief, it was "
                                  b"the epoch of incredulity, it was the season of Light.")
    cache = tm.new_cache(1, 32)
    bits_a = bits_b = 0.0
    pos = 0
    with torch.no_grad():
        for i, t in enumerate(toks[:-1]):
            a = lm.decode([t], [pos], [0], [1])[0].astype(np.float64)
            b = tm.step(torch.tensor([t], device=DEVICE), torch.tensor([pos], device=DEVICE), cache)[0]
            b = b.double().cpu().numpy()
            nxt = toks[i + 1]
            bits_a += np.log(np.exp(a - a.max()).sum()) + a.max() - a[nxt]
            bits_b += np.log(np.exp(b - b.max()).sum()) + b.max() - b[nxt]
            pos += 1
            if pos == 32:
                lm.shift(0, 1, 8, pos)
                cache.slide(1, 8, pos)
                pos -= 8
    assert len(toks) > 40  # the window slid
    assert abs(bits_a - bits_b) / bits_a < 0.02


def test_round_trip_over_slides_and_chunk_ends(text, model_path):
    blob = nacrith.compress(text, model=model_path, **SMALL)
    h, _ = next(container.iter_frames(memoryview(blob)))
    assert h.settings["schedule"] == 2 and h.profile.startswith("torch")
    assert len(h.entries) >= 4  # two groups of three lanes, one of them padded
    assert max(e.n_tokens for e in h.entries) > 32  # windows slid
    assert nacrith.decompress(blob, model=model_path, device=DEVICE) == text
    # a lane's bytes do not depend on what the other lanes hold
    from nacrith.chunking import split_chunks

    cut = split_chunks(text, SMALL["chunk_bytes"], bool(h.settings.get("balance", 0)))[0][1]
    first = nacrith.compress(text[:cut], model=model_path, **SMALL)
    _, p0 = next(container.iter_frames(memoryview(first)))
    _, ps = next(container.iter_frames(memoryview(blob)))
    assert bytes(p0[0]) == bytes(ps[0])


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_damage_is_detected(text, model_path, where):
    """A bit flipped in a chunk's stream, with the container's CRCs rewritten so
    that only the rANS decoder and the chunk checksum can notice."""
    blob = nacrith.compress(text[:600], model=model_path, **SMALL)
    h, payloads = next(container.iter_frames(memoryview(blob)))
    p = bytearray(payloads[0])
    p[min(len(p) - 1, int(where * len(p)))] ^= 0x10
    bad = container.write_frame(h, [bytes(p)] + [bytes(x) for x in payloads[1:]])
    with pytest.raises(CorruptDataError):
        nacrith.decompress(bad, model=model_path, device=DEVICE)


def test_other_engine_profile_is_refused(text, model_path, monkeypatch):
    blob = nacrith.compress(text[:300], model=model_path, **SMALL)
    from nacrith.engines.torch_float import workers as engine

    api._CACHE.clear()
    monkeypatch.setattr(engine, "profile", lambda device: "torch 0.0 cuda 0 Some GPU sm_00 float16 graphs")
    with pytest.raises(ModelMismatchError, match="Some GPU"):
        nacrith.decompress(blob, model=model_path, device=DEVICE)
    api._CACHE.clear()


# on CPU the workers share the processor; on CUDA each needs a GPU of its own
TWO_WORKERS = pytest.mark.skipif(DEVICE == "cuda" and torch.cuda.device_count() < 2,
                                 reason="two workers on CUDA need two GPUs")


@TWO_WORKERS
def test_workers_give_the_same_bytes(text, model_path):
    """Two worker processes take the groups; the file is the one a single worker makes."""
    one = nacrith.compress(text, model=model_path, gpus=1, **SMALL)
    api._CACHE.clear()
    two = nacrith.Compressor(model=model_path, gpus=2, **SMALL)
    try:
        assert two.compress(text) == one
        dec = nacrith.Decompressor(model=model_path, device=DEVICE, gpus=2)
        assert dec.decompress(one) == text
        # damage one chunk: the worker that decodes it fails, and so does the call
        h, payloads = next(container.iter_frames(memoryview(one)))
        bad = [bytes(p) for p in payloads]
        bad[-1] = bad[-1][:-4] + bytes(4) if bad[-1][-4:] != bytes(4) else bad[-1][:-4] + b"\x01\x00\x00\x00"
        with pytest.raises(CorruptDataError):
            dec.decompress(container.write_frame(h, bad))
    finally:
        two.lm.engine.close()
        api._CACHE.clear()


def test_token_chunks_fill_every_lane(text, model_path):
    """chunk_tokens cuts the token stream into equal chunks (the last shorter)."""
    opts = dict(SMALL, chunk_tokens=40)
    blob = nacrith.compress(text, model=model_path, **opts)
    h, _ = next(container.iter_frames(memoryview(blob)))
    counts = [e.n_tokens for e in h.entries]
    assert len(counts) >= 4 and set(counts[:-1]) == {40} and 0 < counts[-1] <= 40
    assert h.settings["chunk_tokens"] == 40
    assert nacrith.decompress(blob, model=model_path, device=DEVICE) == text


def test_token_chunks_in_hybrid_frames(model_path):
    """NC06 text with stray bytes, cut by tokens: an escape is never split from its byte."""
    raw = ("Caf\u00e9 au lait. " * 12).encode("latin-1") + b"\x04\xff plain words again and again " * 3
    from nacrith.formats import nc06
    from nacrith.settings import SCHEDULE_GROUPS, Settings

    opts = {k: v for k, v in SMALL.items() if k not in ("engine", "device", "chunk_tokens")}
    st = Settings(schedule=SCHEDULE_GROUPS, chunk_tokens=16, **opts).validate()
    lm = api.load_model(model_path, st, device=DEVICE)
    blob = nc06.encode_frame(lm, st, raw, choose_smaller=False, all_text=True)
    h, _ = next(container.iter_frames(memoryview(blob)))
    assert h.kind == container.KIND_HYBRID and sum(e.n_tokens for e in h.entries) > 32
    assert nacrith.decompress(blob, model=model_path, device=DEVICE) == raw


@TWO_WORKERS
def test_warm_up_on_every_worker(model_path):
    from nacrith.settings import SCHEDULE_GROUPS, Settings

    st = Settings(schedule=SCHEDULE_GROUPS, context=32, slide=8, lanes=2).validate()
    lm = api.load_model(model_path, st, device=DEVICE, gpus=2)
    try:
        lm.engine.warm_up(st, lm.model.bos)  # returns only once both workers ran it
    finally:
        lm.engine.close()
        api._CACHE.clear()
