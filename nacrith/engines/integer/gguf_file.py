"""A small GGUF (version 2 and 3) reader: scalar metadata and memory-mapped tensors.

The `gguf` package parses every tokenizer string into numpy views (about 9 s for
SmolLM2); this reader steps over arrays and keeps only scalars, which is all the
integer engine needs (the tokenizer comes from llama.cpp).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ...errors import UnsupportedInputError

# value type -> struct format of a scalar
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# tensor type -> (elements per block, bytes per block)
BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 30: (1, 2)}
TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 30: "BF16"}


@dataclass
class Tensor:
    name: str
    type: int
    shape: tuple[int, ...]  # GGUF order: shape[0] is the row length
    data: np.ndarray  # uint8 [rows, bytes per row]

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, f"type {self.type}")

    def floats(self) -> np.ndarray:
        """float64 [rows, row length] of an F32, F16 or BF16 tensor."""
        raw = np.ascontiguousarray(self.data)
        if self.type == 0:
            f = raw.view("<f4")
        elif self.type == 1:
            f = raw.view("<f2")
        elif self.type == 30:
            f = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise UnsupportedInputError(f"tensor {self.name} is not a float tensor")
        return f.astype(np.float64).reshape(self.data.shape[0], -1)


class GGUFFile:
    def __init__(self, path: str):
        self.path = str(path)
        mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        buf = memoryview(mm)
        self._buf, self._pos = buf, 0
        if bytes(buf[:4]) != b"GGUF":
            raise UnsupportedInputError(f"{path} is not a GGUF file")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version not in (2, 3):
            raise UnsupportedInputError(f"GGUF version {version} is not supported")
        self._pos = 24
        self.fields: dict[str, object] = {}
        for _ in range(n_kv):
            key = self._string()
            (vtype,) = self._unpack("<I")
            self.fields[key] = self._value(vtype)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            (n_dims,) = self._unpack("<I")
            shape = self._unpack(f"<{n_dims}Q")
            ttype, offset = self._unpack("<IQ")
            infos.append((name, ttype, shape, offset))
        align = int(self.fields.get("general.alignment", 32))
        start = -(-self._pos // align) * align
        self.tensors: dict[str, Tensor] = {}
        for name, ttype, shape, offset in infos:
            if ttype not in BLOCKS:
                self.tensors[name] = Tensor(name, ttype, tuple(shape), np.zeros((0, 0), np.uint8))
                continue
            per, size = BLOCKS[ttype]
            rows = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
            if shape[0] % per:
                raise UnsupportedInputError(f"tensor {name}: row length {shape[0]} is not a whole number of blocks")
            row_bytes = shape[0] // per * size
            a = start + offset
            if a + rows * row_bytes > len(mm):
                raise UnsupportedInputError(f"tensor {name} lies past the end of {path}")
            self.tensors[name] = Tensor(name, ttype, tuple(shape), mm[a : a + rows * row_bytes].reshape(rows, row_bytes))
        del self._buf

    def _unpack(self, fmt: str):
        out = struct.unpack_from(fmt, self._buf, self._pos)
        self._pos += struct.calcsize(fmt)
        return out

    def _string(self) -> str:
        (n,) = self._unpack("<Q")
        s = bytes(self._buf[self._pos : self._pos + n]).decode("utf-8", "replace")
        self._pos += n
        return s

    def _value(self, vtype: int):
        if vtype in _SCALARS:
            return self._unpack("<" + _SCALARS[vtype])[0]
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            etype, count = self._unpack("<IQ")
            if etype in _SCALARS:
                self._pos += struct.calcsize("<" + _SCALARS[etype]) * count
            else:
                for _ in range(count):
                    self._value(etype)
            return None  # arrays (the tokenizer's) are not kept
        raise UnsupportedInputError(f"unknown GGUF value type {vtype}")
