"""Where the input is cut into chunks and frames.

The input is cut into frames (self-contained, so a writer needs bounded memory)
and each frame's text into chunks (coded independently, each from an empty model
context, so they can run as parallel lanes). Both cuts use the same rule and
depend only on the bytes and the settings: a piece ends after the last newline
in the final quarter of its target size, else after the last space there, else
at the last UTF-8 character boundary.
"""

from __future__ import annotations


def _is_continuation(b: int) -> bool:
    return 0x80 <= b <= 0xBF


def chunk_end(data, start: int, target: int) -> int:
    """End offset of the chunk that begins at `start` (needs data[start:start+target+1])."""
    n = len(data)
    if n - start <= target:
        return n
    hi = start + target
    lo = start + (target * 3) // 4
    window = bytes(data[lo:hi])
    for sep in (b"\n", b" "):
        i = window.rfind(sep)
        if i >= 0:
            return lo + i + 1
    end = hi
    while end > start + 1 and _is_continuation(data[end]):
        end -= 1
    return end


def split_chunks(data, target: int) -> list[tuple[int, int]]:
    if target < 16:
        raise ValueError("chunk size must be at least 16 bytes")
    out = []
    pos = 0
    while pos < len(data):
        end = chunk_end(data, pos, target)
        out.append((pos, end))
        pos = end
    return out
