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

The online predictors (predictors/online.py) refine each lane's frequencies;
with the LLM skip on, a lane may code a token without the model and feed it
with its next one (the encoder and decoder decide alike, from the same state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...codec.quantize import PRECISION, frequencies
from ...predictors.online import Online
from ...settings import Settings
from .. import STOP




@dataclass
class Lane:
    chunk: int
    n_tokens: int
    done: int = 0
    pending: list[int] = field(default_factory=list)  # tokens not yet in the cache
    pos: int = 0  # position of the first pending token
    bits: float = 0.0


# step(chunk_index, token_index, freqs) -> the token at that index
StepFn = Callable[[int, int, np.ndarray], int]
# progress(tokens, bits, bytes) after every step
ProgressFn = Callable[[int, float, int], None]


class Counts:
    """Tokens coded, and of them coded without the model (LLM skip), by this process."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens = 0
        self.skipped = 0


COUNTS = Counts()  # read by the benchmarks


def run_lanes(
    model,
    settings: Settings,
    token_counts: list[int],
    step: StepFn,
    progress: ProgressFn | None = None,
) -> list[float]:
    """Drive the model over all chunks; return the coding cost in bits of each chunk.

    With the online predictors on, each lane's frequencies come from them; where the
    skip allows, a lane codes its token without the model and keeps it pending, to be
    evaluated together with the next token it does run the model for (the encoder
    and the decoder make the same decision from the same state, so the same calls)."""
    costs = [0.0] * len(token_counts)
    queue = list(range(len(token_counts)))[::-1]
    slots: list[Lane | None] = [None] * settings.lanes
    model.clear()
    pieces = model.pieces()
    cfg = settings.predictors
    pred = None
    if cfg.any:
        pred = Online(cfg, settings.lanes, model.n_vocab, cap=max(token_counts, default=0) + 1)
    while queue or any(slots):
        if STOP.is_set():
            raise KeyboardInterrupt
        for s in range(settings.lanes):
            if slots[s] is None and queue:
                c = queue.pop()
                slots[s] = Lane(chunk=c, n_tokens=token_counts[c], pending=[model.bos], pos=0)
                if pred is not None:
                    pred.reset(np.array([s]))
        busy = [s for s in range(settings.lanes) if slots[s] is not None]
        skipping = []
        if cfg.skip:  # decide before the model call which lanes it runs for
            for s in busy:
                pred.cheap(np.array([s]))
                if pred.skip_mask(np.array([s]))[0]:
                    skipping.append(s)
        running = [s for s in busy if s not in skipping]
        rows = {}
        if running:
            toks, poss, seqs, want = [], [], [], []
            for s in running:
                ln = slots[s]
                if ln.pos + len(ln.pending) > settings.context:
                    model.shift(s, 1, settings.slide, ln.pos)
                    ln.pos -= settings.slide
                k = len(ln.pending)
                toks += ln.pending
                poss += range(ln.pos, ln.pos + k)
                seqs += [s] * k
                want += [0] * (k - 1) + [1]
            logits = model.decode(toks, poss, seqs, want)
            if pred is None:
                freqs = frequencies(logits)
            for row, s in enumerate(running):
                ln = slots[s]
                ln.pos += len(ln.pending)
                ln.pending = []
                rows[s] = row
        tokens_this_step = 0
        bits_this_step = 0.0
        bytes_this_step = 0
        for s in busy:
            ln = slots[s]
            ids = np.array([s])
            if pred is None:
                f = freqs[rows[s]]
            else:  # cheap -> freqs -> update, lane by lane: the predictor keeps one lane's step
                pred.cheap(ids)
                if s in rows:
                    f = pred.freqs(logits[rows[s] : rows[s] + 1], ids)[0]
                else:
                    f = pred.skipped_freqs(ids)[0]
                    COUNTS.skipped += 1
            tok = step(ln.chunk, ln.done, f)
            if pred is not None:
                pred.update(np.array([tok]), ids)
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
            ln.pending.append(tok)
        COUNTS.tokens += tokens_this_step
        if progress is not None:
            progress(tokens_this_step, bits_this_step, bytes_this_step)
    return costs
