"""Compression benchmark: Nacrith configurations next to gzip, bzip2, xz, zstd and brotli.

Every Nacrith configuration of every file runs in a fresh subprocess (so its peak
memory is its own): it compresses, decompresses and checks the round trip before
any size is reported. Results go to Markdown, JSON and a PNG bar chart.

    nacrith bench FILES...                              # default settings
    nacrith bench FILES... --config "ctx 1024:context=1024" --config default
    nacrith bench FILES... --ablation --common engine=torch,context=4096 --jobs 7

--ablation runs the model alone, then unwrapping and each online predictor added
on its own, then all of them (and, on the llama.cpp engine, all with the LLM skip).
--resume keeps the rows of an earlier run cut short (NAME.partial.jsonl) whose
file and settings match, and runs only the rest.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

from .reflow import VERSION as REFLOW_VERSION
from .settings import PREDICTORS_OFF, PREDICTORS_ON, Settings


def baselines(data: bytes) -> dict[str, int]:
    """Sizes of the classic compressors (zstd and brotli where their packages are
    installed: the GPU machine lacks them; they are the same bytes on any machine)."""
    out = {
        "gzip -9": gzip.compress(data, 9, mtime=0),
        "bzip2 -9": bz2.compress(data, 9),
        "xz -9": lzma.compress(data, preset=9),
    }
    back = {"gzip -9": gzip.decompress, "bzip2 -9": bz2.decompress, "xz -9": lzma.decompress}
    try:
        import zstandard

        out["zstd -19"] = zstandard.ZstdCompressor(level=19).compress(data)
        back["zstd -19"] = zstandard.ZstdDecompressor().decompress
    except ImportError:
        pass
    try:
        import brotli

        out["brotli -q 11"] = brotli.compress(data, quality=11)
        back["brotli -q 11"] = brotli.decompress
    except ImportError:
        pass
    for name, blob in out.items():
        if back[name](blob) != data:
            raise SystemExit(f"ROUND TRIP FAILED for {name}")
    return {k: len(v) for k, v in out.items()}


def _value(v: str):
    try:
        return int(v)
    except ValueError:
        return v


def parse_config(text: str) -> tuple[str, dict]:
    """'label:k=v,k=v', 'k=v,...' or 'default' -> (label, settings)."""
    label, _, body = text.rpartition(":") if ":" in text else ("", "", text)
    cfg = {}
    if body not in ("default", ""):
        for part in body.split(","):
            k, v = part.split("=")
            cfg[k.strip()] = _value(v.strip())
    if not label:
        label = "nacrith" + ("" if not cfg else " " + ",".join(f"{k}={v}" for k, v in cfg.items()))
    return label, cfg


def ablation(engine: str) -> list[tuple[str, dict]]:
    on = PREDICTORS_ON
    off = {**PREDICTORS_OFF, "reflow": 0}
    rows = [
        ("LLM only", off),
        ("+ unwrap", {**off, "reflow": REFLOW_VERSION}),
        ("+ bias head", {**off, "bias_lr": on["bias_lr"]}),
        ("+ context bias", {**off, "ctx_bias": on["ctx_bias"]}),
        ("+ SSE", {**off, "sse_rate": on["sse_rate"]}),
        ("+ SSE + N-gram", {**off, "sse_rate": on["sse_rate"], "ngram": on["ngram"]}),
        ("+ SSE + match", {**off, "sse_rate": on["sse_rate"], "match_min": on["match_min"]}),
        ("all", {**on, "reflow": REFLOW_VERSION}),
    ]
    if engine == "llama":
        rows.append(("all + skip", {**on, "skip": 62000}))
    return rows


def run_one(path: str, config: dict) -> dict:
    """Runs in the child process: compress, decompress, verify, measure."""
    import resource

    import nacrith
    from nacrith.engines.llama_cpp import lanes

    data = Path(path).read_bytes()
    stats = {"tokens": 0, "bits": 0.0}

    def progress(tokens, bits, nbytes=0):
        stats["tokens"] += tokens
        stats["bits"] += bits

    config = dict(config)
    c = nacrith.Compressor(**config)
    d = nacrith.Decompressor(device=config.get("device"), gpus=config.get("gpus"))
    warm = 0.0
    if c.settings.engine == "torch":  # compile and capture before the clock starts
        t = time.perf_counter()
        c.lm.engine.warm_up(c.settings, c.lm.model.bos)
        warm = time.perf_counter() - t
    lanes.COUNTS.reset()
    t0 = time.perf_counter()
    blob = c.compress(data, progress=progress)
    t1 = time.perf_counter()
    skipped = lanes.COUNTS.skipped
    back = d.decompress(blob)
    t2 = time.perf_counter()
    if back != data:
        raise SystemExit(f"ROUND TRIP FAILED for {path} with {config}")
    tokens = stats["tokens"]
    gpu_mem = 0.0
    try:
        import torch

        if torch.cuda.is_available():
            gpu_mem = torch.cuda.max_memory_allocated() / 2**30
    except ImportError:
        pass
    return {
        "file": Path(path).name,
        "config": config,
        "settings": c.settings.header_fields(),
        "profile": c.lm.profile,
        "machine": _machine(),
        "raw": len(data),
        "size": len(blob),
        "bpb": len(blob) * 8 / len(data),
        "model_bits_bpb": stats["bits"] / len(data),
        "tokens": tokens,
        "skipped": skipped,
        "compress_s": t1 - t0,
        "decompress_s": t2 - t1,
        "warm_up_s": warm,
        "compress_kbs": len(data) / 1024 / (t1 - t0),
        "decompress_kbs": len(data) / 1024 / (t2 - t1),
        "compress_tps": tokens / (t1 - t0),
        "decompress_tps": tokens / (t2 - t1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gpu_mem_gib": gpu_mem,
        "round_trip": True,
    }


def _child(paths: list[str], cfg: dict, each) -> None:
    """One process per configuration: the model loads (and the GPU kernels compile)
    once for all files; its peak RSS is the largest so far at each file. each(row)
    is called as every file finishes, so a run cut short keeps what it measured."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nacrith.bench", *paths, "--child", json.dumps(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    for line in proc.stdout:
        if line.startswith("{"):
            each(json.loads(line))
    err = proc.stderr.read()
    if proc.wait():
        raise SystemExit(f"{paths} {cfg}:\n{err}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="nacrith bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--config", action="append", default=None, help="[label:]k=v,k=v settings, or 'default'")
    ap.add_argument("--ablation", action="store_true", help="model alone, each predictor, all")
    ap.add_argument("--common", default="", help="k=v,... added to every configuration (e.g. engine=torch)")
    ap.add_argument("--jobs", type=int, default=1, help="configurations run at once (each a process)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default="bench")
    ap.add_argument("--resume", action="store_true", help="keep matching rows of NAME.partial.jsonl")
    ap.add_argument("--report-only", action="store_true",
                    help="with --resume: run nothing, write the tables from the kept rows")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        for f in args.files:
            print(json.dumps(run_one(f, json.loads(args.child))), flush=True)
        return
    common = parse_config(args.common)[1] if args.common else {}
    configs = [parse_config(c) for c in (args.config or ([] if args.ablation else ["default"]))]
    if args.ablation:
        from .api import DEFAULT_ENGINE, choose_engine

        configs += ablation(choose_engine(common.get("engine", DEFAULT_ENGINE), common.get("model")))
    configs = [(label, {**cfg, **common}) for label, cfg in configs]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = {f: baselines(Path(f).read_bytes()) for f in args.files}
    started = time.strftime("%Y-%m-%d %H:%M")
    partial = out / f"{args.name}.partial.jsonl"  # rows as they come, should a run be cut short
    kept = []
    if args.resume and partial.exists():
        kept = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def run(job):
        label, cfg = job
        # a kept row counts when its label and the settings its file stored match (so
        # rows measured before a setting existed still count where it is off)
        rows = [r for r in kept if r["label"] == label and r["settings"] == _header(cfg)]
        for r in rows:  # the classic compressors as measured here (a kept row may come from a
            # machine that lacks zstd or brotli; their sizes are the same anywhere)
            r["baselines"] = base[next(f for f in args.files if Path(f).name == r["file"])]
        have = {r["file"] for r in rows}
        todo = [f for f in args.files if Path(f).name not in have]

        def each(row):
            row["label"] = label
            row["baselines"] = base[next(f for f in args.files if Path(f).name == row["file"])]
            print(f"{row['file']}: {label}: {row['size']} bytes, {row['bpb']:.4f} bpb, "
                  f"{row['compress_tps']:.0f}/{row['decompress_tps']:.0f} tok/s, skipped {row['skipped']}", flush=True)
            with partial.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            rows.append(row)

        if todo and not args.report_only:
            _child(todo, cfg, each)
        return rows

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        done = list(pool.map(run, configs))
    order = {Path(f).name: i for i, f in enumerate(args.files)}
    rows = sorted((r for rs in done for r in rs), key=lambda r: order[r["file"]])
    meta = {
        # where the rows were measured (a --resume may assemble them elsewhere)
        "machine": "; ".join(dict.fromkeys(r.get("machine", _machine()) for r in rows)),
        "python": platform.python_version(),
        "command": " ".join(["nacrith bench", *(argv if argv is not None else sys.argv[1:])]),
        "date": started,
        "jobs": args.jobs,
        "labels": [label for label, _ in configs],
    }
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    text = markdown(rows, meta)
    (out / f"{args.name}.md").write_text(text)
    plot(rows, out / f"{args.name}.png")
    print(text)


def _header(cfg: dict) -> dict:
    """The header fields a configuration's files carry."""
    from .api import DEFAULT_ENGINE, choose_engine, settings_for

    names = {f.name for f in fields(Settings)}  # the rest (engine, model, device...) are not stored
    own = {k: v for k, v in cfg.items() if k in names}
    engine = choose_engine(cfg.get("engine", DEFAULT_ENGINE), cfg.get("model"), cfg.get("skip"))
    return settings_for(engine, cfg.get("level"), **own).header_fields()


def _machine() -> str:
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} CPUs{gpu}"


def _total(rows, label) -> tuple[int, int]:
    mine = [r for r in rows if r["label"] == label]
    return sum(r["size"] for r in mine), sum(r["raw"] for r in mine)


def markdown(rows, meta) -> str:
    files = list(dict.fromkeys(r["file"] for r in rows))
    labels = list(dict.fromkeys([*meta.get("labels", []), *(r["label"] for r in rows)]))
    by = {(r["file"], r["label"]): r for r in rows}
    jobs = f", {meta['jobs']} at once" if meta.get("jobs", 1) > 1 else ""
    lines = [
        f"Measured on {meta['machine']} ({meta['date']}{jobs}) with `{meta['command']}`. "
        "Every size is a file that was decompressed and compared with the input.",
        "",
        "bits per byte:",
        "",
        "| configuration | " + " | ".join(files) + " | all files |",
        "|---|" + "---:|" * (len(files) + 1),
    ]
    for label in labels:
        cells = [f"{by[(f, label)]['bpb']:.4f}" if (f, label) in by else "" for f in files]
        size, raw = _total(rows, label)
        total = f"{size * 8 / raw:.4f}" if all(cells) else "(not all run)"
        lines.append(f"| {label} | " + " | ".join(c or "not run" for c in cells) + f" | {total} |")
    base0 = {r["file"]: r for r in rows}
    for name in next(iter(rows))["baselines"]:
        cells = [f"{base0[f]['baselines'][name] * 8 / base0[f]['raw']:.4f}" for f in files]
        size = sum(base0[f]["baselines"][name] for f in files)
        raw = sum(base0[f]["raw"] for f in files)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {size * 8 / raw:.4f} |")
    lines += [
        "",
        "| file | raw bytes | configuration | size | bpb | tokens | skipped | compress KB/s | decompress KB/s "
        "| compress tok/s | decompress tok/s | peak RSS MB | GPU GiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        skipped = f"{r['skipped'] / r['tokens']:.1%}" if r["tokens"] else ""
        lines.append(
            f"| {r['file']} | {r['raw']} | {r['label']} | {r['size']} | {r['bpb']:.4f} | {r['tokens']} | {skipped} | "
            f"{r['compress_kbs']:.2f} | {r['decompress_kbs']:.2f} | {r['compress_tps']:.0f} | "
            f"{r['decompress_tps']:.0f} | {r['peak_rss_mb']:.0f} | {r['gpu_mem_gib']:.1f} |"
        )
    for f in files:
        r = base0[f]
        for name, size in r["baselines"].items():
            lines.append(f"| {f} | {r['raw']} | {name} | {size} | {size * 8 / r['raw']:.4f} | | | | | | | | |")
    lines += ["", "Settings of each configuration (as stored in the files):", ""]
    for label in labels:
        r = next((x for x in rows if x["label"] == label), None)
        lines.append(f"- {label}: `{json.dumps(r['settings'], sort_keys=True)}`" if r else f"- {label}: not run")
    lines.append(f"- engine: `{rows[0]['profile']}`")
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = list(dict.fromkeys(r["file"] for r in rows))
    series: dict[str, dict[str, float]] = {}
    for r in rows:
        series.setdefault(r["label"], {})[r["file"]] = r["bpb"]
    for r in rows:
        for name, size in r["baselines"].items():
            series.setdefault(name, {})[r["file"]] = size * 8 / r["raw"]
    fig, ax = plt.subplots(figsize=(max(7, 0.35 * len(files) * len(series)), 4.5))
    width = 0.8 / len(series)
    for i, (name, vals) in enumerate(series.items()):
        xs = [j + i * width for j in range(len(files))]
        ax.bar(xs, [vals.get(f, 0) for f in files], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(files))], files, fontsize=8)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
