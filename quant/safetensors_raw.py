"""A direct, memory-mapped reader for the safetensors file format. NumPy + stdlib only.

Why not ``safetensors.numpy``: it cannot return BF16 tensors without ml_dtypes (NumPy 2 only),
and it reports truncated files less precisely. The format: 8 bytes little-endian header length
N, N bytes of JSON mapping each tensor name to ``dtype``, ``shape`` and ``data_offsets``
(relative to the end of the header; ``__metadata__`` is optional), then the raw data.
BF16 tensors are returned as their uint16 bit patterns (widen with format.unpack_bf16).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

# safetensors dtype -> NumPy storage dtype (little-endian); BF16 kept as uint16 bit patterns.
DTYPES = {
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"), "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
MAX_HEADER = 100 * 1024 * 1024     # the reference implementation's limit


class SafetensorsError(ValueError):
    """A malformed or truncated safetensors file; the message names the file (and tensor)."""


class SafetensorsFile:
    """``f = SafetensorsFile(path)``; ``f.names()``, ``f.dtype(name)``, ``f.shape(name)``,
    ``f.array(name)`` (read-only memory-mapped view)."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise SafetensorsError(f"{self.path}: truncated safetensors file "
                                           f"({size} bytes, no header length)")
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER or 8 + n > size:
                    raise SafetensorsError(
                        f"{self.path}: truncated or not a safetensors file (header length {n}, "
                        f"file {size} bytes)")
                raw = f.read(n)
        except OSError as e:
            raise SafetensorsError(f"{self.path}: cannot read: {e.strerror or e}") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{self.path}: safetensors header is not JSON: {e}") from None
        if not isinstance(header, dict):
            raise SafetensorsError(f"{self.path}: safetensors header is not a JSON object")
        header.pop("__metadata__", None)
        self._data_start = 8 + n
        self._info: dict[str, tuple[str, tuple, int, int]] = {}
        for name, ent in header.items():
            try:
                dtype, shape = ent["dtype"], tuple(int(s) for s in ent["shape"])
                begin, end = (int(x) for x in ent["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise SafetensorsError(f"{self.path}: tensor {name!r}: malformed header entry "
                                       f"{ent!r}") from None
            if dtype not in DTYPES:
                raise SafetensorsError(f"{self.path}: tensor {name!r}: unsupported dtype "
                                       f"{dtype!r}")
            want = math.prod(shape) * DTYPES[dtype].itemsize
            if end - begin != want or begin < 0:
                raise SafetensorsError(
                    f"{self.path}: tensor {name!r}: data_offsets [{begin}, {end}) hold "
                    f"{end - begin} bytes, dtype {dtype} shape {list(shape)} needs {want}")
            if self._data_start + end > size:
                raise SafetensorsError(
                    f"{self.path}: truncated safetensors file: tensor {name!r} ends at byte "
                    f"{self._data_start + end}, the file has {size}")
            self._info[name] = (dtype, shape, begin, end)
        self._mm = None

    def names(self) -> list[str]:
        return list(self._info)

    def __contains__(self, name) -> bool:
        return name in self._info

    def dtype(self, name: str) -> str:
        """The safetensors dtype string (``"BF16"``, ``"U8"``...)."""
        return self._info[name][0]

    def shape(self, name: str) -> tuple:
        return self._info[name][1]

    def array(self, name: str) -> np.ndarray:
        """Read-only memory-mapped view of a tensor (BF16 as uint16 bit patterns)."""
        dtype, shape, begin, end = self._info[name]
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        raw = self._mm[self._data_start + begin:self._data_start + end]
        if raw.size == 0:
            return np.zeros(shape, dtype=DTYPES[dtype])
        if (self._data_start + begin) % DTYPES[dtype].itemsize:
            raw = np.array(raw)         # unaligned tensor: copy so the view is legal
        return raw.view(DTYPES[dtype]).reshape(shape)
