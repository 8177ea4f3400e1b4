"""The integer engine's products (products.block_linear) on a GPU: blocks tile by tile, and limbs.

    python benchmarks/gpu_linear.py [--out benchmarks/results/gpu-linear]

For SmolLM2's product shapes (inner x outer: qkv 576 x 960, o 576 x 576, gate/up
576 x 3072, down 1536 x 576, logits 576 x 49152) and row counts from a decoder step of
2 or 25 lanes to an encoder run of 311 lanes x 128 rows, times the product with
products._tiles' choice and with other (rows, columns, warps) tiles, on random int16
activations and int8 blocks, and checks that every tiling gives the same integers; for
more than 32 rows also the limb kernel (products._limb_kernel, which block_linear takes
from products._LIMB_ROWS) in several tilings and the limbs as one cuBLAS product
(NACRITH_LIMB_GEMM=cublas), which must give them too. Reports microseconds per product,
tera-operations of the product per second (2 M N K: multiply-adds of the integers, whatever
the int8 products it takes: two a multiply for blocks, six for limbs) and the kernel's
registers and spills per thread. Writes <out>.md and <out>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {"qkv": (576, 960), "o": (576, 576), "up": (576, 3072), "down": (1536, 576), "logits": (576, 49152)}
ROWS = [2, 25, 256, 3200, 39808]
TILES = [None, (16, 32, 4), (32, 64, 4), (64, 64, 4)]
LIMB_TILES = [None, (128, 64, 64, 8), (64, 64, 64, 4), (128, 128, 32, 8), (64, 256, 32, 8), (128, 128, 64, 8)]


class _Recorder:
    """Stands in for products._linear_kernel and keeps the compiled kernel of each launch."""

    def __init__(self, fn):
        self.fn, self.last = fn, None

    def __getitem__(self, grid):
        def go(*a, **k):
            self.last = self.fn[grid](*a, **k)
            return self.last
        return go


def main(argv=None) -> None:
    import numpy as np
    import torch

    from nacrith.engines.integer import products, weights

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/gpu-linear")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    dev = torch.device("cuda")
    rng = np.random.default_rng(0)
    rec = _Recorder(products._linear_kernel)
    products._linear_kernel = rec
    limb_rec = _Recorder(products._limb_kernel)
    products._limb_kernel = limb_rec
    default, limb_rows, limb_default = products._tiles, products._LIMB_ROWS, products._limb_tiles
    rows_out = []
    for name, (k, n) in SHAPES.items():
        # Q4_1-like blocks, as the model's: nibbles, an offset near -8 d
        d = rng.integers(1, 1 << 16, (n, k // 32))
        m = -8 * d + rng.integers(-999, 999, d.shape)
        bw = weights.BlockWeight(rng.integers(0, 16, (n, k)).astype(np.int8), d, m)
        W = products.BlockMatrix.of(bw, dev)
        for M in ROWS:
            if M * n > 400_000_000:  # the logits of 39,808 rows: 16 GB
                continue
            a = torch.from_numpy(rng.integers(-32767, 32768, (M, k))).to(torch.int16).to(dev)
            want = None
            by_limbs = M > 32 and W.limbs is not None  # timed; block_linear takes them from limb_rows
            for tiles in TILES + ([("limbs", t) for t in LIMB_TILES] + [("cublas", None)] if by_limbs else []):
                library = isinstance(tiles, tuple) and tiles[0] == "cublas"
                products._LIMB_GEMM = "cublas" if library else "triton"
                limbs = isinstance(tiles, tuple) and tiles[0] in ("limbs", "cublas")
                products._LIMB_ROWS = 1 if limbs else 1 << 62
                products._tiles = default if tiles is None or limbs else (lambda M_, N_, t=tiles: t)
                products._limb_tiles = limb_default if not limbs or tiles[1] is None else (lambda M_, N_, t=tiles[1]: t)
                try:
                    y = products.block_linear(a, W, None)
                except Exception as e:  # a tiling the card cannot hold (shared memory)
                    print(name, M, tiles, "failed:", str(e)[:120], file=sys.stderr)
                    continue
                torch.cuda.synchronize()
                if want is None:
                    want = y
                same = bool(torch.equal(y, want))
                t0 = time.perf_counter()
                for _ in range(args.reps):
                    products.block_linear(a, W, None)
                torch.cuda.synchronize()
                us = (time.perf_counter() - t0) / args.reps * 1e6
                kk = None if library else (limb_rec.last if limbs else rec.last)
                label = ("limbs, one cuBLAS product" if library else f"limbs {products._limb_tiles(M, n)}") if limbs \
                    else str(tiles or default(M, n))
                chosen = (limbs and not library and tiles[1] is None) if M >= limb_rows else (tiles is None)
                row = dict(product=name, rows=M, tiles=label, chosen=chosen,
                           us=round(us, 1), tops=round(2 * M * n * k / us / 1e6, 1), regs=getattr(kk, "n_regs", None),
                           spills=getattr(kk, "n_spills", None), same=same)
                rows_out.append(row)
                print(json.dumps(row), flush=True)
    products._tiles, products._linear_kernel, products._limb_kernel = default, rec.fn, limb_rec.fn
    products._LIMB_ROWS, products._limb_tiles, products._LIMB_GEMM = limb_rows, limb_default, "triton"
    meta = dict(device=f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}",
                command="python benchmarks/gpu_linear.py " + " ".join(sys.argv[1:]), date=time.strftime("%Y-%m-%d"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows_out), indent=1))
    lines = [f"# Block product tiles on {meta['device']}", "", f"`{meta['command']}` ({meta['date']}); "
             "the time of one product (allocation of its result included), mean of --reps; * what block_linear takes; "
             "TOPS: 2 M N K a product.",
             "", "| product | rows | tiles (rows, cols, warps) | us | TOPS | regs | spills | same integers |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows_out:
        lines.append(f"| {r['product']} | {r['rows']:,} | {r['tiles']}{' *' if r['chosen'] else ''} | {r['us']} | "
                     f"{r['tops']} | {r['regs']} | {r['spills']} | {r['same']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
