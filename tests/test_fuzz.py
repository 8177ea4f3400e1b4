"""Hostile input: mutated, truncated and spliced real files never crash, hang or
return wrong bytes; they decode exactly or raise a NacrithError.

The normal suite runs a short campaign. NACRITH_FUZZ_EXAMPLES=N runs a longer one.
"""

import os
import struct
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

import nacrith
from nacrith.formats import container

DATA = Path(__file__).parent / "data"
N = int(os.environ.get("NACRITH_FUZZ_EXAMPLES", "60"))
CAMPAIGN = settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck))
SEEDS = [
    (DATA / "golden.nc").read_bytes(),
    (DATA / "golden06.nc").read_bytes(),
]
ORIGINALS = [(DATA / "golden.txt").read_bytes(), (DATA / "golden06.bin").read_bytes()]


def _check(blob: bytes) -> None:
    try:
        out = nacrith.decompress(blob)
    except nacrith.NacrithError:
        return
    # Accepted: it must then be exactly the content of the frames it carries.
    assert out in (b"".join(x) for x in _valid_splits()), "decoded to bytes that were never compressed"


def _valid_splits():
    for o in ORIGINALS:
        yield [o]
    yield [ORIGINALS[0], ORIGINALS[0]]
    yield [ORIGINALS[0], ORIGINALS[1]]
    yield [ORIGINALS[1], ORIGINALS[0]]
    yield [ORIGINALS[1], ORIGINALS[1]]


def _fix_crcs(blob: bytearray) -> bytes:
    """Recompute the header and table CRCs so the parser behind them is reached."""
    try:
        _, _, _, _, body_len = struct.unpack_from("<4sBBHI", blob)
        end = 12 + body_len
        struct.pack_into("<I", blob, end, zlib.crc32(blob[:end]) & 0xFFFFFFFF)
    except struct.error:
        pass
    return bytes(blob)


mutation = st.tuples(st.integers(0, 1 << 20), st.integers(0, 255))


@CAMPAIGN
@given(st.sampled_from(range(len(SEEDS))), st.lists(mutation, min_size=1, max_size=4), st.booleans())
def test_mutated_files(seed, muts, fix):
    blob = bytearray(SEEDS[seed])
    for pos, val in muts:
        blob[pos % len(blob)] = val
    _check(_fix_crcs(blob) if fix else bytes(blob))


@CAMPAIGN
@given(st.sampled_from(range(len(SEEDS))), st.integers(0, 1 << 20))
def test_truncated_files(seed, cut):
    blob = SEEDS[seed]
    _check(blob[: cut % len(blob)])


@CAMPAIGN
@given(st.integers(0, 1), st.integers(0, 1), st.integers(0, 1 << 20), st.integers(0, 1 << 20))
def test_spliced_files(a, b, cut_a, cut_b):
    x, y = SEEDS[a], SEEDS[b]
    _check(x[: cut_a % (len(x) + 1)] + y[cut_b % (len(y) + 1) :])


@CAMPAIGN
@given(st.binary(max_size=200))
def test_random_bytes_after_a_magic(tail):
    _check(container.MAGIC + tail)


def test_header_asking_for_huge_sizes_is_refused_before_allocating():
    blob = bytearray(SEEDS[0])
    header, pos = container.read_header(bytes(blob))
    # a table entry claiming a 4 GiB coded payload
    blob[pos - 4 - 20 + 12 : pos - 4 - 20 + 16] = struct.pack("<I", 0xFFFFFFF0)
    table_start = pos - 4 - 20 * len(header.entries)
    struct.pack_into("<I", blob, pos - 4, zlib.crc32(blob[table_start : pos - 4]) & 0xFFFFFFFF)
    try:
        nacrith.decompress(bytes(blob))
    except nacrith.CorruptDataError as exc:
        assert "out of range" in str(exc)
    else:
        raise AssertionError("forged size accepted")
