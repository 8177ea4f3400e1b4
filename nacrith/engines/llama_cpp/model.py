"""llama.cpp backend: tokenizer, token->bytes table and a multi-sequence KV cache.

Only the low-level C API of llama-cpp-python is used, because the high-level
`Llama` class neither shifts the KV cache nor keeps several sequences.

Determinism: the encoder and the decoder issue exactly the same calls in the
same order (same batches, same positions, same cache shifts), so whatever
floats llama.cpp computes, it computes the same ones on both sides on the same
machine and build. Flash attention is forced on so that attention is computed
per row, which keeps a token's logits independent of what else is in its batch.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
from dataclasses import dataclass

import numpy as np
import llama_cpp as L

from ...errors import EngineError

_BACKEND_READY = False


def _quiet_log(level, text, user_data):  # noqa: ARG001 - ctypes callback signature
    return None


_LOG_CB = L.llama_log_callback(_quiet_log)


def _init_backend() -> None:
    global _BACKEND_READY
    if not _BACKEND_READY:
        if not os.environ.get("NACRITH_LLAMA_LOG"):
            L.llama_log_set(_LOG_CB, ctypes.c_void_p(0))
        L.llama_backend_init()
        _BACKEND_READY = True


@functools.cache
def amx() -> bool:
    """Whether llama.cpp would move the weights into its AMX buffers. Its AMX matrix
    product crashes (SIGSEGV in ggml_backend_amx_mul_mat, llama.cpp issue #20824,
    seen here on a Sapphire Rapids VM with llama-cpp-python 0.3.36 and SmolLM2 Q4_1),
    so on such CPUs the weights stay in plain buffers (no AMX, no repacking) and the
    engine profile says "norepack"."""
    _init_backend()
    return "AMX_INT8 = 1" in L.llama_print_system_info().decode("utf-8", "replace")


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclass(frozen=True)
class ContextFloats:
    """The context parameters that change llama.cpp's floats without being settings:
    the batch and micro-batch sizes (where a batch is split for the kernels), flash
    attention, and whether sequences share one KV buffer. They are written into the
    engine profile (" fa b32 u32 kvs") and a decoder builds its context from the
    file's values. Files from before they were written end their profile with " fa":
    those were made with flash attention, separate KV buffers and the batch rule of
    LlamaModel (LEGACY)."""

    batch: int
    ubatch: int
    flash: bool = True
    unified: bool = False

    @classmethod
    def for_lanes(cls, n_seq: int, per_step: int = 1) -> "ContextFloats":
        """The rule LlamaModel makes its context by (and files with a bare " fa" were
        made under): a batch holds one step of every lane, `per_step` tokens each (the
        LLM skip brings up to MAX_SKIP + 1), and at least 32 tokens without the skip; a
        small batch keeps llama.cpp's logits and compute buffers small whatever the window."""
        batch = n_seq * per_step if per_step > 1 else max(n_seq, 32)
        return cls(batch, batch)

    def spelling(self) -> str:
        return (f" {'fa' if self.flash else 'nofa'} b{self.batch} u{self.ubatch} "
                f"{'kvu' if self.unified else 'kvs'}")


LEGACY = None  # ContextFloats of a profile written before them: LlamaModel's own rule
_SPELLING = re.compile(r" (fa|nofa) b(\d{1,6}) u(\d{1,6}) (kvs|kvu)$")


def context_floats(profile: str):
    """The ContextFloats a llama.cpp profile names, LEGACY for an older profile, or a
    ValueError for one that names them in a way this version does not know."""
    m = _SPELLING.search(profile)
    if m is None:
        if profile.endswith(" fa"):
            return LEGACY
        raise ValueError(f"llama.cpp profile '{profile}' does not say how its context was made")
    batch, ubatch = int(m.group(2)), int(m.group(3))
    if not 1 <= ubatch <= batch:
        raise ValueError(f"llama.cpp profile '{profile}' names impossible batch sizes")
    return ContextFloats(batch, ubatch, m.group(1) == "fa", m.group(4) == "kvu")


class LlamaModel:
    """A loaded GGUF model with one context holding `n_seq` independent sequences."""

    def __init__(
        self,
        path: str,
        n_ctx: int,
        n_seq: int = 1,
        n_threads: int | None = None,
        n_batch: int | None = None,
        vocab_only: bool = False,
        floats: ContextFloats | None = None,
    ):
        _init_backend()
        self.path = str(path)
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.vocab_only = vocab_only  # the torch engine only needs the tokenizer
        mparams.use_extra_bufts = not amx()  # see amx()
        self.model = L.llama_model_load_from_file(self.path.encode(), mparams)
        if not self.model:
            raise EngineError(f"llama.cpp could not load the model {self.path}")
        self.vocab_ptr = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab_ptr)
        self.bos = L.llama_vocab_bos(self.vocab_ptr)
        self.n_ctx = n_ctx
        self.n_seq = n_seq
        self.n_threads = n_threads or default_threads()
        if floats is None:
            floats = ContextFloats(n_batch, n_batch) if n_batch else ContextFloats.for_lanes(n_seq)
        self.floats = floats
        self.n_batch = floats.batch
        self.ctx = None
        if not vocab_only:
            self._make_context()
        self._pieces: list[bytes] | None = None

    def _make_context(self) -> None:
        cparams = L.llama_context_default_params()
        cparams.n_ctx = self.n_ctx * self.n_seq
        cparams.n_batch = self.floats.batch
        cparams.n_ubatch = self.floats.ubatch
        cparams.n_seq_max = self.n_seq
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.flash_attn_type = (L.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.floats.flash
                                   else L.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        cparams.kv_unified = self.floats.unified
        cparams.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise EngineError("llama.cpp could not create a context")
        self.mem = L.llama_get_memory(self.ctx)
        self._batch_cap = cparams.n_batch
        self._batch = L.llama_batch_init(self._batch_cap, 0, 1)

    def close(self) -> None:
        if self.ctx:
            L.llama_batch_free(self._batch)
            L.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            L.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- tokenizer ---------------------------------------------------------
    def tokenize(self, data: bytes) -> list[int]:
        """Byte-level BPE tokens; special-token text is parsed as plain text."""
        if not data:
            return []
        cap = len(data) + 16
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab_ptr, data, len(data), buf, cap, False, False)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab_ptr, data, len(data), buf, cap, False, False)
        return list(buf[:n])

    def pieces(self) -> list[bytes]:
        """Bytes of every token, read one by one (`detokenize` truncates long tokens)."""
        if self._pieces is None:
            out = []
            size = 256
            buf = ctypes.create_string_buffer(size)
            for t in range(self.n_vocab):
                n = L.llama_token_to_piece(self.vocab_ptr, t, buf, size, 0, False)
                if n < 0:
                    big = ctypes.create_string_buffer(-n)
                    n = L.llama_token_to_piece(self.vocab_ptr, t, big, -n, 0, False)
                    out.append(big.raw[:n])
                else:
                    out.append(buf.raw[:n])
            self._pieces = out
        return self._pieces

    # -- evaluation ----------------------------------------------------------
    def clear(self) -> None:
        L.llama_memory_clear(self.mem, True)

    def forget(self, seq: int) -> None:
        L.llama_memory_seq_rm(self.mem, seq, -1, -1)

    def shift(self, seq: int, keep: int, drop: int, end: int) -> None:
        """Drop positions [keep, keep+drop) of `seq` and move [keep+drop, end) down by `drop`."""
        if not L.llama_memory_seq_rm(self.mem, seq, keep, keep + drop):
            raise EngineError("llama.cpp refused to remove cache cells")
        L.llama_memory_seq_add(self.mem, seq, keep + drop, end, -drop)

    def decode(self, tokens, positions, seqs, want) -> np.ndarray:
        """Evaluate one batch; return float32 logits (copied) for the rows where want is true."""
        n = len(tokens)
        if n == 0 or n > self._batch_cap:
            raise ValueError("batch size out of range")
        b = self._batch
        b.n_tokens = n
        for i in range(n):
            b.token[i] = tokens[i]
            b.pos[i] = positions[i]
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seqs[i]
            b.logits[i] = 1 if want[i] else 0
        rc = L.llama_decode(self.ctx, b)
        if rc != 0:
            raise EngineError(f"llama_decode failed with code {rc}")
        rows = [i for i in range(n) if want[i]]
        out = np.empty((len(rows), self.n_vocab), dtype=np.float32)
        for j, i in enumerate(rows):
            ptr = L.llama_get_logits_ith(self.ctx, i)
            out[j] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return out


def engine_profile(n_threads: int, floats: ContextFloats | None = None) -> str:
    """What, besides the model and settings, decides the logits' exact bits: the build
    and CPU features, then the context's float parameters (ContextFloats; without
    them, only " fa", the build part of the profile)."""
    info = L.llama_print_system_info().decode("utf-8", "replace")
    feats = [
        part.split("=")[0].split(":")[-1].strip()
        for part in info.split("|")
        if part.strip().endswith("= 1")
    ]
    build = f"llama.cpp {L.__version__} {platform.machine()} {','.join(feats)}" + (" norepack" if amx() else "")
    return build + (" fa" if floats is None else floats.spelling())
