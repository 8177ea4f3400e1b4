"""The three API tiers: one-shot, compressobj-style objects, and nacrith.open."""

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import nacrith

DATA = Path(__file__).parent / "data"
SMALL = dict(context=48, slide=16, chunk_bytes=200, lanes=3)
TEXT = (DATA / "golden.txt").read_bytes()
FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    out, pos = [], 0
    for c in cuts:
        out.append(data[pos : pos + c])
        pos += c
    out.append(data[pos:])
    return out


@FAST
@given(st.lists(st.integers(0, 150), max_size=8), st.sampled_from([64, 200, 4096]))
def test_random_pieces_give_the_one_shot_bytes(cuts, frame_bytes):
    data = TEXT[:250] + bytes(range(200))  # text and binary; several frames when frame_bytes is small
    c = nacrith.Compressor(**dict(SMALL, frame_bytes=frame_bytes, chunk_bytes=min(200, frame_bytes)))
    obj = c.compressobj()
    blob = b"".join(obj.compress(p) for p in _pieces(data, cuts)) + obj.flush()
    assert blob == c.compress(data)
    d = nacrith.Decompressor().decompressobj()
    out = b""
    rest = b""
    for p in _pieces(blob, cuts):
        if d.eof:
            rest += p
        else:
            out += d.decompress(p)
    assert out == data and d.eof and d.unused_data == b"" and rest == b""


def test_decompressor_attributes_like_lzma():
    c = nacrith.Compressor(frame_bytes=256, **SMALL)
    blob = c.compress(TEXT)
    d = nacrith.Decompressor().decompressobj()
    assert d.needs_input and not d.eof
    first = d.decompress(blob[:10])
    assert first == b"" and d.needs_input
    out = d.decompress(blob[10:] + b"tail", max_length=50)
    assert len(out) == 50 and not d.needs_input
    while not d.eof:
        out += d.decompress(b"", max_length=50)
    assert out == TEXT and d.unused_data == b"tail"
    with pytest.raises(EOFError):
        d.decompress(b"more")


def test_compressor_cannot_be_used_after_flush():
    obj = nacrith.Compressor(**SMALL).compressobj()
    obj.compress(b"abc")
    obj.flush()
    with pytest.raises(ValueError):
        obj.compress(b"more")


def test_open_binary_and_text_modes(tmp_path):
    p = tmp_path / "a.nc"
    with nacrith.open(p, "wb", **SMALL) as f:
        f.write(TEXT[:100])
        f.write(TEXT[100:])
    with nacrith.open(p, "rb") as f:
        assert f.read() == TEXT
    with nacrith.open(p, "rb") as f:
        assert f.readline() == TEXT.split(b"\n")[0] + b"\n"
    t = tmp_path / "t.nc"
    with nacrith.open(t, "wt", encoding="utf-8", newline="", **SMALL) as f:
        f.write("héllo\nwörld\n")
    with nacrith.open(t, "rt", encoding="utf-8", newline="") as f:
        assert f.readlines() == ["héllo\n", "wörld\n"]


def test_open_file_objects_and_concatenated_streams():
    buf = io.BytesIO()
    for part in (b"first part. ", b"second part."):
        with nacrith.open(buf, "wb", **SMALL) as f:
            f.write(part)
    assert nacrith.decompress(buf.getvalue()) == b"first part. second part."
    with nacrith.open(io.BytesIO(buf.getvalue()), "rb") as f:
        assert f.read() == b"first part. second part."


def test_open_rejects_truncated_and_trailing_garbage():
    blob = nacrith.compress(b"some words", **SMALL)
    with pytest.raises(nacrith.TruncatedDataError):
        nacrith.open(io.BytesIO(blob[:-3]), "rb").read()
    with pytest.raises(nacrith.CorruptDataError):
        nacrith.open(io.BytesIO(blob + b"garbage!"), "rb").read()


def test_open_mode_errors():
    with pytest.raises(ValueError):
        nacrith.open(io.BytesIO(), "rbt")
    with pytest.raises(ValueError):
        nacrith.open(io.BytesIO(), "rb", encoding="utf-8")


@pytest.mark.parametrize("mode", ["wb", "wt"])
def test_an_exception_inside_with_leaves_a_stream_that_reads_as_incomplete(tmp_path, small, mode):
    """Closing on an exception writes no final frame: the partial stream is refused as
    truncated, never decoded as a shorter valid one. Without the exception it is complete."""
    piece = "first part, then trouble. " * 12
    data = piece if mode == "wt" else piece.encode()
    bad, good = tmp_path / "bad.nc", tmp_path / "good.nc"
    # frame_bytes small enough that a frame is written before the failure
    opts = dict(small, frame_bytes=200)
    with pytest.raises(RuntimeError, match="interrupted"):
        with nacrith.open(bad, mode, **opts) as f:
            f.write(data)
            f.write(data)
            raise RuntimeError("interrupted")
    with nacrith.open(good, mode, **opts) as f:
        f.write(data)
        f.write(data)
    blob = bad.read_bytes()
    # text mode may not have passed anything down yet (TextIOWrapper buffers 8 KiB): an empty file
    assert (blob or mode == "wt") and good.read_bytes().startswith(blob[:16])
    with pytest.raises(nacrith.TruncatedDataError):
        nacrith.decompress(blob)
    assert nacrith.decompress(good.read_bytes()) == (data + data if mode == "wb" else (data + data).encode())
