"""Where the input is cut (nacrith/chunking.py): greedy and balanced chunks."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings, strategies as st

from nacrith.chunking import split_chunks

TEXT = (Path(__file__).parent / "data" / "golden.txt").read_bytes()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.integers(16, 700), st.booleans())
def test_cuts_cover_the_input_in_order_within_the_target(data, target, balance):
    cuts = split_chunks(data, target, balance)
    assert [a for a, _ in cuts] == ([0] + [b for _, b in cuts[:-1]] if cuts else [])
    assert (cuts[-1][1] if cuts else 0) == len(data)
    assert all(0 < b - a <= target for a, b in cuts)
    if balance:
        assert len(cuts) <= len(split_chunks(data, target))


def test_balanced_chunks_share_the_input_evenly():
    text = (TEXT * 70)[:40000]  # a newline every ~70 bytes
    greedy = [b - a for a, b in split_chunks(text, 32768)]
    even = [b - a for a, b in split_chunks(text, 32768, balance=True)]
    assert len(greedy) == len(even) == 2
    assert greedy[0] > 32768 * 3 // 4 and greedy[1] < 8000  # one long chunk sets the decoder's time
    assert max(even) - min(even) < 200 and max(even) < 20200


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 300000), st.integers(2048, 40000))
def test_balanced_chunks_are_even_on_text(n, target):
    """On text whose lines are far shorter than the target, balanced chunks differ by
    little more than a line, save the last (the rest), which is no longer than the others."""
    text = (TEXT * (n // len(TEXT) + 1))[:n]
    sizes = [b - a for a, b in split_chunks(text, target, balance=True)]
    assert len(sizes) == len(split_chunks(text, target))
    line = max(len(x) for x in TEXT.split(b"\n")) + 1
    assert max(sizes[:-1] or [0]) - min(sizes[:-1] or [0]) <= line
    assert sizes[-1] <= max(sizes)
