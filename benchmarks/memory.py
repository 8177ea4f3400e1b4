"""Peak memory of `nacrith -c | nacrith -d` on streams of growing length.

    python benchmarks/memory.py --sizes 20,200

A generator writes N MB of binary data (a fixed pseudo-random mix, so no model
runs and the test stays fast on a CPU) into `nacrith -c`, whose output goes
through `nacrith -d`; both run under /usr/bin/time, and the restored stream's
SHA-256 is compared with the input's. Flat peak RSS across sizes shows that
memory is bounded by the frame size, not the stream length.
Writes benchmarks/results/memory.{md,json}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCK = 1 << 20


def blocks(mb: int):
    rng = random.Random(1234)
    base = bytes(rng.randrange(0, 32) for _ in range(BLOCK))  # control bytes: binary class
    for i in range(mb):
        # vary every block a little so the codecs cannot collapse the stream
        b = bytearray(base)
        for _ in range(4096):
            b[rng.randrange(BLOCK)] = rng.randrange(256)
        yield bytes(b)


def run(mb: int) -> dict:
    nac = [sys.executable, "-m", "nacrith.cli"]
    tdir = tempfile.mkdtemp()
    tc, td = os.path.join(tdir, "c"), os.path.join(tdir, "d")
    fmt = "%M"
    comp = subprocess.Popen(["/usr/bin/time", "-o", tc, "-f", fmt, *nac, "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    dec = subprocess.Popen(["/usr/bin/time", "-o", td, "-f", fmt, *nac, "-d"], stdin=comp.stdout, stdout=subprocess.PIPE)
    comp.stdout.close()
    h_in = hashlib.sha256()
    t0 = time.perf_counter()
    import threading

    out = {}

    def reader():
        h = hashlib.sha256()
        n = 0
        for chunk in iter(lambda: dec.stdout.read(BLOCK), b""):
            h.update(chunk)
            n += len(chunk)
        out["sha"], out["n"] = h.hexdigest(), n

    th = threading.Thread(target=reader)
    th.start()
    for b in blocks(mb):
        h_in.update(b)
        comp.stdin.write(b)
    comp.stdin.close()
    comp.wait()
    dec.wait()
    th.join()
    dt = time.perf_counter() - t0
    if comp.returncode or dec.returncode or out["sha"] != h_in.hexdigest():
        raise SystemExit(f"pipe round trip failed for {mb} MB")
    return {
        "mb": mb,
        "bytes": out["n"],
        "compress_peak_mb": int(Path(tc).read_text().split()[-1]) / 1024,
        "decompress_peak_mb": int(Path(td).read_text().split()[-1]) / 1024,
        "seconds": dt,
        "round_trip": True,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="20,200")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    rows = []
    for mb in (int(s) for s in args.sizes.split(",")):
        r = run(mb)
        rows.append(r)
        print(json.dumps(r), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(rows, indent=1))
    md = ["| stream | compress peak RSS | decompress peak RSS | wall time | round trip |", "|---:|---:|---:|---:|---|"]
    md += [f"| {r['mb']} MB | {r['compress_peak_mb']:.0f} MB | {r['decompress_peak_mb']:.0f} MB | {r['seconds']:.0f} s | exact |" for r in rows]
    (out / "memory.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
