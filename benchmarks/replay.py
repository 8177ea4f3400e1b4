"""Tune the online predictors offline: dump a file's model logits once, then replay
the exact integer predictor pipeline over them under many settings in seconds.

    python benchmarks/replay.py dump ../shared/corpora/canterbury/alice29.txt --context 2048 --slide 512
    python benchmarks/replay.py dump ../shared/corpora/canterbury/alice29.txt --unwrap --context 8192 --slide 1024
    python benchmarks/replay.py run benchmarks/results/tmp/alice29.txt-2048 \
        --config bias_lr=0 --config bias_lr=1000 --config ngram=4,match_min=6,sse_rate=4096

The dump is one lane of llama.cpp over the whole file (float16 logits, ~98 KB a
token, under benchmarks/results/tmp/, which git ignores). Replayed costs are the
ideal code lengths of the integer frequencies (what the coder spends, within a few
bytes); only real runs (`nacrith bench`) report file sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def dump(args) -> None:
    from nacrith.formats.nc05 import tokenize_exact
    from nacrith.modelfile import resolve_model
    from nacrith.engines.llama_cpp.model import LlamaModel

    data = Path(args.file).read_bytes()
    if args.head:
        data = data[: args.head]
    if args.unwrap:  # what the model codes of a hard-wrapped file (nacrith/reflow.py)
        from nacrith import reflow

        plan = reflow.plan(data)
        data = plan.text if plan else data
    m = LlamaModel(str(resolve_model(args.model)), n_ctx=args.context, n_seq=1)
    tokens = tokenize_exact(m, data)
    name = Path(args.file).name + ("-unwrapped" if args.unwrap else "")
    out = Path(args.out or f"benchmarks/results/tmp/{name}-{args.context}")
    out.mkdir(parents=True, exist_ok=True)
    logits = np.lib.format.open_memmap(out / "logits.npy", mode="w+", dtype=np.float16,
                                       shape=(len(tokens), m.n_vocab))
    np.save(out / "tokens.npy", np.array(tokens, dtype=np.int64))
    m.clear()
    pending, pos = m.bos, 0
    t0 = time.time()
    for i, tok in enumerate(tokens):
        logits[i] = m.decode([pending], [pos], [0], [1])[0]
        pending, pos = tok, pos + 1
        if pos == args.context:
            m.shift(0, 1, args.slide, pos)
            pos -= args.slide
        if i % 1000 == 999:
            print(f"{i + 1}/{len(tokens)} tokens, {(i + 1) / (time.time() - t0):.1f}/s", flush=True)
    logits.flush()
    (out / "meta.json").write_text(json.dumps(dict(file=args.file, bytes=len(data), context=args.context,
                                                   slide=args.slide, tokens=len(tokens))))


def replay(path: Path, config: dict[str, int], limit: int = 0) -> dict:
    from nacrith.codec.quantize import PRECISION
    from nacrith.predictors.online import OnlineConfig, Online

    meta = json.loads((path / "meta.json").read_text())
    logits = np.load(path / "logits.npy", mmap_mode="r")
    tokens = np.load(path / "tokens.npy")
    n = limit or len(tokens)
    cfg = OnlineConfig(**config)
    pred = Online(cfg, lanes=1, vocab=logits.shape[1], cap=n + 1)
    bits = 0.0
    skipped = 0
    t0 = time.time()
    for i in range(n):
        pred.cheap()
        if pred.enabled_skip and pred.skip_mask()[0]:
            f = pred.skipped_freqs()
            skipped += 1
        else:
            f = pred.freqs(logits[i : i + 1].astype(np.float32))
        y = int(tokens[i])
        bits += PRECISION - float(np.log2(f[0, y]))
        pred.update(np.array([y]))
    nbytes = meta["bytes"] if not limit else None
    return dict(config=config, tokens=n, bits=bits, bpb=bits / nbytes if nbytes else None,
                bits_per_token=bits / n, skipped=skipped, seconds=round(time.time() - t0, 1))


def parse(text: str) -> dict[str, int]:
    if text in ("", "none"):
        return {}
    return {k: int(v) for k, v in (p.split("=") for p in text.split(","))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("file")
    d.add_argument("--context", type=int, default=2048)
    d.add_argument("--slide", type=int, default=512)
    d.add_argument("--head", type=int, default=0)
    d.add_argument("--model")
    d.add_argument("--unwrap", action="store_true", help="dump the unwrapped text, as the encoder codes it")
    d.add_argument("--out")
    r = sub.add_parser("run")
    r.add_argument("dump")
    r.add_argument("--config", action="append", default=None)
    r.add_argument("--limit", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cmd == "dump":
        dump(args)
        return
    for c in args.config or ["none"]:
        print(json.dumps(replay(Path(args.dump), parse(c), args.limit)), flush=True)


if __name__ == "__main__":
    main()
