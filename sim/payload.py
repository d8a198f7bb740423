"""Payload packing for Amaranth stream ports: lanes and struct fields <-> Python ints.

Amaranth packs ``ArrayLayout``/``StructLayout`` payloads LSB-first (lane 0 / first field in the
low bits). No cocotb or amaranth imports: used by cocotb testbenches and Amaranth-sim tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def to_signed(value: int, width: int) -> int:
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


def pack_array(values: Iterable[int], width: int) -> int:
    """Lane values (signed or unsigned) -> int, lane 0 in the least significant bits."""
    out = 0
    mask = (1 << width) - 1
    for i, v in enumerate(values):
        v = int(v)
        if not -(1 << (width - 1)) <= v < (1 << width):
            raise ValueError(f"lane {i}: value {v} does not fit {width} bits")
        out |= (v & mask) << (i * width)
    return out


def unpack_array(value: int, width: int, count: int, signed: bool = False) -> list[int]:
    """Inverse of :func:`pack_array`."""
    value = int(value)
    mask = (1 << width) - 1
    lanes = [(value >> (i * width)) & mask for i in range(count)]
    return [to_signed(v, width) for v in lanes] if signed else lanes


def pack_struct(fields: Sequence[tuple[str, int]], **values: int) -> int:
    """Pack named fields (``[(name, width), ...]`` in layout order, LSB first) into an int.

    Missing fields are 0; unknown names raise.
    """
    unknown = set(values) - {n for n, _ in fields}
    if unknown:
        raise ValueError(f"unknown struct fields {sorted(unknown)}")
    out, pos = 0, 0
    for name, width in fields:
        v = int(values.get(name, 0))
        if not 0 <= v < (1 << width):
            raise ValueError(f"field {name}: value {v} does not fit {width} unsigned bits")
        out |= v << pos
        pos += width
    return out


def unpack_struct(fields: Sequence[tuple[str, int]], value: int) -> dict[str, int]:
    """Inverse of :func:`pack_struct` (fields come back unsigned)."""
    value = int(value)
    out, pos = {}, 0
    for name, width in fields:
        out[name] = (value >> pos) & ((1 << width) - 1)
        pos += width
    return out


def layout_fields(layout) -> list[tuple[str, int]]:
    """``[(name, width)]`` of an Amaranth ``StructLayout`` in bit order (needs amaranth)."""
    return [(name, field.width) for name, field in
            sorted(((n, f) for n, f in layout), key=lambda nf: nf[1].offset)]


def row_beats(bits, lanes: int, width: int = 16) -> list[int]:
    """Stream-format bits [n] -> element-wise row beats (``lanes`` lanes of ``width`` bits:
    the format's ``bits``, 16 for FP16, 24 for FP24; ``last`` above them on the final beat),
    as ``hw.elementwise.common.row_layout``."""
    n = len(bits)
    return [pack_array(bits[i:i + lanes], width) | (int(i + lanes == n) << (width * lanes))
            for i in range(0, n, lanes)]


def unpack_rows(beats, lanes: int, width: int = 16):
    """Inverse of :func:`row_beats` (drops ``last``): bits as uint16 (width 16) or int64 [n]."""
    import numpy as np

    dt = np.uint16 if width == 16 else np.int64
    return np.array([unpack_array(b, width, lanes) for b in beats], dt).reshape(-1)
