"""How many tokens one k-row run could decode under speculative decoding.

    python benchmarks/draft_accept.py ../shared/corpora/silesia/dickens --bytes 40000

The integer engine's logits do not depend on the schedule, so a decoder could feed a
run the token it knows plus k-1 guessed ones and decode, exactly, every row up to the
first wrong guess: 1 + (consecutive right guesses) tokens per run instead of one. That
count depends only on the text and the draft, never on the model's integers, so it is
measured here on the CPU without decoding anything:
- `model`: guesses are the model's own most probable token given the true history (a
  chain of them stays on the true history while it is right): the best a draft as good
  as the model itself could do; the float llama.cpp model stands in for the integer one;
- `suffix`: the token that last followed the same two tokens (else the same one token)
  earlier in the text, chained; costs nothing on the GPU.
Writes <out>.md and <out>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def model_hits(model, toks: list[int], window: int, batch: int) -> np.ndarray:
    """hit[j] (j >= 1): the model's top token after toks[:j] is toks[j] (windows of
    `window` tokens from an empty context, BOS first, as chunks are coded)."""
    hit = np.zeros(len(toks), bool)
    for w0 in range(0, len(toks), window):
        seq = [model.bos] + toks[w0 : w0 + window]
        inputs = seq[:-1]  # the last token's prediction is not needed
        model.clear()
        top = []
        for b0 in range(0, len(inputs), batch):
            part = inputs[b0 : b0 + batch]
            z = model.decode(part, list(range(b0, b0 + len(part))), [0] * len(part), [True] * len(part))
            top.extend(z.argmax(axis=1).tolist())
        for i, t in enumerate(top):  # top[i] guesses seq[i + 1] = toks[w0 + i]
            hit[w0 + i] = t == toks[w0 + i]
    return hit


def suffix_runs(toks: list[int], k: int) -> list[int]:
    """Tokens per run with the suffix draft, the tables learning from the decoded text."""
    two, one = {}, {}
    runs, i = [], 0

    def guess(a, b):
        return two.get((a, b), one.get(b))

    def learn(j):
        if j >= 1:
            one[toks[j - 1]] = toks[j]
        if j >= 2:
            two[(toks[j - 2], toks[j - 1])] = toks[j]

    while i < len(toks):
        got = 1  # row 0 always decodes token i; the guesses after it are chained
        learn(i)
        prev2, prev1 = (toks[i - 1] if i else None), toks[i]
        while got < k and i + got < len(toks):
            g = guess(prev2, prev1)
            if g != toks[i + got]:
                break
            learn(i + got)
            prev2, prev1 = prev1, g
            got += 1
        runs.append(got)
        i += got
    return runs


def model_runs(hit: np.ndarray, k: int) -> list[int]:
    runs, i = [], 0
    while i < len(hit):
        got = 1
        while got < k and i + got < len(hit) and hit[i + got]:
            got += 1
        runs.append(got)
        i += got
    return runs


def main(argv=None) -> None:
    from nacrith.engines.llama_cpp.model import LlamaModel
    from nacrith.modelfile import default_model_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--bytes", type=int, default=40000, help="leading bytes (0: all)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--window", type=int, default=2048, help="tokens per window for the model draft")
    ap.add_argument("--rows", default="2,4,8,16", help="run sizes k")
    ap.add_argument("--out", default="benchmarks/results/draft-accept")
    args = ap.parse_args(argv)
    data = Path(args.file).read_bytes()
    data = data[: args.bytes] if args.bytes else data
    path = args.model or str(default_model_path())
    model = LlamaModel(path, n_ctx=args.window + 1, n_batch=512)
    toks = model.tokenize(data)
    t0 = time.perf_counter()
    hit = model_hits(model, toks, args.window, 512)
    secs = time.perf_counter() - t0
    rows = []
    for k in (int(x) for x in args.rows.split(",")):
        for name, runs in (("model", model_runs(hit, k)), ("suffix", suffix_runs(toks, k))):
            rows.append({"draft": name, "k": k, "runs": len(runs), "tokens_per_run": round(len(toks) / len(runs), 3)})
    top1 = float(hit[1:].mean())
    lines = [f"# Tokens per k-row run under speculative decoding, {Path(args.file).name} ({len(data):,} bytes, "
             f"{len(toks):,} tokens)", "",
             f"`python benchmarks/draft_accept.py {' '.join(sys.argv[1:])}` ({time.strftime('%Y-%m-%d')}); "
             f"the model's top-1 hit rate {top1:.4f} (llama.cpp, windows of {args.window}, {secs:.0f} s)", "",
             "| draft | k | runs | tokens per run |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['draft']} | {r['k']} | {r['runs']:,} | {r['tokens_per_run']} |" for r in rows]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"file": args.file, "bytes": len(data), "tokens": len(toks),
                                                    "top1": top1, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
