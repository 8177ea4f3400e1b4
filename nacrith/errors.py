"""The package's exceptions.

Like `lzma.LZMAError`, one base type covers every failure a caller needs to
handle: `NacrithError`. The subclasses let a caller tell why, but catching the
base is always enough.
"""


class NacrithError(Exception):
    """Base class: the data could not be compressed or restored exactly."""


class CorruptDataError(NacrithError):
    """The compressed data is damaged: a checksum, marker or field is wrong."""


class TruncatedDataError(CorruptDataError):
    """The compressed data ends before its last frame is complete."""


class ModelMismatchError(NacrithError):
    """The file was made with another model or engine than the one loaded."""


class UnsupportedInputError(NacrithError):
    """The input cannot be stored in the requested format (e.g. non-text as NC05)."""


class EngineError(NacrithError, RuntimeError):
    """The model could not be evaluated (a backend failed)."""


class NonFiniteLogitsError(EngineError, FloatingPointError):
    """A float engine produced NaN or infinite logits; nothing is coded from them."""


class OutOfMemoryError(NacrithError, MemoryError):
    """An engine could not allocate what the settings need."""
