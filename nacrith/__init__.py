"""Nacrith: lossless compression with a small language model and a range coder."""

from .api import Compressor, Decompressor, compress, decompress
from .errors import (
    CorruptDataError,
    EngineError,
    ModelMismatchError,
    NacrithError,
    NonFiniteLogitsError,
    OutOfMemoryError,
    TruncatedDataError,
    UnsupportedInputError,
)
from .settings import Settings
from .stream import NacrithFile, StreamCompressor, StreamDecompressor, open

__version__ = "0.1.0"

__all__ = [
    "Compressor",
    "Decompressor",
    "compress",
    "decompress",
    "Settings",
    "open",
    "NacrithFile",
    "StreamCompressor",
    "StreamDecompressor",
    "NacrithError",
    "CorruptDataError",
    "TruncatedDataError",
    "ModelMismatchError",
    "UnsupportedInputError",
    "EngineError",
    "NonFiniteLogitsError",
    "OutOfMemoryError",
]
