"""Standard-library codecs for binary segments; the smallest result is kept.

Decoding is bounded by the recorded raw length, so a hostile header cannot make
a decompressor allocate more than the frame says (which is itself capped).
"""

from __future__ import annotations

import bz2
import lzma
import zlib

from ..errors import CorruptDataError

RAW, ZLIB, BZ2, LZMA, LZMA_E = 0, 1, 2, 3, 4
NAMES = {RAW: "raw", ZLIB: "zlib", BZ2: "bz2", LZMA: "lzma-9", LZMA_E: "lzma-9e"}
# Raw LZMA2 (no .xz container): the coding of `xz -9` / `xz -9e` without their ~60 bytes
# of framing. Neither preset wins everywhere (kennedy.xls: 9 beats 9e by 5%), so both
# are tried. Both use a 64 MiB dictionary, so one decoder setting reads either.
_LZMA_FILTERS = {
    LZMA: [{"id": lzma.FILTER_LZMA2, "preset": 9}],
    LZMA_E: [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}],
}


_PARALLEL_FROM = 1 << 20  # below this, threads cost more than they save


def _encode(codec: int, data: bytes) -> bytes:
    if codec == ZLIB:
        return zlib.compress(data, 9)
    if codec == BZ2:
        return bz2.compress(data, 9)
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS[codec])


def best(data: bytes) -> tuple[int, bytes]:
    """(codec id, coded bytes) of the smallest encoding, ties to the lowest id.

    Large inputs run the codecs on threads (they release the GIL), so the wall time
    is that of the slowest one, not the sum."""
    codecs = [ZLIB, BZ2, LZMA, LZMA_E]
    if len(data) >= _PARALLEL_FROM:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(codecs)) as pool:
            coded = list(pool.map(lambda c: _encode(c, data), codecs))
    else:
        coded = [_encode(c, data) for c in codecs]
    options = [(RAW, data)] + list(zip(codecs, coded))
    return min(options, key=lambda o: (len(o[1]), o[0]))


def decode(codec: int, payload: bytes, raw_len: int) -> bytes:
    try:
        if codec == RAW:
            out = payload
        elif codec == ZLIB:
            d = zlib.decompressobj()
            out = d.decompress(payload, raw_len)
            if not d.eof or d.unconsumed_tail or d.unused_data:
                raise CorruptDataError("zlib segment does not end where recorded")
        elif codec == BZ2:
            d = bz2.BZ2Decompressor()
            out = d.decompress(payload, raw_len)
            if not d.eof or d.unused_data:
                raise CorruptDataError("bz2 segment does not end where recorded")
        elif codec in _LZMA_FILTERS:
            d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS[codec])
            out = d.decompress(payload, raw_len)
            # Raw LZMA2 ends with an end marker, right where the payload ends.
            if not d.eof or d.unused_data:
                raise CorruptDataError("lzma segment does not end where recorded")
        else:
            raise CorruptDataError(f"unknown binary codec {codec}")
    except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError) as exc:
        raise CorruptDataError(f"binary segment is damaged ({exc})") from None
    if len(out) != raw_len:
        raise CorruptDataError("binary segment decodes to the wrong length")
    return out
