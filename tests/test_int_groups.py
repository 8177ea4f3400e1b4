"""The integer engine's lockstep groups (engines/integer/groups.py), the GPU schedule,
run here on the CPU's torch: the same bytes as the C kernels for any group size, files
of either decode under the other, damage is refused.

NACRITH_TEST_DEVICE=cuda runs them on a GPU (by hand, on the GPU machine).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from nacrith.errors import CorruptDataError

DEVICE = os.environ.get("NACRITH_TEST_DEVICE", "cpu")
# context 64 with a slide of 16: the 1,600-byte text slides every window several times,
# 300-byte chunks of the 1,600 bytes: three balanced chunks, one group of three lanes
SMALL = dict(engine="int", context=64, slide=16, chunk_bytes=300)


@pytest.fixture(scope="module")
def text():
    return (Path(__file__).parent / "data" / "golden.txt").read_bytes()[:1600]


def _engine(model_path, backend: str, lanes=None):
    from nacrith.api import load_model, settings_for

    st = settings_for(**SMALL)
    eng = load_model(model_path, st).engine.inner
    eng.backend, eng.device, eng.lanes, eng._state = backend, DEVICE if backend == "torch" else None, lanes, None
    return eng


def _compress(model_path, text, backend, lanes=None):
    import nacrith

    comp = nacrith.Compressor(model=model_path, **SMALL)
    eng = comp.lm.engine.inner
    saved = eng.backend, eng.device, eng.lanes
    try:
        eng.backend, eng.device, eng.lanes, eng._state = backend, DEVICE if backend == "torch" else None, lanes, None
        return comp.compress(text)
    finally:
        (eng.backend, eng.device, eng.lanes), eng._state = saved, None


@pytest.fixture(scope="module")
def native_blob(model_path, text):
    return _compress(model_path, text, "native")


def test_groups_give_the_bytes_of_the_c_kernels(model_path, text, native_blob):
    blob = _compress(model_path, text, "torch")  # one group of every chunk
    assert hashlib.sha256(blob).hexdigest() == hashlib.sha256(native_blob).hexdigest()


def test_groups_decode_files_of_the_c_kernels(model_path, text, native_blob):
    import nacrith

    assert nacrith.Decompressor(model=model_path, device=DEVICE).decompress(native_blob) == text


def test_the_engine_calls_agree_and_a_damaged_stream_is_refused(model_path, text):
    """Engine.encode / decode directly, groups of 4 lanes (so two groups, the second of 2
    chunks): the C kernels' payloads, decoded back, and one changed bit in a stream is a
    CorruptDataError."""
    from nacrith.api import load_model, settings_for

    st = settings_for(**SMALL)
    lm = load_model(model_path, st)
    toks = lm.model.tokenize(text)
    lists = [toks[i : i + 70] for i in range(0, len(toks), 70)]  # 70 > 64: every window slides
    bos = lm.model.bos
    native = _engine(model_path, "native")
    want, _ = native.encode(st, bos, lists)
    groups = _engine(model_path, "torch", lanes=4)
    try:
        got, _ = groups.encode(st, bos, lists)
        assert got == want
        assert groups.decode(st, bos, [len(x) for x in lists], got) == lists
        bad = list(got)
        b = bytearray(bad[-1])
        b[9] ^= 0x10
        bad[-1] = bytes(b)
        with pytest.raises(CorruptDataError):
            groups.decode(st, bos, [len(x) for x in lists], bad)
    finally:
        groups.backend, groups.device, groups.lanes, groups._state = "native", None, None, None


def test_padded_runs_give_the_same_payloads(model_path, text):
    """Runs padded to `block` rows per lane with copies of each lane's last input (as
    compiled runs are, on a GPU): the C kernels' payloads still. Runs of 24 rows in
    windows of 64: runs cut short by the room left and by the chunks' ends are padded."""
    from nacrith.api import load_model, settings_for

    st = settings_for(**SMALL)
    lm = load_model(model_path, st)
    toks = lm.model.tokenize(text)
    lists = [toks[i : i + 70] for i in range(0, len(toks), 70)]
    bos = lm.model.bos
    want, _ = _engine(model_path, "native").encode(st, bos, lists)
    groups = _engine(model_path, "torch", lanes=4)
    try:
        r = groups.runner(st, bos, groups._group_lanes(st, len(lists)))
        r.block = r.be.block = 24
        r.be.pad_runs = True
        got, _ = groups.encode(st, bos, lists)
        assert got == want
    finally:
        groups.backend, groups.device, groups.lanes, groups._state = "native", None, None, None


def test_group_lanes_fit_the_device(monkeypatch):
    """A group's lanes: GROUP_LANES on a CPU; on a GPU as many as half its memory holds,
    at most MAX_LANES, at least one, and the same whatever is free (a warm runner's own
    cache must not change the count)."""
    import torch

    from nacrith.engines.integer import groups

    class W:
        n_layer, n_kv, head_dim, n_vocab = 30, 3, 64, 49152

    per = groups.lane_bytes(W, 2048)
    assert per == 30 * 3 * 2048 * (4 * 64 + 8) + 128 * 49152
    assert groups.group_lanes(W, 2048, "cpu") == groups.GROUP_LANES
    for free, total, want in [(80 << 30, 80 << 30, (40 << 30) // per), (1 << 30, 80 << 30, (40 << 30) // per),
                              (1 << 40, 1 << 40, groups.MAX_LANES), (1 << 20, 1 << 20, 1)]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev, f=free, t=total: (f, t))
        assert groups.group_lanes(W, 2048, "cuda:0") == want


@pytest.mark.skipif(DEVICE == "cuda" and __import__("torch").cuda.device_count() < 2,
                    reason="two workers on CUDA need two GPUs")
def test_two_workers_give_the_bytes_of_the_c_kernels(model_path, text, native_blob):
    """gpus=2: the three chunks go to two worker processes as groups of two lanes and of
    one (engines/pool.py); the file is the C kernels' byte for byte, the workers decode
    it, and a damaged stream fails the call with CorruptDataError from the worker."""
    import nacrith
    from nacrith import api
    from nacrith.formats import container

    opts = {k: v for k, v in SMALL.items() if k != "engine"}
    comp = nacrith.Compressor(model=model_path, engine="int", device=DEVICE, gpus=2, **opts)
    try:
        assert comp.lm.engine.gpus == 2
        assert comp.compress(text) == native_blob
        h, payloads = next(container.iter_frames(memoryview(native_blob)))
        assert len(payloads) == 3 and comp.lm.engine._group_lanes(comp.settings, 3) == 2
        dec = nacrith.Decompressor(model=model_path, device=DEVICE, gpus=2)
        assert dec.decompress(native_blob) == text
        bad = [bytes(p) for p in payloads]
        b = bytearray(bad[2])  # the second group's chunk
        b[9] ^= 0x10
        bad[2] = bytes(b)
        with pytest.raises(CorruptDataError):
            dec.decompress(container.write_frame(h, bad))
    finally:
        comp.lm.engine.close()
        api._CACHE.clear()
