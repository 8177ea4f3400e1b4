"""The llama.cpp engine: the float model of llama.cpp on the CPU, lanes in lockstep
(lanes.py), a range coder per chunk (codec/rangecoder.py). Schedule 1."""

from __future__ import annotations

from ...codec.rangecoder import Decoder, Encoder
from ...errors import CorruptDataError
from .lanes import run_lanes
from .model import ContextFloats, LlamaModel, context_floats, engine_profile


class LlamaEngine:
    name = "llama"

    def __init__(self, model: LlamaModel):
        self.model = model
        self.profile = engine_profile(model.n_threads, model.floats)

    def encode(self, settings, bos: int, token_lists, progress=None):
        encoders = [Encoder() for _ in token_lists]

        def step(ci, ti, freqs):
            tok = token_lists[ci][ti]
            encoders[ci].encode(tok, freqs)
            return tok

        bits = run_lanes(self.model, settings, [len(t) for t in token_lists], step, progress)
        return [e.finish() for e in encoders], bits

    def decode(self, settings, bos: int, counts, payloads, progress=None, check=None):
        n_vocab = self.model.n_vocab
        decoders = [Decoder(p) for p in payloads]
        out: list[list[int]] = [[] for _ in counts]

        def step(ci, ti, freqs):
            try:
                tok = decoders[ci].decode(freqs)
            except Exception as exc:  # constriction raises on exhausted or invalid data
                raise CorruptDataError(f"chunk {ci}: coded data is damaged ({exc})") from None
            if not 0 <= tok < n_vocab:
                raise CorruptDataError(f"chunk {ci}: decoded an impossible token")
            if check is not None:
                check(ci, tok)
            out[ci].append(tok)
            return tok

        run_lanes(self.model, settings, list(counts), step, progress)
        return out


__all__ = ["ContextFloats", "LlamaEngine", "LlamaModel", "context_floats", "engine_profile"]
