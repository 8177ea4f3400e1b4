"""bpb and speed of the levels -1 .. -9 (nacrith/presets.py) on a corpus sample.

    python benchmarks/levels.py                       # alice29.txt, first 32 KiB, this machine
    python benchmarks/levels.py --bytes 65536 --name levels-64k ../shared/corpora/canterbury/lcet10.txt
    python benchmarks/levels.py --common device=cuda  # the same levels on a GPU

Cuts the first --bytes of each file into a temporary folder (the corpora stay where
they are) and runs `nacrith bench` with one configuration per level, so every row is
a file that was compressed, decompressed and compared, each level in a fresh process.
Writes benchmarks/results/<name>.{md,json,png}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nacrith import bench  # noqa: E402
from nacrith.presets import LEVELS  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "canterbury" / "alice29.txt"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", default=[str(CORPUS)])
    ap.add_argument("--bytes", type=int, default=32768, help="leading bytes of each file (0: all)")
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)))
    ap.add_argument("--common", default="", help="k=v,... for every level (e.g. device=cuda)")
    ap.add_argument("--name", default="levels-cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        samples = []
        for f in args.files:
            data = Path(f).read_bytes()
            if args.bytes:
                data = data[: args.bytes]
            # keep the name telling: alice29-32k.txt
            stem, suffix = Path(f).stem, Path(f).suffix
            tag = f"-{args.bytes // 1024}k" if args.bytes and args.bytes < Path(f).stat().st_size else ""
            p = Path(tmp) / f"{stem}{tag}{suffix}"
            p.write_bytes(data)
            samples.append(str(p))
        cfgs = []
        for lv in args.levels.split(","):
            cfgs.append(f"--config=-{lv}:level={lv}")
        extra = ["--common", args.common] if args.common else []
        bench.main([*samples, *cfgs, *extra, "--name", args.name, "--out", args.out]
                   + (["--resume"] if args.resume else []))


if __name__ == "__main__":
    main()
