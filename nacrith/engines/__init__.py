"""The engines: what turns chunks of tokens into coded payloads and back.

Every engine has one interface (Engine below), so the formats (NC05, NC06) hand
any of them the same token lists and get back payloads, and the same integer
quantiser (codec/quantize.freqs_fixed), online predictors (predictors/online.py)
and coders sit behind all of them:

- llama_cpp/: llama.cpp's float model on the CPU; lanes in lockstep, the KV cache
  shifted natively; range coder (schedule 1). Files decode under the same engine
  profile (build and CPU features).
- torch_float/: the model in torch, fixed groups of lanes on a GPU, one or more GPU
  workers; rANS (schedule 2). Files decode under the same GPU and software.
- integer/: the model in exact integer arithmetic (numpy reference, C kernels,
  torch); whole runs for the encoder, lockstep lanes for the decoder; rANS
  (schedule 3). Files decode on any machine.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Protocol

from ..errors import EngineError, NacrithError, OutOfMemoryError

# Set by the CLI's SIGINT handler. KeyboardInterrupt raised while llama.cpp calls
# back into Python (its log callback) is dropped by ctypes; this flag is not.
STOP = threading.Event()

# progress(tokens, bits, bytes) as chunks advance
Progress = Callable[[int, float, int], None]
# check(chunk, token) after each decoded token; raises to stop at the first bad chunk
Check = Callable[[int, int], None]


class Engine(Protocol):
    name: str  # "llama", "torch" or "int": settings.SCHEDULES names it in the header
    profile: str  # what, besides model and settings, decides the bits (stored in the header)

    def encode(self, settings, bos: int, token_lists: list[list[int]],
               progress: Progress | None = None) -> tuple[list[bytes], list[float]]:
        """A payload per token list, and its ideal cost in bits."""

    def decode(self, settings, bos: int, counts: list[int], payloads: list[bytes],
               progress: Progress | None = None, check: Check | None = None) -> list[list[int]]:
        """The token lists back; damaged data raises CorruptDataError."""


@contextlib.contextmanager
def backend_errors(what: str):
    """What a backend raises inside the block (llama.cpp's RuntimeError, torch's CUDA
    errors, numpy's MemoryError) comes out as OutOfMemoryError or EngineError, both
    NacrithErrors that are still what they were (MemoryError, RuntimeError); `what` opens
    the message. NacrithErrors pass unchanged."""
    try:
        yield
    except NacrithError:
        raise
    except MemoryError as exc:
        raise OutOfMemoryError(f"{what}: out of memory ({exc})") from exc
    except (RuntimeError, FloatingPointError, OSError) as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
            raise OutOfMemoryError(f"{what}: {exc}") from exc
        raise EngineError(f"{what}: {exc}") from exc


class Exclusive:
    """An engine that one caller drives at a time, and whose failures are NacrithErrors.

    An engine holds mutable model state (llama.cpp's context and KV cache, the
    integer engine's lanes, the torch workers), and api.load_model shares one engine
    between every Compressor and Decompressor with the same model and shape. Two
    threads driving it at once would interleave their tokens in one KV cache, so
    each call takes the engine's lock; the calls of other threads wait their turn
    (the engines use every core already). Everything else reads through.

    What a backend raises (llama.cpp's RuntimeError, torch's CUDA errors, numpy's
    MemoryError) comes out as EngineError or OutOfMemoryError, so that catching
    NacrithError is always enough."""

    def __init__(self, engine):
        self.inner = engine
        self.lock = threading.RLock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _call(self, method, args, kwargs):
        with self.lock, backend_errors(f"{self.inner.name} engine failed"):
            return getattr(self.inner, method)(*args, **kwargs)

    def encode(self, *args, **kwargs):
        return self._call("encode", args, kwargs)

    def decode(self, *args, **kwargs):
        return self._call("decode", args, kwargs)

    def warm_up(self, *args, **kwargs):
        return self._call("warm_up", args, kwargs)
