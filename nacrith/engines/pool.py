"""Worker processes, one per GPU, that take groups of chunks as they come.

Both torch-backed engines (torch_float and the integer engine's groups) spread their
groups over several GPUs with this: a worker holds its own model and runner, a job is
a module-level function and its arguments, and results come back in the order the jobs
were given, whichever worker ran them. A worker's failure stops the whole call with its
error: a group is never left out or filled with anything. Which GPU ran a group changes
no byte (each engine's groups start from an empty cache), so a file made with N GPUs is
the file one GPU or the CPU makes.

On the CPU several workers share the processor: that exists for the tests of the pool.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from ..errors import NacrithError

_WORKER: dict = {}


def here() -> tuple[str, str]:
    """(model path, device) of the worker this runs in."""
    return _WORKER["path"], _WORKER["device"]


def _init(path: str, device: str, threads: int, queue, barrier) -> None:
    index = queue.get()
    import torch

    if device.startswith("cuda"):
        torch.cuda.set_device(index)
        device = f"cuda:{index}"
    else:
        torch.set_num_threads(threads)  # CPU results may depend on the thread count (torch_float)
    _WORKER.update(path=path, device=device, barrier=barrier)


def _warm(fn: Callable, args: tuple) -> None:
    fn(*args)
    # each worker takes exactly one warm-up job: none returns before all have started
    _WORKER["barrier"].wait(timeout=600)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def workers_for(device: str, gpus: int | None) -> int:
    """How many workers `gpus` asks for on `device`: all visible GPUs by default on CUDA,
    one on the CPU."""
    if device.startswith("cuda"):
        n = visible_gpus() if gpus is None else gpus
        if n > visible_gpus():
            raise NacrithError(f"{n} GPUs asked for, {visible_gpus()} visible")
        return max(1, n)
    return max(1, gpus or 1)


class Pool:
    """`n` worker processes (spawned) for the model at `path` on `device`."""

    def __init__(self, path: str, device: str, n: int):
        import multiprocessing as mp

        import torch

        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        for i in range(n):
            queue.put(i)
        self.n = n
        self._ex = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init,
                                       initargs=(path, device, torch.get_num_threads(), queue, ctx.Barrier(n)))

    def map(self, fn: Callable, jobs: list[tuple], done: Callable | None = None) -> list:
        """fn(*job) for every job on the workers; the results in order, done(i, result)
        after each in order."""
        futures = [self._ex.submit(fn, *job) for job in jobs]
        out = []
        for i, f in enumerate(futures):
            try:
                out.append(f.result())
            except NacrithError:
                raise
            except Exception as exc:
                raise NacrithError(f"GPU worker failed on group {i}: {type(exc).__name__}: {exc}") from exc
            if done:
                done(i, out[-1])
        return out

    def warm(self, fn: Callable, *args) -> None:
        """fn(*args) once on every worker; returns once all have run it."""
        for f in [self._ex.submit(_warm, fn, args) for _ in range(self.n)]:
            f.result()

    def close(self) -> None:
        self._ex.shutdown(cancel_futures=True)
