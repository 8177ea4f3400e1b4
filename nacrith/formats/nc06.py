"""NC06: hybrid frames for any bytes: LLM-coded text segments and binary segments.

Text segments are cut into chunks like NC05 and tokenized with single-byte
tokens for bytes that are not UTF-8; binary segments take the smallest of raw,
zlib, bz2 and raw LZMA2. A frame is also coded as one binary segment, and the
smaller of the two frames is written, so NC06 is never worse than its best
byte codec on data the model cannot predict.
"""

from __future__ import annotations

from ..chunking import split_chunks
from ..codec import bytecodecs
from ..segments import segments
from ..settings import Settings
from .container import (
    ENTRY_BINARY,
    KIND_HYBRID,
    Entry,
    FrameHeader,
    content_digest,
    crc32,
    write_frame,
)
from .nc05 import (
    encode_llm,
    llm_entry,
    map_threads,
    model_fields,
    token_chunks,
    tokenize_any,
    unwrap,
)


def _binary_entry(raw: bytes) -> tuple[Entry, bytes]:
    codec, payload = bytecodecs.best(raw)
    return Entry(ENTRY_BINARY, codec, len(raw), 0, len(payload), crc32(raw)), payload


def _frame(raw: bytes, entries, payloads, model: dict | None, final: bool) -> bytes:
    header = FrameHeader(
        kind=KIND_HYBRID,
        raw_size=len(raw),
        content_sha256=content_digest(raw),
        entries=entries,
        **(model or dict(model_sha256=b"", vocab=0, settings={}, profile="")),
    )
    return write_frame(header, payloads, final)


def binary_frame(raw: bytes, final: bool = True) -> bytes:
    entry, payload = _binary_entry(raw)
    return _frame(raw, [entry], [payload], None, final)


def encode_frame(
    lm,
    settings: Settings,
    raw: bytes,
    progress=None,
    choose_smaller: bool = True,
    final: bool = True,
    all_text: bool = False,
) -> bytes:
    """The smaller of the hybrid frame and the all-binary frame for `raw`.

    `choose_smaller=False` keeps the hybrid frame whenever it has text, and
    `all_text=True` makes the whole frame one text segment (both for tests)."""
    segs = [(0, len(raw), True)] if all_text else segments(raw)
    if not any(is_text for _, _, is_text in segs):
        return binary_frame(raw, final)
    # The all-binary alternative is made on a thread while the model codes the text
    # (the byte codecs release the GIL).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(binary_frame, raw, final)
        hybrid = _hybrid(lm, settings, raw, segs, progress, final)
        whole = pending.result()
    return hybrid if len(hybrid) < len(whole) or not choose_smaller else whole


def _hybrid(lm, settings: Settings, raw: bytes, segs, progress, final: bool) -> bytes:
    # (kind, slice) in file order; text slices are LLM chunks.
    parts: list[tuple[bool, bytes]] = []
    tokens: list[list[int]] = []
    for a, b, is_text in segs:
        if not is_text:
            parts.append((False, raw[a:b]))
        elif settings.chunk_tokens:
            chunks, toks = token_chunks(lm.model, raw[a:b], settings.chunk_tokens, a, any_bytes=True)
            parts += [(True, c) for c in chunks]
            tokens += toks
        else:
            chunks = [raw[a + x : a + y] for x, y in split_chunks(raw[a:b], settings.chunk_bytes, bool(settings.balance))]
            parts += [(True, c) for c in chunks]
            tokens += map_threads(lambda c: tokenize_any(lm.model, c), [(c,) for c in chunks])
    texts = [p for t, p in parts if t]
    plans = unwrap(lm, settings, texts, tokens, any_bytes=True)
    coded = iter(zip(texts, tokens, encode_llm(lm, settings, tokens, progress), plans))
    entries, payloads = [], []
    for is_text, part in parts:
        entry, payload = llm_entry(*next(coded)) if is_text else _binary_entry(part)
        entries.append(entry)
        payloads.append(payload)
    return _frame(raw, entries, payloads, model_fields(lm, settings), final)
