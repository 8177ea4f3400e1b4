"""One-shot functions and reusable compressor / decompressor objects."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .errors import CorruptDataError, ModelMismatchError
from .formats import container, nc05
from .modelfile import model_sha256, resolve_model
from .predictors.llama import LlamaModel, engine_profile
from .settings import Settings

Progress = Callable[[int, float], None]


@dataclass
class LoadedModel:
    """A model file, its identity, and a llama.cpp context shaped for some settings."""

    path: str
    sha256: str
    profile: str
    model: LlamaModel


_CACHE: dict[tuple, LoadedModel] = {}


def load_model(path: str | os.PathLike | None, settings: Settings, threads: int | None = None) -> LoadedModel:
    """Load (or reuse) a model whose context fits `settings` (window and lanes)."""
    p = resolve_model(path)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, settings.context, settings.lanes, threads)
    lm = _CACHE.get(key)
    if lm is None:
        m = LlamaModel(str(p), n_ctx=settings.context, n_seq=settings.lanes, n_threads=threads)
        lm = LoadedModel(str(p), model_sha256(p), engine_profile(m.n_threads), m)
        _CACHE[key] = lm
    return lm


class Compressor:
    """Loads the model once; `compress` may be called any number of times."""

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None, **settings):
        self.settings = Settings(**settings).validate()
        self.lm = load_model(model, self.settings, threads)

    def compress(self, data: bytes, progress: Progress | None = None) -> bytes:
        return b"".join(self.iter_frames(bytes(data), progress))

    def iter_frames(self, data: bytes, progress: Progress | None = None):
        return nc05.encode_frames(self.lm, self.settings, data, progress)


class Decompressor:
    """Decodes any number of frames; loads the model as the headers require."""

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None):
        self.model_path = model
        self.threads = threads

    def decompress(self, blob: bytes, progress: Progress | None = None) -> bytes:
        return b"".join(self.iter_decompress(blob, progress))

    def iter_decompress(self, blob, progress: Progress | None = None):
        for header, payloads in container.iter_frames(memoryview(blob)):
            yield self.decode_frame(header, payloads, progress)

    def decode_frame(self, header: container.FrameHeader, payloads, progress=None) -> bytes:
        settings = Settings.from_header(header.settings)
        if header.raw_size == 0:
            out = b""
        else:
            path = resolve_model(self.model_path)
            check_model_digest(header, path)
            lm = load_model(path, settings, self.threads)
            if header.vocab != lm.model.n_vocab:
                raise ModelMismatchError(
                    f"the file expects a vocabulary of {header.vocab} tokens, the model has {lm.model.n_vocab}"
                )
            try:
                chunks = nc05.decode_chunks(lm, settings, header.entries, payloads, progress)
            except CorruptDataError as exc:
                if header.profile != lm.profile:
                    raise ModelMismatchError(
                        f"{exc}; the file was made by engine '{header.profile}' "
                        f"and this machine runs '{lm.profile}'"
                    ) from None
                raise
            out = b"".join(chunks)
        if len(out) != header.raw_size or container.content_digest(out) != header.content_sha256:
            raise CorruptDataError("content checksum mismatch after decoding")
        return out


def check_model_digest(header: container.FrameHeader, path) -> None:
    """Refuse, before loading anything, a model other than the one the file names."""
    want = header.model_sha256.hex()
    have = model_sha256(path)
    if want != have:
        raise ModelMismatchError(
            f"the file was compressed with model sha256 {want}, "
            f"but the model given is sha256 {have} ({path})"
        )


def compress(data: bytes, *, model=None, threads: int | None = None, progress=None, **settings) -> bytes:
    """Compress bytes in one call (see `Settings` for the keyword settings)."""
    return Compressor(model=model, threads=threads, **settings).compress(data, progress)


def decompress(blob: bytes, *, model=None, threads: int | None = None, progress=None) -> bytes:
    """Restore the bytes of one or more concatenated frames, verified."""
    return Decompressor(model=model, threads=threads).decompress(blob, progress)
