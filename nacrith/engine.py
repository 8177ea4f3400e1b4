"""The lockstep lane schedule that drives the model for the encoder and the decoder.

Chunks are taken in order into `lanes` slots. Every step makes one model call
holding the pending token of each busy slot (slot order), turns each row of
logits into integer frequencies, and lets the coder consume or produce one
token per lane. A slot that finishes its chunk takes the next chunk at the
following step. The schedule depends only on the chunks' token counts, which
the decoder reads from the chunk table, so both sides make the same calls.

Each lane starts from the BOS token. When a lane's window holds `context`
tokens, the `slide` oldest tokens after BOS are removed from the KV cache and
the rest are moved down (llama.cpp's sequence remove + position add), so no
token is ever re-evaluated.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .codec.quantize import PRECISION, frequencies
from .settings import Settings


# Set by the CLI's SIGINT handler. KeyboardInterrupt raised while llama.cpp calls
# back into Python (its log callback) is dropped by ctypes; this flag is not.
STOP = threading.Event()


@dataclass
class Lane:
    chunk: int
    n_tokens: int
    done: int = 0
    pending: int = 0  # token to feed at the next step
    pos: int = 0  # its position
    bits: float = 0.0
    out: list[int] = field(default_factory=list)


# step(chunk_index, token_index, freqs) -> the token at that index
StepFn = Callable[[int, int, np.ndarray], int]
# progress(tokens, bits, bytes) after every step
ProgressFn = Callable[[int, float, int], None]


def run_lanes(
    model,
    settings: Settings,
    token_counts: list[int],
    step: StepFn,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Drive the model over all chunks; return the coding cost in bits of each chunk."""
    costs = [0.0] * len(token_counts)
    queue = list(range(len(token_counts)))[::-1]
    slots: list[Lane | None] = [None] * settings.lanes
    model.clear()
    pieces = model.pieces()
    while queue or any(slots):
        if STOP.is_set():
            raise KeyboardInterrupt
        for s in range(settings.lanes):
            if slots[s] is None and queue:
                c = queue.pop()
                slots[s] = Lane(chunk=c, n_tokens=token_counts[c], pending=model.bos, pos=0)
        busy = [s for s in range(settings.lanes) if slots[s] is not None]
        lanes = [slots[s] for s in busy]
        logits = model.decode(
            [ln.pending for ln in lanes], [ln.pos for ln in lanes], busy, [1] * len(busy)
        )
        freqs = frequencies(logits)
        tokens_this_step = 0
        bits_this_step = 0.0
        bytes_this_step = 0
        for row, s in enumerate(busy):
            ln = slots[s]
            f = freqs[row]
            tok = step(ln.chunk, ln.done, f)
            cost = PRECISION - float(np.log2(f[tok]))
            ln.bits += cost
            bits_this_step += cost
            tokens_this_step += 1
            bytes_this_step += len(pieces[tok])
            ln.done += 1
            if ln.done == ln.n_tokens:
                costs[ln.chunk] = ln.bits
                model.forget(s)
                slots[s] = None
                continue
            next_pos = ln.pos + 1
            if next_pos == settings.context:
                model.shift(s, 1, settings.slide, next_pos)
                next_pos -= settings.slide
            ln.pending = tok
            ln.pos = next_pos
        if progress is not None:
            progress(tokens_this_step, bits_this_step, bytes_this_step)
    return costs
