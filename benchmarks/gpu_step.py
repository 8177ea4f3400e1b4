"""Where one decoder step of the integer engine on a GPU spends its time.

    python benchmarks/gpu_step.py ../shared/corpora/canterbury/alice29.txt --bytes 8192

Compresses and decompresses the first --bytes of FILE on the GPU (default settings:
one chunk, one lane), then times the captured decoder step (CUDA graph replay, the
state left where decoding ended, so no lane advances) and profiles one uncaptured
step: how many kernels it launches, their summed time, and the costliest ones.
Then profiles one warm compression the same way: of the same bytes, or with
--compress-bytes N of the first N bytes (compressed once unprofiled first, so the
profile is of a warm call). Writes <out>.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_int import _twice  # noqa: E402 (cold and warm timing, as in gpu_int's tables)


def main(argv=None) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    import nacrith
    from nacrith import api

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--bytes", type=int, default=8192)
    ap.add_argument("--replays", type=int, default=200)
    ap.add_argument("--compress-bytes", type=int, default=0, help="profile the compression of this many bytes")
    ap.add_argument("--out", default="benchmarks/results/gpu-step")
    args = ap.parse_args(argv)
    data = Path(args.file).read_bytes()[: args.bytes]
    lines = [f"# One decoder step of the integer engine, {torch.cuda.get_device_name(0)}, torch {torch.__version__}",
             "", f"`python benchmarks/gpu_step.py {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')})", ""]

    row = {}
    comp = nacrith.Compressor(engine="int", device="cuda")
    blob = _twice(row, "compress", lambda: comp.compress(data))
    dec = nacrith.Decompressor(device="cuda")
    assert _twice(row, "decompress", lambda: dec.decompress(blob)) == data
    lines += [f"- {verb}, cold / warm: {row[verb + '_cold_s']:.2f} / {row[verb + '_warm_s']:.2f} s"
              for verb in ("compress", "decompress")]
    lm = [v for v in api._CACHE.values() if getattr(v.engine, "_state", None)][-1]
    r = lm.engine._state[1]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.replays):
        r.graph.replay()
    torch.cuda.synchronize()
    lines.append(f"- lanes {r.lanes}: captured step {(time.perf_counter() - t0) / args.replays * 1e3:.2f} ms")
    with torch.no_grad():
        r._decode_step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            r._decode_step()
            torch.cuda.synchronize()
    ev = [e for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    lines.append(f"- one uncaptured step: {len(ev)} kernels, {sum(e.device_time for e in ev) / 1e3:.2f} ms of kernel time")
    lines += ["", "```", p.key_averages().table(sort_by="cuda_time_total", row_limit=25), "```", ""]
    big = Path(args.file).read_bytes()[: args.compress_bytes] if args.compress_bytes else data
    if args.compress_bytes:
        comp.compress(big)  # its first call: what a new size sets up stays out of the profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        t0 = time.perf_counter()
        comp.compress(big)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    ev = [e for e in p.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    lines += [f"- one warm compression of {len(big):,} bytes, profiled: {wall:.2f} s, {len(ev)} kernels, "
              f"{sum(e.device_time for e in ev) / 1e6:.2f} s of kernel time", "",
              "```", p.key_averages().table(sort_by="cuda_time_total", row_limit=20), "```", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines[:12]))


if __name__ == "__main__":
    main()
