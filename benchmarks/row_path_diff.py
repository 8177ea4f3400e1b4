"""Where the GPU integer engine's row path leaves the C kernels' integers, call by call.

    NACRITH_ROW_KERNELS=1 python benchmarks/row_path_diff.py [cuda]

The real model cut to one and to two layers, two lanes, a window of 24 with a slide of 8:
a 17-input run, then runs of 1, 2 and 4 inputs and one after the slide. For each call it
prints (inputs, activations equal, exponents equal, rows that differ) for the staged path,
the row kernels, the row kernels with new buffers at every call, and the row kernels with
no product's inner dimension cut. Needs the C kernels (they are the reference) and a device
where the Triton kernels run (a GPU, or TRITON_INTERPRET=1, slowly).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch

from nacrith.engines.integer import kernels, products, weights
from nacrith.engines.integer.groups import Group, GroupBackend
from nacrith.engines.integer.lanes import Lanes
from nacrith.engines.integer.native import Native
from nacrith.modelfile import default_model_path

L, C, S = 2, 24, 8
RUNS = (17, 1, 2, 4, 1)


def native(w, tk):
    lanes, out, i = Lanes(w, Native(w, L, C), L, C, S), [], 0
    for R in RUNS:
        for j in range(L):
            lanes.make_room(j)
        a, e = lanes.run(list(range(L)), [list(tk[j, i : i + R]) for j in range(L)], logits=False)
        out.append((np.asarray(a).astype(np.int64), np.asarray(e).reshape(-1).astype(np.int64)))
        i += R
    return out


def group(w, tk, dev, rows: bool, fresh: bool = False):
    be = GroupBackend(w, L, C, dev)
    be.row_kernels = rows
    g, out, i = Group(be, C, S), [], 0
    toks = torch.from_numpy(tk).to(dev)
    for R in RUNS:
        g.make_room()
        with torch.no_grad():
            a, e = g.run(toks[:, i : i + R])
        out.append((a.cpu().long().numpy(), e.cpu().reshape(-1).numpy()))
        i += R
        if fresh:
            be._small.clear()
    return out


def main() -> None:
    dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
    full = weights.load(default_model_path())
    tk = np.random.default_rng(7).integers(0, full.n_vocab, (L, sum(RUNS)))
    tk[:, 0] = 1
    for n in (1, 2):
        w = dataclasses.replace(full, n_layer=n, layers=full.layers[:n])
        ref = native(w, tk)

        def show(name, got):
            print(f"{n} layer(s), {name}:", [(R, bool(np.array_equal(g[0], r[0])), bool(np.array_equal(g[1], r[1])),
                                              int((g[0] != r[0]).any(1).sum())) for R, g, r in zip(RUNS, got, ref)],
                  flush=True)

        show("staged", group(w, tk, dev, False))
        if not kernels.available(torch.device(dev)):
            print("the Triton kernels do not run here (a GPU, or TRITON_INTERPRET=1): no row path")
            continue
        show("rows", group(w, tk, dev, True))
        show("rows, new buffers", group(w, tk, dev, True, fresh=True))
        cuts = products._inner_cuts
        products._inner_cuts = lambda M, N, blocks: 1
        try:
            show("rows, no cuts", group(w, tk, dev, True))
        finally:
            products._inner_cuts = cuts


if __name__ == "__main__":
    main()
