"""DDR layout of the KV cache and its traffic model (docs/hw/attention.md).

Stream-format rows (``dtype`` "fp16" / "fp24"; one contiguous buffer, little-endian)::

    for layer in range(num_layers):
        for kind in ("K", "V"):
            for kv_head in range(num_kv_heads):
                rows[max_ctx][head_dim]        # row p = position p

* Elements hold the stream format's encoding (:meth:`StreamFormat.to_bits`) little-endian,
  element c of a row at byte ``c * elem_bytes`` (an FP24 2B4T row of 128 is 384 bytes, 24
  beats of 16 bytes). ``dtype=None`` means the stream format's own rows
  (:data:`~tellme.spec.numerics.STREAM_FORMAT` unless ``fmt`` is given).
* Regions start on ``align``-byte boundaries; rows are packed back to back (an FP24 row need
  not be a whole number of AXI beats: the FP reader's gearbox and the writer's strobes handle
  that).

int8 (``dtype="int8"``: one code byte per element, row scales in the stream format ``fmt``),
the layout the integer attention engine streams (hw/attention/int_engine.py) with
``beat`` = the engine's beat (keys per V block = codes per K beat; a power of two)::

    for layer: for kind in ("K", "V"): for kv_head: region      # each padded to ``align``
    K region: blocks[ceil(max_ctx / beat)] of k_block_bytes:
        header[beat] of pair_bytes: (K scale, V scale) of key b*beat + j, then zeros
        (zeros up to k_header_bytes)
        rows[beat] of k_row_bytes: key b*beat + j, codes 0..head_dim-1, then zeros
        (zeros up to k_block_bytes)
    V region: blocks[ceil(max_ctx / beat)] of v_block_bytes:
        channels[head_dim] of beat bytes: byte j of channel c = code c of key b*beat + j
        (zeros up to v_block_bytes)

* ``k_row_bytes = bpr * beat`` with ``bpr = ceil(head_dim / beat)`` (the engine's K beats
  per row); ``pair_bytes`` = 4 (FP16 scales: K at byte 0, V at byte 2) or 8 (FP24: K at 0, V
  at 3, 2 zero bytes); ``k_header_bytes = align64(beat * pair_bytes)``, ``k_block_bytes =
  align64(k_header_bytes + beat * k_row_bytes)``, ``v_block_bytes = align64(head_dim * beat)``.
* Alignment: regions on ``align`` (4 KiB) boundaries, every K block, K row section and V
  block on a 64-byte boundary, every K row and V channel on a ``beat``-byte boundary. So
  with ``beat * 8 >= data_width`` every engine beat is whole AXI beats, and with a narrower
  beat every AXI beat holds whole engine beats: the reader converts widths at a fixed ratio
  and never shifts by a byte offset; a K block (header, then its rows) and a V block are
  each one increasing range. The scales ride in the K block because the engine takes both
  row scales of a key with its K beats (the V beats' scale bits are ignored).
* Pad bytes are zero (the writer stores the zeros of a K row and of a scale pair with the
  row); V codes of keys not yet written are whatever the buffer held (the engine gives keys
  past ``n`` weight 0).

K is stored after RoPE; position p is key p for prefill and decode alike (forward order, no
host fix-up): prefill writes keys start..start+N-1, decode appends key pos.

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
    None: the rows' own format, else :data:`STREAM_FORMAT`. ``beat``: int8 only, the integer
    engine's beat (kv260/zcu104: 64; the module docstring has the int8 layout)."""
    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_ctx: int
    dtype: str | None = None
    base: int = 0
    align: int = 4096
    fmt: StreamFormat | None = None
    beat: int = 64

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
        b = self.beat
        if not isinstance(b, int) or b < 1 or b & (b - 1):
            raise ValueError(f"KVLayout.beat must be a power of two, got {b!r}")
        if dt == "int8" and (self.align % 64 or self.base % 64):
            raise ValueError(f"int8 KV regions start on 64-byte boundaries: base {self.base:#x}"
                             f" and align {self.align} must be multiples of 64")

    @property
    def int8(self) -> bool:
        return self.dtype == "int8"

    @property
    def elem_bytes(self) -> int:
        return DTYPES[self.dtype]

    @property
    def scale_bytes(self) -> int:
        """Bytes of one int8 row scale (the stream format's); 0 for FP rows."""
        return self.fmt.bits // 8 if self.int8 else 0

    @property
    def row_bytes(self) -> int:
        """Bytes of a row's elements (int8: the codes, without the K row's padding)."""
        return self.head_dim * self.elem_bytes

    # ---- int8 geometry
    def _need_int8(self, what: str):
        if not self.int8:
            raise ValueError(f"{self.dtype.upper()} KV has no {what}")

    @property
    def bpr(self) -> int:
        """int8: the engine's K beats per row, ceil(head_dim / beat)."""
        return -(-self.head_dim // self.beat)

    @property
    def pair_bytes(self) -> int:
        """int8: bytes of one key's (K scale, V scale) entry in a K block header."""
        self._need_int8("scales")
        return 4 if self.scale_bytes == 2 else 8

    @property
    def k_row_bytes(self) -> int:
        self._need_int8("padded K rows")
        return self.bpr * self.beat

    @property
    def k_header_bytes(self) -> int:
        return _al(self.beat * self.pair_bytes, 64)

    @property
    def k_block_bytes(self) -> int:
        return _al(self.k_header_bytes + self.beat * self.k_row_bytes, 64)

    @property
    def v_block_bytes(self) -> int:
        self._need_int8("V blocks")
        return _al(self.head_dim * self.beat, 64)

    def block_read_bytes(self, kind: str, keys: int) -> int:
        """int8: bytes the reader fetches of one block holding ``keys`` keys of a segment: a K
        block's scale header and those keys' padded rows; a V block whole (``head_dim``
        channels of ``beat`` codes, whichever keys the segment needs)."""
        self._need_int8("blocks")
        if kind == "K":
            return self.k_header_bytes + keys * self.k_row_bytes
        return self.head_dim * self.beat

    def stored_read_bytes(self, first: int, rows: int, kind: str) -> int:
        """int8: bytes fetched for the rows [first, first + rows) of one (kind, head): the sum
        of :meth:`block_read_bytes` over the blocks they touch (what the DDR carries, padding
        and headers included; the rows' codes and scales alone are ``rows * (head_dim +
        scale_bytes)``)."""
        b = self.beat
        return sum(self.block_read_bytes(kind, min(first + rows, (k + 1) * b) - max(first, k * b))
                   for k in range(first // b, -(-(first + rows) // b)))

    @property
    def blocks(self) -> int:
        """int8: blocks of ``beat`` keys per region."""
        return -(-self.max_ctx // self.beat)

    def kind_head_bytes(self, kind: str) -> int:
        """Bytes of one (layer, ``kind``, kv_head) region, padded to ``align``."""
        if not self.int8:
            return self.head_bytes
        blk = self.k_block_bytes if kind == "K" else self.v_block_bytes
        return _al(self.blocks * blk, self.align)

    @property
    def head_bytes(self) -> int:
        """Bytes of one (layer, kind, kv_head) region of stream-format rows, padded to
        ``align`` (int8: :meth:`kind_head_bytes`, K and V regions differ)."""
        if self.int8:
            raise ValueError("int8 K and V regions differ in size: kind_head_bytes(kind)")
        return _al(self.max_ctx * self.row_bytes, self.align)

    def _check(self, layer: int, kind: str, head: int):
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} outside 0..{self.num_layers - 1}")
        if kind not in ("K", "V"):
            raise ValueError(f"kind must be 'K' or 'V', got {kind!r}")
        if not 0 <= head < self.num_kv_heads:
            raise IndexError(f"kv head {head} outside 0..{self.num_kv_heads - 1}")

    def _pos(self, pos: int):
        if not 0 <= pos < self.max_ctx:
            raise IndexError(f"position {pos} outside the KV cache (max_ctx {self.max_ctx})")

    def region_addr(self, layer: int, kind: str, head: int) -> int:
        """Byte address of the (layer, kind, kv_head) region (key 0; int8 K: block 0's
        header)."""
        self._check(layer, kind, head)
        kb, vb = self.kind_head_bytes("K"), self.kind_head_bytes("V")
        off = layer * self.num_kv_heads * (kb + vb)
        off += self.num_kv_heads * kb + head * vb if kind == "V" else head * kb
        return self.base + off

    def block_addr(self, layer: int, kind: str, head: int, block: int) -> int:
        """int8: byte address of block ``block`` (keys block*beat ..) of a region."""
        if not 0 <= block < self.blocks:
            raise IndexError(f"block {block} outside 0..{self.blocks - 1}")
        stride = self.k_block_bytes if kind == "K" else self.v_block_bytes
        return self.region_addr(layer, kind, head) + block * stride

    def row_addr(self, layer: int, kind: str, head: int, pos: int) -> int:
        """Byte address of row ``pos`` (int8: of K only, the codes of the padded row; V is
        channel-major: :meth:`v_addr`)."""
        self._pos(pos)
        if not self.int8:
            return self.region_addr(layer, kind, head) + pos * self.row_bytes
        if kind != "K":
            raise ValueError("int8 V is stored channel-major in blocks: v_addr(layer, head, "
                             "pos, ch)")
        return (self.block_addr(layer, "K", head, pos // self.beat) + self.k_header_bytes
                + pos % self.beat * self.k_row_bytes)

    def v_addr(self, layer: int, head: int, pos: int, ch: int = 0) -> int:
        """int8: byte address of V code ``ch`` of key ``pos`` (channels ``beat`` bytes
        apart)."""
        self._pos(pos)
        if not 0 <= ch < self.head_dim:
            raise IndexError(f"channel {ch} outside 0..{self.head_dim - 1}")
        return (self.block_addr(layer, "V", head, pos // self.beat) + ch * self.beat
                + pos % self.beat)

    def scale_addr(self, layer: int, kind: str, head: int, pos: int) -> int:
        """int8: byte address of key ``pos``'s ``kind`` scale (in the K block's header)."""
        self._need_int8("scales")
        self._pos(pos)
        self._check(layer, kind, head)
        return (self.block_addr(layer, "K", head, pos // self.beat)
                + pos % self.beat * self.pair_bytes + (kind == "V") * self.scale_bytes)

    @property
    def rows_bytes(self) -> int:
        """Bytes of all regions."""
        return self.num_layers * self.num_kv_heads * (self.kind_head_bytes("K")
                                                      + self.kind_head_bytes("V"))

    @property
    def total_bytes(self) -> int:
        return self.rows_bytes

    def encode_rows(self, bits) -> bytes:
        """Rows of element bit patterns ([..., head_dim]; FP: ``fmt.to_bits``, int8: codes as
        int8 or uint8) -> their bytes back to back (the FP layout's row image)."""
        u = np.asarray(bits).astype(np.int64)
        if self.int8:
            u = u & 0xFF
        return encode_elems(u, self.elem_bytes)

    # ---- int8 region images
    def _codes(self, codes, what: str) -> np.ndarray:
        c = np.asarray(codes).astype(np.int64)
        if c.ndim != 2 or c.shape[1] != self.head_dim or c.shape[0] > self.blocks * self.beat:
            raise ValueError(f"{what} codes must be [<= {self.blocks * self.beat}, "
                             f"{self.head_dim}], got {c.shape}")
        out = np.zeros((self.blocks * self.beat, self.head_dim), np.uint8)
        out[:len(c)] = c & 0xFF
        return out

    def encode_k_region(self, codes, k_scales, v_scales) -> bytes:
        """int8: the K region's bytes (``kind_head_bytes("K")``) for K codes [m, head_dim]
        (int8) and both scales' bit patterns [m] (``fmt.to_bits``) of keys 0..m-1; the rest
        zero."""
        self._need_int8("K blocks")
        B, sb = self.beat, self.scale_bytes
        c = self._codes(codes, "K").reshape(self.blocks, B, self.head_dim)
        pr = np.zeros((self.blocks * B, self.pair_bytes), np.uint8)
        for off, s in ((0, k_scales), (sb, v_scales)):
            s = np.asarray(s, np.int64).reshape(-1)
            if s.size != len(np.asarray(codes)):
                raise ValueError(f"{s.size} scales for {len(np.asarray(codes))} rows")
            pr[:s.size, off:off + sb] = np.frombuffer(encode_elems(s, sb), np.uint8
                                                      ).reshape(-1, sb)
        blk = np.zeros((self.blocks, self.k_block_bytes), np.uint8)
        hb, rb = self.k_header_bytes, self.k_row_bytes
        blk[:, :B * self.pair_bytes] = pr.reshape(self.blocks, -1)
        rows = np.zeros((self.blocks, B, rb), np.uint8)
        rows[:, :, :self.head_dim] = c
        blk[:, hb:hb + B * rb] = rows.reshape(self.blocks, -1)
        out = np.zeros(self.kind_head_bytes("K"), np.uint8)
        out[:blk.size] = blk.reshape(-1)
        return out.tobytes()

    def encode_v_region(self, codes) -> bytes:
        """int8: the V region's bytes for V codes [m, head_dim] of keys 0..m-1 (the rest
        zero)."""
        self._need_int8("V blocks")
        B = self.beat
        c = self._codes(codes, "V").reshape(self.blocks, B, self.head_dim)
        blk = np.zeros((self.blocks, self.v_block_bytes), np.uint8)
        blk[:, :self.head_dim * B] = c.transpose(0, 2, 1).reshape(self.blocks, -1)
        out = np.zeros(self.kind_head_bytes("V"), np.uint8)
        out[:blk.size] = blk.reshape(-1)
        return out.tobytes()

    def decode_k_region(self, buf) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inverse of :meth:`encode_k_region` over every key slot: (codes [blocks*beat,
        head_dim] int8, K scale bits, V scale bits)."""
        self._need_int8("K blocks")
        B, sb, hb, rb = self.beat, self.scale_bytes, self.k_header_bytes, self.k_row_bytes
        b = np.frombuffer(bytes(buf), np.uint8)[:self.blocks * self.k_block_bytes]
        blk = b.reshape(self.blocks, self.k_block_bytes)
        pr = blk[:, :B * self.pair_bytes].reshape(-1, self.pair_bytes)
        ks = decode_elems(pr[:, :sb].tobytes(), sb)
        vs = decode_elems(pr[:, sb:2 * sb].tobytes(), sb)
        rows = blk[:, hb:hb + B * rb].reshape(-1, rb)[:, :self.head_dim]
        return rows.view(np.int8).copy(), ks, vs

    def decode_v_region(self, buf) -> np.ndarray:
        """Inverse of :meth:`encode_v_region`: V codes [blocks*beat, head_dim] int8."""
        self._need_int8("V blocks")
        B = self.beat
        b = np.frombuffer(bytes(buf), np.uint8)[:self.blocks * self.v_block_bytes]
        blk = b.reshape(self.blocks, self.v_block_bytes)[:, :self.head_dim * B]
        c = blk.reshape(self.blocks, self.head_dim, B).transpose(0, 2, 1)
        return c.reshape(-1, self.head_dim).view(np.int8).copy()


# --------------------------------------------------------------------------- traffic model

def decode_traffic(n: int, *, num_kv_heads: int, head_dim: int, dtype: str = "fp16",
                   depth: int = 1024, fmt: StreamFormat | None = None, beat: int = 64) -> dict:
    """DDR bytes of one layer's decode attention with n keys (the new token's K/V included).

    Reads: per KV head the rows of :func:`kv_schedule` (K once plus the re-read of every tile
    but the last, V once); int8 adds one scale per row read (in ``fmt``, default the stream
    format: 2 or 3 bytes). Writes: the new K and V row. For int8 this is the payload (codes
    and scales); ``read_stored`` is what the layout's reader fetches (K rows' padding, whole
    scale headers and whole V blocks of ``beat`` keys; :meth:`KVLayout.stored_read_bytes`),
    equal to ``read`` for stream-format rows.
    """
    lay = KVLayout(1, 1, head_dim, 1, dtype=dtype, fmt=None if dtype in FORMATS else fmt,
                   beat=beat)
    per_row = lay.row_bytes + lay.scale_bytes
    sched = kv_schedule(n, depth)
    rows = sum(r for _, _, r in sched)
    rd = num_kv_heads * rows * per_row
    wr = num_kv_heads * 2 * per_row
    stored = (num_kv_heads * sum(lay.stored_read_bytes(f, r, k) for k, f, r in sched)
              if lay.int8 else rd)
    return {"read": rd, "read_stored": stored, "write": wr, "total": rd + wr,
            "rows": rows * num_kv_heads}
