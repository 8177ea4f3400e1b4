"""Compression benchmark: Nacrith next to gzip, bzip2, xz, zstd and brotli.

Every Nacrith configuration runs in a fresh subprocess (so its peak memory is
its own), compresses, decompresses, and checks the round trip before any size
is reported. Results go to Markdown, JSON and a PNG bar chart.

    python benchmarks/bench.py ../shared/corpora/canterbury/alice29.txt
    python benchmarks/bench.py FILES... --config default --config context=2048 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def baselines(data: bytes) -> dict[str, int]:
    import brotli
    import zstandard

    out = {
        "gzip -9": len(gzip.compress(data, 9, mtime=0)),
        "bzip2 -9": len(bz2.compress(data, 9)),
        "xz -9": len(lzma.compress(data, preset=9)),
        "zstd -19": len(zstandard.ZstdCompressor(level=19).compress(data)),
        "brotli -q 11": len(brotli.compress(data, quality=11)),
    }
    assert lzma.decompress(lzma.compress(data, preset=9)) == data
    return out


def parse_config(text: str) -> dict[str, int]:
    if text == "default":
        return {}
    out = {}
    for part in text.split(","):
        k, v = part.split("=")
        out[k.strip()] = int(v)
    return out


def run_one(path: str, config: dict[str, int]) -> dict:
    """Runs in the child process: compress, decompress, verify, measure."""
    import resource

    import nacrith

    data = Path(path).read_bytes()
    stats = {"tokens": 0, "bits": 0.0}

    def progress(tokens, bits, nbytes=0):
        stats["tokens"] += tokens
        stats["bits"] += bits

    c = nacrith.Compressor(**config)
    d = nacrith.Decompressor()
    t0 = time.perf_counter()
    blob = c.compress(data, progress=progress)
    t1 = time.perf_counter()
    back = d.decompress(blob)
    t2 = time.perf_counter()
    if back != data:
        raise SystemExit(f"ROUND TRIP FAILED for {path} with {config}")
    tokens = stats["tokens"]
    return {
        "file": Path(path).name,
        "config": config,
        "settings": c.settings.header_fields(),
        "raw": len(data),
        "size": len(blob),
        "bpb": len(blob) * 8 / len(data),
        "model_bits_bpb": stats["bits"] / len(data),
        "tokens": tokens,
        "compress_s": t1 - t0,
        "decompress_s": t2 - t1,
        "compress_kbs": len(data) / 1024 / (t1 - t0),
        "decompress_kbs": len(data) / 1024 / (t2 - t1),
        "compress_tps": tokens / (t1 - t0),
        "decompress_tps": tokens / (t2 - t1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "round_trip": True,
    }


def label(config: dict[str, int]) -> str:
    return "nacrith" + ("" if not config else " " + ",".join(f"{k}={v}" for k, v in config.items()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--config", action="append", default=None, help="k=v,k=v settings, or 'default'")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default="bench")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_one(args.files[0], json.loads(args.child))))
        return
    configs = [parse_config(c) for c in (args.config or ["default"])]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for f in args.files:
        data = Path(f).read_bytes()
        base = baselines(data)
        for cfg in configs:
            proc = subprocess.run(
                [sys.executable, __file__, f, "--child", json.dumps(cfg)],
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                raise SystemExit(proc.stderr or proc.stdout)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["label"] = label(cfg)
            row["baselines"] = base
            rows.append(row)
            print(
                f"{row['file']}: {row['label']}: {row['size']} bytes, {row['bpb']:.4f} bpb, "
                f"{row['compress_tps']:.0f}/{row['decompress_tps']:.0f} tok/s",
                flush=True,
            )
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / f"{args.name}.md").write_text(markdown(rows, meta))
    plot(rows, out / f"{args.name}.png")
    print(markdown(rows, meta))


def markdown(rows, meta) -> str:
    lines = [
        f"Measured on {meta['machine']} ({meta['date']}) with `{meta['command']}`.",
        "",
        "| file | raw bytes | compressor | size | bpb | compress KB/s | decompress KB/s | compress tok/s | decompress tok/s | peak RSS MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    seen = set()
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['raw']} | {r['label']} | {r['size']} | {r['bpb']:.4f} | "
            f"{r['compress_kbs']:.2f} | {r['decompress_kbs']:.2f} | {r['compress_tps']:.0f} | "
            f"{r['decompress_tps']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
        if r["file"] not in seen:
            seen.add(r["file"])
            for name, size in r["baselines"].items():
                lines.append(f"| {r['file']} | {r['raw']} | {name} | {size} | {size * 8 / r['raw']:.4f} | | | | | |")
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = list(dict.fromkeys(r["file"] for r in rows))
    series: dict[str, dict[str, float]] = {}
    for r in rows:
        series.setdefault(r["label"], {})[r["file"]] = r["bpb"]
        for name, size in r["baselines"].items():
            series.setdefault(name, {})[r["file"]] = size * 8 / r["raw"]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(files) * len(series) / 3), 4))
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        xs = [j + i * width for j in range(len(files))]
        ax.bar(xs, [vals.get(f, 0) for f in files], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(files))], files)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
