"""rANS with 64-bit state and 32-bit words, vectorised across lanes.

The GPU lanes use this coder instead of the range coder: its decoder step is a
handful of integer tensor ops per lane (no branches, at most one word read per
symbol), so it runs on the GPU inside the captured decode step, and its encoder
only needs each token's (start, freq), never a frequency table.

State x stays in [2**31, 2**63), so int64 tensors hold it. Frequencies are out
of 2**PRECISION. A chunk's stream is: the final encoder state as two words
(high, low), then the words the encoder emitted, last first; all words are
little-endian uint32.

Encoder (symbols in reverse order):
  if x >= freq << (63 - PRECISION): emit x & 0xFFFFFFFF, x >>= 32
  x = (x // freq << PRECISION) + x % freq + start
Decoder:
  slot = x & (2**PRECISION - 1); find the symbol with start <= slot < start + freq
  x = freq * (x >> PRECISION) + slot - start
  if x < 2**31: x = x << 32 | next word
"""

from __future__ import annotations

import numpy as np

from ..errors import CorruptDataError
from .quantize import PRECISION

LOW = 1 << 31
MASK = (1 << PRECISION) - 1
_EMIT_SHIFT = 63 - PRECISION


def encode_lanes(starts: np.ndarray, freqs: np.ndarray, counts) -> list[bytes]:
    """Encode lane j's first counts[j] symbols, given as (starts[t, j], freqs[t, j])."""
    counts = np.asarray(counts, dtype=np.int64)
    steps, lanes = starts.shape
    x = np.full(lanes, LOW, dtype=np.uint64)
    words = np.zeros((steps, lanes), dtype=np.uint32)
    n_words = np.zeros(lanes, dtype=np.int64)
    for t in range(steps - 1, -1, -1):
        active = np.nonzero(t < counts)[0]
        if active.size == 0:
            continue
        f = freqs[t, active].astype(np.uint64)
        s = starts[t, active].astype(np.uint64)
        if np.any(f == 0) or np.any(s + f > (1 << PRECISION)):
            raise ValueError("invalid (start, freq) for the rANS coder")
        xa = x[active]
        emit = xa >= (f << np.uint64(_EMIT_SHIFT))
        if emit.any():
            lanes_e = active[emit]
            words[n_words[lanes_e], lanes_e] = (xa[emit] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            n_words[lanes_e] += 1
            xa = np.where(emit, xa >> np.uint64(32), xa)
        x[active] = ((xa // f) << np.uint64(PRECISION)) + (xa % f) + s
    out = []
    for j in range(lanes):
        head = np.array([x[j] >> np.uint64(32), x[j] & np.uint64(0xFFFFFFFF)], dtype=np.uint32)
        body = words[: n_words[j], j][::-1]
        out.append(np.concatenate([head, body]).astype("<u4").tobytes())
    return out


def stream_words(payloads: list[bytes], lanes: int):
    """Payloads -> (words [lanes, W+1] int64 with a zero pad column, lengths [lanes])."""
    lens = []
    for i, p in enumerate(payloads):
        if len(p) % 4 or len(p) < 8:
            raise CorruptDataError(f"chunk {i}: coded length {len(p)} is not a valid rANS stream")
        lens.append(len(p) // 4)
    width = max(lens, default=2) + 1
    words = np.zeros((lanes, width), dtype=np.int64)
    for j, p in enumerate(payloads):
        words[j, : lens[j]] = np.frombuffer(p, dtype="<u4")
    lens += [2] * (lanes - len(payloads))
    return words, np.asarray(lens, dtype=np.int64)


def decoder_state(words):
    """Initial state from each lane's first two words (torch or numpy int64)."""
    return (words[:, 0] << 32) | words[:, 1]


def lane_results(x, ptr, lens, out, counts) -> list[list[int]]:
    """The decoded symbols of each lane (out [steps, lanes], numpy), once every lane's final
    state is checked: back at LOW with all its words read, else the data was damaged."""
    result = []
    for j, n in enumerate(counts):
        if x[j] != LOW or ptr[j] != lens[j]:
            raise CorruptDataError(f"lane {j}: the coded stream does not end where it should (damaged data)")
        result.append(out[:n, j].tolist())
    return result


def advance_torch(x, ptr, words, slot, start, freq, active):
    """One decoder step for the active lanes (torch, in place on x and ptr).

    A lane stops moving once its chunk is decoded, so that afterwards its state
    can be checked: back at LOW with every word read, or the data was damaged."""
    import torch

    y = freq * (x >> PRECISION) + slot - start
    need = (y < LOW) & active
    w = words.gather(1, ptr.clamp(max=words.shape[1] - 1).unsqueeze(1)).squeeze(1)
    x.copy_(torch.where(need, (y << 32) | w, torch.where(active, y, x)))
    ptr.add_(need.to(ptr.dtype))


class LaneDecoder:
    """One lane's rANS decoder on the CPU (the same stream as encode_lanes writes)."""

    def __init__(self, payload: bytes, chunk: int = 0):
        if len(payload) % 4 or len(payload) < 8:
            raise CorruptDataError(f"chunk {chunk}: coded length {len(payload)} is not a valid rANS stream")
        self.words = np.frombuffer(payload, dtype="<u4").tolist()
        self.x = (self.words[0] << 32) | self.words[1]
        self.ptr = 2
        self.chunk = chunk

    def slot(self) -> int:
        return self.x & MASK

    def advance(self, slot: int, start: int, freq: int) -> None:
        x = freq * (self.x >> PRECISION) + slot - start
        if x < LOW:
            if self.ptr >= len(self.words):
                raise CorruptDataError(f"chunk {self.chunk}: the coded stream ends early (damaged data)")
            x = (x << 32) | self.words[self.ptr]
            self.ptr += 1
        self.x = x

    def finish(self) -> None:
        if self.x != LOW or self.ptr != len(self.words):
            raise CorruptDataError(f"chunk {self.chunk}: the coded stream does not end where it should (damaged data)")
