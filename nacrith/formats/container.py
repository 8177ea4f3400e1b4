"""Frame layout shared by NC05 (text) and NC06 (hybrid) files.

A stream (a file) is one or more self-contained frames, the last one marked
final; concatenated streams decode to the concatenation of their contents. Each frame covers a bounded part of the input,
so a writer needs bounded memory whatever the stream length. All integers are
little-endian.

    frame  := header  table  payloads  end
    header := "NACR" kind:u8 version:u8 flags:u16 body_len:u32 body crc32:u32
    flags  := bit 0 PACKED_PROFILE (profile text packed, see profile_words.py; only
              with uses_model = 1); every other bit is reserved and must be 0
    body   := raw_size:u64 content_digest[16] n_entries:u32 uses_model:u8
              [model_sha256[32] vocab:u32 settings profile]   (when uses_model = 1)
    content_digest := the first 16 bytes of SHA-256 of the frame's content
    settings := count:u8 (id:u8 value:uvarint)*   ids from SETTING_IDS, ascending
    profile  := len:u16 bytes: utf-8 text (engine identity), or its packed spelling
    table  := n_entries * entry, crc32:u32 of the entries
    entry  := type:u8 codec:u8 reserved:u16(=0) raw_len:u32 n_tokens:u32
              coded_len:u32 raw_crc32:u32
    end    := ("NEND" | "NFIN") payload_crc32:u32   crc32 of all payloads, in order;
              NFIN marks the last frame of a stream (a file), NEND any other.

Every length is checked against limits and against the bytes present before
anything is allocated from it.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field

from ..codec.quantize import TOTAL, max_tokens
from ..errors import CorruptDataError, TruncatedDataError
from . import profile_words

MAGIC = b"NACR"
END = b"NEND"
END_FINAL = b"NFIN"
VERSION = 1
KIND_TEXT = 5  # NC05
KIND_HYBRID = 6  # NC06
KINDS = {KIND_TEXT: "NC05", KIND_HYBRID: "NC06"}

PACKED_PROFILE = 0x0001  # header flag

ENTRY_TEXT = 0
ENTRY_BINARY = 1

MAX_BODY = 1 << 16
MAX_ENTRIES = 1 << 20
MAX_FRAME_RAW = 1 << 30
MAX_ENTRY_RAW = 1 << 28

# Settings travel as one-byte ids; a new setting takes a new id, and a reader
# that meets an id it does not know refuses the file.
SETTING_IDS = {
    "context": 1,
    "slide": 2,
    "chunk_bytes": 3,
    "frame_bytes": 4,
    "lanes": 5,
    "schedule": 6,
    "precision": 7,
    "logit_bits": 8,
    "chunk_tokens": 9,
    "bias_lr": 10,
    "ngram": 11,
    "match_min": 12,
    "table_bits": 13,
    "sse_rate": 14,
    "skip": 15,
    "online": 16,
    "reflow": 17,
    "ctx_bias": 18,
    "balance": 19,
}
SETTING_NAMES = {v: k for k, v in SETTING_IDS.items()}

_PREFIX = struct.Struct("<4sBBHI")
_ENTRY = struct.Struct("<BBHIIII")
_U32 = struct.Struct("<I")


@dataclass
class Entry:
    type: int
    codec: int
    raw_len: int
    n_tokens: int
    coded_len: int
    raw_crc32: int


@dataclass
class FrameHeader:
    kind: int
    model_sha256: bytes
    vocab: int
    raw_size: int
    content_sha256: bytes  # first 16 bytes of SHA-256 of the content
    settings: dict[str, int]
    profile: str
    entries: list[Entry] = field(default_factory=list)
    final: bool = True  # set from the end marker when read

    @property
    def kind_name(self) -> str:
        return KINDS[self.kind]

    @property
    def coded_payload(self) -> int:
        return sum(e.coded_len for e in self.entries)


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


DIGEST_BYTES = 16


def content_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:DIGEST_BYTES]


def _uvarint(n: int) -> bytes:
    if n < 0:
        raise ValueError("settings are non-negative integers")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pack_settings(settings: dict[str, int]) -> bytes:
    items = sorted((SETTING_IDS[name], int(v)) for name, v in settings.items())
    return bytes([len(items)]) + b"".join(bytes([i]) + _uvarint(v) for i, v in items)


def write_frame(header: FrameHeader, payloads: list[bytes], final: bool = True) -> bytes:
    if len(payloads) != len(header.entries):
        raise ValueError("one payload per table entry")
    flags = 0
    if header.model_sha256 and profile_words.packable(header.profile):
        flags |= PACKED_PROFILE
        profile = profile_words.pack(header.profile)
    else:
        profile = header.profile.encode("utf-8")
    parts = [
        struct.pack("<Q", header.raw_size),
        header.content_sha256,
        struct.pack("<IB", len(header.entries), 1 if header.model_sha256 else 0),
    ]
    if header.model_sha256:
        parts += [
            header.model_sha256,
            struct.pack("<I", header.vocab),
            _pack_settings(header.settings),
            struct.pack("<H", len(profile)),
            profile,
        ]
    body = b"".join(parts)
    if len(body) > MAX_BODY:
        raise ValueError("header too large")
    head = _PREFIX.pack(MAGIC, header.kind, VERSION, flags, len(body)) + body
    table = b"".join(
        _ENTRY.pack(e.type, e.codec, 0, e.raw_len, e.n_tokens, e.coded_len, e.raw_crc32)
        for e in header.entries
    )
    payload_crc = 0
    for p in payloads:
        payload_crc = zlib.crc32(p, payload_crc)
    return b"".join(
        [head, _U32.pack(crc32(head)), table, _U32.pack(crc32(table)), *payloads, END_FINAL if final else END,
         _U32.pack(payload_crc & 0xFFFFFFFF)]
    )


class _Reader:
    """Bounds-checked cursor over a bytes-like object."""

    def __init__(self, data, pos: int) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TruncatedDataError(f"compressed data ends inside the {what}")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out


def _read_uvarint(r: _Reader) -> int:
    value = 0
    for shift in range(0, 64, 7):
        byte = r.take(1, "header")[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
    raise CorruptDataError("setting value too long")


def looks_like_frame(data, pos: int = 0) -> bool:
    return bytes(data[pos : pos + 4]) == MAGIC


def read_header(data, pos: int = 0) -> tuple[FrameHeader, int]:
    """Parse and verify a frame header and table; return it and the payload offset."""
    r = _Reader(data, pos)
    prefix = r.take(_PREFIX.size, "frame header")
    magic, kind, version, flags, body_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise CorruptDataError(f"not a Nacrith frame at offset {pos} (bad magic)")
    if kind not in KINDS:
        raise CorruptDataError(f"unknown container kind {kind} at offset {pos}")
    if version != VERSION:
        raise CorruptDataError(
            f"unsupported format version {version} (this nacrith reads version {VERSION})"
        )
    if flags & ~PACKED_PROFILE:
        raise CorruptDataError(f"reserved header flags are set (0x{flags:04x})")
    if body_len > MAX_BODY:
        raise CorruptDataError(f"header length {body_len} exceeds the limit {MAX_BODY}")
    body = r.take(body_len, "frame header")
    (want_crc,) = _U32.unpack(r.take(4, "header checksum"))
    if crc32(prefix + body) != want_crc:
        raise CorruptDataError(f"header checksum mismatch in frame at offset {pos}")
    b = _Reader(body, 0)
    try:
        (raw_size,) = struct.unpack("<Q", b.take(8, "header"))
        content = b.take(DIGEST_BYTES, "header")
        n_entries, uses_model = struct.unpack("<IB", b.take(5, "header"))
        model, vocab, settings, profile = b"", 0, {}, ""
        if uses_model > 1:
            raise CorruptDataError("malformed frame header: bad model flag")
        if uses_model:
            model = b.take(32, "header")
            (vocab,) = struct.unpack("<I", b.take(4, "header"))
            last = 0
            for _ in range(b.take(1, "header")[0]):
                sid = b.take(1, "header")[0]
                if sid <= last:
                    raise CorruptDataError("settings are out of order or repeated")
                if sid not in SETTING_NAMES:
                    raise CorruptDataError(f"unknown setting id {sid} (made by a newer nacrith?)")
                last = sid
                settings[SETTING_NAMES[sid]] = _read_uvarint(b)
            (plen,) = struct.unpack("<H", b.take(2, "header"))
            raw = b.take(plen, "header")
            profile = profile_words.unpack(raw) if flags & PACKED_PROFILE else raw.decode("utf-8")
        elif flags & PACKED_PROFILE:
            raise CorruptDataError("malformed frame header: packed profile flag without a model")
    except (TruncatedDataError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptDataError(f"malformed frame header: {exc}") from None
    if b.pos != len(body):
        raise CorruptDataError("frame header has trailing bytes")
    if raw_size > MAX_FRAME_RAW or n_entries > MAX_ENTRIES or n_entries > raw_size:
        raise CorruptDataError("frame header sizes are out of range")
    if uses_model and not 2 <= vocab < TOTAL:  # the coder's precision holds 2 .. TOTAL-1 tokens
        raise CorruptDataError(f"frame header vocabulary size {vocab} is out of range")
    table = r.take(n_entries * _ENTRY.size, "chunk table")
    (table_crc,) = _U32.unpack(r.take(4, "chunk table checksum"))
    if crc32(table) != table_crc:
        raise CorruptDataError(f"chunk table checksum mismatch in frame at offset {pos}")
    entries = []
    total = 0
    for i in range(n_entries):
        t, codec, reserved, raw_len, n_tok, coded, rcrc = _ENTRY.unpack_from(table, i * _ENTRY.size)
        # A byte takes at most two tokens (an escape and a carrier), a token costs
        # < 32 bits, and the byte codecs never expand, so larger values are forgeries.
        if reserved or raw_len == 0 or raw_len > MAX_ENTRY_RAW or n_tok > 2 * raw_len or coded > 4 * n_tok + 4 * raw_len + 64:
            raise CorruptDataError(f"chunk table entry {i} is out of range")
        # The token count sizes the decoder's buffers and its number of model steps, so it
        # is bounded by the coded bytes actually present (see quantize.max_tokens).
        if n_tok and (not uses_model or n_tok > max_tokens(coded, vocab)):
            raise CorruptDataError(f"chunk table entry {i} claims more tokens ({n_tok}) than its "
                                   f"{coded} coded bytes can hold")
        entries.append(Entry(t, codec, raw_len, n_tok, coded, rcrc))
        total += raw_len
    if total != raw_size:
        raise CorruptDataError("chunk sizes do not add up to the frame size")
    header = FrameHeader(kind, model, vocab, raw_size, content, settings, profile, entries)
    return header, r.pos


def frame_payloads(data, header: FrameHeader, pos: int) -> tuple[list[bytes], int]:
    """Slice the payloads after a header; check the end marker and payload CRC."""
    r = _Reader(data, pos)
    payloads = [r.take(e.coded_len, f"chunk {i} data") for i, e in enumerate(header.entries)]
    marker = r.take(len(END), "end marker")
    if marker not in (END, END_FINAL):
        raise CorruptDataError("frame end marker is missing or damaged")
    header.final = marker == END_FINAL
    (want,) = _U32.unpack(r.take(4, "payload checksum"))
    got = 0
    for p in payloads:
        got = zlib.crc32(p, got)
    if got & 0xFFFFFFFF != want:
        raise CorruptDataError("coded data checksum mismatch (the compressed file is damaged)")
    return payloads, r.pos


def iter_frames(data):
    """Yield (header, payloads) for every frame; reject anything after the last one."""
    pos = 0
    if len(data) == 0:
        raise TruncatedDataError("compressed data is empty")
    while pos < len(data):
        rest = bytes(data[pos : pos + 4])
        if len(rest) < 4 and MAGIC.startswith(rest):
            raise TruncatedDataError(f"compressed data ends inside a frame header at offset {pos}")
        if not looks_like_frame(data, pos):
            if pos == 0:
                raise CorruptDataError("not a Nacrith file (bad magic)")
            raise CorruptDataError(f"trailing data after the last frame at offset {pos}")
        header, p = read_header(data, pos)
        payloads, pos = frame_payloads(data, header, p)
        yield header, payloads
    if not header.final:
        raise TruncatedDataError("compressed data ends before the final frame of its stream")


def iter_headers(fp):
    """Yield every frame header of a seekable binary file, reading only headers and
    tables and seeking past the payloads (memory: one header, whatever the file size).
    Raises like read_header; a frame cut short, or a file that ends before the final
    frame of its stream, raises TruncatedDataError. Payload CRCs are not checked here."""
    header = None
    while True:
        start = fp.tell()
        prefix = fp.read(_PREFIX.size)
        if not prefix:
            if header is None:
                raise TruncatedDataError("compressed data is empty")
            if not header.final:
                raise TruncatedDataError("compressed data ends before the final frame of its stream")
            return
        if len(prefix) < _PREFIX.size:
            raise TruncatedDataError(f"compressed data ends inside a frame header at offset {start}")
        body_len = _PREFIX.unpack(prefix)[4]
        if prefix[:4] != MAGIC or body_len > MAX_BODY:
            read_header(prefix + bytes(min(body_len, MAX_BODY) + 4))  # raises the parser's error
        body = fp.read(body_len + 4)
        n_entries = struct.unpack_from("<I", body, 24)[0] if len(body) >= 28 else 0
        table = fp.read(min(n_entries, MAX_ENTRIES) * _ENTRY.size + 4)
        header, payload_pos = read_header(prefix + body + table)
        fp.seek(header.coded_payload, 1)
        end = fp.read(len(END) + 4)
        if len(end) < len(END) + 4:
            raise TruncatedDataError(f"compressed data ends inside the frame at offset {start}")
        if end[:4] not in (END, END_FINAL):
            raise CorruptDataError("frame end marker is missing or damaged")
        header.final = end[:4] == END_FINAL
        yield header


def frame_length(header: FrameHeader, payload_pos: int, frame_pos: int) -> int:
    """Bytes the whole frame takes, known from its header and table alone."""
    return payload_pos - frame_pos + header.coded_payload + len(END) + 4
