"""Torch-engine throughput: a lane-count sweep of the decode step, and whole files
compressed and decompressed through the public API (round trip checked).

    python benchmarks/gpu.py sweep --lanes 256,512,1024,2048 --context 512 --steps 256
    python benchmarks/gpu.py file ../shared/corpora/silesia/dickens --lanes 1248 \
        --context 512 --slide 128 --chunk-bytes 8192 [--gpus N]

Writes Markdown and JSON next to --out (default benchmarks/results/gpu-*).
Run on the GPU machine through the `device` tool (see README, "GPU engine").
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


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return "cpu"


def sweep(args) -> list[dict]:
    """Encode `steps` tokens in every lane of one group; time the second run
    (the first compiles and captures the graph)."""
    import numpy as np
    import torch

    from nacrith.engines.torch_float.groups import GroupRunner
    from nacrith.engines.torch_float.workers import _model
    from nacrith.modelfile import resolve_model
    from nacrith.settings import SCHEDULE_GROUPS, Settings

    path = str(resolve_model(args.model))
    model = _model(path, args.device)
    rng = np.random.default_rng(0)
    rows = []
    for lanes in [int(x) for x in args.lanes.split(",")]:
        st = Settings(context=args.context, slide=args.slide, lanes=lanes, schedule=SCHEDULE_GROUPS).validate()
        runner = GroupRunner(model, st, bos=1)
        toks = rng.integers(17, model.n_vocab, size=(lanes, args.steps)).tolist()
        runner.encode(toks)  # warm-up: compile + capture
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
        t0 = time.perf_counter()
        runner.encode(toks)
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        dt = time.perf_counter() - t0
        mem = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
        row = dict(lanes=lanes, context=args.context, steps=args.steps, seconds=round(dt, 3),
                   tokens_per_s=round(lanes * args.steps / dt), ms_per_step=round(1000 * dt / args.steps, 2),
                   gpu_mem_gib=round(mem, 2))
        print(row, flush=True)
        rows.append(row)
        del runner
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return rows


def one_file(args) -> list[dict]:
    import torch

    import nacrith

    data = Path(args.file).read_bytes()
    settings = dict(context=args.context, slide=args.slide, chunk_bytes=args.chunk_bytes,
                    chunk_tokens=args.chunk_tokens, lanes=args.lanes)
    rows = []
    for gpus in [int(x) for x in args.gpus.split(",")]:
        comp = nacrith.Compressor(model=args.model, engine="torch", device=args.device, gpus=gpus, **settings)
        dec = nacrith.Decompressor(model=args.model, device=args.device, gpus=gpus)
        # Warm-up: every worker loads the model, compiles the kernels for this lane
        # count and captures its graphs; reported apart as the cold start.
        t0 = time.perf_counter()
        comp.lm.engine.warm_up(comp.settings, comp.lm.model.bos)
        head = data[:2048]
        if dec.decompress(comp.compress(head)) != head:
            raise SystemExit("warm-up round trip FAILED")
        t_warm = time.perf_counter() - t0
        tokens = 0

        def count(n, bits, nbytes):
            nonlocal tokens
            tokens += n

        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0 = time.perf_counter()
        blob = comp.compress(data, progress=count)
        t_c = time.perf_counter() - t0
        if prof is not None:
            import pstats

            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        t0 = time.perf_counter()
        back = dec.decompress(blob)
        t_d = time.perf_counter() - t0
        ok = back == data
        comp.lm.engine.close()
        mem = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
        row = dict(
            file=os.path.basename(args.file), raw=len(data), compressed=len(blob),
            bpb=round(8 * len(blob) / len(data), 4), tokens=tokens, gpus=gpus, **settings,
            warmup_s=round(t_warm, 1), compress_s=round(t_c, 2), decompress_s=round(t_d, 2),
            compress_tok_s=round(tokens / t_c), decompress_tok_s=round(tokens / t_d),
            compress_MB_s=round(len(data) / t_c / 1e6, 3), decompress_MB_s=round(len(data) / t_d / 1e6, 3),
            gpu_mem_gib_main=round(mem, 2), round_trip=ok,
            sha256=hashlib.sha256(blob).hexdigest()[:16],
        )
        print(row, flush=True)
        rows.append(row)
        if args.save_blob:
            Path(args.save_blob + f".{gpus}gpu.nc").write_bytes(blob)
        if not ok:
            raise SystemExit("round trip FAILED")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sweep", "file"])
    ap.add_argument("file", nargs="?")
    ap.add_argument("--model")
    ap.add_argument("--device", default=None)
    ap.add_argument("--lanes", default="1024")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--slide", type=int, default=128)
    ap.add_argument("--chunk-bytes", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--chunk-tokens", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="cProfile the compress call")
    ap.add_argument("--gpus", default="1")
    ap.add_argument("--save-blob")
    ap.add_argument("--out", default="benchmarks/results/gpu")
    args = ap.parse_args()
    if args.device is None:
        from nacrith.engines.torch_float.workers import default_device

        args.device = default_device()
    if args.what == "file":
        args.lanes = int(args.lanes)
        rows = one_file(args)
    else:
        rows = sweep(args)
    out = Path(args.out + f"-{args.what}")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(device=_device_name(), command=" ".join(sys.argv))
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    keys = list(rows[0])
    lines = [f"Device: {meta['device']}. Command: `python {meta['command']}`", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
