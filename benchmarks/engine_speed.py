"""Engines side by side through the command line: size, bpb, tokens/s and peak RSS.

    python benchmarks/engine_speed.py ../shared/corpora/canterbury/alice29.txt \
        --engine llama --engine int --name engine-speed-alice29 [--options "--context 1024"]

Each engine compresses each file with `nacrith compress FILE --engine E` (every
other setting at its default, so both engines run the same context, slide, chunks,
lanes and predictors), then `nacrith decompress`, each in its own process: wall
time and peak RSS come from that process alone (os.wait4), the model load
included; tokens/s divides the header's token count by the wall time. The restored
bytes are compared with the input before a row is written. Run it with nothing else
on the machine: the speeds are only worth what the machine's quiet was.
Writes benchmarks/results/NAME.{md,json} (rows are kept in NAME.partial.jsonl;
--resume skips the ones there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nacrith.formats import container  # noqa: E402


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return dt, usage.ru_maxrss / 1024


def tokens_of(blob: bytes) -> int:
    return sum(e.n_tokens for h, _ in container.iter_frames(memoryview(blob)) for e in h.entries)


def run(path: Path, engine: str, extra: list[str]) -> dict:
    nac = [sys.executable, "-m", "nacrith.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        packed, restored = Path(tmp, "f.nc"), Path(tmp, "f.out")
        c_s, c_mb = timed([*nac, "compress", str(path), "-o", str(packed), "--engine", engine, "-q", *extra])
        d_s, d_mb = timed([*nac, "decompress", str(packed), "-o", str(restored), "-q"])
        raw, blob = path.read_bytes(), packed.read_bytes()
        if restored.read_bytes() != raw:
            raise SystemExit(f"{path.name}, {engine}: the round trip is not exact")
        n = tokens_of(blob)
    return {
        "file": path.name, "engine": engine, "extra": extra, "raw": len(raw), "size": len(blob),
        "bpb": len(blob) * 8 / len(raw), "tokens": n,
        "compress_s": c_s, "decompress_s": d_s, "compress_tok_s": n / c_s, "decompress_tok_s": n / d_s,
        "compress_rss_mb": c_mb, "decompress_rss_mb": d_mb, "round_trip": True,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
    }


def table(rows: list[dict]) -> str:
    md = ["| file | engine | bytes | bpb | tokens | compress | decompress | peak RSS (c / d) |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        md.append(
            f"| {r['file']} | {r['engine']} {' '.join(r['extra'])} | {r['size']:,} | {r['bpb']:.4f} | {r['tokens']:,} "
            f"| {r['compress_s']:.0f} s, {r['compress_tok_s']:.0f} tok/s | {r['decompress_s']:.0f} s, "
            f"{r['decompress_tok_s']:.0f} tok/s | {r['compress_rss_mb']:.0f} / {r['decompress_rss_mb']:.0f} MB |"
        )
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--engine", action="append", help="llama, int or torch (repeatable; default llama and int)")
    ap.add_argument("--name", default="engine-speed")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--options", default="", help="more `nacrith compress` options for every run, in one string")
    args = ap.parse_args()
    extra = shlex.split(args.options)
    engines = args.engine or ["llama", "int"]
    args.out.mkdir(parents=True, exist_ok=True)
    partial = args.out / f"{args.name}.partial.jsonl"
    if not args.resume:
        partial.unlink(missing_ok=True)
    rows = [json.loads(line) for line in partial.read_text().splitlines()] if partial.exists() else []
    done = {(r["file"], r["engine"]) for r in rows}
    for path in args.files:
        for engine in engines:
            if (path.name, engine) in done:
                continue
            row = run(path, engine, extra)
            rows.append(row)
            with partial.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(table([row]).splitlines()[-1], flush=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(rows, indent=1))
    (args.out / f"{args.name}.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
