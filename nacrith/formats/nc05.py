"""NC05: text frames, every chunk coded by the language model."""

from __future__ import annotations

from ..chunking import group_frames, split_chunks
from ..codec.rangecoder import Decoder, Encoder
from ..engine import run_lanes
from ..errors import CorruptDataError, UnsupportedInputError
from ..settings import Settings
from .container import ENTRY_TEXT, KIND_TEXT, Entry, FrameHeader, content_digest, crc32, write_frame


def check_text(data: bytes, offset: int = 0) -> None:
    """Refuse input that is not valid UTF-8, naming the first bad byte."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedInputError(
            f"input is not valid UTF-8 at byte offset {offset + exc.start}; "
            "NC05 stores text only"
        ) from None


def tokenize_exact(model, data: bytes, offset: int = 0) -> list[int]:
    """Tokens whose bytes concatenate back to `data`, or a clear refusal."""
    tokens = model.tokenize(data)
    pieces = model.pieces()
    back = b"".join(pieces[t] for t in tokens)
    if back != data:
        at = next((i for i, (a, b) in enumerate(zip(back, data)) if a != b), min(len(back), len(data)))
        raise UnsupportedInputError(
            f"the tokenizer does not reproduce the input at byte offset {offset + at}"
        )
    return tokens


def encode_frames(lm, settings: Settings, data: bytes, progress=None):
    """Yield NC05 frames (bytes) covering `data`."""
    check_text(data)
    if not data:
        yield _frame(lm, settings, b"", [], [], [])
        return
    for group in group_frames(split_chunks(data, settings.chunk_bytes), settings.frame_bytes):
        start, end = group[0][0], group[-1][1]
        chunks = [data[a:b] for a, b in group]
        tokens = [tokenize_exact(lm.model, c, a) for c, (a, _) in zip(chunks, group)]
        encoders = [Encoder() for _ in chunks]

        def step(ci, ti, freqs):
            tok = tokens[ci][ti]
            encoders[ci].encode(tok, freqs)
            return tok

        run_lanes(lm.model, settings, [len(t) for t in tokens], step, progress)
        payloads = [e.finish() for e in encoders]
        yield _frame(lm, settings, data[start:end], chunks, tokens, payloads)


def _frame(lm, settings, raw, chunks, tokens, payloads) -> bytes:
    entries = [
        Entry(ENTRY_TEXT, 0, len(c), len(t), len(p), crc32(c))
        for c, t, p in zip(chunks, tokens, payloads)
    ]
    header = FrameHeader(
        kind=KIND_TEXT,
        model_sha256=bytes.fromhex(lm.sha256),
        vocab=lm.model.n_vocab,
        raw_size=len(raw),
        content_sha256=content_digest(raw),
        settings=settings.header_fields(),
        profile=lm.profile,
        entries=entries,
    )
    return write_frame(header, payloads)


def decode_chunks(lm, settings: Settings, entries, payloads, progress=None) -> list[bytes]:
    """Decode LLM-coded entries; each result is checked against its length and CRC."""
    pieces = lm.model.pieces()
    n_vocab = len(pieces)
    decoders = [Decoder(p) for p in payloads]
    out_tokens: list[list[int]] = [[] for _ in entries]
    out_len = [0] * len(entries)

    def step(ci, ti, freqs):
        try:
            tok = decoders[ci].decode(freqs)
        except Exception as exc:  # constriction raises on exhausted or invalid data
            raise CorruptDataError(f"chunk {ci}: coded data is damaged ({exc})") from None
        if not 0 <= tok < n_vocab:
            raise CorruptDataError(f"chunk {ci}: decoded an impossible token")
        out_len[ci] += len(pieces[tok])
        if out_len[ci] > entries[ci].raw_len:
            raise CorruptDataError(f"chunk {ci}: decoded data is longer than recorded")
        out_tokens[ci].append(tok)
        return tok

    run_lanes(lm.model, settings, [e.n_tokens for e in entries], step, progress)
    out = []
    for i, (e, toks) in enumerate(zip(entries, out_tokens)):
        raw = b"".join(pieces[t] for t in toks)
        if len(raw) != e.raw_len or crc32(raw) != e.raw_crc32:
            raise CorruptDataError(f"chunk {i}: checksum mismatch after decoding")
        out.append(raw)
    return out
