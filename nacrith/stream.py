"""Incremental compression and file objects, shaped like the standard library's lzma.

StreamCompressor / StreamDecompressor are the `compressobj` tier: feed bytes in
pieces of any size. Memory stays bounded by one frame (`frame_bytes` of input)
whatever the stream length, and the bytes produced are exactly those of the
one-shot `compress`, because frame cuts depend only on the data and settings.
`open` returns a binary or text file object over either of them.
"""

from __future__ import annotations

import builtins
import io
import os

from .chunking import chunk_end
from .errors import CorruptDataError, TruncatedDataError
from .formats import container


class StreamCompressor:
    """`compress(data) -> bytes` any number of times, then `flush() -> bytes` once."""

    def __init__(self, compressor, progress=None):
        self._c = compressor
        self._progress = progress  # progress(tokens, bits, bytes) as chunks are coded
        self._buf = bytearray()
        self._offset = 0
        self._flushed = False

    def compress(self, data) -> bytes:
        if self._flushed:
            raise ValueError("compressor was already flushed")
        self._buf += data
        out = []
        frame = self._c.settings.frame_bytes
        # A frame is cut only once more data is known to follow it, so the cut is
        # the one the one-shot compressor makes, and the last frame is the final one.
        while len(self._buf) > frame:
            cut = chunk_end(self._buf, 0, frame)
            out.append(self._c.encode_frame(bytes(self._buf[:cut]), self._offset, self._progress, final=False))
            del self._buf[:cut]
            self._offset += cut
        return b"".join(out)

    def flush(self) -> bytes:
        if self._flushed:
            raise ValueError("compressor was already flushed")
        self._flushed = True
        raw = bytes(self._buf)
        self._buf.clear()
        return self._c.encode_frame(raw, self._offset, self._progress, final=True)


class StreamDecompressor:
    """Like `lzma.LZMADecompressor`: `decompress(data, max_length=-1)`, `eof`,
    `unused_data`, `needs_input`. One object decodes one stream."""

    def __init__(self, decompressor, progress=None):
        self._d = decompressor
        self._progress = progress
        self._in = bytearray()
        self._out = bytearray()
        self._final = False  # the final frame was decoded (its output may still be buffered)
        self.eof = False
        self.unused_data = b""
        self.needs_input = True

    def _next_frame(self):
        """(header, payloads, length) of the complete frame at the buffer's start, or None."""
        if len(self._in) >= 4 and not container.looks_like_frame(self._in, 0):
            raise CorruptDataError("not a Nacrith stream (bad magic)")
        try:
            header, pos = container.read_header(self._in, 0)
        except TruncatedDataError:
            return None
        length = container.frame_length(header, pos, 0)
        if len(self._in) < length:
            return None
        payloads, _ = container.frame_payloads(self._in, header, pos)
        return header, payloads, length

    def decompress(self, data, max_length: int = -1) -> bytes:
        if self.eof:
            raise EOFError("already at the end of the stream")
        self._in += data
        while not self._final and (max_length < 0 or len(self._out) < max_length):
            frame = self._next_frame()
            if frame is None:
                break
            header, payloads, length = frame
            self._out += self._d.decode_frame(header, payloads, self._progress)
            del self._in[:length]
            if header.final:
                self._final = True
                self.unused_data = bytes(self._in)
                self._in.clear()
        if max_length < 0:
            out = bytes(self._out)
            self._out.clear()
        else:
            out = bytes(self._out[:max_length])
            del self._out[:max_length]
        # Like lzma: eof once the end is reached and every byte has been handed out.
        self.eof = self._final and not self._out
        self.needs_input = not self._final and not self._out and self._next_frame() is None
        return out


class _Reader(io.RawIOBase):
    """Raw reader that decodes concatenated streams from a binary file object."""

    def __init__(self, fp, make_decompressor):
        self._fp = fp
        self._make = make_decompressor
        self._dec = make_decompressor()

    def readable(self):
        return True

    def readinto(self, b):
        size = len(b)
        while True:
            if self._dec.eof:
                rest = self._dec.unused_data or self._fp.read(1 << 16)
                if not rest:
                    return 0
                self._dec = self._make()
                data = self._dec.decompress(rest, size)
            elif self._dec.needs_input:
                block = self._fp.read(1 << 16)
                if not block:
                    raise TruncatedDataError("compressed stream ends before its final frame")
                data = self._dec.decompress(block, size)
            else:
                data = self._dec.decompress(b"", size)
            if data:
                b[: len(data)] = data
                return len(data)


class NacrithFile(io.BufferedIOBase):
    """A file object over compressed data, like `lzma.LZMAFile` (binary modes)."""

    def __init__(self, filename, mode: str = "r", *, compressor=None, decompressor=None):
        if mode in ("r", "rb"):
            mode_code = "r"
        elif mode in ("w", "wb", "a", "ab", "x", "xb"):
            mode_code = "w"
        else:
            raise ValueError(f"invalid mode: {mode!r}")
        self._mode = mode_code
        if isinstance(filename, (str, bytes, os.PathLike)):
            self._fp = builtins.open(filename, mode.replace("b", "") + "b")
            self._close_fp = True
        elif hasattr(filename, "read") or hasattr(filename, "write"):
            self._fp = filename
            self._close_fp = False
        else:
            raise TypeError("filename must be a str, bytes, os.PathLike or file object")
        if mode_code == "r":
            self._buffer = io.BufferedReader(_Reader(self._fp, lambda: StreamDecompressor(decompressor)))
        else:
            self._comp = StreamCompressor(compressor)
        self._closed = False
        self._aborted = False  # abort(): close without the final frame

    # -- io plumbing ------------------------------------------------------
    @property
    def closed(self):
        return self._closed

    def readable(self):
        return self._mode == "r" and not self._closed

    def writable(self):
        return self._mode == "w" and not self._closed

    def seekable(self):
        return False

    def fileno(self):
        return self._fp.fileno()

    def _check(self, want: str):
        if self._closed:
            raise ValueError("I/O operation on closed file")
        if self._mode != want:
            raise io.UnsupportedOperation("file not open for " + ("reading" if want == "r" else "writing"))

    def read(self, size=-1):
        self._check("r")
        return self._buffer.read(size)

    def read1(self, size=-1):
        self._check("r")
        return self._buffer.read1(size)

    def readinto(self, b):
        self._check("r")
        return self._buffer.readinto(b)

    def readline(self, size=-1):
        self._check("r")
        return self._buffer.readline(size)

    def peek(self, size=-1):
        self._check("r")
        return self._buffer.peek(size)

    def write(self, data):
        self._check("w")
        view = memoryview(data).cast("B")
        self._fp.write(self._comp.compress(view))
        return view.nbytes

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return super().__exit__(exc_type, exc, tb)

    def abort(self):
        """Close without the final frame: a writer interrupted by an exception must leave
        a stream that reads as incomplete (TruncatedDataError), not a shorter valid one."""
        self._aborted = True
        self.close()

    def close(self):
        if self._closed:
            return
        try:
            if self._mode == "w" and not self._aborted:
                self._fp.write(self._comp.flush())
        finally:
            self._closed = True
            if self._close_fp:
                self._fp.close()


def open(filename, mode: str = "rb", *, model=None, threads=None, format: str = "auto",
         encoding=None, errors=None, newline=None, **settings):
    """Open a Nacrith-compressed file in binary ("rb", "wb", "ab", "xb") or text
    ("rt", "wt", "at", "xt") mode, like `lzma.open`."""
    from .api import Compressor, Decompressor

    if "t" in mode:
        if "b" in mode:
            raise ValueError(f"invalid mode: {mode!r}")
    else:
        if encoding is not None or errors is not None or newline is not None:
            raise ValueError("encoding, errors and newline are for text mode only")
    raw_mode = mode.replace("t", "")
    if raw_mode.rstrip("b") in ("w", "a", "x"):
        comp = Compressor(model=model, threads=threads, format=format, **settings)
        f = NacrithFile(filename, raw_mode, compressor=comp)
    else:
        f = NacrithFile(filename, raw_mode, decompressor=Decompressor(model=model, threads=threads))
    if "t" in mode:
        return _TextFile(f, encoding, errors, newline)
    return f


class _TextFile(io.TextIOWrapper):
    """Text mode: an exception inside `with` aborts the stream as in binary mode."""

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.buffer.writable():
            self.buffer.abort()
        return super().__exit__(exc_type, exc, tb)
