"""Fuzz campaign that reaches the model decoder (not run in CI).

    python benchmarks/fuzz.py --execs 100000 --workers 16 --engines int,llama,torch

Seeds are small NC05 and NC06 files made here by each engine (the real default
model, a small window). Every execution takes one seed and changes its frame
structurally: a table field (type, codec, raw length, token count, coded length,
chunk CRC), the coded bytes of a chunk (flipped, replaced, inserted, deleted,
cut), a setting, the profile, the header's sizes, digest or vocabulary, or
chunks spliced from another seed. Then every header, table and payload CRC is
written anew (container.write_frame), so the bounds checks and the model decoder
behind them are what meet the damage; a tenth of executions instead change raw
bytes and fix only the header CRC.

Each decode must end in one of: the seed's exact content, or a NacrithError.
Anything else is counted: another exception (a crash of the contract), wrong
bytes, a worker that died (a crash of the process) or an execution over
--hang seconds. Executions are numbered and their mutations derive from
(--seed, number) alone, so `--only N` replays one. Failing inputs are kept in
benchmarks/results/fuzz-failures/. Writes benchmarks/results/<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import struct
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TEXT = (
    b"Alice was beginning to get very tired of sitting by her sister on the bank, "
    b"and of having nothing to do."
)
BINARY = bytes(range(0, 256, 7)) * 2
# text with bytes the tokenizer cannot spell (Latin-1, a control byte): an NC06 text entry
# with byte escapes; and text, binary, text as three NC06 segments
ESCAPED = TEXT[:40] + b"caf\xe9 \x04" + TEXT[40:]
MIXED = TEXT[:50] + BINARY + TEXT[50:]
MIXED_SEGMENTS = [(0, 50, True), (50, 50 + len(BINARY), False), (50 + len(BINARY), len(MIXED), True)]
SMALL = dict(context=48, slide=16, chunk_bytes=48, lanes=3)
FIELDS = ("type", "codec", "raw_len", "n_tokens", "coded_len", "raw_crc32")


TORCH_DEVICE = "cpu"


def make_seeds(engines: list[str]) -> list[dict]:
    import nacrith
    from nacrith.formats import nc06

    seeds = []
    for engine in engines:
        opts = dict(SMALL, engine=engine)
        if engine == "torch":
            opts["device"] = TORCH_DEVICE
        c = nacrith.Compressor(format="nc06", **opts)
        for fmt, raw in (("nc05", TEXT), ("nc06", ESCAPED), ("nc06-mixed", MIXED)):
            # NC06 frames keep their text entries even where a byte codec would be smaller
            if fmt == "nc05":
                blob = nacrith.compress(raw, format="nc05", **opts)
            else:  # segments given (small seeds: segments.py cuts 1 KiB blocks)
                segs = MIXED_SEGMENTS if fmt == "nc06-mixed" else [(0, len(raw), True)]
                blob = nc06._hybrid(c.lm, c.settings, raw, segs, None, True)
            assert nacrith.decompress(blob, device=opts.get("device")) == raw
            seeds.append(dict(engine=engine, format=fmt, raw=raw, blob=blob))
    return seeds


def _near(rng: random.Random, v: int) -> int:
    pick = rng.randrange(8)
    if pick < 4:
        return max(0, v + rng.choice((-3, -2, -1, 1, 2, 3)))
    if pick == 4:
        return v * rng.choice((2, 3, 16))
    if pick == 5:
        return v // rng.choice((2, 3))
    if pick == 6:
        return rng.choice((0, 1, 255, 1 << 16, (1 << 32) - 1))
    return rng.randrange(1 << 32)


def _edit_bytes(rng: random.Random, b: bytes) -> bytes:
    b = bytearray(b)
    for _ in range(rng.choice((1, 1, 1, 2, 4))):
        op = rng.randrange(5)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[pos % len(b)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[pos % len(b)] = rng.randrange(256)
        elif op == 2:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 4))))
        elif op == 3 and b:
            del b[pos : pos + rng.choice((1, 4))]
        else:
            del b[pos:]
    return bytes(b)


def mutate(seeds: list[dict], seed: int, n: int) -> tuple[int, str, bytes]:
    """(seed index, what was changed, the mutated file) for execution n."""
    from nacrith.formats import container

    rng = random.Random(seed * 1_000_003 + n)
    si = rng.randrange(len(seeds))
    blob = seeds[si]["blob"]
    if rng.random() < 0.1:  # raw bytes, header CRC fixed: the parser is what meets it
        b = bytearray(_edit_bytes(rng, blob))
        try:
            body_len = struct.unpack_from("<I", b, 8)[0]
            struct.pack_into("<I", b, 12 + body_len, container.crc32(bytes(b[: 12 + body_len])))
        except struct.error:
            pass
        return si, "bytes", bytes(b)
    header, pos = container.read_header(blob)
    payloads, _ = container.frame_payloads(blob, header, pos)
    payloads = list(payloads)
    entries = header.entries
    kind = rng.choice(("table", "table", "payload", "payload", "payload", "settings", "header", "splice"))
    i = rng.randrange(len(entries))
    e = entries[i]
    if kind == "table":
        field = rng.choice(FIELDS)
        setattr(e, field, _near(rng, getattr(e, field)) & 0xFFFFFFFF if field != "type" else rng.randrange(4))
        if field in ("type", "codec"):
            setattr(e, field, getattr(e, field) & 0xFF)
        if field == "coded_len" and rng.random() < 0.7:  # payload follows the new length
            p = payloads[i][: e.coded_len]
            payloads[i] = p + bytes(rng.randrange(256) for _ in range(min(e.coded_len - len(p), 4096)))
            e.coded_len = len(payloads[i])
        what = f"table {i} {field}"
    elif kind == "payload":
        payloads[i] = _edit_bytes(rng, payloads[i])
        e.coded_len = len(payloads[i])
        what = f"payload {i}"
    elif kind == "settings":
        if header.settings:
            name = rng.choice(sorted(header.settings))
            header.settings[name] = _near(rng, header.settings[name])
            what = f"setting {name}"
        else:
            what = "no settings"
    elif kind == "header":
        field = rng.choice(("raw_size", "content_sha256", "vocab", "profile", "model_sha256"))
        if field == "raw_size":
            header.raw_size = _near(rng, header.raw_size)
        elif field == "vocab":
            header.vocab = _near(rng, header.vocab)
        elif field == "profile":
            header.profile = _edit_bytes(rng, header.profile.encode()).decode("ascii", "replace")
        else:
            v = bytearray(getattr(header, field) or bytes(32))
            v[rng.randrange(len(v))] ^= 1 << rng.randrange(8)
            setattr(header, field, bytes(v))
        what = f"header {field}"
    else:  # chunks of another seed of the same engine put in place of this one's
        other = [j for j, s in enumerate(seeds) if s["engine"] == seeds[si]["engine"] and j != si] or [si]
        ob = seeds[rng.choice(other)]["blob"]
        oh, op = container.read_header(ob)
        ops, _ = container.frame_payloads(ob, oh, op)
        k = rng.randrange(len(oh.entries))
        entries[i], payloads[i] = oh.entries[k], ops[k]
        header.raw_size = sum(x.raw_len for x in entries)
        what = f"splice {i}"
    try:
        out = container.write_frame(header, payloads, final=rng.random() > 0.02)
    except (ValueError, struct.error, OverflowError):
        return si, what + " (unwritable)", blob[: rng.randrange(len(blob))]
    return si, what, out


_SEEDS: list[dict] = []
_DEC: dict = {}


def _init(seeds, threads, torch_device="cpu"):
    import nacrith
    from nacrith.engines import Exclusive

    real = Exclusive.decode

    def counted(self, *a, **k):  # counts the executions that reached the model decoder
        _DEC["model_calls"] += 1
        return real(self, *a, **k)

    Exclusive.decode = counted
    _DEC["model_calls"] = 0
    _SEEDS[:] = seeds
    _DEC["cpu"] = nacrith.Decompressor(threads=threads)
    _DEC["torch"] = nacrith.Decompressor(threads=threads, device=torch_device)


def run_batch(seed: int, numbers: list[int], hang: float) -> list[dict]:
    import nacrith

    out = []
    for n in numbers:
        si, what, blob = mutate(_SEEDS, seed, n)
        s = _SEEDS[si]
        dec = _DEC["torch" if s["engine"] == "torch" else "cpu"]
        t0 = time.perf_counter()
        calls = _DEC["model_calls"]
        row = dict(n=n, seed=si, what=what)
        try:
            got = dec.decompress(blob)
            row["outcome"] = "exact" if got == s["raw"] else "WRONG BYTES"
        except nacrith.NacrithError as exc:
            row["outcome"] = type(exc).__name__
        except Exception as exc:  # the contract is broken: keep the input and the trace
            row["outcome"] = f"CRASH {type(exc).__name__}"
            row["trace"] = traceback.format_exc(limit=6)
        row["s"] = time.perf_counter() - t0
        row["model"] = _DEC["model_calls"] > calls
        if row["s"] > hang:
            row["outcome"] = "HANG"
        if row["outcome"].isupper() or row["outcome"].startswith("CRASH"):
            row["blob"] = blob.hex()
        out.append(row)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--execs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=1, help="model threads per worker")
    ap.add_argument("--engines", default="int,llama")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=0, help="stop starting batches after this long (0: run all)")
    ap.add_argument("--hang", type=float, default=60.0, help="seconds after which one execution counts as a hang")
    ap.add_argument("--torch-device", default="cpu", help="where the torch engine's seeds are made and decoded")
    ap.add_argument("--only", type=int, help="replay one execution number and print it")
    ap.add_argument("--name", default="fuzz")
    ap.add_argument("--out", default=str(RESULTS), help="folder for the tables and failing inputs")
    args = ap.parse_args(argv)
    global TORCH_DEVICE
    TORCH_DEVICE = args.torch_device
    t_seed = time.perf_counter()
    seeds = make_seeds(args.engines.split(","))
    if args.only is not None:
        _init(seeds, args.threads, args.torch_device)
        print(json.dumps(run_batch(args.seed, [args.only], args.hang)[0], indent=1))
        return
    seed_s = time.perf_counter() - t_seed
    numbers = list(range(args.execs))
    batches = [numbers[i : i + args.batch] for i in range(0, len(numbers), args.batch)]
    rows, died = [], 0
    t0 = time.perf_counter()
    import multiprocessing

    # CUDA does not survive a fork: with the torch seeds on a GPU the workers are spawned
    ctx = multiprocessing.get_context("spawn" if args.torch_device.startswith("cuda") else "fork")
    with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_init,
                             initargs=(seeds, args.threads, args.torch_device)) as pool:
        pending = {pool.submit(run_batch, args.seed, b, args.hang): b for b in batches}
        while pending:
            if args.seconds and time.perf_counter() - t0 > args.seconds:
                for f in list(pending):  # batches not started are dropped; running ones finish
                    if f.cancel():
                        pending.pop(f)
                if not pending:
                    break
            done, _ = wait(pending, timeout=args.hang * args.batch, return_when=FIRST_COMPLETED)
            if not done:
                raise SystemExit(f"no batch finished in {args.hang * args.batch:.0f} s: a hang; "
                                 f"replay its executions with --only ({sorted(pending.values())[0][:3]}...)")
            for f in done:
                b = pending.pop(f)
                try:
                    rows += f.result()
                except Exception as exc:  # a worker process died (a crash in native code)
                    died += 1
                    rows += [dict(n=n, seed=-1, what="?", outcome=f"WORKER DIED {type(exc).__name__}", s=0.0) for n in b]
            print(f"\r{len(rows)}/{args.execs} executions", end="", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    print(file=sys.stderr)
    report(args, seeds, rows, wall, seed_s, died)


def report(args, seeds, rows, wall, seed_s, died) -> None:
    out_dir = Path(args.out)
    bad = [r for r in rows if r["outcome"].isupper() or r["outcome"].startswith(("CRASH", "WRONG", "WORKER", "HANG"))]
    fail_dir = out_dir / "fuzz-failures"
    for r in bad:
        if "blob" in r:
            fail_dir.mkdir(parents=True, exist_ok=True)
            (fail_dir / f"{args.name}-{r['n']}.nc").write_bytes(bytes.fromhex(r["blob"]))
    by_engine = Counter()
    by_outcome = {}
    model_runs = Counter()
    for r in rows:
        eng = seeds[r["seed"]]["engine"] + "/" + seeds[r["seed"]]["format"] if r["seed"] >= 0 else "?"
        by_engine[eng] += 1
        by_outcome.setdefault(eng, Counter())[r["outcome"]] += 1
        model_runs[eng] += bool(r.get("model"))
    slowest = max((r["s"] for r in rows), default=0.0)
    # the seconds of the slowest executions: what a hostile file of this size can cost
    times = sorted(r["s"] for r in rows)
    summary = dict(
        name=args.name, date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
        command=" ".join(["python", "benchmarks/fuzz.py"] + sys.argv[1:]), executions=len(rows), wall_s=round(wall, 1),
        seed_s=round(seed_s, 1), workers=args.workers, execs_per_s=round(len(rows) / wall, 1),
        failures=len(bad), crashes=sum(r["outcome"].startswith(("CRASH", "WORKER")) for r in bad),
        hangs=sum(r["outcome"] == "HANG" for r in bad), wrong_bytes=sum(r["outcome"] == "WRONG BYTES" for r in bad),
        slowest_s=round(slowest, 2), p99_s=round(times[int(0.99 * (len(times) - 1))], 3) if times else 0.0,
        median_s=round(times[len(times) // 2], 4) if times else 0.0, per_seed={k: dict(v) for k, v in by_outcome.items()},
        model_runs=dict(model_runs),
        failing=[{k: r[k] for k in ("n", "what", "outcome")} for r in bad[:50]],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    outcomes = sorted({o for c in by_outcome.values() for o in c})
    lines = [
        f"# Fuzz campaign `{args.name}` ({summary['date']}, {summary['machine']})", "",
        f"`{summary['command']}`", "",
        f"{len(rows):,} executions in {wall:.0f} s ({summary['execs_per_s']}/s, {args.workers} workers); "
        f"**{summary['crashes']} crashes, {summary['hangs']} hangs, {summary['wrong_bytes']} wrong outputs**; "
        f"slowest execution {slowest:.2f} s (median {summary['median_s']} s, 99th percentile {summary['p99_s']} s); "
        f"seeds made in {seed_s:.0f} s.", "",
        "| seed (engine/format) | executions | model decoder ran | " + " | ".join(outcomes) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in outcomes) + " |",
    ]
    for eng in sorted(by_engine):
        lines.append(f"| {eng} | {by_engine[eng]:,} | {model_runs[eng]:,} | "
                     + " | ".join(f"{by_outcome[eng].get(o, 0):,}" for o in outcomes) + " |")
    lines += ["", "\"model decoder ran\": executions that got past every parse and bounds check into an engine's decode."]
    if bad:
        lines += ["", "Failing executions (replay with `--only N --seed S`):", ""]
        lines += [f"- {r['n']}: {r['what']} -> {r['outcome']}" for r in bad[:50]]
    (out_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
