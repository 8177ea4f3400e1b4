"""Compression levels -1 .. -9, as in gzip, xz and zstd: each is a named set of
stored settings (window, chunking, online predictors, unwrapping) on the default
engine ("auto": the integer engine for the default model). Level 6 is the default
and equals the plain defaults. Explicit settings override a level's.

Chosen from measurements (README, "Levels"; benchmarks/levels.py): the window
length sets the speed on a CPU (attention reads the whole window for every token)
and most of the bpb; the bias heads cost little and always pay; the N-gram, match
model and secondary estimation pay on long or repetitive text and run on numpy
(slower); larger chunks give the model longer runs of context but fewer chunks
to decode side by side.

The level itself is not stored: a file records its settings, which is all a
decoder needs; `nacrith -lv` and `nacrith info` name the level they match.
"""

from __future__ import annotations

from .settings import PREDICTORS_OFF, PREDICTORS_ON

DEFAULT_LEVEL = 6
_ALL_PREDICTORS = {**PREDICTORS_ON, "skip": 0}  # the LLM skip runs on llama.cpp only

LEVELS: dict[int, dict[str, int]] = {
    1: dict(context=256, slide=64, chunk_bytes=8192, reflow=0, **PREDICTORS_OFF),
    2: dict(context=512, slide=128, chunk_bytes=16384, reflow=0, **PREDICTORS_OFF),
    3: dict(context=512, slide=128, chunk_bytes=16384),
    4: dict(context=1024, slide=256, chunk_bytes=32768),
    5: dict(context=1536, slide=384, chunk_bytes=32768),
    6: dict(),  # the defaults: context 2048, slide 512, 32 KiB chunks, bias heads, unwrapping
    7: dict(context=3072, slide=768, chunk_bytes=131072),
    8: dict(context=4096, slide=1024, chunk_bytes=262144, **_ALL_PREDICTORS),
    9: dict(context=8192, slide=2048, chunk_bytes=1 << 20, **_ALL_PREDICTORS),
}
FAST, BEST = 1, 9


def level_settings(level: int | None) -> dict[str, int]:
    """The settings a level sets (a copy); None is the default level."""
    level = DEFAULT_LEVEL if level is None else level
    if level not in LEVELS:
        raise ValueError(f"level must be between 1 and 9, not {level}")
    return dict(LEVELS[level])


def matching_level(header_fields: dict[str, int], engine: str) -> int | None:
    """The level whose settings, on `engine`, a frame header stores; None if none does.
    Balanced chunks or not (files made before the setting) match either way."""
    from .api import settings_for

    plain = lambda f: {k: v for k, v in f.items() if k != "balance"}  # noqa: E731
    for level in LEVELS:
        try:
            if plain(settings_for(engine, level=level).header_fields()) == plain(header_fields):
                return level
        except ValueError:
            continue
    return None
