"""NC05 / NC06 sizes against xz -9, with verified round trips.

    python benchmarks/formats.py FILE... [--latin1-alice PATH]

For every file: raw size, xz -9, Nacrith's automatic choice (NC05 for text,
NC06 otherwise) with its bpb and the split between text and binary bytes, and
the round trip checked byte for byte. `--latin1-alice PATH` adds a Latin-1
variant of alice29.txt (every backtick opening quote becomes the Latin-1 byte
0xAB, '«'), which is not UTF-8 and so exercises the NC06 islands.
Writes benchmarks/results/formats.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
import json
import lzma
import time
from pathlib import Path

import nacrith
from nacrith.formats import container


def latin1_alice(path: str) -> bytes:
    return Path(path).read_bytes().replace(b"`", b"\xab")


def measure(name: str, data: bytes, forced: bool = True, **settings) -> dict:
    xz = len(lzma.compress(data, preset=9))
    t0 = time.perf_counter()
    blob = nacrith.compress(data, **settings)
    t1 = time.perf_counter()
    ok = nacrith.decompress(blob) == data
    t2 = time.perf_counter()
    if not ok:
        raise SystemExit(f"ROUND TRIP FAILED: {name}")
    text = binary = 0
    kinds = set()
    for h, _ in container.iter_frames(blob):
        kinds.add(h.kind_name)
        for e in h.entries:
            if e.type == container.ENTRY_TEXT:
                text += e.raw_len
            else:
                binary += e.raw_len
    nc06_forced = None
    if kinds == {"NC05"} and forced:
        forced = nacrith.compress(data, format="nc06", **settings)
        if nacrith.decompress(forced) != data:
            raise SystemExit(f"ROUND TRIP FAILED (forced NC06): {name}")
        nc06_forced = len(forced)
    return {
        "file": name,
        "nc06_forced": nc06_forced,
        "raw": len(data),
        "xz9": xz,
        "nacrith": len(blob),
        "format": "+".join(sorted(kinds)),
        "bpb": len(blob) * 8 / max(1, len(data)),
        "vs_xz": len(blob) / xz,
        "text_bytes": text,
        "binary_bytes": binary,
        "compress_s": t1 - t0,
        "decompress_s": t2 - t1,
        "round_trip": ok,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="*")
    ap.add_argument("--latin1-alice")
    ap.add_argument("--latin1-head", type=int, default=0, help="use only the first N bytes of alice29.txt")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--engine", default="llama", help="llama or torch (GPU lanes)")
    ap.add_argument("--lanes", type=int)
    ap.add_argument("--chunk-tokens", type=int)
    ap.add_argument("--no-forced", action="store_true", help="skip the forced-NC06 run of NC05 files")
    ap.add_argument("--name", default="formats", help="output file stem")
    args = ap.parse_args()
    inputs = [(Path(f).name, Path(f).read_bytes()) for f in args.files]
    if args.latin1_alice:
        head = args.latin1_head or None
        plain = Path(args.latin1_alice).read_bytes()[:head]
        tag = f"[:{head}]" if head else ""
        # the ASCII original next to its Latin-1 variant: the cost of the islands
        inputs.append((f"alice29.txt{tag}", plain))
        inputs.append((f"alice29.latin1.txt{tag}", latin1_alice(args.latin1_alice)[:head]))
    rows = []
    for name, data in inputs:
        opts = dict(engine=args.engine, lanes=args.lanes, chunk_tokens=args.chunk_tokens)
        row = measure(name, data, not args.no_forced, **{k: v for k, v in opts.items() if v is not None})
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(rows, indent=1))
    md = ["| file | raw | xz -9 | nacrith (auto) | format | bpb | / xz | NC06 forced | text bytes | binary bytes | round trip |",
          "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    md += [f"| {r['file']} | {r['raw']} | {r['xz9']} | {r['nacrith']} | {r['format']} | {r['bpb']:.4f} | "
           f"{r['vs_xz']:.4f} | {r['nc06_forced'] if r['nc06_forced'] is not None else '-'} | "
           f"{r['text_bytes']} | {r['binary_bytes']} | exact |" for r in rows]
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"command: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
