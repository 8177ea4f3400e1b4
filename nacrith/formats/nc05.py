"""NC05: text frames, every chunk coded by the language model.

Also home of the LLM entry coder that NC06 uses for its text segments.
"""

from __future__ import annotations

import os
import re

import numpy as np

from .. import reflow
from ..chunking import split_chunks
from ..errors import CorruptDataError, UnsupportedInputError
from ..settings import Settings
from .container import ENTRY_TEXT, KIND_TEXT, Entry, FrameHeader, content_digest, crc32, write_frame

LLM_CODEC = 0
UNWRAPPED_CODEC = 1  # the model codes the chunk unwrapped (reflow.py); payload per reflow.pack
TEXT_CODECS = (LLM_CODEC, UNWRAPPED_CODEC)


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


def tokenize_chunks(model, chunks: list[bytes], offsets: list[int]) -> list[list[int]]:
    """tokenize_exact for every chunk, on several threads when there are many
    (llama.cpp's tokenizer runs without the GIL and only reads the vocabulary)."""
    return map_threads(lambda c, o: tokenize_exact(model, c, o), list(zip(chunks, offsets)))


TOKENIZE_BLOCK = 1 << 18  # bytes tokenized per call when a frame is tokenized whole


def map_threads(fn, items):
    """[fn(*item) for item in items], on threads when there are several."""
    if len(items) < 4:
        return [fn(*it) for it in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda it: fn(*it), items))


def token_chunks(model, raw: bytes, size: int, offset: int = 0, any_bytes: bool = False):
    """(chunk bytes, chunk tokens): `raw` tokenized (in TOKENIZE_BLOCK pieces cut
    like chunks, on threads), the tokens cut every `size` tokens. any_bytes: NC06
    spelling (see ByteTokens), and a cut never separates an escape from its byte."""
    cuts = split_chunks(raw, TOKENIZE_BLOCK)
    if any_bytes:
        blocks = map_threads(lambda b: tokenize_any(model, b), [(raw[a:b],) for a, b in cuts])
    else:
        blocks = tokenize_chunks(model, [raw[a:b] for a, b in cuts], [offset + a for a, _ in cuts])
    stream = [t for b in blocks for t in b]
    pieces = model.pieces()
    esc = byte_tokens(model)
    tokens, i = [], 0
    while i < len(stream):
        j = min(i + size, len(stream))
        if any_bytes and j < len(stream) and stream[j - 1] == esc.esc:
            j -= 1
        tokens.append(stream[i:j])
        i = j
    if any_bytes:
        return [esc.detokenize(pieces, t) for t in tokens], tokens
    return [_join(pieces, t) for t in tokens], tokens


_RUNS = re.compile("[\udc80-\udcff]+|[^\udc80-\udcff]+")


class ByteTokens:
    """How NC06 text entries spell bytes that the tokenizer cannot produce.

    Byte-level BPE vocabularies usually hold a token for every byte value, but
    not always (SmolLM2 lacks 21 of them, e.g. 0x04 and 0xF5-0xFF). Such a byte b
    is written as two tokens: ESC, a control token whose text is empty and which
    tokenizing text never yields, then the single-byte token of CARRIER + i, where
    i is b's index among the missing byte values. Both cost one byte of output in
    the decoder's length accounting, like the byte they stand for.
    """

    CARRIER = 0x30

    def __init__(self, pieces: list[bytes]):
        single: dict[int, int] = {}
        for t, p in enumerate(pieces):
            if len(p) == 1 and p[0] not in single:
                single[p[0]] = t
        self.missing = [b for b in range(256) if b not in single]
        empty = [t for t, p in enumerate(pieces) if p == b""]
        carriers = range(self.CARRIER, self.CARRIER + len(self.missing))
        if not empty or any(c not in single for c in carriers):
            raise UnsupportedInputError("this model's vocabulary cannot spell every byte value")
        self.esc = empty[0]
        self.spell: list[list[int]] = []
        for b in range(256):
            if b in single:
                self.spell.append([single[b]])
            else:
                self.spell.append([self.esc, single[self.CARRIER + self.missing.index(b)]])

    def detokenize(self, pieces: list[bytes], tokens: list[int]) -> bytes:
        out = bytearray()
        it = iter(tokens)
        for t in it:
            if t == self.esc:
                carrier = pieces[next(it, self.esc)]
                i = carrier[0] - self.CARRIER if len(carrier) == 1 else -1
                if not 0 <= i < len(self.missing):
                    raise CorruptDataError("malformed byte escape in a text entry")
                out.append(self.missing[i])
            else:
                out += pieces[t]
        return bytes(out)


def byte_tokens(model) -> ByteTokens:
    table = getattr(model, "_byte_tokens", None)
    if table is None:
        table = model._byte_tokens = ByteTokens(model.pieces())
    return table


def tokenize_any(model, data: bytes) -> list[int]:
    """Tokens for arbitrary bytes: valid UTF-8 runs through the tokenizer, other bytes
    one by one (see ByteTokens), so the model's context runs on across binary islands."""
    pieces = model.pieces()
    spell = byte_tokens(model).spell
    out: list[int] = []

    def bytewise(raw):
        for b in raw:
            out.extend(spell[b])

    for m in _RUNS.finditer(data.decode("utf-8", "surrogateescape")):
        run = m.group(0)
        if "\udc80" <= run[0] <= "\udcff":
            bytewise(ord(ch) - 0xDC00 for ch in run)
            continue
        raw = run.encode("utf-8")
        toks = model.tokenize(raw)
        if _join(pieces, toks) == raw:
            out.extend(toks)
        else:
            bytewise(raw)
    return out


def encode_llm(lm, settings: Settings, token_lists: list[list[int]], progress=None) -> list[bytes]:
    """Code each token list (one per chunk) with the settings' engine (engines/)."""
    return lm.engine.encode(settings, lm.model.bos, token_lists, progress)[0]


def unwrap(lm, settings: Settings, chunks: list[bytes], tokens: list[list[int]], any_bytes: bool = False):
    """reflow.plan for each chunk; the tokens of unwrapped chunks are replaced (in place)
    by those of their unwrapped text. Returns the plans (None: coded as it is)."""
    def one(chunk):
        p = reflow.plan(chunk, settings.reflow)
        if p is None:
            return None, None
        if any_bytes:
            return p, tokenize_any(lm.model, p.text)
        try:
            return p, tokenize_exact(lm.model, p.text)
        except UnsupportedInputError:  # the tokenizer does not reproduce it: keep the chunk
            return None, None

    plans = []
    for i, (p, toks) in enumerate(map_threads(one, [(c,) for c in chunks])):
        plans.append(p)
        if p is not None:
            tokens[i] = toks
    return plans


def llm_entry(chunk: bytes, tokens: list[int], payload: bytes, plan=None) -> tuple[Entry, bytes]:
    """The entry and payload of a coded chunk (`plan`: how it was unwrapped, if it was)."""
    codec = LLM_CODEC
    if plan is not None:
        codec, payload = UNWRAPPED_CODEC, reflow.pack(plan, payload)
    return Entry(ENTRY_TEXT, codec, len(chunk), len(tokens), len(payload), crc32(chunk)), payload


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
    if settings.chunk_tokens:
        chunks, tokens = token_chunks(lm.model, raw, settings.chunk_tokens, offset)
    else:
        cuts = split_chunks(raw, settings.chunk_bytes, bool(settings.balance))
        chunks = [raw[a:b] for a, b in cuts]
        tokens = tokenize_chunks(lm.model, chunks, [offset + a for a, _ in cuts])
    plans = unwrap(lm, settings, chunks, tokens)
    coded = encode_llm(lm, settings, tokens, progress) if chunks else []
    entries, payloads = zip(*map(llm_entry, chunks, tokens, coded, plans)) if chunks else ((), ())
    header = FrameHeader(
        kind=KIND_TEXT,
        raw_size=len(raw),
        content_sha256=content_digest(raw),
        entries=list(entries),
        **model_fields(lm, settings),
    )
    return write_frame(header, list(payloads), final)


def decode_llm(lm, settings: Settings, entries, payloads, progress=None) -> list[bytes]:
    """Decode LLM-coded entries; each result is checked against its length and CRC."""
    unwrapped = [None] * len(entries)
    payloads = list(payloads)
    for i, e in enumerate(entries):
        if e.codec == UNWRAPPED_CODEC:
            if settings.reflow not in reflow.VERSIONS:
                raise CorruptDataError(f"chunk {i} is unwrapped but the header's reflow setting is off")
            mode, flags, payloads[i] = reflow.unpack(payloads[i])
            unwrapped[i] = (mode, flags)
    pieces = lm.model.pieces()
    escapes = byte_tokens(lm.model)
    counts = [e.n_tokens for e in entries]
    longest = max(map(len, pieces))
    for i, e in enumerate(entries):
        # n tokens spell at most n * longest bytes (twice that once CRLF is restored)
        if e.raw_len > e.n_tokens * longest * (1 if unwrapped[i] is None else 2):
            raise CorruptDataError(f"chunk {i}: {e.n_tokens} tokens cannot spell {e.raw_len} bytes")
    out_len = [0] * len(entries)
    seen: list[list[int]] = [[] for _ in entries]
    done: dict[int, bytes] = {}

    def check(ci, tok):
        out_len[ci] += len(pieces[tok])
        if out_len[ci] > entries[ci].raw_len:
            raise CorruptDataError(f"chunk {ci}: decoded data is longer than recorded")
        seen[ci].append(tok)
        if len(seen[ci]) == counts[ci]:
            # the chunk is complete: verify it now, so that damage stops the decoder at the
            # first bad chunk rather than after the whole frame (hours on a CPU)
            done[ci] = _finish(pieces, escapes, settings, ci, entries[ci], seen[ci], unwrapped[ci])

    tokens = lm.engine.decode(settings, lm.model.bos, counts, payloads, progress, check)
    return [done[i] if i in done else _finish(pieces, escapes, settings, i, e, toks, u)
            for i, (e, toks, u) in enumerate(zip(entries, tokens, unwrapped))]


def _finish(pieces, escapes, settings: Settings, i: int, e, toks, unwrapped) -> bytes:
    """Chunk i's bytes from its tokens, checked against its length and CRC-32."""
    raw = escapes.detokenize(pieces, toks)
    if unwrapped is not None:
        raw = reflow.restore(unwrapped[0], raw, unwrapped[1], settings.reflow)
    if len(raw) != e.raw_len or crc32(raw) != e.raw_crc32:
        raise CorruptDataError(f"chunk {i}: checksum mismatch after decoding")
    return raw
