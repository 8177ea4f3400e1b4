"""The torch engine: groups of lanes on one device, or on several GPUs at once.

With `gpus` > 1, one worker process per GPU loads the model and takes groups as
they come; results are put back in group order, and a worker's failure stops
the whole job with its error (a missing group is never filled with anything).
Which GPU codes a group does not matter: every group has the same shapes and
starts from an empty cache, so the bytes are the same with 1, 2 or 8 GPUs.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from ...errors import NacrithError
from ...settings import Settings
from .groups import GroupRunner, groups

_MODELS: dict[tuple[str, str], object] = {}
_RUNNERS: dict[tuple, GroupRunner] = {}


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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


# -- worker processes ---------------------------------------------------------------

_WORKER: dict = {}


def _worker_init(path: str, device: str, threads: int, queue, barrier) -> None:
    index = queue.get()
    import torch

    if device.startswith("cuda"):
        torch.cuda.set_device(index)
        device = f"cuda:{index}"
    else:
        torch.set_num_threads(threads)  # CPU results may depend on the thread count
    _WORKER.update(path=path, device=device, barrier=barrier)


def _warm_worker(settings: Settings, bos: int) -> None:
    r = _runner(_WORKER["path"], _WORKER["device"], settings, bos)
    _exercise(r)
    # each worker takes exactly one warm-up job: none returns before all have started
    _WORKER["barrier"].wait(timeout=600)


def _exercise(r: GroupRunner) -> None:
    payloads, _ = r.encode([[r.bos] * 4])
    r.decode([4], payloads)


def _work(kind: str, settings: Settings, bos: int, args):
    r = _runner(_WORKER["path"], _WORKER["device"], settings, bos)
    return r.encode(*args) if kind == "enc" else r.decode(*args)


class TorchEngine:
    name = "torch"  # engines.Engine (error messages name it)

    def __init__(self, path: str, device: str | None = None, gpus: int | None = None):
        self.path = str(path)
        self.device = device or default_device()
        if self.device.startswith("cuda"):
            n = visible_gpus() if gpus is None else gpus
            if n > visible_gpus():
                raise NacrithError(f"{n} GPUs asked for, {visible_gpus()} visible")
            self.gpus = max(1, n)
        else:
            self.gpus = max(1, gpus or 1)  # several CPU workers: for tests of the pool
        self.profile = profile(self.device)
        self._pool: ProcessPoolExecutor | None = None

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
        pool = self._workers()
        futures = [pool.submit(_work, kind, settings, bos, args) for args in jobs]
        out = []
        for i, f in enumerate(futures):
            try:
                out.append(f.result())
            except NacrithError:
                raise
            except Exception as exc:
                raise NacrithError(f"GPU worker failed on group {i}: {type(exc).__name__}: {exc}") from exc
            if progress:
                progress(parts[i], out[-1])
        return out

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing as mp

            import torch

            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            for i in range(self.gpus):
                queue.put(i)
            self._pool = ProcessPoolExecutor(
                max_workers=self.gpus, mp_context=ctx, initializer=_worker_init,
                initargs=(self.path, self.device, torch.get_num_threads(), queue, ctx.Barrier(self.gpus)),
            )
        return self._pool

    def warm_up(self, settings: Settings, bos: int) -> None:
        """Load the model, compile the kernels and capture the graphs for `settings` on
        every worker now, so that later timings are the steady state (benchmarks)."""
        if self.gpus == 1:
            _exercise(_runner(self.path, self.device, settings, bos))
            return
        pool = self._workers()
        for f in [pool.submit(_warm_worker, settings, bos) for _ in range(self.gpus)]:
            f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
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
