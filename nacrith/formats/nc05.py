"""NC05: text frames, every chunk coded by the language model.

Also home of the LLM entry coder that NC06 uses for its text segments.
"""

from __future__ import annotations

import re

from ..chunking import split_chunks
from ..codec.rangecoder import Decoder, Encoder
from ..engine import run_lanes
from ..errors import CorruptDataError, UnsupportedInputError
from ..settings import Settings
from .container import ENTRY_TEXT, KIND_TEXT, Entry, FrameHeader, content_digest, crc32, write_frame

LLM_CODEC = 0


def check_text(data: bytes, offset: int = 0) -> None:
    """Refuse input that is not valid UTF-8, naming the first bad byte."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedInputError(
            f"input is not valid UTF-8 at byte offset {offset + exc.start}; "
            "NC05 stores text only (NC06 stores anything)"
        ) from None


def _join(pieces, tokens) -> bytes:
    return b"".join(pieces[t] for t in tokens)


def tokenize_exact(model, data: bytes, offset: int = 0) -> list[int]:
    """Tokens whose bytes concatenate back to `data`, or a clear refusal."""
    tokens = model.tokenize(data)
    back = _join(model.pieces(), tokens)
    if back != data:
        at = next((i for i, (a, b) in enumerate(zip(back, data)) if a != b), min(len(back), len(data)))
        raise UnsupportedInputError(
            f"the tokenizer does not reproduce the input at byte offset {offset + at}"
        )
    return tokens


_RUNS = re.compile("[\udc80-\udcff]+|[^\udc80-\udcff]+")


def byte_tokens(model) -> list[int]:
    """The single-byte token of every byte value (byte-level BPE has all 256)."""
    table = getattr(model, "_byte_tokens", None)
    if table is None:
        found: dict[int, int] = {}
        for t, p in enumerate(model.pieces()):
            if len(p) == 1 and p[0] not in found:
                found[p[0]] = t
        if len(found) != 256:
            raise UnsupportedInputError("this model has no token for every byte value")
        table = [found[b] for b in range(256)]
        model._byte_tokens = table
    return table


def tokenize_any(model, data: bytes) -> list[int]:
    """Tokens for arbitrary bytes: valid UTF-8 runs through the tokenizer, other bytes
    as single-byte tokens, so the model's context runs on across binary islands."""
    pieces = model.pieces()
    singles = byte_tokens(model)
    out: list[int] = []
    for m in _RUNS.finditer(data.decode("utf-8", "surrogateescape")):
        run = m.group(0)
        if "\udc80" <= run[0] <= "\udcff":
            out.extend(singles[ord(ch) - 0xDC00] for ch in run)
            continue
        raw = run.encode("utf-8")
        toks = model.tokenize(raw)
        out.extend(toks if _join(pieces, toks) == raw else (singles[b] for b in raw))
    return out


def encode_llm(lm, settings: Settings, token_lists: list[list[int]], progress=None) -> list[bytes]:
    """Range-code each token list (one per chunk) through the lockstep lanes."""
    encoders = [Encoder() for _ in token_lists]

    def step(ci, ti, freqs):
        tok = token_lists[ci][ti]
        encoders[ci].encode(tok, freqs)
        return tok

    run_lanes(lm.model, settings, [len(t) for t in token_lists], step, progress)
    return [e.finish() for e in encoders]


def llm_entry(chunk: bytes, tokens: list[int], payload: bytes) -> Entry:
    return Entry(ENTRY_TEXT, LLM_CODEC, len(chunk), len(tokens), len(payload), crc32(chunk))


def model_fields(lm, settings: Settings) -> dict:
    return dict(
        model_sha256=bytes.fromhex(lm.sha256),
        vocab=lm.model.n_vocab,
        settings=settings.header_fields(),
        profile=lm.profile,
    )


def encode_frame(lm, settings: Settings, raw: bytes, offset: int = 0, progress=None, final: bool = True) -> bytes:
    """One NC05 frame for `raw` (valid UTF-8), or UnsupportedInputError."""
    check_text(raw, offset)
    chunks = [raw[a:b] for a, b in split_chunks(raw, settings.chunk_bytes)]
    starts = [a for a, _ in split_chunks(raw, settings.chunk_bytes)]
    tokens = [tokenize_exact(lm.model, c, offset + s) for c, s in zip(chunks, starts)]
    payloads = encode_llm(lm, settings, tokens, progress) if chunks else []
    header = FrameHeader(
        kind=KIND_TEXT,
        raw_size=len(raw),
        content_sha256=content_digest(raw),
        entries=[llm_entry(c, t, p) for c, t, p in zip(chunks, tokens, payloads)],
        **model_fields(lm, settings),
    )
    return write_frame(header, payloads, final)


def decode_llm(lm, settings: Settings, entries, payloads, progress=None) -> list[bytes]:
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
        raw = _join(pieces, toks)
        if len(raw) != e.raw_len or crc32(raw) != e.raw_crc32:
            raise CorruptDataError(f"chunk {i}: checksum mismatch after decoding")
        out.append(raw)
    return out
