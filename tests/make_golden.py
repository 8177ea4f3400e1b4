"""Regenerate tests/data/golden*.nc. Only do this together with a format version bump
(golden-online.nc: with a bump of settings.ONLINE_VERSION; `python tests/make_golden.py --online`;
golden-int*.nc: with a bump of the integer engine's spec.VERSION; `python tests/make_golden.py --int`)."""

import sys
from pathlib import Path

import nacrith

DATA = Path(__file__).parent / "data"
# balance=0: every golden file was made before balanced chunks (settings.balance)
SETTINGS = dict(context=64, slide=16, chunk_bytes=256, lanes=2, balance=0)
# golden-online.nc: the online predictors' integers (settings' online version 1)
ONLINE = dict(SETTINGS, chunk_bytes=1024, bias_lr=2000, ngram=4, match_min=4, table_bits=10, sse_rate=3000)
# golden-int.nc, golden-int06.nc: the integer engine (its defaults: both bias heads, unwrapping);
# chunks of 300 bytes and a 64-token window that slides
INT = dict(engine="int", context=64, slide=16, chunk_bytes=300, balance=0)

def golden06_input() -> bytes:
    """Latin-1 text, a binary run and UTF-8 text: LLM and binary segments in one frame."""
    text = (DATA / "golden.txt").read_bytes()
    latin1 = "Caf\u00e9 cr\u00e8me, na\u00efve fa\u00e7ade; r\u00e9sum\u00e9.\n".encode("latin-1") * 3
    return latin1 + text + bytes(range(256)) * 5 + text[:300]


if __name__ == "__main__":
    from nacrith.api import load_model
    from nacrith.formats import nc06
    from nacrith.settings import Settings

    text = (DATA / "golden.txt").read_bytes()
    if "--online" in sys.argv:  # only this one: the others are older than the predictors
        (DATA / "golden-online.nc").write_bytes(nacrith.compress(text, **ONLINE))
        sys.exit()
    if "--int" in sys.argv:
        (DATA / "golden-int.nc").write_bytes(nacrith.compress(text, **INT))
        from nacrith.api import load_model, settings_for
        from nacrith.formats import nc06

        st = settings_for(**INT)
        (DATA / "golden-int06.nc").write_bytes(nc06.encode_frame(load_model(None, st), st, golden06_input(),
                                                                 choose_smaller=False))
        sys.exit()
    (DATA / "golden.nc").write_bytes(nacrith.compress(text, **SETTINGS))
    raw = golden06_input()
    s = Settings(**SETTINGS)
    (DATA / "golden06.bin").write_bytes(raw)
    (DATA / "golden06.nc").write_bytes(nc06.encode_frame(load_model(None, s), s, raw, choose_smaller=False))
