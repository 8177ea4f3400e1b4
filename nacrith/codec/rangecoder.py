"""A thin range-coder interface over constriction.

The coder knows nothing about models: it is handed integer frequencies that
sum to 2**24 (every entry >= 1) and a symbol. constriction's `Categorical`
with `perfect=False` gives each symbol 1 + floor(p * (2**24 - V)) of the
range; feeding it the counts f - 1 makes that exactly f, so what is coded is
the integer distribution the predictors computed, and the decoder, given the
same integers, rebuilds the same model bit for bit.

A vectorised coder (one that takes only each token's interval) can replace
this class without touching the predictors.
"""

from __future__ import annotations

import numpy as np
import constriction

from ..errors import CorruptDataError

_Categorical = constriction.stream.model.Categorical


def _model(freqs: np.ndarray):
    return _Categorical(np.asarray(freqs, dtype=np.float64) - 1.0, perfect=False)


class Encoder:
    def __init__(self) -> None:
        self._enc = constriction.stream.queue.RangeEncoder()

    def encode(self, symbol: int, freqs: np.ndarray) -> None:
        self._enc.encode(int(symbol), _model(freqs))

    def finish(self) -> bytes:
        words = self._enc.get_compressed()
        return np.asarray(words, dtype="<u4").tobytes()


class Decoder:
    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise CorruptDataError("coded chunk length is not a whole number of 32-bit words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._dec = constriction.stream.queue.RangeDecoder(words)

    def decode(self, freqs: np.ndarray) -> int:
        return int(self._dec.decode(_model(freqs)))
