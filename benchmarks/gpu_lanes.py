"""The integer engine's decoder step on a GPU against its lane count.

    python benchmarks/gpu_lanes.py --lanes 2,25,311 [--out benchmarks/results/gpu-lanes]

For each lane count, makes the decoder's step state (groups.GroupRunner, default
settings) with every lane's window full (slot context - 1: each step's attention
reads the whole window, as it does through most of a long chunk), times the captured
step (CUDA graph replay) and profiles one uncaptured step: its kernels by summed time.
No file is coded: the lanes' coder states are zeros, which changes no kernel's work.
A step's time times a chunk's tokens is the floor of a group's decompression.
Writes <out>.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from nacrith.api import load_model, settings_for
    from nacrith.engines.integer.groups import GroupRunner
    from nacrith.modelfile import default_model_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lanes", default="2,25,311")
    ap.add_argument("--model")
    ap.add_argument("--replays", type=int, default=50)
    ap.add_argument("--rows", type=int, default=14, help="kernels listed per lane count")
    ap.add_argument("--out", default="benchmarks/results/gpu-lanes")
    args = ap.parse_args(argv)
    st = settings_for(engine="int")
    eng = load_model(args.model or default_model_path(), st).engine.inner
    lines = [f"# Decoder step against lanes, {torch.cuda.get_device_name(0)}, torch {torch.__version__}", "",
             f"`python benchmarks/gpu_lanes.py {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')}); "
             f"context {st.context}, windows full, default predictors.", "",
             "| lanes | captured step ms | ms per lane | kernels | kernel time ms |", "| ---: | ---: | ---: | ---: | ---: |"]
    tables = []
    for L in [int(x) for x in args.lanes.split(",")]:
        r = GroupRunner(eng.w, st, 1, L, "cuda")
        with torch.no_grad():
            r._buffers(4096, 64)
            step = r._step()  # captures the step (slot 1)
            r.d_slot.fill_(st.context - 1)
            r.d_pos.fill_(st.context - 1)
            step()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.replays):
                step()
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) / args.replays * 1e3
            with profile(activities=[ProfilerActivity.CUDA]) as p:
                r._decode_step()
                torch.cuda.synchronize()
        ev = [e for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kt = sum(e.device_time for e in ev) / 1e3
        lines.append(f"| {L} | {ms:.2f} | {ms / L:.3f} | {len(ev)} | {kt:.2f} |")
        tables += ["", f"## {L} lanes", "", "```", p.key_averages().table(sort_by="cuda_time_total",
                                                                          row_limit=args.rows), "```"]
        print(lines[-1], flush=True)
        del r, step
        torch.cuda.empty_cache()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines + tables) + "\n")


if __name__ == "__main__":
    main()
