"""Where the input is cut into chunks and frames.

The input is cut into frames (self-contained, so a writer needs bounded memory)
and each frame's text into chunks (coded independently, each from an empty model
context, so they can run as parallel lanes). Both cuts use the same rule and
depend only on the bytes and the settings: a piece ends after the last newline
in the final quarter of its target size, else after the last space there, else
at the last UTF-8 character boundary.

Balanced chunks (the `balance` setting): a frame becomes no more chunks than the
greedy cut makes, but of about equal length, so a 40 KB input is two chunks of about
20 KB rather than 32 KB and 8 KB. Lanes decode side by side, so the longest chunk
sets the decoder's time.
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


def _greedy(data, target: int) -> list[tuple[int, int]]:
    out = []
    pos = 0
    while pos < len(data):
        end = chunk_end(data, pos, target)
        out.append((pos, end))
        pos = end
    return out


def split_chunks(data, target: int, balance: bool = False) -> list[tuple[int, int]]:
    """Cuts [(start, end)] of data into chunks of at most `target` bytes. With balance, the
    cuts are those of the smallest target that gives no more chunks than `target` does
    (found by bisection), so the chunks are as many and about equally long."""
    if target < 16:
        raise ValueError("chunk size must be at least 16 bytes")
    cuts = _greedy(data, target)
    if not balance or len(cuts) < 2:
        return cuts
    lo, hi = max(16, -(-len(data) // len(cuts))), target
    while lo < hi:
        mid = (lo + hi) // 2
        if len(_greedy(data, mid)) <= len(cuts):
            hi = mid
        else:
            lo = mid + 1
    return _greedy(data, hi)
