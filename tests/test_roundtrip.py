from pathlib import Path

import pytest

import nacrith
from nacrith.formats import container

DATA = Path(__file__).parent / "data"

CASES = {
    "empty": b"",
    "one byte": b"x",
    "300 spaces": b" " * 300,
    "long tokens": b"=" * 97 + b"-" * 64 + b"\n" + b"https://example.com/" + b"a" * 120,
    "special token text": b"<|endoftext|><|im_start|>user\nhi<|im_end|> <|endoftext|>",
    "crlf tabs nul": b"line one\r\nline two\r\n\tindented\tcol\x00nul\x00\r\n",
    "emoji and combining": "smile \U0001F600 family \U0001F468\u200d\U0001F469\u200d\U0001F467 e\u0301 a\u0308 \u0915\u094d\u0937".encode(),
    "cjk": "日本語のテキストと中文文本。".encode(),
}


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip(name, small):
    data = CASES[name]
    blob = nacrith.compress(data, **small)
    assert nacrith.decompress(blob) == data


def test_text_longer_than_window_slides_and_round_trips(small):
    # ~1 KB: several chunks of 200 bytes over 3 lanes, each sliding its 48-token window.
    data = (DATA / "golden.txt").read_bytes() + b" And then some more words to pass the window. " * 8
    blob = nacrith.compress(data, **small)
    header, _ = container.read_header(blob)
    assert len(header.entries) >= 4
    assert max(e.n_tokens for e in header.entries) > small["context"]
    assert nacrith.decompress(blob) == data


def test_compressing_twice_gives_identical_bytes(small):
    data = (DATA / "golden.txt").read_bytes()
    assert nacrith.compress(data, **small) == nacrith.compress(data, **small)


def test_thread_count_does_not_change_the_bitstream(small):
    data = (DATA / "golden.txt").read_bytes()[:300]
    a = nacrith.compress(data, threads=1, **small)
    b = nacrith.compress(data, threads=2, **small)
    assert a == b
    assert nacrith.decompress(a, threads=2) == data


def test_compressor_object_reuses_the_model(small):
    c = nacrith.Compressor(**small)
    d = nacrith.Decompressor()
    for data in (b"first text", b"second, longer text than the first"):
        assert d.decompress(c.compress(data)) == data


def test_concatenated_files_decode_to_the_concatenation(small):
    a, b = b"alpha beta gamma", b"delta epsilon"
    blob = nacrith.compress(a, **small) + nacrith.compress(b, **small)
    assert nacrith.decompress(blob) == a + b


def test_several_frames(small):
    data = b"Frames keep memory bounded. " * 20
    blob = nacrith.compress(data, **dict(small, frame_bytes=200))
    frames = list(container.iter_frames(blob))
    assert len(frames) >= 3
    assert nacrith.decompress(blob) == data


def test_compresses_english_far_better_than_xz():
    import lzma

    data = (DATA / "golden.txt").read_bytes()
    blob = nacrith.compress(data, context=256, slide=64, chunk_bytes=4096, lanes=1)
    header, _ = container.read_header(blob)
    assert header.coded_payload * 8 / len(data) < 2.0
    assert len(blob) < len(lzma.compress(data, preset=9))


def test_invalid_utf8_is_refused_with_its_offset(small):
    with pytest.raises(nacrith.UnsupportedInputError, match="offset 6"):
        nacrith.compress(b"hello \xff world", format="nc05", **small)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        nacrith.Compressor(context=8)
    with pytest.raises(ValueError):
        nacrith.Compressor(slide=2000, context=1024)
