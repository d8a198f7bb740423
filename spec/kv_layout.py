"""DDR layout of the KV cache and its traffic model (docs/hw/attention.md).

Layout (one contiguous buffer, little-endian)::

    for layer in range(num_layers):
        for kind in ("K", "V"):
            for kv_head in range(num_kv_heads):
                rows[max_ctx][head_dim]        # row p = position p
    # int8 only, after all rows: one scale per (layer, kind, kv_head, position)
    for layer, kind, kv_head: scales[max_ctx]  # in the stream format

* Elements: ``dtype`` "fp16" (2 B) or "fp24" (3 B) hold the stream format's encoding
  (:meth:`StreamFormat.to_bits`) little-endian, element c of a row at byte ``c * elem_bytes``
  (an FP24 2B4T row of 128 is 384 bytes, 24 beats of 16 bytes); "int8" holds one code byte
  per element and a per-row scale in the stream format ``fmt`` (2 or 3 bytes, same packing).
  ``dtype=None`` means the stream format's own rows (:data:`~tellme.spec.numerics.
  STREAM_FORMAT` unless ``fmt`` is given).
* K is stored after RoPE; position p is row p for prefill and decode alike (forward order,
  no host fix-up): prefill writes rows start..start+N-1, decode appends row pos. The engine reads
  the keys of one KV head as one increasing address range (INCR bursts, split at 4 KiB).
* Regions start on ``align``-byte boundaries; rows are packed back to back (an FP24 row need not
  be a whole number of AXI beats: the reader's gearbox and the writer's strobes handle that).

`tellme study kv-traffic` prints the traffic table (bytes per token per layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tellme.spec.attention import kv_schedule
from tellme.spec.numerics import STREAM_FORMATS, StreamFormat, stream_format

DTYPES = {"fp16": 2, "fp24": 3, "int8": 1}
FORMATS = STREAM_FORMATS


def _al(x: int, a: int) -> int:
    return -(-x // a) * a


def encode_elems(bits, elem_bytes: int) -> bytes:
    """Element bit patterns (any integer array) -> their little-endian bytes, ``elem_bytes``
    each, in row-major order (the layout's row image)."""
    u = np.asarray(bits).astype(np.int64).reshape(-1)
    if u.size and (u.min() < 0 or u.max() >> (8 * elem_bytes)):
        raise ValueError(f"element bit patterns do not fit {elem_bytes} bytes")
    return u.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :elem_bytes].tobytes()


def decode_elems(buf: bytes, elem_bytes: int) -> np.ndarray:
    """Inverse of :func:`encode_elems`: int64 bit patterns."""
    b = np.frombuffer(bytes(buf), dtype=np.uint8)
    if b.size % elem_bytes:
        raise ValueError(f"{b.size} bytes are not a whole number of {elem_bytes}-byte elements")
    w = np.zeros((b.size // elem_bytes, 8), dtype=np.uint8)
    w[:, :elem_bytes] = b.reshape(-1, elem_bytes)
    return w.view("<u8").reshape(-1).astype(np.int64)


@dataclass(frozen=True)
class KVLayout:
    """``fmt``: the stream format of the rows (dtype "fp16"/"fp24") or of the int8 scales;
    None: the rows' own format, else :data:`STREAM_FORMAT`."""
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_ctx: int
    dtype: str | None = None
    base: int = 0
    align: int = 4096
    fmt: StreamFormat | None = None

    def __post_init__(self):
        dt, fmt = self.dtype, self.fmt
        if fmt is not None and not isinstance(fmt, StreamFormat):
            raise TypeError(f"KVLayout.fmt must be a StreamFormat, got {fmt!r}")
        if dt is None:
            dt = stream_format(fmt).name
        if dt not in DTYPES:
            raise ValueError(f"KV dtype must be one of {sorted(DTYPES)}, got {dt!r}")
        if dt in FORMATS:
            if fmt is not None and fmt != FORMATS[dt]:
                raise ValueError(f"KV dtype {dt!r} does not match the stream format {fmt!r}")
            fmt = FORMATS[dt]
        else:
            fmt = stream_format(fmt)
            if fmt.name not in FORMATS:
                raise ValueError(f"int8 KV scale format must be FP16 or FP24, got {fmt!r}")
        object.__setattr__(self, "dtype", dt)
        object.__setattr__(self, "fmt", fmt)
        for f in ("num_layers", "num_kv_heads", "head_dim", "max_ctx"):
            if getattr(self, f) < 1:
                raise ValueError(f"KVLayout.{f} must be >= 1, got {getattr(self, f)}")

    @property
    def elem_bytes(self) -> int:
        return DTYPES[self.dtype]

    @property
    def scale_bytes(self) -> int:
        """Bytes of one int8 row scale (the stream format's); 0 for FP rows."""
        return self.fmt.bits // 8 if self.dtype == "int8" else 0

    @property
    def row_bytes(self) -> int:
        return self.head_dim * self.elem_bytes

    @property
    def head_bytes(self) -> int:
        """Bytes of one (layer, kind, kv_head) region, padded to ``align``."""
        return _al(self.max_ctx * self.row_bytes, self.align)

    def _region(self, layer: int, kind: str, head: int) -> int:
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} outside 0..{self.num_layers - 1}")
        if kind not in ("K", "V"):
            raise ValueError(f"kind must be 'K' or 'V', got {kind!r}")
        if not 0 <= head < self.num_kv_heads:
            raise IndexError(f"kv head {head} outside 0..{self.num_kv_heads - 1}")
        return (layer * 2 + (kind == "V")) * self.num_kv_heads + head

    def row_addr(self, layer: int, kind: str, head: int, pos: int) -> int:
        if not 0 <= pos < self.max_ctx:
            raise IndexError(f"position {pos} outside the KV cache (max_ctx {self.max_ctx})")
        return self.base + self._region(layer, kind, head) * self.head_bytes + pos * self.row_bytes

    @property
    def rows_bytes(self) -> int:
        return self.num_layers * 2 * self.num_kv_heads * self.head_bytes

    @property
    def scales_head_bytes(self) -> int:
        """Bytes of one (layer, kind, kv_head) scale region (int8), padded to ``align``."""
        return _al(self.max_ctx * self.scale_bytes, self.align)

    def scale_addr(self, layer: int, kind: str, head: int, pos: int) -> int:
        if self.dtype != "int8":
            raise ValueError(f"{self.dtype.upper()} KV has no scales")
        if not 0 <= pos < self.max_ctx:
            raise IndexError(f"position {pos} outside the KV cache (max_ctx {self.max_ctx})")
        return (self.base + self.rows_bytes + self._region(layer, kind, head)
                * self.scales_head_bytes + pos * self.scale_bytes)

    @property
    def total_bytes(self) -> int:
        n = self.rows_bytes
        if self.dtype == "int8":
            n += self.num_layers * 2 * self.num_kv_heads * self.scales_head_bytes
        return n

    def encode_rows(self, bits) -> bytes:
        """Rows of element bit patterns ([..., head_dim]; FP: ``fmt.to_bits``, int8: codes as
        int8 or uint8) -> the bytes the layout stores for them back to back."""
        u = np.asarray(bits).astype(np.int64)
        if self.dtype == "int8":
            u = u & 0xFF
        return encode_elems(u, self.elem_bytes)


# --------------------------------------------------------------------------- traffic model

def decode_traffic(n: int, *, num_kv_heads: int, head_dim: int, dtype: str = "fp16",
                   depth: int = 1024, fmt: StreamFormat | None = None) -> dict:
    """DDR bytes of one layer's decode attention with n keys (the new token's K/V included).

    Reads: per KV head the rows of :func:`kv_schedule` (K once plus the re-read of every tile
    but the last, V once); int8 adds one scale per row read (in ``fmt``, default the stream
    format: 2 or 3 bytes). Writes: the new K and V row.
    """
    lay = KVLayout(1, 1, head_dim, 1, dtype=dtype, fmt=None if dtype in FORMATS else fmt)
    per_row = lay.row_bytes + lay.scale_bytes
    rows = sum(r for _, _, r in kv_schedule(n, depth))
    rd = num_kv_heads * rows * per_row
    wr = num_kv_heads * 2 * per_row
    return {"read": rd, "write": wr, "total": rd + wr, "rows": rows * num_kv_heads}
