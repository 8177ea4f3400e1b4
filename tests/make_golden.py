"""Regenerate tests/data/golden.nc. Only do this together with a format version bump."""

from pathlib import Path

import nacrith

DATA = Path(__file__).parent / "data"
SETTINGS = dict(context=64, slide=16, chunk_bytes=256, lanes=2)

if __name__ == "__main__":
    text = (DATA / "golden.txt").read_bytes()
    (DATA / "golden.nc").write_bytes(nacrith.compress(text, **SETTINGS))
