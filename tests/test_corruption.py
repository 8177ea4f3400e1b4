import shutil
import struct
from dataclasses import asdict
from pathlib import Path

import pytest

import nacrith
from conftest import assert_same_bitstream, golden_here
from nacrith.settings import Settings
from nacrith.formats import container

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def blob(small):
    return nacrith.compress((DATA / "golden.txt").read_bytes()[:250], **small)


def test_every_truncation_is_detected(blob):
    for n in range(len(blob)):
        with pytest.raises(nacrith.CorruptDataError) as info:
            list(container.iter_frames(blob[:n]))
        if n > 0:
            assert isinstance(info.value, nacrith.TruncatedDataError), n


def test_truncated_file_raises_truncated_error(blob):
    with pytest.raises(nacrith.TruncatedDataError):
        nacrith.decompress(blob[:-7])


def test_flipped_bytes_are_detected(blob):
    # Header, table, payload and end marker: every position, one bit.
    for pos in range(0, len(blob), 3):
        bad = bytearray(blob)
        bad[pos] ^= 0x10
        with pytest.raises(nacrith.NacrithError):
            nacrith.decompress(bytes(bad))


def test_trailing_data_is_rejected(blob):
    with pytest.raises(nacrith.CorruptDataError, match="trailing"):
        nacrith.decompress(blob + b"\x00junk")


def _rewrite_prefix(blob, edit_body=None, **fields):
    """The frame with prefix `fields` changed and, if given, its body passed through
    `edit_body`; the header CRC is recomputed, so only the checks after it can refuse it."""
    magic, kind, version, flags, body_len = struct.unpack_from("<4sBBHI", blob)
    vals = dict(magic=magic, kind=kind, version=version, flags=flags)
    vals.update(fields)
    body = blob[12 : 12 + body_len]
    if edit_body:
        body = edit_body(body)
    head = struct.pack("<4sBBHI", vals["magic"], vals["kind"], vals["version"], vals["flags"], len(body))
    crc = struct.pack("<I", container.crc32(head + body))
    return head + body + crc + blob[16 + body_len :]


def test_unknown_version_is_rejected_even_with_a_valid_crc(blob):
    with pytest.raises(nacrith.CorruptDataError, match="version"):
        nacrith.decompress(_rewrite_prefix(blob, version=9))


def test_reserved_bits_are_rejected_even_with_a_valid_crc(blob):
    for bit in range(1, 16):  # bit 0 is PACKED_PROFILE
        with pytest.raises(nacrith.CorruptDataError, match="reserved"):
            nacrith.decompress(_rewrite_prefix(blob, flags=1 | (1 << bit)))


def test_profile_is_packed_and_reads_back_exactly(blob):
    from nacrith.api import load_model
    from nacrith.formats import profile_words

    header, _ = container.read_header(blob)
    flags = struct.unpack_from("<4sBBHI", blob)[3]
    assert flags == container.PACKED_PROFILE
    assert header.profile == load_model(None, Settings.from_header(header.settings)).profile
    packed = profile_words.pack(header.profile)
    assert len(packed) < len(header.profile.encode())
    assert packed in blob and header.profile.encode() not in blob
    # the long profile of the llama.cpp engine (CPU features) packs to under a third
    llama = load_model(None, Settings()).profile
    assert llama.startswith("llama.cpp") and len(profile_words.pack(llama)) < len(llama.encode()) // 3


def test_plain_text_profile_still_reads(blob):
    """Files from before the packed profile (flag 0, profile as text) decode as before."""
    from nacrith.formats import profile_words

    header, _ = container.read_header(blob)
    packed, plain = profile_words.pack(header.profile), header.profile.encode()
    old = _rewrite_prefix(
        blob,
        lambda body: body.replace(struct.pack("<H", len(packed)) + packed, struct.pack("<H", len(plain)) + plain),
        flags=0,
    )
    assert container.read_header(old)[0] == header
    assert nacrith.decompress(old) == (DATA / "golden.txt").read_bytes()[:250]
    # and the packed spelling under flag 0 is not valid text to a plain reader
    with pytest.raises(nacrith.CorruptDataError):
        nacrith.decompress(_rewrite_prefix(blob, flags=0))


def test_unknown_profile_word_is_refused(blob):
    from nacrith.formats import profile_words

    header, _ = container.read_header(blob)
    packed = profile_words.pack(header.profile)
    bad = _rewrite_prefix(blob, lambda body: body.replace(packed, packed[:-1] + b"\xff"))
    with pytest.raises(nacrith.CorruptDataError, match="profile word"):
        nacrith.decompress(bad)


def test_not_a_nacrith_file():
    with pytest.raises(nacrith.CorruptDataError, match="magic"):
        nacrith.decompress(b"PK\x03\x04 definitely not ours")
    with pytest.raises(nacrith.TruncatedDataError):
        nacrith.decompress(b"")


def test_another_model_file_is_refused_naming_both_digests(blob, tmp_path, model_path):
    other = tmp_path / "other.gguf"
    shutil.copyfile(model_path, other)
    with open(other, "ab") as f:
        f.write(b"\x00" * 32)  # a different file, so a different digest
    from nacrith.modelfile import model_sha256

    with pytest.raises(nacrith.ModelMismatchError) as info:
        nacrith.decompress(blob, model=other)
    msg = str(info.value)
    assert model_sha256(model_path) in msg and model_sha256(other) in msg


def test_golden_file_decodes_to_its_text():
    """Any accidental change of the format or the bitstream fails here."""
    golden = golden_here("golden.nc")
    assert nacrith.decompress(golden) == (DATA / "golden.txt").read_bytes()


def test_golden_file_is_reproduced_by_the_encoder():
    golden = golden_here("golden.nc")
    header, _ = container.read_header(golden)
    text = (DATA / "golden.txt").read_bytes()
    st = Settings.from_header(header.settings)
    kept = {k: v for k, v in asdict(st).items() if k not in ("schedule", "online")}
    assert_same_bitstream(nacrith.compress(text, engine=st.engine, **kept), golden)


def test_a_bad_chunk_stops_the_decoder_when_it_ends(small):
    """Each chunk is checked as its last token arrives: a chunk of the right length but the
    wrong bytes stops decoding there, before any other chunk is decoded."""
    import types

    from nacrith.formats import nc05

    c = nacrith.Compressor(**dict(small, reflow=0))
    blob = c.compress((DATA / "golden.txt").read_bytes()[:600])
    header, payloads = next(container.iter_frames(memoryview(blob)))
    st = Settings.from_header(header.settings)
    counts = [e.n_tokens for e in header.entries]
    assert len(counts) >= 3
    good = c.lm.engine.decode(st, c.lm.model.bos, counts, list(payloads))
    pieces = c.lm.model.pieces()
    last = good[0][-1]
    swap = next(j for j in range(len(pieces)) if len(pieces[j]) == len(pieces[last]) and pieces[j] != pieces[last])
    bad = [list(t) for t in good]
    bad[0][-1] = swap  # same length, other bytes: only the CRC can tell
    reached = []

    class Damaged:
        def decode(self, settings, bos, counts, payloads, progress=None, check=None):
            for ci, toks in enumerate(bad):  # chunk by chunk, as a decoder with one lane would
                for tok in toks:
                    reached.append(ci)
                    check(ci, tok)
            return bad

    lm = types.SimpleNamespace(model=c.lm.model, engine=Damaged())
    with pytest.raises(nacrith.CorruptDataError, match="chunk 0: checksum mismatch"):
        nc05.decode_llm(lm, st, header.entries, list(payloads))
    assert set(reached) == {0}
    # undamaged, every chunk comes back
    bad[0][-1] = last
    assert b"".join(nc05.decode_llm(lm, st, header.entries, list(payloads))) == (DATA / "golden.txt").read_bytes()[:600]


def _forge_entry(blob, i, **fields):
    """The frame with table entry i's fields changed (and raw_size kept consistent), every
    CRC recomputed, so only the bounds checks behind the CRCs can refuse it."""
    header, payload_pos = container.read_header(blob)
    body_len = struct.unpack_from("<I", blob, 8)[0]
    table_pos = 16 + body_len
    entries = list(header.entries)
    e = entries[i]
    entries[i] = container.Entry(**{**e.__dict__, **fields})
    out = bytearray(blob)
    raw_size = sum(x.raw_len for x in entries)
    struct.pack_into("<Q", out, 12, raw_size)
    struct.pack_into("<I", out, 12 + body_len, container.crc32(bytes(out[: 12 + body_len])))
    table = b"".join(container._ENTRY.pack(x.type, x.codec, 0, x.raw_len, x.n_tokens, x.coded_len, x.raw_crc32)
                     for x in entries)
    out[table_pos : table_pos + len(table)] = table
    struct.pack_into("<I", out, table_pos + len(table), container.crc32(table))
    return bytes(out)


def test_a_forged_token_count_is_refused_before_the_model_runs(blob, monkeypatch):
    """A few coded bytes cannot hold millions of tokens: such a header (valid CRCs) is
    refused by the parser, before any buffer is sized or model step is run from it."""
    from nacrith.engines.integer import coding

    e = container.read_header(blob)[0].entries[0]
    forged = _forge_entry(blob, 0, raw_len=1 << 27, n_tokens=1 << 28)
    calls = []
    monkeypatch.setattr(coding, "load_weights", lambda *a, **k: calls.append(a))
    with pytest.raises(nacrith.CorruptDataError, match="more tokens"):
        container.read_header(forged)
    with pytest.raises(nacrith.CorruptDataError, match="more tokens"):
        nacrith.decompress(forged)
    assert not calls  # no model was loaded for it
    # within the coded bytes' bound but more bytes than the tokens can spell: refused
    # before decoding (the longest SmolLM2 token is far shorter than 2**20 bytes)
    spelled = _forge_entry(blob, 0, raw_len=min(e.n_tokens << 20, container.MAX_ENTRY_RAW), n_tokens=e.n_tokens)
    with pytest.raises(nacrith.CorruptDataError, match="cannot spell"):
        nacrith.decompress(spelled)


def test_the_token_bound_holds_for_the_most_compressible_coding():
    """The bound is information-theoretic: a token coded at the largest frequency the
    quantiser ever gives (TOTAL - V + 1) costs the fewest bits, and even a long run of
    them stays inside max_tokens, with a bound tight to within a factor of two."""
    import numpy as np

    from nacrith.codec import quantize, rans

    vocab = 49152
    n = 60000
    top = quantize.TOTAL - vocab + 1
    payload = rans.encode_lanes(np.zeros((n, 1), np.int64), np.full((n, 1), top, np.int64), [n])[0]
    assert n <= quantize.max_tokens(len(payload), vocab) < 2 * n + quantize.max_tokens(0, vocab)
    # and a real file of the most predictable text the model sees keeps far inside it
    raw = b"a" * 3000
    blob = nacrith.compress(raw, context=48, slide=16, chunk_bytes=3000)
    for e in container.read_header(blob)[0].entries:
        assert e.n_tokens <= quantize.max_tokens(e.coded_len, 49152)
    assert nacrith.decompress(blob) == raw


def test_headers_are_read_without_the_payloads(blob, small):
    """container.iter_headers (the progress bar's total, -l) gives the headers iter_frames
    gives, reads only headers and tables, and detects every truncation."""
    import io

    other = nacrith.compress(b"x" * 3000 + (DATA / "golden.txt").read_bytes()[:900], format="nc06", **small)
    data = blob + other
    want = [h for h, _ in container.iter_frames(data)]

    class Counting(io.BytesIO):
        got = 0

        def read(self, n=-1):
            b = super().read(n)
            Counting.got += len(b)
            return b

    f = Counting(data)
    assert list(container.iter_headers(f)) == want
    payload = sum(h.coded_payload for h in want)
    assert Counting.got == len(data) - payload  # every payload byte was skipped, not read
    for n in range(1, len(data)):
        if n in (len(blob),):
            continue  # a whole first stream: complete
        with pytest.raises(nacrith.CorruptDataError):
            list(container.iter_headers(io.BytesIO(data[:n])))
