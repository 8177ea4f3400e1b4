"""The integer engine as the formats see it: token lists <-> rANS payloads.

Encoder: every token is known, so each lane (one chunk) is evaluated in runs of
up to `block` inputs per call, the runs of all lanes in one call; the online
predictors then step through the lanes' tokens together. Decoder: lanes advance
in lockstep, one token each per call, each with its own rANS state. Because the
integer model gives the same logits for any split into calls and any lane count
(forward.py), both sides compute the same frequencies; neither `lanes` nor
`block` nor the thread count is stored in the file.
"""

from __future__ import annotations

import os

import numpy as np

from ...codec import rans
from ...codec.quantize import EXP2_TABLE, PRECISION, lookup_numpy, search_numpy
from ...errors import CorruptDataError, UnsupportedInputError
from ...codec.quantize import freqs_fixed
from ...predictors.online import Online
from ...xp import NumpyOps
from .. import STOP, pool
from . import spec, weights
from .lanes import Lanes

_WEIGHTS: dict[tuple, object] = {}
_LOGIT_ROWS = 128  # logits rows held at once (393 KB each for SmolLM2)


def load_weights(path: str):
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    w = _WEIGHTS.get(key)
    if w is None:
        _WEIGHTS.clear()  # one model at a time: they are large
        w = _WEIGHTS[key] = weights.load(path)
    return w


def profile(w) -> str:
    """What goes in the header in place of a machine profile: the arithmetic's version
    and the digest of its tables (any machine with both computes the same integers)."""
    return f"nacrith-int {spec.VERSION} {w.digest[:16]}"


def make_backend(w, lanes: int, context: int, backend: str = "native", threads=None, device=None):
    if backend == "native":
        from . import native

        if native.library() is not None:
            return native.Native(w, lanes, context, threads)
        backend = "numpy"  # the C kernels were not built: the same integers, slowly
    if backend == "numpy":
        from .reference import Reference

        return Reference(w, lanes, context)
    if backend == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(w, lanes, context, device or "cpu")
    raise ValueError(f"unknown integer-engine backend {backend!r}")


def _to_numpy(x):
    return x if isinstance(x, np.ndarray) else x.cpu().numpy()


class IntEngine:
    name = "int"
    piece_lens = None  # bytes of every token (set by api.load_model), for progress

    def __init__(self, path: str, threads: int | None = None, backend: str = "native", device=None,
                 lanes: int | None = None, block: int = 64, gpus: int | None = None):
        self.path = str(path)
        # worker processes, one per GPU, for the torch backend's groups (engines/pool.py): by
        # default every visible GPU where the device is "cuda", one where it names one
        self.gpus = pool.workers_for(device, gpus) if backend == "torch" and device in ("cuda", "cpu") else 1
        self._pool = None
        self.w = load_weights(self.path)
        self.profile = profile(self.w)
        if backend == "native":
            from . import native

            if native.library() is not None:
                native.panels(self.w)  # the kernels' weight layout, made now rather than in the first call
        self.threads, self.backend, self.device = threads, backend, device
        self.lanes = lanes  # None: the settings' lanes
        self.block = block
        self._state = None  # (key, Lanes)
        self.ops = NumpyOps()
        self.table = EXP2_TABLE

    def _lanes(self, n: int, settings) -> Lanes:
        key = (n, settings.context, settings.slide)
        if self._state is None or self._state[0] != key:
            self._state = None  # free the old cache first
            be = make_backend(self.w, n, settings.context, self.backend, self.threads, self.device)
            self._state = (key, Lanes(self.w, be, n, settings.context, settings.slide))
        return self._state[1]

    def _bytes(self, tokens) -> int:
        return 0 if self.piece_lens is None else int(self.piece_lens[np.asarray(tokens, np.int64)].sum())

    def _width(self, settings, n_chunks: int) -> int:
        return max(1, min(self.lanes or settings.lanes, n_chunks))

    @staticmethod
    def _refuse_skip(settings) -> None:
        if settings.predictors.skip:
            raise UnsupportedInputError("the LLM skip runs on the llama.cpp engine only")

    def _predictor(self, settings, lanes: int, cap: int):
        cfg = settings.predictors
        self._refuse_skip(settings)
        return Online(cfg, lanes, self.w.n_vocab, cap=cap) if cfg.any else None

    def _fast(self, settings) -> bool:
        """Frequencies and bias heads in C (native.code_rows): the same integers as
        predictors/online.py, for the predictors it covers (the bias heads, or none)."""
        cfg = settings.predictors
        if self.backend != "native" or cfg.ngram or cfg.match_min or cfg.sse_rate or cfg.skip:
            return False
        from . import native

        return native.library() is not None

    def _code(self, fast, pred, z, lanes, target=None, slots=None):
        """(start, freq, symbol) of rows of logits, the predictors stepped and updated."""
        if fast:
            from . import native

            return native.code_rows(z, lanes, pred, target, slots, self.threads or 1)
        if pred is None:
            f = freqs_fixed(self.ops, z, self.table)
        else:
            pred.cheap(lanes)
            f = pred.freqs(z, lanes)
        if target is not None:
            st, fr = lookup_numpy(f, target)
            sym = target
        else:
            sym, st, fr = search_numpy(f, slots)
        if pred is not None:
            pred.update(sym, lanes)
        return st, fr, sym

    # -- on a torch device: lockstep groups (groups.py) ------------------------------------

    def _group_lanes(self, settings, n: int) -> int:
        """Lanes of a group for n chunks: never more than there are chunks, nor than a
        worker's share of them where several GPUs take groups (so that every GPU has one)."""
        from .groups import group_lanes

        cap = self.lanes or group_lanes(self.w, settings.context, self.device or "cpu")
        return max(1, min(cap, -(-n // self.gpus)))

    def runner(self, settings, bos: int, lanes: int):
        """The GroupRunner of `lanes` lanes on this engine's device (kept while the key holds)."""
        from .groups import GroupRunner

        key = ("groups", lanes, settings.context, settings.slide, settings.predictors, bos)
        if self._state is None or self._state[0] != key:
            self._state = None  # free the old cache first
            self._state = (key, GroupRunner(self.w, settings, bos, lanes, self.device or "cpu"))
        return self._state[1]

    def _groups(self, kind: str, settings, bos, n: int, job, done) -> None:
        """job(part) -> the arguments of GroupRunner.encode/decode for each group of the n
        chunks; done(part, result) after each group, in order: here, or on the workers."""
        from .groups import groups

        lanes = self._group_lanes(settings, n)
        parts = groups(n, lanes)
        if self.gpus == 1:
            r = self.runner(settings, bos, lanes)
            for part in parts:
                done(part, _run(r, kind, job(part)))
            return
        if self._pool is None:
            self._pool = pool.Pool(self.path, self.device, self.gpus)
        jobs = [(kind, settings, bos, lanes, job(part)) for part in parts]
        self._pool.map(_work, jobs, lambda i, result: done(parts[i], result))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _group_encode(self, settings, bos, token_lists, progress):
        payloads, bits = [], []

        def done(part, result):
            ps, bs = result
            payloads.extend(ps)
            bits.extend(bs)
            if progress is not None:
                toks = [token_lists[i] for i in part]
                progress(sum(map(len, toks)), sum(bs), sum(self._bytes(x) for x in toks))

        self._groups("enc", settings, bos, len(token_lists), lambda part: ([token_lists[i] for i in part],), done)
        return payloads, bits

    def _group_decode(self, settings, bos, counts, payloads, progress, check):
        out = []

        def done(part, res):
            for ci, toks in zip(part, res):
                if check is not None:
                    for tok in toks:
                        check(ci, tok)
            out.extend(res)
            if progress is not None:
                progress(sum(map(len, res)), 0.0, sum(self._bytes(x) for x in res))

        self._groups("dec", settings, bos, len(counts),
                     lambda part: ([counts[i] for i in part], [payloads[i] for i in part]), done)
        return out

    # -- encoder ------------------------------------------------------------------------

    def encode(self, settings, bos: int, token_lists, progress=None):
        """(payloads, bits) for every chunk: rANS streams of the tokens under the model."""
        n = len(token_lists)
        if n == 0:
            return [], []
        if self.backend == "torch":
            self._refuse_skip(settings)
            return self._group_encode(settings, bos, token_lists, progress)
        width = self._width(settings, n)
        L = self._lanes(width, settings)
        pred = self._predictor(settings, width, max(map(len, token_lists)) + 1)
        fast = self._fast(settings)
        starts = [np.zeros(len(t), np.int64) for t in token_lists]
        freqs = [np.ones(len(t), np.int64) for t in token_lists]
        queue = list(range(n))[::-1]
        chunk = [None] * width  # chunk of each lane
        done = [0] * width  # inputs evaluated in the lane's chunk
        while queue or any(c is not None for c in chunk):
            if STOP.is_set():
                raise KeyboardInterrupt
            for s in range(width):
                if chunk[s] is None and queue:
                    chunk[s], done[s] = queue.pop(), 0
                    L.reset(s)
                    if pred is not None:
                        pred.reset(np.array([s]))
            active = [s for s in range(width) if chunk[s] is not None]
            runs = []
            for s in active:
                toks = token_lists[chunk[s]]
                L.make_room(s)
                k = min(L.room(s), self.block, len(toks) - done[s])
                inputs = ([bos] + toks[:-1])[done[s] : done[s] + k]
                runs.append(inputs)
            a, e = L.run(active, runs, logits=False)
            offs = np.cumsum([0] + [len(r) for r in runs])
            # (step, lane index) in step order: the predictors see each lane's tokens in turn
            order = [(i, j) for i in range(max(map(len, runs))) for j in range(len(active)) if len(runs[j]) > i]
            tokens, bits, nbytes = 0, 0.0, 0
            for p0 in range(0, len(order), _LOGIT_ROWS):
                piece = order[p0 : p0 + _LOGIT_ROWS]
                rows = np.array([offs[j] + i for i, j in piece])
                idx = L.o.asarray(rows)
                z = _to_numpy(L.be.logits(a[idx], e[idx]))
                lane = np.array([active[j] for _, j in piece])
                pos = np.array([done[active[j]] + i for i, j in piece])
                tgt = np.array([token_lists[chunk[active[j]]][done[active[j]] + i] for i, j in piece], np.int64)
                if fast or pred is None:
                    st, fr, _ = self._code(fast, pred, z, lane, target=tgt)
                else:  # the numpy predictors take one step of several lanes at a time
                    st, fr = np.zeros(len(piece), np.int64), np.zeros(len(piece), np.int64)
                    steps = np.array([i for i, _ in piece])
                    for i in np.unique(steps):
                        sel = np.nonzero(steps == i)[0]
                        st[sel], fr[sel], _ = self._code(False, pred, z[sel], lane[sel], target=tgt[sel])
                for r in range(len(piece)):
                    c = chunk[lane[r]]
                    starts[c][pos[r]], freqs[c][pos[r]] = st[r], fr[r]
                tokens += len(piece)
                bits += float((PRECISION - np.log2(fr)).sum())
                nbytes += self._bytes(tgt)
            for j, s in enumerate(active):
                done[s] += len(runs[j])
                if done[s] == len(token_lists[chunk[s]]):
                    chunk[s] = None
            if progress is not None:
                progress(tokens, bits, nbytes)
        payloads = [rans.encode_lanes(st[:, None], fr[:, None], [len(st)])[0] for st, fr in zip(starts, freqs)]
        costs = [float((PRECISION - np.log2(fr)).sum()) for fr in freqs]
        return payloads, costs

    # -- decoder ------------------------------------------------------------------------

    def decode(self, settings, bos: int, counts, payloads, progress=None, check=None):
        """Token lists from rANS payloads. `check(chunk, token)` may raise to stop early."""
        n = len(counts)
        if n == 0:
            return []
        if self.backend == "torch":
            self._refuse_skip(settings)
            return self._group_decode(settings, bos, counts, payloads, progress, check)
        width = self._width(settings, n)
        L = self._lanes(width, settings)
        pred = self._predictor(settings, width, max(counts) + 1)
        fast = self._fast(settings)
        out = [[] for _ in range(n)]
        queue = list(range(n))[::-1]
        chunk = [None] * width
        dec = [None] * width
        last = [bos] * width
        while queue or any(c is not None for c in chunk):
            if STOP.is_set():
                raise KeyboardInterrupt
            for s in range(width):
                while chunk[s] is None and queue:
                    c = queue.pop()
                    if counts[c] == 0:
                        rans.LaneDecoder(payloads[c], c).finish()
                        continue
                    chunk[s], dec[s], last[s] = c, rans.LaneDecoder(payloads[c], c), bos
                    L.reset(s)
                    if pred is not None:
                        pred.reset(np.array([s]))
            active = [s for s in range(width) if chunk[s] is not None]
            if not active:
                break
            for s in active:
                L.make_room(s)
            z = _to_numpy(L.run(active, [[last[s]] for s in active]))
            slots = np.array([dec[s].slot() for s in active], np.int64)
            st, fr, sym = self._code(fast, pred, z, np.array(active), slots=slots)
            for j, s in enumerate(active):
                c, tok = chunk[s], int(sym[j])
                dec[s].advance(int(slots[j]), int(st[j]), int(fr[j]))
                out[c].append(tok)
                if check is not None:
                    check(c, tok)
                last[s] = tok
                if len(out[c]) == counts[c]:
                    dec[s].finish()
                    chunk[s] = None
            if progress is not None:
                progress(len(active), float((PRECISION - np.log2(fr)).sum()), self._bytes(sym))
        return out


# -- in a worker process (engines/pool.py) ---------------------------------------------

_ENGINES: dict[tuple, IntEngine] = {}


def _work(kind: str, settings, bos: int, lanes: int, args):
    """One group on this worker's GPU, with the lanes the caller chose for every group (so
    a worker keeps one runner, and its CUDA graphs, for all of them)."""
    path, device = pool.here()
    eng = _ENGINES.get((path, device))
    if eng is None:
        _ENGINES.clear()
        eng = _ENGINES[(path, device)] = IntEngine(path, backend="torch", device=device)
    return _run(eng.runner(settings, bos, lanes), kind, args)


def _run(r, kind: str, args):
    """GroupRunner.encode ("enc") or decode of one group's arguments."""
    return r.encode(*args) if kind == "enc" else r.decode(*args)

