"""One-shot functions and reusable compressor / decompressor objects."""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from typing import Callable

from .errors import CorruptDataError, ModelMismatchError, UnsupportedInputError
from .chunking import split_chunks
from .codec import bytecodecs
from .formats import container, nc05, nc06
from .segments import all_text
from .modelfile import model_sha256, resolve_model
from .engines import Exclusive, backend_errors
from .engines.llama_cpp import ContextFloats, LlamaEngine, LlamaModel, context_floats
from .predictors.online import MAX_SKIP
from .settings import INT_DEFAULTS, SCHEDULES, TORCH_DEFAULTS, Settings

Progress = Callable[[int, float, int], None]  # (tokens, bits, bytes) as chunks are coded


@dataclass
class LoadedModel:
    """A model file, its identity, and a llama.cpp context shaped for some settings."""

    path: str
    sha256: str
    profile: str
    model: LlamaModel  # llama.cpp: the model; the other engines: the tokenizer only
    engine: object = None  # an engines.Engine: LlamaEngine, TorchEngine or IntEngine


_CACHE: dict[tuple, LoadedModel] = {}
_CACHE_SIZE = 3  # contexts kept alive; each holds a KV cache of context * lanes cells
_CACHE_LOCK = threading.Lock()  # threads may load models at once; one of them fills a slot


def load_model(
    path: str | os.PathLike | None,
    settings: Settings,
    threads: int | None = None,
    device: str | None = None,
    gpus: int | None = None,
    floats=None,
) -> LoadedModel:
    """Load (or reuse) a model whose context fits `settings` (window and lanes).

    The torch engine (settings.engine == "torch") runs on `device` ("cuda", "cpu";
    default: cuda if there is one) over `gpus` GPUs (default: all visible). The integer
    engine runs its C kernels on the CPU, or its torch backend on `device` if one is
    named (on "cuda" over `gpus` GPUs, default all visible); the integers, and so the
    files, are the same. The engine is shared, and
    safe to use from several threads (engines.Exclusive). `floats`: the llama.cpp
    context's ContextFloats (a decoder passes the file's; default: LlamaModel's rule)."""
    with _CACHE_LOCK, backend_errors(f"the {settings.engine} engine could not start"):
        return _load_model(path, settings, threads, device, gpus, floats)


def _load_model(path, settings, threads, device, gpus, floats) -> LoadedModel:
    p = resolve_model(path)
    st = p.stat()
    if settings.engine == "torch":
        key = (str(p), st.st_size, st.st_mtime_ns, "torch", device, gpus)
    elif settings.engine == "int":
        key = (str(p), st.st_size, st.st_mtime_ns, "int", threads, device, gpus)
    else:
        # with the LLM skip a lane may bring up to MAX_SKIP + 1 tokens to one batch
        per_step = MAX_SKIP + 1 if settings.skip else 1
        floats = floats or ContextFloats.for_lanes(settings.lanes, per_step)
        key = (str(p), st.st_size, st.st_mtime_ns, settings.context, settings.lanes, threads, floats)
    lm = _CACHE.pop(key, None)
    if lm is None:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))  # freed once no compressor holds it
        if settings.engine == "torch":
            from .engines.torch_float.workers import TorchEngine

            m = LlamaModel(str(p), n_ctx=16, vocab_only=True)
            eng = TorchEngine(str(p), device, gpus)
            eng.piece_lens = _piece_lens(m)
            lm = LoadedModel(str(p), model_sha256(p), eng.profile, m, eng)
        elif settings.engine == "int":
            from .engines.integer.coding import IntEngine

            m = LlamaModel(str(p), n_ctx=16, vocab_only=True)
            # any device gives the same integers: the C kernels on the CPU by default,
            # the torch backend where a device is named ("cuda", "cpu")
            eng = IntEngine(str(p), threads, backend="torch" if device else "native", device=device, gpus=gpus)
            eng.piece_lens = _piece_lens(m)
            if eng.w.n_vocab != m.n_vocab:
                raise ModelMismatchError("the model's tokenizer and its embedding disagree on the vocabulary size")
            lm = LoadedModel(str(p), model_sha256(p), eng.profile, m, eng)
        else:
            if floats.batch < settings.lanes * per_step:
                raise CorruptDataError("the llama.cpp batch named in the header cannot hold a step of every lane")
            m = LlamaModel(str(p), n_ctx=settings.context, n_seq=settings.lanes, n_threads=threads, floats=floats)
            eng = LlamaEngine(m)
            lm = LoadedModel(str(p), model_sha256(p), eng.profile, m, eng)
        lm.engine = Exclusive(lm.engine)
    _CACHE[key] = lm  # most recently used last
    return lm


def _piece_lens(model):
    import numpy as np

    return np.array([len(p) for p in model.pieces()], dtype=np.int64)


FORMATS = ("auto", "nc05", "nc06")


# The engine a Compressor uses unless told: "auto" is the integer engine (files that
# decode on any machine; as small as llama.cpp's and faster on a CPU, see README) for every
# model it runs (GGUF Llama models with Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/F16/BF16/F32 weights), and
# llama.cpp for any other GGUF or where a setting needs it (the LLM skip).
DEFAULT_ENGINE = "auto"
ENGINE_CHOICES = ("auto", *SCHEDULES)


def choose_engine(engine: str, model=None, skip: int | None = None) -> str:
    """The engine that "auto" stands for with this model and settings; others as given."""
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {', '.join(ENGINE_CHOICES)}")
    if engine != "auto":
        return engine
    if skip:
        return "llama"
    from .engines.integer.coding import load_weights

    try:
        load_weights(str(resolve_model(model)))  # kept for the engine that loads next
    except UnsupportedInputError:
        return "llama"
    return "int"


def settings_for(engine: str = "llama", level: int | None = None, **settings) -> Settings:
    """The validated settings a Compressor on `engine` uses at `level` (presets.py; None:
    the default level) with these overrides (None = the level's or engine's value).
    The torch engine keeps its own window and chunking (sized for a GPU) at every
    level and takes the level's predictors and unwrapping."""
    from .presets import level_settings

    preset = level_settings(level)
    if engine == "torch":
        preset = {k: v for k, v in preset.items() if k not in ("context", "slide", "chunk_bytes")}
    given = {**preset, **{k: v for k, v in settings.items() if v is not None}}
    if engine == "torch":
        given = {**asdict(TORCH_DEFAULTS), **given}
    elif engine == "int":
        given = {**asdict(INT_DEFAULTS), **given}
    given["schedule"] = SCHEDULES[engine]
    return Settings(**given).validate()


class Compressor:
    """Loads the model once; `compress` may be called any number of times.

    format: "auto" (NC05 for text, NC06 for anything else, decided per frame),
    "nc05" (text only; anything else is refused) or "nc06".
    engine: "auto" (default: the integer engine where it runs the model, else llama.cpp;
    see DEFAULT_ENGINE), "int", "llama" or "torch"; `self.engine` says which one runs.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        threads: int | None = None,
        format: str = "auto",
        engine: str = DEFAULT_ENGINE,
        device: str | None = None,
        gpus: int | None = None,
        level: int | None = None,
        **settings,
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        engine = choose_engine(engine, model, settings.get("skip"))
        self.format = format
        self.engine = engine
        self.settings = settings_for(engine, level, **settings)
        self.lm = load_model(model, self.settings, threads, device, gpus)

    def compress(self, data: bytes, progress: Progress | None = None) -> bytes:
        return b"".join(self.iter_frames(bytes(data), progress))

    def compressobj(self, progress: Progress | None = None):
        """An incremental compressor: `compress(piece)` any number of times, then `flush()`;
        `progress(tokens, bits, bytes)` is called as chunks are coded."""
        from .stream import StreamCompressor

        return StreamCompressor(self, progress)

    def iter_frames(self, data: bytes, progress: Progress | None = None):
        """Yield the frames of one stream for `data`; frame cuts depend only on the
        bytes and the settings (the incremental compressor makes the same cuts)."""
        if self.format == "nc05":
            nc05.check_text(data)
        cuts = split_chunks(data, self.settings.frame_bytes) or [(0, 0)]
        for i, (a, b) in enumerate(cuts):
            yield self.encode_frame(data[a:b], a, progress, final=i == len(cuts) - 1)

    def encode_frame(self, raw: bytes, offset: int = 0, progress=None, final: bool = True) -> bytes:
        if self.format == "nc06":
            return nc06.encode_frame(self.lm, self.settings, raw, progress, final=final)
        if self.format == "nc05" or not raw:
            return nc05.encode_frame(self.lm, self.settings, raw, offset, progress, final)
        if _is_plain_text(raw):
            try:
                return nc05.encode_frame(self.lm, self.settings, raw, offset, progress, final)
            except UnsupportedInputError:
                pass  # text the tokenizer cannot reproduce: NC06 takes it
        return nc06.encode_frame(self.lm, self.settings, raw, progress, final=final)


def _is_plain_text(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all_text(raw)


class Decompressor:
    """Decodes any number of frames; loads the model as the headers require."""

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        threads: int | None = None,
        device: str | None = None,
        gpus: int | None = None,
    ):
        self.model_path = model
        self.threads = threads
        self.device = device
        self.gpus = gpus

    def decompress(self, blob: bytes, progress: Progress | None = None) -> bytes:
        return b"".join(self.iter_decompress(blob, progress))

    def decompressobj(self, progress: Progress | None = None):
        """An incremental decompressor for one stream (`eof`, `unused_data`, `needs_input`);
        `progress(tokens, bits, bytes)` as chunks are decoded."""
        from .stream import StreamDecompressor

        return StreamDecompressor(self, progress)

    def iter_decompress(self, blob, progress: Progress | None = None):
        for header, payloads in container.iter_frames(memoryview(blob)):
            yield self.decode_frame(header, payloads, progress)

    def decode_frame(self, header: container.FrameHeader, payloads, progress=None) -> bytes:
        llm = [i for i, e in enumerate(header.entries) if e.type == container.ENTRY_TEXT]
        _check_entries(header, llm)
        parts: list[bytes | None] = [None] * len(header.entries)
        if llm:
            settings = Settings.from_header(header.settings)
            path = resolve_model(self.model_path)
            check_model_digest(header, path)
            floats = None
            if settings.engine == "llama":
                try:  # the context is made as the file's was (batch, flash attention, KV layout)
                    floats = context_floats(header.profile)
                except ValueError as exc:
                    raise ModelMismatchError(str(exc)) from None
            lm = load_model(path, settings, self.threads, self.device, self.gpus, floats)
            if settings.engine == "int" and header.profile != lm.profile:
                raise ModelMismatchError(
                    f"the file was made by '{header.profile}', this nacrith runs '{lm.profile}' "
                    "(another version of the integer arithmetic); decode it with that version"
                )
            if settings.engine == "torch" and header.profile != lm.profile:
                # GPU kernels are only bit-stable on the same hardware and software;
                # decoding elsewhere would fail at best, so it is not attempted.
                raise ModelMismatchError(
                    f"the file was made by engine '{header.profile}', this machine runs "
                    f"'{lm.profile}'; decode it where the engine is the same"
                )
            if header.vocab != lm.model.n_vocab:
                raise ModelMismatchError(
                    f"the file expects a vocabulary of {header.vocab} tokens, the model has {lm.model.n_vocab}"
                )
            try:
                texts = nc05.decode_llm(
                    lm, settings, [header.entries[i] for i in llm], [payloads[i] for i in llm], progress
                )
            except CorruptDataError as exc:
                if header.profile != lm.profile:
                    raise ModelMismatchError(
                        f"{exc}; the file was made by engine '{header.profile}' "
                        f"and this machine runs '{lm.profile}'"
                    ) from None
                raise
            for i, t in zip(llm, texts):
                parts[i] = t
        for i, e in enumerate(header.entries):
            if parts[i] is None:
                raw = bytecodecs.decode(e.codec, payloads[i], e.raw_len)
                if container.crc32(raw) != e.raw_crc32:
                    raise CorruptDataError(f"segment {i}: checksum mismatch after decoding")
                parts[i] = raw
        out = b"".join(parts)
        if len(out) != header.raw_size or container.content_digest(out) != header.content_sha256:
            raise CorruptDataError("content checksum mismatch after decoding")
        return out


def _check_entries(header: container.FrameHeader, llm: list[int]) -> None:
    """Entry kinds and codecs must fit the container kind before anything is decoded."""
    for i, e in enumerate(header.entries):
        if e.type == container.ENTRY_TEXT:
            if e.codec not in nc05.TEXT_CODECS:
                raise CorruptDataError(f"entry {i}: unknown text codec {e.codec}")
        elif e.type == container.ENTRY_BINARY and header.kind == container.KIND_HYBRID:
            if e.codec not in bytecodecs.NAMES or e.n_tokens:
                raise CorruptDataError(f"entry {i}: bad binary segment")
        else:
            raise CorruptDataError(f"entry {i}: type {e.type} is not allowed in {header.kind_name}")
    if llm and not header.model_sha256:
        raise CorruptDataError("frame has text entries but names no model")
    if header.kind == container.KIND_TEXT and header.entries and not header.model_sha256:
        raise CorruptDataError("NC05 frame names no model")


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
    """Compress bytes in one call (see `Settings` for the keyword settings; `engine`
    ("auto", "int", "llama", "torch"), `device` and `gpus` as for `Compressor`)."""
    return Compressor(model=model, threads=threads, **settings).compress(data, progress)


def decompress(
    blob: bytes, *, model=None, threads: int | None = None, device=None, gpus=None, progress=None
) -> bytes:
    """Restore the bytes of one or more concatenated frames, verified."""
    return Decompressor(model=model, threads=threads, device=device, gpus=gpus).decompress(blob, progress)
