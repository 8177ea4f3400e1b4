"""Throughput of nacrith.cluster with N local Ray workers (one CPU each), against one process.

    python benchmarks/cluster.py                        # alice29.txt, first 32 KiB, 1 and 2 workers
    python benchmarks/cluster.py FILE --bytes 0 --workers 1,2,4 --address ray://head:10001

Each configuration starts its own Ray (or joins --address), compresses the sample as
frames of --frame-bytes on the workers (each worker keeps its model: the first frames
pay the load, as in real use), decompresses it on them, and checks that the bytes
equal one process's file and the round trip. Writes benchmarks/results/<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "canterbury" / "alice29.txt"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", default=str(CORPUS))
    ap.add_argument("--bytes", type=int, default=32768)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--address", default=None, help="a running cluster (default: a local one per row)")
    ap.add_argument("--frame-bytes", type=int, default=8192)
    ap.add_argument("--chunk-bytes", type=int, default=8192)
    ap.add_argument("--name", default="cluster-local-2core")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    import ray

    import nacrith
    from nacrith import cluster

    data = Path(args.file).read_bytes()
    data = data[: args.bytes] if args.bytes else data
    st = dict(engine="int", chunk_bytes=args.chunk_bytes, frame_bytes=args.frame_bytes)
    t0 = time.perf_counter()
    want = nacrith.Compressor(threads=1, **st).compress(data)
    single = time.perf_counter() - t0
    rows = [dict(workers="one process, 1 thread", compress_s=round(single, 1), decompress_s=None, same=True)]
    for n in [int(x) for x in args.workers.split(",")]:
        ray.init(address=args.address, **({} if args.address else {"num_cpus": n}), include_dashboard=False,
                 log_to_driver=False)
        try:
            t0 = time.perf_counter()
            blob = cluster.Compressor(args.address, threads=1, **st).compress(data)
            tc = time.perf_counter() - t0
            t0 = time.perf_counter()
            back = cluster.Decompressor(args.address, threads=1).decompress(blob)
            td = time.perf_counter() - t0
        finally:
            ray.shutdown()
        rows.append(dict(workers=n, compress_s=round(tc, 1), decompress_s=round(td, 1),
                         same=blob == want and back == data))
        print(json.dumps(rows[-1]), flush=True)
    from nacrith.chunking import split_chunks

    frames = len(split_chunks(data, args.frame_bytes))
    meta = dict(file=Path(args.file).name, bytes=len(data), bpb=round(8 * len(want) / len(data), 4), frames=frames,
                settings=st, command=" ".join(["python", "benchmarks/cluster.py", *sys.argv[1:]]),
                date=time.strftime("%Y-%m-%d"))
    out = Path(args.out) / args.name
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [f"# nacrith.cluster: {meta['file']}, first {len(data):,} bytes, {frames} frames ({meta['bpb']} bpb)", "",
             f"`{meta['command']}` ({meta['date']}); settings {st}; each worker one CPU, one thread.", "",
             "| workers | compress s | decompress s | bytes equal one process's, round trip exact |",
             "| --- | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['compress_s']} | {r['decompress_s'] or '-'} | {r['same']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
