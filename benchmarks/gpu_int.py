"""The integer engine on a GPU: whole files through the public API, cold and warm.

    python benchmarks/gpu_int.py ../shared/corpora/silesia/dickens --sizes 40000,200000,800000
    python benchmarks/gpu_int.py FILE --sizes 0 --settings chunk_bytes=8192   # all of FILE
    python benchmarks/gpu_int.py FILE --sizes 0 --gpus 1 && python benchmarks/gpu_int.py FILE --sizes 0 --gpus 4 \
        --out benchmarks/results/gpu-int-4   # the same SHA-256 in both tables
    python benchmarks/gpu_int.py ../shared/corpora/canterbury/alice29.txt --sizes 32768 --levels 1,2,3,4,5,6,7,8,9 \
        --fresh --out benchmarks/results/levels-gpu-h200

For each size, the first `size` bytes of each file are compressed and decompressed
twice in this process: the first ("cold") includes loading the model and whatever
the first call sets up (kernel choices, the decoder's CUDA graph), the second
("warm") is the steady state. Every round trip is compared with the input. The
files made are kept under --blobs (to decode them on another machine: the same
integers on any CPU or GPU). With --fresh each level runs in a process of its own
(as `nacrith -N FILE` would), its rows appended. Writes <out>.md and <out>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    if device == "native":
        return f"cpu ({os.cpu_count()} cores), the C kernels"
    return f"cpu, torch {torch.__version__}"


def _settings(text: str) -> dict:
    out = {}
    for kv in filter(None, text.split(",")):
        k, v = kv.split("=")
        out[k] = int(v)
    return out


def _twice(row: dict, what: str, fn, once: bool = False):
    """fn() cold, then warm; the seconds of each go into row[<verb>_cold_s / _warm_s]
    (once: the cold call only, warm None)."""
    times = []
    for _ in range(1 if once else 2):
        _sync()
        t0 = time.perf_counter()
        result = fn()
        _sync()
        times.append(time.perf_counter() - t0)
        print(f"{what}: {times[-1]:.2f} s", file=sys.stderr, flush=True)
    verb = what.rsplit(" ", 1)[-1]
    row[f"{verb}_cold_s"], row[f"{verb}_warm_s"] = round(times[0], 3), (None if once else round(times[1], 3))
    return result


def run_one(data: bytes, name: str, args, settings: dict, level=None) -> dict:
    import nacrith

    row = dict(file=name, bytes=len(data), settings=settings, level=level)
    device = None if args.device == "native" else args.device  # native: the C kernels on the CPU
    t0 = time.perf_counter()
    row["gpus"] = args.gpus
    comp = nacrith.Compressor(model=args.model, engine="int", device=device, gpus=args.gpus, level=level, **settings)
    row["load_s"] = round(time.perf_counter() - t0, 2)
    blob = _twice(row, f"{name}: compress", lambda: comp.compress(data), args.once)
    dec = nacrith.Decompressor(model=args.model, device=device, gpus=args.gpus)
    back = _twice(row, f"{name}: decompress", lambda: dec.decompress(blob), args.once)
    row["exact"] = back == data
    row["bpb"] = round(8 * len(blob) / len(data), 4)
    row["sha256"] = hashlib.sha256(blob).hexdigest()
    lm = comp.lm
    toks = len(lm.model.tokenize(data))  # the whole input as one text: near the coded count
    row["tokens"] = toks
    if toks:
        row["compress_tok_s"] = round(toks / (row["compress_warm_s"] or row["compress_cold_s"]))
        row["decompress_tok_s"] = round(toks / (row["decompress_warm_s"] or row["decompress_cold_s"]))
    if args.blobs:
        Path(args.blobs).mkdir(parents=True, exist_ok=True)
        (Path(args.blobs) / f"{name}.nc").write_bytes(blob)
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--sizes", default="40000,200000,800000", help="leading bytes of each file (0: all)")
    ap.add_argument("--settings", default="", help="k=v,... stored settings (default: the engine's)")
    ap.add_argument("--levels", default="", help="levels 1..9, a row each (default: no level, the engine's defaults)")
    ap.add_argument("--model")
    ap.add_argument("--device", default="cuda", help="cuda, cpu (torch) or native (the C kernels)")
    ap.add_argument("--gpus", type=int, default=None, help="GPU workers (default: all visible); the bytes are the same")
    ap.add_argument("--once", action="store_true", help="each way once (cold; tok/s from it): all of a large file in one call")
    ap.add_argument("--blobs", default="")
    ap.add_argument("--append", action="store_true", help="keep the rows already in <out>.json")
    ap.add_argument("--fresh", action="store_true", help="each level in a process of its own (rows appended)")
    ap.add_argument("--out", default="benchmarks/results/gpu-int")
    args = ap.parse_args(argv)
    settings = _settings(args.settings)
    if args.fresh:
        _fresh(args, argv if argv is not None else sys.argv[1:])
        return
    rows = []
    if args.append and Path(args.out).with_suffix(".json").exists():
        rows = json.loads(Path(args.out).with_suffix(".json").read_text())["rows"]
    for f in args.files:
        full = Path(f).read_bytes()
        for size in [int(s) for s in args.sizes.split(",")]:
            data = full[:size] if size else full
            name = f"{Path(f).name}-{len(data)}"
            for level in [int(x) for x in args.levels.split(",")] if args.levels else [None]:
                rows.append(run_one(data, name, args, settings, level))
                write(rows, args)  # after every row: a run cut short keeps what it measured


def _fresh(args, argv) -> None:
    """This command once per level, each in a new process, appending to one table."""
    import subprocess

    base = [a for a in argv if a != "--fresh"]
    levels = args.levels.split(",") if args.levels else [""]
    for i, lv in enumerate(levels):
        cmd = [sys.executable, __file__, *base] + (["--levels", lv] if lv else []) + (["--append"] if i else [])
        subprocess.run(cmd, check=False)  # a level that fails leaves the others to run
    rows = json.loads(Path(args.out).with_suffix(".json").read_text())["rows"]
    write(rows, args, " ".join(["python", "benchmarks/gpu_int.py", *argv]))  # the table names this command


def write(rows, args, command: str | None = None) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = command or " ".join(["python", "benchmarks/gpu_int.py", *sys.argv[1:]])
    meta = dict(device=_device_name(args.device), command=command,
                date=time.strftime("%Y-%m-%d"))
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    lines = [f"# Integer engine on {meta['device']}", "", f"`{meta['command']}` ({meta['date']})", "",
             "cold: first call in the process (model load excluded, shown apart; what torch.compile made "
             "in an earlier process on this machine is reused); warm: the second call.", "",
             "| file | level | bytes | tokens | bpb | load s | compress cold / warm s | decompress cold / warm s "
             "| compress tok/s | decompress tok/s | exact | gpus | SHA-256 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    for r in rows:
        lv = f"-{r['level']}" if r.get("level") else "default"
        lines.append(f"| {r['file']} | {lv} | {r['bytes']:,} | {r.get('tokens') or 0:,} | {r['bpb']} | {r['load_s']} | "
                     f"{r['compress_cold_s']} / {r['compress_warm_s'] or '–'} | "
                     f"{r['decompress_cold_s']} / {r['decompress_warm_s'] or '–'} | "
                     f"{r.get('compress_tok_s', 0):,} | {r.get('decompress_tok_s', 0):,} | {r['exact']} | "
                     f"{r.get('gpus') or 'all'} | {r.get('sha256', '')[:16]} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
