"""What one window slide costs against re-evaluating the window (llama.cpp, CPU).

When a lane's window of `context` tokens is full, the engine drops the `slide` oldest
tokens after BOS from the KV cache and shifts the rest down (sequence remove +
position add, which re-rotates the cached keys). The alternative is to clear the
cache and evaluate the kept `context - slide` tokens again. This script times both
on real text, one lane, the re-evaluation in batches of 512 tokens (its fastest form).
llama.cpp applies the key re-rotation lazily, at the next decode, so the slide is timed
as (shift + the next one-token decode) minus a one-token decode without a shift.

    python benchmarks/slide_cost.py ../shared/corpora/canterbury/alice29.txt --contexts 512,1024,2048
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fill(lm, tokens, start_pos: int = 0, batch: int = 512) -> None:
    for a in range(0, len(tokens), batch):
        part = tokens[a : a + batch]
        lm.decode(part, list(range(start_pos + a, start_pos + a + len(part))), [0] * len(part),
                  [0] * (len(part) - 1) + [1])


def measure(model_path: str, text: bytes, context: int, slide: int, repeats: int) -> dict:
    from nacrith.engines.llama_cpp.model import LlamaModel

    lm = LlamaModel(model_path, n_ctx=context, n_seq=1, n_batch=512)
    toks = [lm.bos] + lm.tokenize(text)[: context - 1]
    if len(toks) < context:
        raise SystemExit("text too short for this context")
    kept = [toks[0]] + toks[1 + slide :]
    t_slide, t_reeval = [], []
    nxt = toks[-1]
    for _ in range(repeats):
        lm.clear()
        _fill(lm, toks[:-1])
        t0 = time.perf_counter()
        lm.decode([nxt], [context - 1], [0], [1])  # a plain step at the window's end
        t_plain = time.perf_counter() - t0
        lm.forget(0)
        _fill(lm, toks[:-1])
        t0 = time.perf_counter()
        lm.shift(0, 1, slide, context - 1)
        lm.decode([nxt], [context - 1 - slide], [0], [1])
        t_slide.append(time.perf_counter() - t0 - t_plain)
        lm.clear()
        t0 = time.perf_counter()
        _fill(lm, kept)
        t_reeval.append(time.perf_counter() - t0)
    lm.close()
    s, r = statistics.median(t_slide), statistics.median(t_reeval)
    return dict(context=context, slide=slide, kept_tokens=len(kept), slide_ms=round(1000 * s, 3),
                reeval_ms=round(1000 * r, 1), ratio=round(r / s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--model")
    ap.add_argument("--contexts", default="512,1024,2048")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/slide_cost")
    args = ap.parse_args()
    from nacrith.modelfile import resolve_model

    path = str(resolve_model(args.model))
    text = Path(args.file).read_bytes()
    rows = []
    for c in [int(x) for x in args.contexts.split(",")]:
        row = measure(path, text, c, c // 4, args.repeats)
        print(row, flush=True)
        rows.append(row)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(command=" ".join(sys.argv), rows=rows), indent=1))
    lines = [f"Command: `python {' '.join(sys.argv)}` (one lane, median of {args.repeats})", "",
             "| context | slide | kept tokens | slide (ms) | re-evaluation (ms) | re-evaluation / slide |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['context']} | {r['slide']} | {r['kept_tokens']} | {r['slide_ms']} | {r['reeval_ms']} | {r['ratio']}x |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
