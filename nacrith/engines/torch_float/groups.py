"""Groups of lanes advanced in lockstep by the torch model (GPU or CPU).

Chunks are taken `lanes` at a time, in order, into groups. Every lane of a group
starts from BOS at position 0 and all advance together, one token each per step,
until the group's longest chunk is done; lanes past their chunk's end keep
stepping on padding that nothing reads. So every group has the same tensor
shapes, whatever its contents and whichever GPU runs it: a lane's logits do not
depend on the number of GPUs. When the window is full, all lanes slide together.

Each step computes, on the device, the integer frequencies of every lane and
then only what the coder needs: the encoder records (start, freq) of the known
token; the decoder finds the token from its rANS state and advances the state.
Nothing of size vocab leaves the device, and on CUDA the whole step is captured
once in a CUDA graph and replayed.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ...codec import rans
from ...codec.quantize import PRECISION, freqs_torch, lookup_freqs_torch, lookup_torch, search_freqs_torch, search_torch, table_torch
from ...errors import NonFiniteLogitsError
from ...predictors.online import Online
from ...settings import Settings
from ...xp import TorchOps


def groups(n_chunks: int, lanes: int) -> list[range]:
    return [range(a, min(a + lanes, n_chunks)) for a in range(0, n_chunks, lanes)]


class GroupRunner:
    """Holds the model, one KV cache shaped [lanes, context] and the captured steps."""

    def __init__(self, model, settings: Settings, bos: int, graphs: bool | None = None, compile: bool | None = None):
        self.model = model
        self.settings = settings
        self.bos = bos
        self.lanes = settings.lanes
        dev = model.device
        self.device = dev
        self.cuda = dev.type == "cuda"
        self.graphs = self.cuda if graphs is None else graphs
        if compile is None:  # NACRITH_COMPILE=0 turns torch.compile off (same integers, slower)
            compile = self.cuda and os.environ.get("NACRITH_COMPILE", "1") != "0"
        use_compile = compile
        self.lookup = torch.compile(lookup_torch, dynamic=False) if use_compile else lookup_torch
        self.search = search_torch
        if use_compile:
            # compiled in two parts: inductor (torch 2.11, CUDA) fails to fuse the search's
            # cumsum into the softmax's row reductions below ~1000 lanes ("list indices must
            # be integers or slices, not NoneType"); apart, each part compiles
            freqs = torch.compile(freqs_torch, dynamic=False)
            scan = torch.compile(search_freqs_torch, dynamic=False)
            self.search = lambda logits, slots, table: scan(freqs(logits, table), slots)
        self.cache = model.new_cache(self.lanes, settings.context)
        self.table = table_torch(dev)
        L = self.lanes
        self.tok = torch.zeros(L, dtype=torch.int64, device=dev)
        self.pos = torch.zeros(1, dtype=torch.int64, device=dev)
        self.t = torch.zeros(1, dtype=torch.int64, device=dev)
        self.bad = torch.zeros((), dtype=torch.bool, device=dev)
        self.counts = torch.zeros(L, dtype=torch.int64, device=dev)
        self.x = torch.zeros(L, dtype=torch.int64, device=dev)
        self.ptr = torch.zeros(L, dtype=torch.int64, device=dev)
        self.pred = None
        self.cap = 0  # steps the per-step buffers hold
        self.wcap = 0  # words per lane the decoder buffer holds
        self._graph: dict[str, torch.cuda.CUDAGraph] = {}

    # -- buffers ----------------------------------------------------------------------

    def _ensure(self, steps: int, words: int = 0) -> None:
        steps = max(steps, 1)
        if steps <= self.cap and words <= self.wcap:
            return
        # round up so that similar groups reuse the captured graphs
        self.cap = max(self.cap, 1 << math.ceil(math.log2(steps)))
        self.wcap = max(self.wcap, 1 << math.ceil(math.log2(max(words, 2))))
        L, dev = self.lanes, self.device
        self.targets = torch.zeros((self.cap, L), dtype=torch.int64, device=dev)
        self.starts = torch.zeros((self.cap, L), dtype=torch.int64, device=dev)
        self.freqs = torch.zeros((self.cap, L), dtype=torch.int64, device=dev)
        self.out = torch.zeros((self.cap, L), dtype=torch.int64, device=dev)
        self.words = torch.zeros((L, self.wcap), dtype=torch.int64, device=dev)
        cfg = self.settings.predictors
        # the predictors' state lives on the device too; their steps join the graph
        self.pred = Online(cfg, L, self.model.n_vocab, self.cap, TorchOps(dev)) if cfg.any else None
        self._graph.clear()

    def _reset(self) -> None:
        for k, v in zip(self.cache.k, self.cache.v):
            k.zero_()
            v.zero_()
        self.tok.fill_(self.bos)
        self.pos.zero_()
        self.t.zero_()
        self.bad.zero_()
        if self.pred is not None:
            self.pred.reset()

    # -- the two steps ----------------------------------------------------------------

    def _logits(self) -> torch.Tensor:
        logits = self.model.step(self.tok, self.pos, self.cache)
        # one value per lane is enough to catch inf/nan: any of them makes the row's
        # maximum non-finite
        self.bad.logical_or_(~torch.isfinite(logits.amax(dim=-1)).all())
        return logits

    def _encode_step(self) -> None:
        logits = self._logits()
        target = self.targets.index_select(0, self.t).squeeze(0)
        if self.pred is None:
            start, freq = self.lookup(logits, target, self.table)
        else:
            self.pred.cheap()
            start, freq = lookup_freqs_torch(self.pred.freqs(logits), target)
            self.pred.update(target)
        self.starts.index_copy_(0, self.t, start.unsqueeze(0))
        self.freqs.index_copy_(0, self.t, freq.unsqueeze(0))
        self.tok.copy_(target)
        self.pos.add_(1)
        self.t.add_(1)

    def _decode_step(self) -> None:
        logits = self._logits()
        slot = self.x & rans.MASK
        if self.pred is None:
            sym, start, freq = self.search(logits, slot, self.table)
        else:
            self.pred.cheap()
            sym, start, freq = search_freqs_torch(self.pred.freqs(logits), slot)
            self.pred.update(sym)
        active = self.t < self.counts
        rans.advance_torch(self.x, self.ptr, self.words, slot, start, freq, active)
        self.out.index_copy_(0, self.t, sym.unsqueeze(0))
        self.tok.copy_(sym)
        self.pos.add_(1)
        self.t.add_(1)

    def _runner(self, name: str, fn):
        if not self.graphs:
            return fn
        g = self._graph.get(name)
        if g is None:
            # warm up (compiles, picks kernels) on a side stream, then capture one step
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    self._reset()
                    fn()
            torch.cuda.current_stream().wait_stream(s)
            self._reset()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            self._graph[name] = g
        return g.replay

    def _drive(self, step, steps: int, progress) -> None:
        ctx, slide = self.settings.context, self.settings.slide
        pos = 0
        for i in range(steps):
            step()
            pos += 1
            if pos == ctx:
                self.cache.slide(1, slide, pos)
                self.pos.sub_(slide)
                pos -= slide
            if progress is not None and (i % 64 == 63 or i == steps - 1):
                progress(i + 1)

    def _check_finite(self) -> None:
        if bool(self.bad):
            raise NonFiniteLogitsError("the model produced non-finite logits")

    # -- public -----------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, token_lists: list[list[int]], progress=None) -> tuple[list[bytes], list[float]]:
        """rANS streams and their ideal costs in bits, one per token list (<= lanes)."""
        L = self.lanes
        if not 0 < len(token_lists) <= L:
            raise ValueError("a group holds 1..lanes chunks")
        counts = np.zeros(L, dtype=np.int64)
        counts[: len(token_lists)] = [len(t) for t in token_lists]
        steps = int(counts.max())
        self._ensure(steps)
        tg = np.zeros((self.cap, L), dtype=np.int64)
        for j, toks in enumerate(token_lists):
            tg[: len(toks), j] = toks
        run = self._runner("enc", self._encode_step)
        self._reset()
        self.targets.copy_(torch.from_numpy(tg))
        self._drive(run, steps, progress)
        self._check_finite()
        starts = self.starts[:steps].cpu().numpy()
        freqs = self.freqs[:steps].cpu().numpy()
        payloads = rans.encode_lanes(starts, freqs, counts)[: len(token_lists)]
        valid = np.arange(steps)[:, None] < counts[None, :]
        bits = np.where(valid, PRECISION - np.log2(np.maximum(freqs, 1)), 0.0).sum(axis=0)
        return payloads, [float(b) for b in bits[: len(token_lists)]]

    @torch.no_grad()
    def decode(self, counts: list[int], payloads: list[bytes], progress=None) -> list[list[int]]:
        """Token lists from rANS streams; a damaged stream raises CorruptDataError."""
        L = self.lanes
        if not 0 < len(counts) <= L or len(payloads) != len(counts):
            raise ValueError("a group holds 1..lanes chunks")
        words, lens = rans.stream_words(payloads, L)
        steps = max(counts)
        self._ensure(steps, words.shape[1])
        cnt = np.zeros(L, dtype=np.int64)
        cnt[: len(counts)] = counts
        run = self._runner("dec", self._decode_step)
        self._reset()
        w = np.zeros((L, self.wcap), dtype=np.int64)
        w[:, : words.shape[1]] = words
        self.words.copy_(torch.from_numpy(w))
        self.counts.copy_(torch.from_numpy(cnt))
        self.x.copy_(rans.decoder_state(self.words))
        self.ptr.fill_(2)
        self._drive(run, steps, progress)
        self._check_finite()
        x = self.x.cpu().numpy()
        ptr = self.ptr.cpu().numpy()
        out = self.out[:steps].cpu().numpy()
        return rans.lane_results(x, ptr, lens, out, counts)
