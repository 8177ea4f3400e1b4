"""What smaller chunks cost in bpb: one input compressed at several chunk sizes.

    python benchmarks/chunk_cost.py ../shared/corpora/canterbury/alice29.txt --bytes 40000

Chunks are coded independently (each from an empty window), so more chunks mean more
lanes side by side for the decoder and less context for the model; the longest chunk
sets how many steps the decoder takes. --balance 0,1 gives each size with the greedy
cut and with balanced chunks (settings.balance). Every other setting is the default
(level 6) on the integer engine; the bytes are the same on any
machine, so this runs where it is cheapest. Writes <out>.md and <out>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    import nacrith
    from nacrith.chunking import split_chunks

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--bytes", type=int, default=40000, help="leading bytes of the file (0: all)")
    ap.add_argument("--chunks", default="2048,4096,8192,16384,32768", help="chunk_bytes values")
    ap.add_argument("--balance", default="1", help="balance values, a row each (0: greedy cuts, 1: balanced)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/chunk-cost")
    args = ap.parse_args(argv)
    data = Path(args.file).read_bytes()
    data = data[: args.bytes] if args.bytes else data
    sizes = sorted({min(int(c), len(data)) for c in args.chunks.split(",")} | {min(1 << 24, len(data))})
    rows = []
    for cb in sizes:
        for bal in [int(b) for b in args.balance.split(",")] if cb < len(data) else [1]:
            comp = nacrith.Compressor(engine="int", chunk_bytes=max(16, cb), balance=bal, threads=args.threads)
            t0 = time.perf_counter()
            blob = comp.compress(data)
            cuts = split_chunks(data, max(16, cb), bool(bal))
            row = dict(chunk_bytes=cb, balance=bal, chunks=len(cuts), longest=max(b - a for a, b in cuts),
                       size=len(blob), bpb=round(8 * len(blob) / len(data), 4),
                       compress_s=round(time.perf_counter() - t0, 1))
            rows.append(row)
            print(json.dumps(row), flush=True)
    best = min(r["bpb"] for r in rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = " ".join(["python", "benchmarks/chunk_cost.py", *(argv if argv is not None else sys.argv[1:])])
    out.with_suffix(".json").write_text(json.dumps(dict(command=cmd, file=args.file, bytes=len(data), rows=rows), indent=1))
    lines = [f"# bpb by chunk size: {Path(args.file).name}, first {len(data):,} bytes", "",
             f"`{cmd}` ({time.strftime('%Y-%m-%d')}; integer engine, level 6 otherwise)", "",
             "| chunk_bytes | balance | chunks | longest chunk | compressed | bpb | vs the best | compress s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['chunk_bytes']:,} | {r['balance']} | {r['chunks']} | {r['longest']:,} | {r['size']:,} | "
                     f"{r['bpb']} | {100 * (r['bpb'] / best - 1):+.1f}% | {r['compress_s']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
