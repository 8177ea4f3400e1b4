"""Compression and decompression spread over a Ray cluster (`pip install nacrith[cluster]`).

Frames are independent: where a stream is cut into frames depends only on the bytes
and the settings (api.Compressor.iter_frames), and each frame is coded from its own
bytes, offset and whether it is the last. So the driver cuts the input, sends every
frame to a Ray task, and joins the results in order: the bytes are those of one
process. Decompression sends each frame's header and payloads the same way.

Each worker process loads the model once and keeps it (`_WORKERS`) for every later
task. A task whose worker dies (a lost node, a killed process) is run again by Ray
(`max_retries`); a task that raises a NacrithError is not retried (the data is what
it is) and its error is raised here. Nothing is yielded before the frames before
it are complete, and the CLI writes its output only once every frame has come.

    with nacrith.cluster.Compressor("ray://head:10001", level=6) as c:
        blob = c.compress(data)

An address of None starts (or joins) a Ray instance on this machine.
"""

from __future__ import annotations

import os

from . import api
from .chunking import split_chunks
from .errors import NacrithError
from .formats import container

RETRIES = 3  # runs of a task whose worker died before it gives up

_WORKERS: dict = {}  # in each worker process: (kind, arguments) -> Compressor / Decompressor


def _ray():
    try:
        import ray
    except ImportError:
        raise NacrithError("--cluster needs Ray: pip install 'nacrith[cluster]'") from None
    return ray


def connect(address: str | None, num_cpus: int | None = None):
    """Join the cluster at `address` (None: a local one, started if none runs)."""
    ray = _ray()
    if not ray.is_initialized():
        kw = {} if address else {"num_cpus": num_cpus}
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, **kw)
    return ray


def _worker_compressor(options: dict):
    key = ("c", tuple(sorted(options.items())))
    if key not in _WORKERS:
        _WORKERS[key] = api.Compressor(**options)
    return _WORKERS[key]


def _worker_decompressor(options: dict):
    key = ("d", tuple(sorted(options.items())))
    if key not in _WORKERS:
        _WORKERS[key] = api.Decompressor(**options)
    return _WORKERS[key]


def _encode_task(options: dict, raw: bytes, offset: int, final: bool) -> bytes:
    return _worker_compressor(options).encode_frame(raw, offset, final=final)


def _decode_task(options: dict, header, payloads: list[bytes]) -> bytes:
    return _worker_decompressor(options).decode_frame(header, payloads)


def _remote(ray, fn, resources: dict):
    # NacrithErrors are answers, not failures: only a lost worker is worth another run
    return ray.remote(max_retries=RETRIES, retry_exceptions=False, **resources)(fn)


def _results(ray, refs):
    """Each frame's result in order; a task's NacrithError comes out as itself."""
    for ref in refs:
        try:
            yield ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, NacrithError):
                raise cause from None
            raise NacrithError(f"cluster task failed: {exc}") from None
        except ray.exceptions.RayError as exc:  # the worker died more often than RETRIES
            raise NacrithError(f"cluster task lost: {type(exc).__name__}: {exc}") from None


class Compressor:
    """api.Compressor's interface (compress, iter_frames), the frames coded on the cluster.
    `num_gpus` / `num_cpus` are what each task asks of its node (e.g. num_gpus=1: one
    frame per GPU at a time, each worker on its own GPU)."""

    def __init__(self, address: str | None = None, *, num_cpus: float | None = 1, num_gpus: float | None = None,
                 model=None, format: str = "auto", engine: str = api.DEFAULT_ENGINE, device=None, level=None,
                 threads: int | None = None, **settings):
        self.ray = connect(address)
        if model is not None:
            model = os.path.abspath(model)  # the same path on every node
        engine = api.choose_engine(engine, model, settings.get("skip"))
        self.settings = api.settings_for(engine, level, **settings)  # refuses bad settings here, not in a task
        self.options = dict(model=model, format=format, engine=engine, device=device, level=level,
                            threads=threads, **{k: v for k, v in settings.items() if v is not None})
        res = {k: v for k, v in dict(num_cpus=num_cpus, num_gpus=num_gpus).items() if v is not None}
        self._task = _remote(self.ray, _encode_task, res)

    def iter_frames(self, data: bytes, progress=None):
        if self.options["format"] == "nc05":
            from .formats import nc05

            nc05.check_text(data)
        cuts = split_chunks(data, self.settings.frame_bytes) or [(0, 0)]
        refs = [self._task.remote(self.options, data[a:b], a, i == len(cuts) - 1) for i, (a, b) in enumerate(cuts)]
        for (a, b), frame in zip(cuts, _results(self.ray, refs)):
            if progress is not None:
                progress(0, 0.0, b - a)
            yield frame

    def compress(self, data: bytes, progress=None) -> bytes:
        return b"".join(self.iter_frames(bytes(data), progress))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Decompressor:
    """api.Decompressor's interface (decompress, iter_decompress), frames decoded on the cluster."""

    def __init__(self, address: str | None = None, *, num_cpus: float | None = 1, num_gpus: float | None = None,
                 model=None, threads: int | None = None, device=None):
        self.ray = connect(address)
        self.options = dict(model=os.path.abspath(model) if model is not None else None, threads=threads,
                            device=device)
        res = {k: v for k, v in dict(num_cpus=num_cpus, num_gpus=num_gpus).items() if v is not None}
        self._task = _remote(self.ray, _decode_task, res)

    def iter_decompress(self, blob, progress=None):
        # the whole stream is parsed (and its CRCs checked) before any task starts
        frames = [(h, [bytes(p) for p in ps]) for h, ps in container.iter_frames(memoryview(blob))]
        refs = [self._task.remote(self.options, h, ps) for h, ps in frames]
        for out in _results(self.ray, refs):
            if progress is not None:
                progress(0, 0.0, len(out))
            yield out

    def decompress(self, blob, progress=None) -> bytes:
        return b"".join(self.iter_decompress(blob, progress))
