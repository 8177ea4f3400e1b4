"""Lanes of the integer engine: independent windows over one backend.

Each lane codes one chunk: its inputs are BOS (input 0) and then the chunk's
tokens, input m at absolute position m. A lane's window has `context` slots;
slot 0 is BOS, the kept inputs follow in order. Before an input that would not
fit, the window slides: the `slide` oldest inputs after BOS are dropped, the rest
move down, and BOS's key is rotated again from its unrotated copy to sit just
before the first kept input. `run` evaluates runs of inputs for several lanes in
one call; a run never crosses a slide, and how the inputs are split into calls
changes no integer (forward.py).
"""

from __future__ import annotations

import numpy as np

from .forward import rope_rows, rotate


class Lanes:
    def __init__(self, weights, backend, lanes: int, context: int, slide: int):
        if not 1 <= slide < context - 1:
            raise ValueError("slide must be at least 1 and less than context - 1")
        self.w = weights
        self.rope = backend.ops.asarray(weights.rope)
        self.be = backend
        self.o = backend.ops
        self.lanes, self.context, self.slide = lanes, context, slide
        self.done = np.zeros(lanes, np.int64)  # inputs evaluated (BOS included)
        self.first = np.ones(lanes, np.int64)  # index of the first kept input after BOS

    def reset(self, lane: int) -> None:
        self.done[lane] = 0
        self.first[lane] = 1

    def next_slot(self, lane: int) -> int:
        return int(self.done[lane] - self.first[lane] + 1)

    def room(self, lane: int) -> int:
        """Inputs the lane takes before its window must slide."""
        return self.context - self.next_slot(lane)

    def make_room(self, lane: int) -> None:
        if self.room(lane) > 0:
            return
        end = self.next_slot(lane)
        self.be.cache.drop(lane, 1, self.slide, end)
        self.first[lane] += self.slide
        self._rotate_bos(lane, int(self.first[lane]) - 1)

    def _rotate_bos(self, lane: int, pos: int) -> None:
        o, c = self.o, self.be.cache
        n = self.w.n_layer
        cos, sin = rope_rows(o, self.rope, o.asarray([pos] * n))
        bos = o.i64(c.bos[:, lane])  # [layers, kv, hd]
        c.k[:, lane, :, 0] = rotate(o, bos, cos, sin)

    def run(self, lanes, runs, logits: bool = True):
        """Evaluate runs of inputs (runs[i] for lanes[i], each within the lane's room).
        Returns the final-norm rows (a, e) in row order, and the logits if asked."""
        tok, ln, sl, ps = [], [], [], []
        for lane, run in zip(lanes, runs):
            k = len(run)
            if not 0 < k <= self.room(lane):
                raise ValueError("a run must be non-empty and fit the lane's window")
            s0, p0 = self.next_slot(lane), int(self.done[lane])
            tok += list(run)
            ln += [lane] * k
            sl += range(s0, s0 + k)
            ps += range(p0, p0 + k)
            self.done[lane] += k
        o = self.o
        a, e = self.be.hidden(o.asarray(tok), o.asarray(ln), o.asarray(sl), o.asarray(ps))
        return self.be.logits(a, e) if logits else (a, e)
