"""Hard-wrapped text, unwrapped before the model sees it.

Plain-text books, mail and RFCs are wrapped at a fixed width: a newline stands
where the next word would not have fitted. The model cannot count columns, so
it predicts those newlines badly, and the first word of every line reaches it
without the leading space it has everywhere else. A text chunk may therefore be
coded as:

- its text with CRLF line ends as LF (mode CRLF, when every line end is CRLF),
- with every *slot* (a single space or newline between two non-blank bytes)
  made a space (mode FLOW), plus one flag per slot saying whether it was a
  newline. The flags are coded with an adaptive binary model whose context is
  the length the line would reach if the slot stayed a space (column + 1 +
  the next word's length), which is what a wrapper decides on; for wrapped
  text they cost a fraction of a bit per line.

Both maps are exact inverses (slots are never adjacent, so turning one into a
space or back changes no other slot's neighbours). The flag model is integer
counts only. The encoder keeps a chunk as it is unless the flags are cheap
(see `plan`): whether it unwrapped is recorded per entry, so the decoder never
guesses. Measured on alice29.txt in the README ("Unwrapping").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codec.quantize import PRECISION
from .codec.rangecoder import Decoder, Encoder
from .errors import CorruptDataError

VERSION = 2  # the `reflow` setting: this module's algorithm, 0 = never used
VERSIONS = (1, 2)  # what this module still decodes (and may write, when asked)
# The flag model's estimate is (SCALE * n_newline + A1) / (SCALE * (n_space + n_newline) + A0 + A1)
# per context. Version 1 was the usual half-count prior; version 2 expects a space
# where a context has not been seen (a newline is rare until the line is nearly
# full), which codes alice29.txt's flags in 554 bits instead of 774.
_PRIORS = {1: (2, 1, 1), 2: (20, 5, 1)}  # version: (SCALE, A0, A1)
MODE_CRLF = 1
MODE_FLOW = 2
MAX_CONTEXT = 255  # line lengths from here on share one context
COUNT_LIMIT = 1024  # counts halve here, so the model keeps adapting
TOTAL = 1 << PRECISION
_BLANK = np.zeros(256, dtype=bool)
_BLANK[list(b" \t\n\r\f\v")] = True


@dataclass(frozen=True)
class Plan:
    mode: int  # MODE_CRLF | MODE_FLOW bits
    text: bytes  # what the model codes
    flags: bytes  # the coded flags (MODE_FLOW only)


def _slots(s: bytes, chars=(32, 10)) -> np.ndarray:
    """Positions of a byte from `chars` with a non-blank byte on each side."""
    a = np.frombuffer(s, dtype=np.uint8)
    if len(a) < 3:
        return np.zeros(0, dtype=np.int64)
    mid = a[1:-1]
    ok = np.isin(mid, chars) & ~_BLANK[a[:-2]] & ~_BLANK[a[2:]]
    return np.nonzero(ok)[0].astype(np.int64) + 1


def _crlf_only(chunk: bytes) -> bool:
    n = chunk.count(b"\r\n")
    return n > 0 and chunk.count(b"\r") == n and chunk.count(b"\n") == n


class _Flags:
    """The flags' adaptive model: counts of (space, newline) per context."""

    def __init__(self, text: bytes, slots: np.ndarray, version: int):
        self.scale, self.a0, self.a1 = _PRIORS[version]
        a = np.frombuffer(text, dtype=np.uint8)
        n = len(a)
        # the last newline before each slot, and the end of the word after it
        nl = np.nonzero(a == 10)[0]
        i = np.searchsorted(nl, slots) - 1
        self.prev_nl = np.where(i >= 0, nl[np.clip(i, 0, None)] if len(nl) else -1, -1).tolist()
        blanks = np.nonzero(_BLANK[a])[0]
        j = np.searchsorted(blanks, slots + 1)
        ends = np.where(j < len(blanks), blanks[np.clip(j, 0, max(len(blanks) - 1, 0))] if len(blanks) else n, n)
        self.word = (ends - slots - 1).tolist()
        self.slots = slots.tolist()
        self.counts = [[0, 0] for _ in range(MAX_CONTEXT + 1)]
        self.line_start = -1  # last newline so far (text or flag)
        self.bits = 0.0

    def freqs(self, k: int) -> tuple[int, np.ndarray]:
        """Context and [f_space, f_newline] (sum 2**24) for slot k."""
        pos = self.slots[k]
        start = max(self.prev_nl[k], self.line_start)
        ctx = min((pos - start - 1) + 1 + self.word[k], MAX_CONTEXT)  # column, the space, the word
        n0, n1 = self.counts[ctx]
        f1 = (self.scale * n1 + self.a1) * (TOTAL - 2) // (self.scale * (n0 + n1) + self.a0 + self.a1) + 1
        return ctx, np.array([TOTAL - f1, f1], dtype=np.int64)

    def update(self, k: int, ctx: int, bit: int) -> None:
        c = self.counts[ctx]
        c[bit] += 1
        if c[0] + c[1] > COUNT_LIMIT:
            c[0] = (c[0] + 1) >> 1
            c[1] = (c[1] + 1) >> 1
        if bit:
            self.line_start = self.slots[k]


def plan(chunk: bytes, version: int = VERSION, min_breaks: int = 4, max_bits: float = 1.0) -> Plan | None:
    """How to code `chunk` under reflow `version` (0: never unwrap), or None to code it
    as it is. It is unwrapped when at least `min_breaks` newlines go and their flags
    cost at most `max_bits` each."""
    if not version:
        return None
    mode = 0
    s = chunk
    if _crlf_only(chunk):
        mode |= MODE_CRLF
        s = chunk.replace(b"\r\n", b"\n")
    slots = _slots(s)
    a = np.frombuffer(s, dtype=np.uint8)
    bits = (a[slots] == 10).astype(np.int64)
    breaks = int(bits.sum())
    if breaks >= min_breaks:
        t = bytearray(s)
        t_arr = np.frombuffer(t, dtype=np.uint8)
        t_arr[slots] = 32
        text = bytes(t)
        enc = Encoder()
        model = _Flags(text, slots, version)
        for k, bit in enumerate(bits.tolist()):
            ctx, f = model.freqs(k)
            enc.encode(bit, f)
            model.bits -= np.log2(f[bit] / TOTAL)
            model.update(k, ctx, bit)
        # Unwrap only where the flags cost under a bit per removed newline: on wrapped
        # prose the model pays more than that for each (README, "Unwrapping").
        if model.bits <= max_bits * breaks:
            return Plan(mode | MODE_FLOW, text, enc.finish())
    return Plan(mode, s, b"") if mode else None


def pack(p: Plan, llm_payload: bytes) -> bytes:
    """Entry payload: mode:u8, [flags_len:u32 flags] when FLOW, then the model's stream."""
    head = bytes([p.mode])
    if p.mode & MODE_FLOW:
        head += len(p.flags).to_bytes(4, "little") + p.flags
    return head + llm_payload


def unpack(payload: bytes) -> tuple[int, bytes, bytes]:
    """(mode, flags, model stream) of an unwrapped entry's payload."""
    if not payload or payload[0] & ~(MODE_CRLF | MODE_FLOW) or not payload[0]:
        raise CorruptDataError("unwrapped text entry has an invalid mode byte")
    mode, rest = payload[0], bytes(payload[1:])
    flags = b""
    if mode & MODE_FLOW:
        if len(rest) < 4:
            raise CorruptDataError("unwrapped text entry is truncated")
        n = int.from_bytes(rest[:4], "little")
        if n > len(rest) - 4:
            raise CorruptDataError("unwrapped text entry's flags run past its payload")
        flags, rest = rest[4 : 4 + n], rest[4 + n :]
    return mode, flags, rest


def restore(mode: int, text: bytes, flags: bytes, version: int = VERSION) -> bytes:
    """The chunk that `plan` unwrapped into (mode, text, flags) under `version`."""
    s = text
    if mode & MODE_FLOW:
        slots = _slots(text, (32,))
        model = _Flags(text, slots, version)
        dec = Decoder(flags)
        t = bytearray(text)
        for k in range(len(slots)):
            ctx, f = model.freqs(k)
            try:
                bit = dec.decode(f)
            except Exception as exc:  # constriction raises on exhausted or invalid data
                raise CorruptDataError(f"unwrapped text entry's flags are damaged ({exc})") from None
            model.update(k, ctx, bit)
            if bit:
                t[model.slots[k]] = 10
        s = bytes(t)
    if mode & MODE_CRLF:
        if b"\r" in s:
            raise CorruptDataError("unwrapped text entry holds CR bytes in CRLF mode")
        s = s.replace(b"\n", b"\r\n")
    return s
