"""The `nacrith` command line."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer

from . import api
from .errors import CorruptDataError, NacrithError
from .codec import bytecodecs
from .formats import container, nc05
from .presets import BEST, DEFAULT_LEVEL, FAST, matching_level
from .settings import ENGINES, TORCH_DEFAULTS, Settings

app = typer.Typer(add_completion=True, no_args_is_help=True, help="Lossless compression with a small language model.")

SUFFIX = ".nc"
_D = Settings()
_T = TORCH_DEFAULTS


def _fail(message: str) -> None:
    typer.echo(f"nacrith: {message}", err=True)
    raise typer.Exit(1)


class _Progress:
    """tqdm bar on stderr, only when stderr is a terminal: bytes, tokens/s, running bpb."""

    def __init__(self, total_bytes: int | None, label: str, show: bool = True):
        self.bar = None
        self.tokens = 0
        self.bits = 0.0
        self.bytes = 0
        self.start = time.perf_counter()
        # total None: unknown (a stream); tqdm then shows bytes and rate without an ETA
        if show and sys.stderr.isatty() and total_bytes != 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=False)

    def __call__(self, tokens: int, bits: float, nbytes: int = 0) -> None:
        self.tokens += tokens
        self.bits += bits
        self.bytes += nbytes
        if self.bar is not None:
            self.bar.update(nbytes)
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            bpb = self.bits / self.bytes if self.bytes else 0.0
            self.bar.set_postfix_str(f"{self.tokens / elapsed:.0f} tok/s, {bpb:.3f} bpb")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_atomic(path: Path, data_iter, force: bool, like: Path | None = None) -> int:
    """Write an iterable of bytes atomically (see _atomic); one clear line if the file exists."""

    def fill(write):
        size = 0
        for part in data_iter:
            write(part)
            size += len(part)
        return size

    try:
        return _atomic(path, force, fill, like)
    except FileExistsError as exc:
        _fail(str(exc))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")


_ENGINE_HELP = (
    "auto (default: int where it runs the model, else llama), int (exact integer model: the file "
    "decodes on any machine, CPU or GPU), llama (llama.cpp, CPU; the file decodes where the CPU "
    "features match) or torch (GPU lanes; the file decodes only on the same engine profile)"
)

_LEVEL_HELP = (
    f"compression level 1-9, also written -1 .. -9, --fast (-1), --best (-9); default {DEFAULT_LEVEL}. "
    "Each sets window, chunking, predictors and unwrapping (README, Levels); settings given explicitly win"
)


@app.command()
def compress(
    file: Path = typer.Argument(..., help="file to compress"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="output path (default FILE.nc)"),
    force: bool = typer.Option(False, "-f", "--force", help="overwrite an existing output"),
    model: Optional[Path] = typer.Option(None, "--model", help="llama.cpp GGUF model (default: embedded SmolLM2-135M)"),
    context: Optional[int] = typer.Option(None, help=f"tokens in the model's window (default {_D.context}; torch engine {_T.context})"),
    slide: Optional[int] = typer.Option(None, help=f"tokens dropped when the window is full (default {_D.slide}; torch engine {_T.slide})"),
    chunk_bytes: Optional[int] = typer.Option(None, help=f"target chunk size in bytes (default {_D.chunk_bytes}; torch engine {_T.chunk_bytes})"),
    lanes: Optional[int] = typer.Option(None, help=f"chunks evaluated together (default {_D.lanes}; torch engine {_T.lanes})"),
    chunk_tokens: Optional[int] = typer.Option(None, help=f"cut text into chunks of this many tokens instead (0: by bytes; default {_D.chunk_tokens}; torch engine {_T.chunk_tokens})"),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all available)"),
    fmt: str = typer.Option("auto", "--format", help="auto (NC05 for text, NC06 otherwise), nc05 or nc06"),
    engine: str = typer.Option(api.DEFAULT_ENGINE, "--engine", help=_ENGINE_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="cuda or cpu: where the torch engine runs (default cuda if present); int engine: run its torch backend there instead of its C kernels (same integers)"),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="GPU workers of the torch engine and the integer engine on cuda (default: all visible)"),
    no_bias: bool = typer.Option(False, "--no-bias", help="online predictors: no adaptive bias head"),
    no_ngram: bool = typer.Option(False, "--no-ngram", help="online predictors: no token N-gram"),
    no_match: bool = typer.Option(False, "--no-match", help="online predictors: no match model"),
    no_mix: bool = typer.Option(False, "--no-mix", help="online predictors: no secondary estimation (and so no N-gram, match or skip)"),
    no_skip: bool = typer.Option(False, "--no-skip", help="always run the model (no LLM skip)"),
    skip: Optional[int] = typer.Option(None, "--skip", help="LLM skip threshold, reliability in 1/65536 (0: off; llama.cpp engine)"),
    no_unwrap: bool = typer.Option(False, "--no-unwrap", help="code hard-wrapped text as it is (no unwrapping)"),
    no_ctx_bias: bool = typer.Option(False, "--no-ctx-bias", help="online predictors: no context bias head (biases per previous token)"),
    level: Optional[int] = typer.Option(None, "--level", min=1, max=9, help=_LEVEL_HELP),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="print nothing on success"),
):
    """Compress FILE to FILE.nc."""
    data = _read(file)
    out = output or file.with_name(file.name + SUFFIX)
    try:
        comp = api.Compressor(
            model=model, threads=threads, format=fmt, context=context, slide=slide,
            chunk_bytes=chunk_bytes, lanes=lanes, chunk_tokens=chunk_tokens, engine=engine, device=device, gpus=gpus,
            level=level, **predictor_options(engine, no_bias, no_ngram, no_match, no_mix, no_skip, skip, no_unwrap, no_ctx_bias),
        )
        prog = _Progress(len(data), "compress", show=not quiet)
        t0 = time.perf_counter()
        try:
            size = _write_atomic(out, comp.iter_frames(data, prog), force, like=file)
        finally:
            prog.close()
        dt = time.perf_counter() - t0
    except (NacrithError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if not quiet:
        bpb = size * 8 / len(data) if data else 0.0
        typer.echo(
            f"{file}: {len(data)} -> {size} bytes, {bpb:.4f} bpb, "
            f"{len(data) / 1024 / max(dt, 1e-9):.2f} KiB/s, {prog.tokens / max(dt, 1e-9):.0f} tok/s -> {out}",
            err=True,
        )


@app.command()
def decompress(
    file: Path = typer.Argument(..., help="file to decompress"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="output path (default: FILE without .nc)"),
    force: bool = typer.Option(False, "-f", "--force", help="overwrite an existing output"),
    model: Optional[Path] = typer.Option(None, "--model", help="the GGUF model the file was made with"),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all available)"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda or cpu: where torch-engine files decode (default cuda if present); int-engine files: decode with the torch backend there (same integers)"),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="GPU workers for torch-engine files and the integer engine on cuda (default: all visible)"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="print nothing on success"),
):
    """Decompress FILE.nc, verifying every checksum before the output appears."""
    if output is None:
        if not file.name.endswith(SUFFIX):
            _fail(f"{file}: unknown suffix (expected {SUFFIX}); use -o to name the output")
        output = file.with_name(file.name[: -len(SUFFIX)])
    blob = _read(file)
    try:
        dec = api.Decompressor(model=model, threads=threads, device=device, gpus=gpus)
        total = _header_total(blob) or 0  # unreadable: no bar; the decoder reports the damage
        prog = _Progress(total, "decompress", show=not quiet)
        t0 = time.perf_counter()
        try:
            # Decode everything before writing: a failure must leave nothing behind.
            parts = list(dec.iter_decompress(blob, prog))
        finally:
            prog.close()
        dt = time.perf_counter() - t0
        size = _write_atomic(output, parts, force, like=file)
    except (NacrithError, ValueError, FileNotFoundError) as exc:
        _fail(f"{file}: {exc}")
    if not quiet:
        typer.echo(
            f"{file}: {len(blob)} -> {size} bytes, {size / 1024 / max(dt, 1e-9):.2f} KiB/s, "
            f"{prog.tokens / max(dt, 1e-9):.0f} tok/s, verified -> {output}",
            err=True,
        )


LIST_HEADER = f"{'Frames':>6} {'Compressed':>12} {'Uncompressed':>13} {'bpb':>7}  {'Engine':<8} {'Model':<16}  Filename"


def headers_of(blob: bytes) -> list:
    """The frame headers of .nc data in memory (every checksum verified)."""
    return [h for h, _ in container.iter_frames(memoryview(blob))]


def file_headers(path: Path) -> list:
    """The frame headers of a .nc file, read without its payloads (container.iter_headers)."""
    with path.open("rb") as f:
        return list(container.iter_headers(f))


def list_row(headers: list, size: int, name: str) -> dict:
    """One `-l` row (like `xz -l`): frames, sizes, bpb, engine and model, from the headers
    of a file of `size` bytes."""
    frames = raw = 0
    engines, models = [], []
    for header in headers:
        frames += 1
        raw += header.raw_size
        if any(e.type == container.ENTRY_TEXT for e in header.entries):
            engines.append(ENGINES.get(header.settings.get("schedule"), "?"))
            models.append(header.model_sha256.hex()[:16])
    return {
        "frames": frames, "compressed": size, "raw": raw, "name": name,
        # frames without text need no model: "-"; several values: joined
        "engine": ",".join(dict.fromkeys(engines)) or "-", "model": ",".join(dict.fromkeys(models)) or "-",
    }


def _list_line(r: dict) -> str:
    bpb = f"{r['compressed'] * 8 / r['raw']:.4f}" if r["raw"] else "-"
    return (f"{r['frames']:>6} {r['compressed']:>12,} {r['raw']:>13,} {bpb:>7}  {r['engine']:<8} "
            f"{r['model']:<16}  {r['name']}")


def describe(blob: bytes) -> list[str]:
    """Human-readable header summary of every frame of .nc data, without decoding."""
    return describe_headers(headers_of(blob), len(blob))


def describe_headers(headers: list, size: int) -> list[str]:
    """describe() from the frame headers of a file of `size` bytes."""
    lines = []
    total_raw = 0
    n = 0
    shown_model = False
    for header in headers:
        n += 1
        total_raw += header.raw_size
        tokens = sum(e.n_tokens for e in header.entries)
        coded = header.coded_payload
        lines.append(
            f"frame {n}: {header.kind_name} v{container.VERSION}, {header.raw_size} bytes in "
            f"{len(header.entries)} entries, {tokens} tokens, {coded} coded bytes"
        )
        unwrapped = sum(e.type == container.ENTRY_TEXT and e.codec == nc05.UNWRAPPED_CODEC for e in header.entries)
        if unwrapped:
            lines.append(f"  {unwrapped} text chunks coded unwrapped (hard-wrapped text, see README)")
        for kind, name in ((container.ENTRY_TEXT, "text (LLM)"), (container.ENTRY_BINARY, "binary")):
            es = [e for e in header.entries if e.type == kind]
            if es and header.kind == container.KIND_HYBRID:
                raw = sum(e.raw_len for e in es)
                cod = sum(e.coded_len for e in es)
                codecs = sorted({bytecodecs.NAMES.get(e.codec, "?") for e in es}) if kind else ["llm"]
                lines.append(
                    f"  {name}: {len(es)} segments, {raw} -> {cod} bytes, "
                    f"{cod * 8 / raw:.4f} bpb ({', '.join(codecs)})"
                )
        if header.model_sha256 and not shown_model:
            shown_model = True
            lines.append(f"  model sha256: {header.model_sha256.hex()} (vocab {header.vocab})")
            lines.append("  settings: " + ", ".join(f"{k}={v}" for k, v in sorted(header.settings.items())))
            engine = ENGINES.get(header.settings.get("schedule"))
            level = matching_level(header.settings, engine) if engine else None
            lines.append(f"  level: -{level}" if level else "  level: none (settings of their own)")
            lines.append(f"  engine: {header.profile}")
        lines.append(f"  content sha256: {header.content_sha256.hex()}")
    bpb = size * 8 / total_raw if total_raw else 0.0
    lines.append(f"total: {total_raw} bytes -> {size} bytes, {bpb:.4f} bpb, {n} frame(s)")
    return lines


@app.command()
def info(file: Path = typer.Argument(..., help="a .nc file")):
    """Show the header of a .nc file (model, settings, sizes, bpb) without decoding it."""
    blob = _read(file)
    try:
        for line in describe(blob):
            typer.echo(line)
    except NacrithError as exc:
        _fail(f"{file}: {exc}")


# ---------------------------------------------------------------------------
# gzip / xz / zstd style front end: `nacrith [OPTIONS] [FILES...]`

gz = typer.Typer(add_completion=True, help="Compress or decompress FILEs in place (like gzip); '-' or no FILE means stdin to stdout.")
SUBCOMMANDS = {"compress", "decompress", "info"}


def predictor_options(engine, no_bias, no_ngram, no_match, no_mix, no_skip, skip, no_unwrap=False,
                      no_ctx_bias=False) -> dict:
    """Settings overrides for the --no-* flags (the mixer carries the N-gram and match
    predictions, and the skip needs one of them, so turning those off turns it off)."""
    base = TORCH_DEFAULTS if engine == "torch" else Settings()
    out = {"reflow": 0} if no_unwrap else {}
    if skip is not None:
        out["skip"] = skip
    if no_bias:
        out["bias_lr"] = 0
    if no_ctx_bias:
        out["ctx_bias"] = 0
    if no_ngram:
        out["ngram"] = 0
    if no_match:
        out["match_min"] = 0
    if no_mix:
        out.update(sse_rate=0, ngram=0, match_min=0)
    if no_skip or not (out.get("ngram", base.ngram) or out.get("match_min", base.match_min)):
        out["skip"] = 0
    return out
OK, ERROR, WARNING = 0, 1, 2
_BLOCK = 1 << 20


class _Job:
    def __init__(self, opts: dict):
        self.o = opts
        self.status = OK
        self._comp = None
        self._dec = None
        self.rows: list[dict] = []  # -l rows so far

    # one model load for all files
    def compressor(self):
        if self._comp is None and self.o.get("cluster"):
            from . import cluster

            o = self.o
            self._comp = cluster.Compressor(
                None if o["cluster"] == "local" else o["cluster"], model=o["model"], threads=o["threads"],
                format=o["fmt"], context=o["context"], slide=o["slide"], chunk_bytes=o["chunk_bytes"],
                lanes=o["lanes"], chunk_tokens=o["chunk_tokens"], engine=o["engine"], device=o["device"],
                level=o["level"], **o["predictors"],
            )
        if self._comp is None:
            o = self.o
            self._comp = api.Compressor(
                model=o["model"], threads=o["threads"], format=o["fmt"], context=o["context"],
                slide=o["slide"], chunk_bytes=o["chunk_bytes"], lanes=o["lanes"], chunk_tokens=o["chunk_tokens"],
                engine=o["engine"], device=o["device"], gpus=o["gpus"], level=o["level"], **o["predictors"],
            )
        return self._comp

    def decompressor(self):
        if self._dec is None and self.o.get("cluster"):
            from . import cluster

            addr = self.o["cluster"]
            self._dec = cluster.Decompressor(None if addr == "local" else addr, model=self.o["model"],
                                             threads=self.o["threads"], device=self.o["device"])
        if self._dec is None:
            self._dec = api.Decompressor(
                model=self.o["model"], threads=self.o["threads"], device=self.o["device"], gpus=self.o["gpus"]
            )
        return self._dec

    def say(self, msg: str) -> None:
        if self.o["verbose"]:
            typer.echo(msg, err=True)

    def warn(self, msg: str) -> None:
        if not self.o["quiet"]:
            typer.echo(f"nacrith: {msg}", err=True)
        if self.status == OK:  # as gzip: an error's status is never replaced by a warning's
            self.status = WARNING

    def error(self, msg: str) -> None:
        typer.echo(f"nacrith: {msg}", err=True)
        self.status = ERROR

    # streams -----------------------------------------------------------
    def progress(self, total: int | None, label: str) -> _Progress:
        return _Progress(total, label, show=not self.o["quiet"])

    def compress_stream(self, src, write, total: int | None = None, label: str = "compress") -> tuple[int, int]:
        prog = self.progress(total, label)
        if self.o.get("cluster"):  # the frames go out at once: the input is read whole
            return _whole(src, write, prog, self.compressor().iter_frames)
        try:
            obj = self.compressor().compressobj(prog)
            n_in = n_out = 0
            while True:
                block = src.read(_BLOCK)
                if not block:
                    break
                n_in += len(block)
                out = obj.compress(block)
                n_out += len(out)
                write(out)
            out = obj.flush()
            write(out)
        finally:
            prog.close()
        return n_in, n_out + len(out)

    def decompress_stream(self, src, write, total: int | None = None, label: str = "decompress") -> tuple[int, int]:
        from .stream import _Reader

        prog = self.progress(total, label)
        if self.o.get("cluster"):
            return _whole(src, write, prog, self.decompressor().iter_decompress)
        try:
            reader = _Reader(_Counting(src), lambda: self.decompressor().decompressobj(prog))
            buf = bytearray(_BLOCK)
            n_out = 0
            while True:
                n = reader.readinto(buf)
                if not n:
                    break
                write(bytes(buf[:n]))
                n_out += n
        finally:
            prog.close()
        return reader._fp.count, n_out


def _whole(src, write, prog, parts_of) -> tuple[int, int]:
    """Read src whole, write every part of parts_of(data, prog); (bytes in, bytes out)."""
    try:
        data = src.read()
        n_out = 0
        for part in parts_of(data, prog):
            write(part)
            n_out += len(part)
    finally:
        prog.close()
    return len(data), n_out


class _Counting:
    def __init__(self, fp):
        self.fp = fp
        self.count = 0

    def read(self, n):
        b = self.fp.read(n)
        self.count += len(b)
        return b


def _atomic(path: Path, force: bool, fn, like: Path | None = None):
    """Run fn(write) into a temporary file beside `path`, renamed into place only when
    complete: an error or Ctrl-C leaves no partial output, and nothing is replaced
    without `force`. With `like`, the output takes its permission bits and times (as
    gzip does) before it appears."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; use -f/--force to overwrite")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            result = fn(f.write)
            f.flush()
            os.fsync(f.fileno())
        if like is not None:
            shutil.copystat(like, tmp)
        if path.exists() and not force:
            raise FileExistsError(f"{path} already exists; use -f/--force to overwrite")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return result


def _to_file(job: "_Job", path: Path, fn, like: Path | None = None):
    return _atomic(path, job.o["force"], fn, like)


def _header_total(blob: bytes) -> int | None:
    """The original size the headers of .nc data promise (for the progress bar), None if
    they cannot be read: decoding then reports what is wrong."""
    try:
        return sum(h.raw_size for h in headers_of(blob))
    except NacrithError:
        return None


def _raw_total(path: Path) -> int | None:
    """_header_total for a file, from its headers alone (the payloads are skipped, so a
    large file is not read into memory just to size the progress bar)."""
    try:
        return sum(h.raw_size for h in file_headers(path))
    except (NacrithError, OSError):
        return None


def _verify_round_trip(job: "_Job", packed: Path, original: Path) -> None:
    """Decode `packed` (as -t does) and compare the SHA-256 of what comes out with the
    original's; a difference raises, and the original is kept."""
    import hashlib

    want = hashlib.sha256()
    with original.open("rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            want.update(block)
    got = hashlib.sha256()
    with packed.open("rb") as f:
        job.decompress_stream(f, got.update, None, f"{packed.name}: check")
    if got.digest() != want.digest():
        raise CorruptDataError(f"{packed} does not decode to {original}; {original} kept")


def _one(job: _Job, name: str) -> None:
    o = job.o
    stdin = name == "-"
    to_stdout = o["stdout"] or stdin
    src_path = None if stdin else Path(name)
    if src_path is not None and not src_path.is_file():
        job.error(f"{name}: no such file" if not src_path.exists() else f"{name}: not a regular file")
        return
    if o["list"]:
        if stdin:
            data = sys.stdin.buffer.read()
            headers, size = headers_of(data), len(data)
        else:  # headers and tables only, as xz -l; raises on a damaged one
            headers, size = file_headers(src_path), src_path.stat().st_size
        row = list_row(headers, size, name)
        if not job.rows:
            typer.echo(LIST_HEADER)
        job.rows.append(row)
        typer.echo(_list_line(row))
        if o["verbose"]:
            for line in describe_headers(headers, size):
                typer.echo("  " + line)
        return
    if o["test"]:
        with (sys.stdin.buffer if stdin else src_path.open("rb")) as src:
            job.decompress_stream(src, lambda b: None, None if stdin else _raw_total(src_path), f"{name}: test")
        job.say(f"{name}: OK")
        return
    decompress_mode = o["decompress"]
    if to_stdout and not decompress_mode and sys.stdout.isatty() and not o["force"]:
        job.error("compressed data not written to a terminal; use -f to force")
        return
    if decompress_mode:
        if not stdin and not name.endswith(SUFFIX) and not to_stdout:
            job.error(f"{name}: unknown suffix -- ignored")
            return
        run = job.decompress_stream
        out_path = None if to_stdout else src_path.with_name(src_path.name[: -len(SUFFIX)])
    else:
        if not stdin and name.endswith(SUFFIX) and not o["force"]:
            job.warn(f"{name} already has {SUFFIX} suffix -- unchanged")
            return
        run = job.compress_stream
        out_path = None if to_stdout else src_path.with_name(src_path.name + SUFFIX)
    t0 = time.perf_counter()
    src = sys.stdin.buffer if stdin else src_path.open("rb")
    if stdin:
        total = None
    else:
        total = _raw_total(src_path) if decompress_mode else src_path.stat().st_size
    label = f"{name}: {'decompress' if decompress_mode else 'compress'}"
    try:
        if out_path is None:
            n_in, n_out = run(src, sys.stdout.buffer.write, total, label)
            sys.stdout.buffer.flush()
        else:
            n_in, n_out = _to_file(job, out_path, lambda write: run(src, write, total, label), like=src_path)
    finally:
        if not stdin:
            src.close()
    dt = max(time.perf_counter() - t0, 1e-9)
    raw = n_out if decompress_mode else n_in
    coded = n_in if decompress_mode else n_out
    job.say(f"{name}: {raw} <-> {coded} bytes, {coded * 8 / raw if raw else 0:.4f} bpb, {raw / 1024 / dt:.2f} KiB/s"
            + ("" if out_path is None else f" -> {out_path}"))
    if o["rm"] and out_path is not None:
        if not decompress_mode:
            # the input goes only once its .nc file decoded back to the same bytes (a
            # decompression checks every chunk and frame digest on its way, so its input may go)
            _verify_round_trip(job, out_path, src_path)
        src_path.unlink()


@gz.command()
def main_command(
    files: Optional[list[str]] = typer.Argument(None, help="files; '-' or none for stdin"),
    decompress_: bool = typer.Option(False, "-d", "--decompress", help="decompress"),
    compress_: bool = typer.Option(False, "-z", "--compress", help="compress (the default)"),
    stdout: bool = typer.Option(False, "-c", "--stdout", help="write to stdout, keep the input"),
    keep: bool = typer.Option(True, "-k", "--keep", help="keep the input (the default)"),
    rm: bool = typer.Option(False, "--rm", help="remove the input once the output is complete and checked: a compressed file must decode back to the input's SHA-256 (as -t would; this costs a decompression)"),
    force: bool = typer.Option(False, "-f", "--force", help="overwrite outputs; write compressed data to a terminal"),
    test: bool = typer.Option(False, "-t", "--test", help="decode and verify, write nothing"),
    list_: bool = typer.Option(False, "-l", "--list", help="one row per .nc file from its headers (frames, sizes, bpb, engine, model); -v adds every frame's header"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="no warnings"),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="report sizes and speed per file"),
    model: Optional[Path] = typer.Option(None, "--model", help="llama.cpp GGUF model"),
    fmt: str = typer.Option("auto", "--format", help="auto, nc05 or nc06"),
    context: Optional[int] = typer.Option(None, help=f"tokens in the model's window (default {_D.context}; torch engine {_T.context})"),
    slide: Optional[int] = typer.Option(None, help=f"tokens dropped when the window is full (default {_D.slide}; torch engine {_T.slide})"),
    chunk_bytes: Optional[int] = typer.Option(None, help=f"target chunk size in bytes (default {_D.chunk_bytes}; torch engine {_T.chunk_bytes})"),
    lanes: Optional[int] = typer.Option(None, help=f"chunks evaluated together (default {_D.lanes}; torch engine {_T.lanes})"),
    chunk_tokens: Optional[int] = typer.Option(None, help=f"cut text into chunks of this many tokens instead (0: by bytes; default {_D.chunk_tokens}; torch engine {_T.chunk_tokens})"),
    threads: Optional[int] = typer.Option(None, help="CPU threads"),
    engine: str = typer.Option(api.DEFAULT_ENGINE, "--engine", help=_ENGINE_HELP),
    device: Optional[str] = typer.Option(None, "--device", help="cuda or cpu: where the torch engine runs (default cuda if present); int engine: run its torch backend there instead of its C kernels (same integers)"),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="GPU workers of the torch engine and the integer engine on cuda (default: all visible)"),
    no_bias: bool = typer.Option(False, "--no-bias", help="online predictors: no adaptive bias head"),
    no_ngram: bool = typer.Option(False, "--no-ngram", help="online predictors: no token N-gram"),
    no_match: bool = typer.Option(False, "--no-match", help="online predictors: no match model"),
    no_mix: bool = typer.Option(False, "--no-mix", help="online predictors: no secondary estimation (and so no N-gram, match or skip)"),
    no_skip: bool = typer.Option(False, "--no-skip", help="always run the model (no LLM skip)"),
    skip: Optional[int] = typer.Option(None, "--skip", help="LLM skip threshold, reliability in 1/65536 (0: off; llama.cpp engine)"),
    no_unwrap: bool = typer.Option(False, "--no-unwrap", help="code hard-wrapped text as it is (no unwrapping)"),
    no_ctx_bias: bool = typer.Option(False, "--no-ctx-bias", help="online predictors: no context bias head (biases per previous token)"),
    level: Optional[int] = typer.Option(None, "--level", min=1, max=9, help=_LEVEL_HELP),
    cluster_: Optional[str] = typer.Option(None, "--cluster", help="a Ray cluster's address (e.g. ray://head:10001, or 'local'): its workers code the frames (pip install 'nacrith[cluster]')"),
):
    """Compress or decompress FILEs like gzip: FILE -> FILE.nc, -d FILE.nc -> FILE.
    Levels: -1 (--fast) .. -9 (--best), default -6."""
    opts = dict(
        decompress=decompress_ and not compress_, stdout=stdout, rm=rm, force=force, test=test,
        list=list_, quiet=quiet, verbose=verbose, model=model, fmt=fmt, context=context, slide=slide,
        chunk_bytes=chunk_bytes, lanes=lanes, chunk_tokens=chunk_tokens, threads=threads, engine=engine, device=device, gpus=gpus,
        level=level, predictors=predictor_options(engine, no_bias, no_ngram, no_match, no_mix, no_skip, skip, no_unwrap, no_ctx_bias),
        cluster=cluster_,
    )
    job = _Job(opts)
    names = files or ["-"]
    if rm and stdout:
        job.error("--rm and -c cannot be used together")
        raise typer.Exit(ERROR)
    for name in names:
        try:
            _one(job, name)
        except KeyboardInterrupt:
            typer.echo("nacrith: interrupted; no partial output was left", err=True)
            raise typer.Exit(130)
        except (NacrithError, ValueError, OSError) as exc:
            msg = str(exc) if isinstance(exc, (NacrithError, ValueError)) else (exc.strerror or str(exc))
            job.error(f"{name}: {msg}" if not str(msg).startswith(name) else msg)
    if list_ and len(job.rows) > 1:
        rows = job.rows
        typer.echo(_list_line({
            "frames": sum(r["frames"] for r in rows), "compressed": sum(r["compressed"] for r in rows),
            "raw": sum(r["raw"] for r in rows), "engine": "", "model": "", "name": f"{len(rows)} files",
        }))
    raise typer.Exit(job.status)


def version_lines() -> list[str]:
    """What `nacrith --version` prints: this program, the formats and engines it reads
    and writes, and the default model's digest (every part that shapes a bitstream)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__, reflow
    from .engines.integer import spec
    from .modelfile import default_model_path, model_sha256
    from .settings import ONLINE_VERSION, SCHEDULES

    def pkg(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    lines = [
        f"nacrith {__version__}",
        f"container: NC05 (text) and NC06 (hybrid) frames, format version {container.VERSION}; "
        f"schedules {', '.join(f'{v} ({k})' for k, v in sorted(SCHEDULES.items(), key=lambda kv: kv[1]))}",
        f"online predictors: version {ONLINE_VERSION}; unwrapping: version {reflow.VERSION} (reads {', '.join(map(str, reflow.VERSIONS))})",
        f"engines: llama (llama-cpp-python {pkg('llama_cpp_python')}), int (arithmetic version {spec.VERSION}), "
        f"torch (torch {pkg('torch')})",
    ]
    try:
        path = default_model_path()
        lines.append(f"default model: {path.name}, sha256 {model_sha256(path)}")
    except FileNotFoundError as exc:
        lines.append(f"default model: {exc}")
    return lines


_LEVEL_ARG = re.compile(r"-([A-Za-z]*)([1-9])([A-Za-z]*)")


def level_args(args: list[str]) -> list[str]:
    """gzip's level flags spelled for the parser: -1 .. -9 (alone or among short flags,
    as in -9v), --fast (-1) and --best (-9) become --level N. Arguments after -- are
    left alone."""
    out = []
    for i, a in enumerate(args):
        if a == "--":
            return out + args[i:]
        m = _LEVEL_ARG.fullmatch(a)
        if a in ("--fast", "--best"):
            out += ["--level", str(FAST if a == "--fast" else BEST)]
        elif m:
            out += ["--level", m.group(2)] + ([f"-{m.group(1)}{m.group(3)}"] if m.group(1) + m.group(3) else [])
        else:
            out.append(a)
    return out


def _on_sigint(signum, frame):
    from .engines import STOP

    STOP.set()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    import signal

    signal.signal(signal.SIGINT, _on_sigint)
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"]):
        for line in version_lines():
            typer.echo(line)
    elif args and args[0] == "bench":
        from .bench import main as bench

        bench(args[1:])
    elif args and args[0] in SUBCOMMANDS:
        app(args=level_args(args), prog_name="nacrith")
    else:
        gz(args=level_args(args), prog_name="nacrith")


if __name__ == "__main__":
    main()
