"""Context-window sweep: bpb and compression speed of the LLM path on a prefix of a file.

    python benchmarks/sweep_context.py ../shared/corpora/canterbury/alice29.txt --head 49152

One chunk, one lane, slide = context / 4; compress only (round trips are checked by
`nacrith bench` and the tests). Writes benchmarks/results/sweep_context.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nacrith


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--head", type=int, default=49152)
    ap.add_argument("--contexts", default="512,1024,2048")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    data = Path(args.file).read_bytes()[: args.head]
    rows = []
    for ctx in (int(c) for c in args.contexts.split(",")):
        cfg = dict(context=ctx, slide=ctx // 4, chunk_bytes=65536, lanes=1)
        stats = {"t": 0, "b": 0.0}

        def progress(t, b, n=0):
            stats["t"] += t
            stats["b"] += b

        c = nacrith.Compressor(**cfg)
        t0 = time.perf_counter()
        blob = c.compress(data, progress=progress)
        dt = time.perf_counter() - t0
        row = dict(cfg, size=len(blob), bpb=len(blob) * 8 / len(data), model_bpb=stats["b"] / len(data),
                   tokens=stats["t"], tok_s=stats["t"] / dt)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_context.json").write_text(json.dumps(rows, indent=1))
    md = [f"`{Path(args.file).name}`, first {len(data)} bytes, one chunk, one lane:", "",
          "| context | slide | file bpb | model bpb | compress tok/s |", "|---:|---:|---:|---:|---:|"]
    md += [f"| {r['context']} | {r['slide']} | {r['bpb']:.4f} | {r['model_bpb']:.4f} | {r['tok_s']:.1f} |" for r in rows]
    (out / "sweep_context.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
