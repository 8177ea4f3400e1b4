"""Splitting any byte string into text segments (for the LLM) and binary segments.

The input is looked at in blocks of BLOCK bytes. A block is text when at most 5% of
its bytes are invalid UTF-8 or control characters (other than tab, LF, CR) and it
looks like writing: at least 2% whitespace, or at least 25% non-ASCII bytes
(scripts written without spaces). Runs of blocks of one class form segments.

Invalid bytes inside a text segment (a Latin-1 letter in an English document)
stay in it: the LLM codes them as single-byte tokens, so its context runs on
across them instead of being cut.
"""

from __future__ import annotations

import re

BLOCK = 1024
MAX_BAD = 0.05
MIN_SPACE = 0.02
MIN_NON_ASCII = 0.25

_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 13)) + b"\x7f"
_WS = b" \t\n\r"
_HIGH = bytes(range(0x80, 0x100))
_ESCAPED = re.compile("[\udc80-\udcff]")


def _invalid_utf8_bytes(block: bytes) -> int:
    return len(_ESCAPED.findall(block.decode("utf-8", "surrogateescape")))


def is_text_block(block: bytes) -> bool:
    n = len(block)
    if n == 0:
        return False
    control = n - len(block.translate(None, _CONTROL))
    bad = control + _invalid_utf8_bytes(block)
    if bad > MAX_BAD * n:
        return False
    space = n - len(block.translate(None, _WS))
    non_ascii = n - len(block.translate(None, _HIGH))
    return space >= MIN_SPACE * n or non_ascii >= MIN_NON_ASCII * n


def segments(data: bytes) -> list[tuple[int, int, bool]]:
    """(start, end, is_text) runs covering `data`, adjacent runs of different class."""
    out: list[tuple[int, int, bool]] = []
    for start in range(0, len(data), BLOCK):
        end = min(start + BLOCK, len(data))
        text = is_text_block(data[start:end])
        if out and out[-1][2] == text:
            out[-1] = (out[-1][0], end, text)
        else:
            out.append((start, end, text))
    return out


def all_text(data: bytes) -> bool:
    return all(t for _, _, t in segments(data))
