"""Settings that change the bitstream; all of them are stored in every frame header."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .codec.quantize import LOGIT_BITS, PRECISION
from .errors import CorruptDataError

# How tokens are fed to the model. 1: lanes in lockstep, one token per lane per
# batch, the KV cache shifted natively when a lane's window is full.
SCHEDULE_LOCKSTEP = 1
MAX_CACHE_CELLS = 65536


@dataclass(frozen=True)
class Settings:
    context: int = 2048  # tokens in a lane's window, BOS included
    slide: int = 512  # tokens dropped from the window when it is full
    chunk_bytes: int = 32768  # target chunk size; chunks are coded independently
    frame_bytes: int = 16 << 20  # most input bytes in one frame
    lanes: int = 8  # chunks advanced together, one token each per model call

    def validate(self) -> "Settings":
        if not 16 <= self.context <= 32768:
            raise ValueError("context must be between 16 and 32768 tokens")
        if not 1 <= self.slide < self.context - 1:
            raise ValueError("slide must be at least 1 and less than context - 1")
        if not 16 <= self.chunk_bytes <= 1 << 24:
            raise ValueError("chunk_bytes must be between 16 bytes and 16 MiB")
        if not self.chunk_bytes <= self.frame_bytes <= 1 << 28:
            raise ValueError("frame_bytes must be between chunk_bytes and 256 MiB")
        if not 1 <= self.lanes <= 256:
            raise ValueError("lanes must be between 1 and 256")
        # The KV cache holds context * lanes cells (~23 KB each for SmolLM2-135M):
        # a header may not make a decoder allocate more than ~1.5 GB for it.
        if self.context * self.lanes > MAX_CACHE_CELLS:
            raise ValueError(f"context * lanes must be at most {MAX_CACHE_CELLS}")
        return self

    def header_fields(self) -> dict[str, int]:
        out = asdict(self)
        out["schedule"] = SCHEDULE_LOCKSTEP
        out["precision"] = PRECISION
        out["logit_bits"] = LOGIT_BITS
        return out

    @classmethod
    def from_header(cls, values: dict[str, int]) -> "Settings":
        expected = {"schedule": SCHEDULE_LOCKSTEP, "precision": PRECISION, "logit_bits": LOGIT_BITS}
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names - set(expected)
        if unknown:
            raise CorruptDataError(
                f"unknown settings {sorted(unknown)} in header (made by a newer nacrith?)"
            )
        for key, want in expected.items():
            if values.get(key) != want:
                raise CorruptDataError(f"unsupported {key} {values.get(key)} (this nacrith uses {want})")
        missing = names - set(values)
        if missing:
            raise CorruptDataError(f"header lacks settings {sorted(missing)}")
        try:
            return cls(**{n: values[n] for n in names}).validate()
        except ValueError as exc:
            raise CorruptDataError(f"header settings out of range: {exc}") from None
