"""Unwrapping hard-wrapped text (nacrith/reflow.py) and its entries in files."""

import dataclasses
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import nacrith
from nacrith import reflow
from nacrith.errors import CorruptDataError
from nacrith.formats import container
from nacrith.formats.nc05 import LLM_CODEC, UNWRAPPED_CODEC
from nacrith.settings import Settings

DATA = Path(__file__).parent / "data"
WORDS = (DATA / "golden.txt").read_text(encoding="utf-8").split()


def wrapped(width=60, paragraphs=8, crlf=False) -> bytes:
    words = WORDS * 40
    paras = [textwrap.fill(" ".join(words[i * 70 : i * 70 + 120]), width) for i in range(paragraphs)]
    text = ("\n\n".join(paras) + "\n").encode()
    return text.replace(b"\n", b"\r\n") if crlf else text


# bytes where slots, blanks and CRs are frequent
_piece = st.sampled_from([b" ", b"\n", b"\r\n", b"\r", b"\t", b"  ", b"ab", b"x", b"word", b"\xc3\xa9", b"."])


@settings(max_examples=300, deadline=None)
@given(st.lists(_piece, max_size=80).map(b"".join))
def test_unwrapping_is_exactly_undone(chunk):
    for version in reflow.VERSIONS:
        p = reflow.plan(chunk, version, min_breaks=0, max_bits=float("inf"))
        if p is None:  # nothing to gain: neither CRLF-only nor a single slot
            continue
        assert len(p.text) <= len(chunk)
        mode, flags, rest = reflow.unpack(reflow.pack(p, b"MODEL"))
        assert (mode, flags, rest) == (p.mode, p.flags, b"MODEL")
        assert reflow.restore(mode, p.text, flags, version) == chunk


@pytest.fixture
def eager(monkeypatch):
    """Unwrap every chunk that has a newline to lose (small test chunks would not pay)."""
    plan = reflow.plan
    monkeypatch.setattr(reflow, "plan", lambda c, version=reflow.VERSION: plan(c, version, min_breaks=1, max_bits=float("inf")))


def test_wrapped_prose_is_unwrapped_cheaply():
    text = wrapped(paragraphs=80, crlf=True)
    p = reflow.plan(text)
    assert p.mode == reflow.MODE_CRLF | reflow.MODE_FLOW
    assert b"\r" not in p.text and p.text.count(b"\n") == 159  # only the paragraph breaks stay
    breaks = text.count(b"\r\n") - 159
    assert len(p.flags) * 8 < breaks  # under a bit per newline, coder flush included
    assert reflow.restore(p.mode, p.text, p.flags) == text


def test_code_and_verse_stay_as_they_are():
    code = b"int main(void)\n{\n    return f(x) + g(y);\n}\nstatic int x;\nint y;\n" * 6
    assert reflow.plan(code) is None
    verse = "\n".join(" ".join(WORDS[i : i + (3 + i % 5)]) for i in range(0, 300, 7)).encode()
    assert reflow.plan(verse) is None  # line lengths say nothing: the flags cost too much
    assert reflow.plan(wrapped(), 0) is None


def test_damaged_entries_are_refused():
    with pytest.raises(CorruptDataError):
        reflow.unpack(b"\x04abc")  # a reserved mode bit
    with pytest.raises(CorruptDataError):
        reflow.unpack(b"\x00abc")  # mode 0 is coded as a plain entry, never unwrapped
    with pytest.raises(CorruptDataError):
        reflow.unpack(b"\x02\xff\x00\x00\x00ab")  # flags run past the payload
    with pytest.raises(CorruptDataError):
        reflow.restore(reflow.MODE_CRLF, b"a\rb", b"")


def test_file_round_trip_and_header(eager):
    text = wrapped(paragraphs=3, crlf=True)
    opts = dict(context=64, slide=16, chunk_bytes=900, lanes=2)
    blob = nacrith.compress(text, **opts)
    assert nacrith.decompress(blob) == text
    header, _ = container.read_header(blob)
    assert header.settings["reflow"] == reflow.VERSION
    assert {e.codec for e in header.entries} == {UNWRAPPED_CODEC}
    assert all(reflow.unpack(p)[0] & reflow.MODE_FLOW for p in container.iter_frames(memoryview(blob)).__next__()[1])
    plain = nacrith.compress(text, **opts, reflow=0)
    assert {e.codec for e in container.read_header(plain)[0].entries} == {LLM_CODEC}
    assert "reflow" not in container.read_header(plain)[0].settings  # old readers' format
    assert nacrith.decompress(plain) == text
    from nacrith.cli import describe

    assert any("coded unwrapped" in line for line in describe(blob))
    assert not any("coded unwrapped" in line for line in describe(plain))


def test_nc06_and_torch_engine_round_trip(eager):
    text = wrapped(paragraphs=2) + bytes(range(256)) * 3 + wrapped(width=50, paragraphs=2)
    blob = nacrith.compress(text, format="nc06", context=64, slide=16, chunk_bytes=800, lanes=2)
    assert nacrith.decompress(blob) == text
    t = wrapped(paragraphs=2, crlf=True)
    opts = dict(engine="torch", device="cpu", context=48, slide=8, chunk_bytes=400, chunk_tokens=0, lanes=3)
    blob = nacrith.compress(t, **opts)
    assert UNWRAPPED_CODEC in {e.codec for e in container.read_header(blob)[0].entries}
    assert nacrith.Decompressor(device="cpu").decompress(blob) == t


def test_unwrapped_entry_needs_the_header_setting(eager):
    text = wrapped(paragraphs=2)
    blob = nacrith.compress(text, context=64, slide=16, chunk_bytes=2000, lanes=1)
    (header, payloads), = container.iter_frames(memoryview(blob))
    forged = dataclasses.replace(header, settings={k: v for k, v in header.settings.items() if k != "reflow"})
    bad = container.write_frame(forged, [bytes(p) for p in payloads])
    with pytest.raises(CorruptDataError, match="reflow"):
        nacrith.decompress(bad)


def test_version_2_flags_are_cheaper_and_version_1_files_still_decode(eager):
    text = wrapped(paragraphs=20)
    v1, v2 = reflow.plan(text, 1), reflow.plan(text, 2)
    assert v1.text == v2.text
    assert len(v2.flags) < len(v1.flags)  # the prior expects a space where a context is new
    assert reflow.restore(v1.mode, v1.text, v1.flags, 1) == text
    # the versions' models differ, so flags read under the wrong one do not restore the text
    try:
        assert reflow.restore(v2.mode, v2.text, v2.flags, 1) != text
    except CorruptDataError:
        pass
    # the model part on a shorter text (its flags still differ between the versions)
    text = wrapped(paragraphs=2)
    opts = dict(context=64, slide=16, chunk_bytes=2000, lanes=1)
    old = nacrith.compress(text, **opts, reflow=1)
    assert container.read_header(old)[0].settings["reflow"] == 1
    assert {e.codec for e in container.read_header(old)[0].entries} == {UNWRAPPED_CODEC}
    assert nacrith.decompress(old) == text
    # a header that names the other version: the chunk CRC catches it, never wrong bytes
    (header, payloads), = container.iter_frames(memoryview(old))
    forged = dataclasses.replace(header, settings={**header.settings, "reflow": 2})
    with pytest.raises(CorruptDataError):
        nacrith.decompress(container.write_frame(forged, [bytes(p) for p in payloads]))


def test_reflow_setting_is_validated():
    with pytest.raises(ValueError):
        Settings(reflow=max(reflow.VERSIONS) + 1).validate()
    with pytest.raises(CorruptDataError):
        Settings.from_header({**Settings().header_fields(), "reflow": 7})


def test_cli_flag_turns_unwrapping_off():
    from nacrith.cli import predictor_options

    assert predictor_options("llama", False, False, False, False, False, None, True)["reflow"] == 0
    assert "reflow" not in predictor_options("llama", False, False, False, False, False, None)
