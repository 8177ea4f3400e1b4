"""llama.cpp context parameters that change its floats (batch and micro-batch sizes,
flash attention, KV layout) are written into the engine profile, and a decoder makes
its context from the file's values, not from its own defaults."""

import struct
from pathlib import Path

import pytest

import nacrith
from nacrith import api
from nacrith.engines.llama_cpp import ContextFloats, context_floats
from nacrith.formats import container, nc05

TEXT = (Path(__file__).parent / "data" / "golden.txt").read_bytes()[:400]


def _with_profile(blob: bytes, profile: str) -> bytes:
    """The frame re-written with another profile text (CRCs recomputed)."""
    header, pos = container.read_header(blob)
    payloads, _ = container.frame_payloads(blob, header, pos)
    header.profile = profile
    return container.write_frame(header, payloads)


def _contexts():
    return [k[-1] for k in api._CACHE if isinstance(k[-1], ContextFloats)]


def test_the_profile_names_the_context_and_the_decoder_makes_that_one(small, monkeypatch):
    st = api.settings_for("llama", **small)
    lm = api.load_model(None, st, floats=ContextFloats(48, 16))
    blob = nc05.encode_frame(lm, st, TEXT)
    profile = container.read_header(blob)[0].profile
    assert profile.endswith(" fa b48 u16 kvs")
    assert context_floats(profile) == ContextFloats(48, 16)
    monkeypatch.setattr(api, "_CACHE", {})
    assert nacrith.decompress(blob) == TEXT
    assert _contexts() == [ContextFloats(48, 16)]  # not the default batch of 32


def test_a_default_file_names_the_default_context(small):
    blob = nacrith.compress(TEXT, engine="llama", **small)
    assert context_floats(container.read_header(blob)[0].profile) == ContextFloats(32, 32)


def test_files_from_before_the_context_was_named_still_decode(small, monkeypatch):
    blob = nacrith.compress(TEXT, engine="llama", **small)
    profile = container.read_header(blob)[0].profile
    legacy = _with_profile(blob, profile[: profile.rindex(" fa ")] + " fa")
    assert context_floats(container.read_header(legacy)[0].profile) is None
    monkeypatch.setattr(api, "_CACHE", {})
    assert nacrith.decompress(legacy) == TEXT
    assert _contexts() == [ContextFloats(32, 32)]  # the rule those files were made under


@pytest.mark.parametrize("tail", [" fa b32 u64 kvs", " fa b32 u32 kvx", " xx"])
def test_a_context_this_version_cannot_make_is_refused(small, tail):
    blob = nacrith.compress(TEXT, engine="llama", **small)
    profile = container.read_header(blob)[0].profile
    bad = _with_profile(blob, profile[: profile.rindex(" fa ")] + tail)
    with pytest.raises(nacrith.ModelMismatchError, match="context|batch"):
        nacrith.decompress(bad)


def test_a_batch_too_small_for_the_lanes_is_refused(small):
    blob = nacrith.compress(TEXT, engine="llama", **small)
    profile = container.read_header(blob)[0].profile
    bad = _with_profile(blob, profile.replace(" b32 u32 ", " b2 u2 "))
    with pytest.raises(nacrith.CorruptDataError, match="batch"):
        nacrith.decompress(bad)
