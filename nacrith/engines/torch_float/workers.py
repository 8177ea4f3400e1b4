"""The torch engine: groups of lanes on one device, or on several GPUs at once.

With `gpus` > 1, one worker process per GPU (engines/pool.py) loads the model and
takes groups as they come. Which GPU codes a group does not matter: every group has
the same shapes and starts from an empty cache, so the bytes are the same with 1, 2
or 8 GPUs.
"""

from __future__ import annotations

import platform
from collections.abc import Callable

from ...settings import Settings
from .. import pool
from .groups import GroupRunner, groups

_MODELS: dict[tuple[str, str], object] = {}
_RUNNERS: dict[tuple, GroupRunner] = {}


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def profile(device: str) -> str:
    """What, besides model and settings, decides the logits' bits on this engine."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else 0
        name = torch.cuda.get_device_name(idx)
        major, minor = torch.cuda.get_device_capability(idx)
        return f"torch {torch.__version__} cuda {torch.version.cuda} {name} sm_{major}{minor} float16 graphs"
    cap = torch.backends.cpu.get_cpu_capability()
    return f"torch {torch.__version__} cpu {platform.machine()} {cap} float32 threads {torch.get_num_threads()}"


def _model(path: str, device: str):
    from .model import TorchLlama

    key = (path, device)
    if key not in _MODELS:
        _MODELS[key] = TorchLlama(path, device=device)
    return _MODELS[key]


def _runner(path: str, device: str, settings: Settings, bos: int) -> GroupRunner:
    key = (path, device, settings.context, settings.slide, settings.lanes, settings.predictors, bos)
    r = _RUNNERS.get(key)
    if r is None:
        _RUNNERS.clear()  # one cache per process: they are large
        r = _RUNNERS[key] = GroupRunner(_model(path, device), settings, bos)
    return r


# -- in a worker (engines/pool.py) --------------------------------------------------


def _warm_worker(settings: Settings, bos: int) -> None:
    path, device = pool.here()
    _exercise(_runner(path, device, settings, bos))


def _exercise(r: GroupRunner) -> None:
    payloads, _ = r.encode([[r.bos] * 4])
    r.decode([4], payloads)


def _work(kind: str, settings: Settings, bos: int, args):
    path, device = pool.here()
    r = _runner(path, device, settings, bos)
    return r.encode(*args) if kind == "enc" else r.decode(*args)


class TorchEngine:
    name = "torch"  # engines.Engine (error messages name it)

    def __init__(self, path: str, device: str | None = None, gpus: int | None = None):
        self.path = str(path)
        self.device = device or default_device()
        self.gpus = pool.workers_for(self.device, gpus)
        self.profile = profile(self.device)
        self._pool: pool.Pool | None = None

    def _map(self, kind: str, settings: Settings, bos: int, jobs: list, parts: list, progress: Callable | None):
        """Run every group's job; progress(chunk range, result) after each, in order."""
        if self.gpus == 1:
            r = _runner(self.path, self.device, settings, bos)
            out = []
            for args in jobs:
                out.append(r.encode(*args) if kind == "enc" else r.decode(*args))
                if progress:
                    progress(parts[len(out) - 1], out[-1])
            return out
        done = (lambda i, result: progress(parts[i], result)) if progress else None
        return self._workers().map(_work, [(kind, settings, bos, args) for args in jobs], done)

    def _workers(self) -> pool.Pool:
        if self._pool is None:
            self._pool = pool.Pool(self.path, self.device, self.gpus)
        return self._pool

    def warm_up(self, settings: Settings, bos: int) -> None:
        """Load the model, compile the kernels and capture the graphs for `settings` on
        every worker now, so that later timings are the steady state (benchmarks)."""
        if self.gpus == 1:
            _exercise(_runner(self.path, self.device, settings, bos))
            return
        self._workers().warm(_warm_worker, settings, bos)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    piece_lens = None  # bytes of every token (set by api.load_model), for progress

    def _bytes(self, token_lists) -> int:
        import numpy as np

        if self.piece_lens is None or not token_lists:
            return 0
        flat = np.fromiter((t for ts in token_lists for t in ts), dtype=np.int64)
        return int(self.piece_lens[flat].sum())

    def encode(self, settings: Settings, bos: int, token_lists: list[list[int]], progress=None):
        """(payloads, bits) for every chunk, in order; progress(tokens, bits, bytes) per group."""
        def done(part, result):
            if progress:
                toks = [token_lists[i] for i in part]
                progress(sum(map(len, toks)), sum(result[1]), self._bytes(toks))

        parts = groups(len(token_lists), settings.lanes)
        jobs = [([token_lists[i] for i in g],) for g in parts]
        out = self._map("enc", settings, bos, jobs, parts, done)
        payloads = [p for ps, _ in out for p in ps]
        bits = [b for _, bs in out for b in bs]
        return payloads, bits

    def decode(self, settings: Settings, bos: int, counts: list[int], payloads: list[bytes], progress=None,
               check=None):
        """Token lists for every chunk, in order (check(chunk, token) runs over each group's
        tokens as the group completes)."""
        def done(part, result):
            if check is not None:
                for ci, toks in zip(part, result):
                    for t in toks:
                        check(ci, t)
            if progress:
                progress(sum(map(len, result)), 0.0, self._bytes(result))

        parts = groups(len(counts), settings.lanes)
        jobs = [([counts[i] for i in g], [payloads[i] for i in g]) for g in parts]
        out = self._map("dec", settings, bos, jobs, parts, done)
        return [t for ts in out for t in ts]
