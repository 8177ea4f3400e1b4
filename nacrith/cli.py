"""The `nacrith` command line."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer

from . import api
from .errors import NacrithError
from .formats import container
from .settings import Settings

app = typer.Typer(add_completion=True, no_args_is_help=True, help="Lossless compression with a small language model.")

SUFFIX = ".nc"
_D = Settings()


def _fail(message: str) -> None:
    typer.echo(f"nacrith: {message}", err=True)
    raise typer.Exit(1)


class _Progress:
    """tqdm bar on stderr, only when stderr is a terminal."""

    def __init__(self, total_bytes: int, total_tokens: int | None, label: str):
        self.bar = None
        self.tokens = 0
        self.bits = 0.0
        self.total_bytes = total_bytes
        self.start = time.perf_counter()
        if sys.stderr.isatty() and total_bytes:
            from tqdm import tqdm

            self.bar = tqdm(total=total_tokens, unit="tok", desc=label, file=sys.stderr, leave=False)

    def __call__(self, tokens: int, bits: float) -> None:
        self.tokens += tokens
        self.bits += bits
        if self.bar is not None:
            self.bar.update(tokens)
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / elapsed:.0f} tok/s, {self.bits / 8 / 1024:.1f} KiB coded")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_atomic(path: Path, data_iter, force: bool) -> int:
    """Write to a temporary file beside `path`, then rename: no partial output, ever."""
    if path.exists() and not force:
        _fail(f"{path} already exists; use --force to overwrite")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent or "."))
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for part in data_iter:
                f.write(part)
                size += len(part)
            f.flush()
            os.fsync(f.fileno())
        if path.exists() and not force:
            _fail(f"{path} already exists; use --force to overwrite")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return size


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")


@app.command()
def compress(
    file: Path = typer.Argument(..., help="file to compress"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="output path (default FILE.nc)"),
    force: bool = typer.Option(False, "-f", "--force", help="overwrite an existing output"),
    model: Optional[Path] = typer.Option(None, "--model", help="llama.cpp GGUF model (default: embedded SmolLM2-135M)"),
    context: int = typer.Option(_D.context, help="tokens in the model's window"),
    slide: int = typer.Option(_D.slide, help="tokens dropped when the window is full"),
    chunk_bytes: int = typer.Option(_D.chunk_bytes, help="target chunk size in bytes"),
    lanes: int = typer.Option(_D.lanes, help="chunks evaluated together"),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all available)"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="print nothing on success"),
):
    """Compress FILE to FILE.nc."""
    data = _read(file)
    out = output or file.with_name(file.name + SUFFIX)
    try:
        comp = api.Compressor(model=model, threads=threads, context=context, slide=slide, chunk_bytes=chunk_bytes, lanes=lanes)
        prog = _Progress(len(data), None, "compress")
        t0 = time.perf_counter()
        try:
            size = _write_atomic(out, comp.iter_frames(data, prog), force)
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
    quiet: bool = typer.Option(False, "-q", "--quiet", help="print nothing on success"),
):
    """Decompress FILE.nc, verifying every checksum before the output appears."""
    if output is None:
        if not file.name.endswith(SUFFIX):
            _fail(f"{file}: unknown suffix (expected {SUFFIX}); use -o to name the output")
        output = file.with_name(file.name[: -len(SUFFIX)])
    blob = _read(file)
    try:
        dec = api.Decompressor(model=model, threads=threads)
        prog = _Progress(len(blob), None, "decompress")
        t0 = time.perf_counter()
        try:
            # Decode everything before writing: a failure must leave nothing behind.
            parts = list(dec.iter_decompress(blob, prog))
        finally:
            prog.close()
        dt = time.perf_counter() - t0
        size = _write_atomic(output, parts, force)
    except (NacrithError, ValueError, FileNotFoundError) as exc:
        _fail(f"{file}: {exc}")
    if not quiet:
        typer.echo(
            f"{file}: {len(blob)} -> {size} bytes, {size / 1024 / max(dt, 1e-9):.2f} KiB/s, "
            f"{prog.tokens / max(dt, 1e-9):.0f} tok/s, verified -> {output}",
            err=True,
        )


def describe(blob: bytes) -> list[str]:
    """Human-readable header summary of every frame, without decoding."""
    lines = []
    total_raw = 0
    n = 0
    for header, _ in container.iter_frames(memoryview(blob)):
        n += 1
        total_raw += header.raw_size
        tokens = sum(e.n_tokens for e in header.entries)
        coded = header.coded_payload
        lines.append(
            f"frame {n}: {header.kind_name} v{container.VERSION}, {header.raw_size} bytes in "
            f"{len(header.entries)} chunks, {tokens} tokens, {coded} coded bytes"
        )
        if n == 1:
            lines.append(f"  model sha256: {header.model_sha256.hex()} (vocab {header.vocab})")
            lines.append("  settings: " + ", ".join(f"{k}={v}" for k, v in sorted(header.settings.items())))
            lines.append(f"  engine: {header.profile}")
        lines.append(f"  content sha256: {header.content_sha256.hex()}")
    bpb = len(blob) * 8 / total_raw if total_raw else 0.0
    lines.append(f"total: {total_raw} bytes -> {len(blob)} bytes, {bpb:.4f} bpb, {n} frame(s)")
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
