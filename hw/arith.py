"""The hardware's integer arithmetic primitives (Amaranth expressions), one of each.

* :func:`ceil_log2` (0 for n = 1) and :func:`addr_bits` (at least 1: an address of a
  one-word memory still needs a signal);
* :func:`wire`: a combinational net emitted once;
* :func:`msb_index` / :func:`lsb_index`: the leading / trailing one of an unsigned value, a
  log-depth priority tree; :func:`bit_length` (the leading one + 1, 0 for 0) is built on it;
* :func:`rne_shr`: round-half-even right shift by a variable amount;
* :func:`times_const` (x times a constant by shifts and adds), :func:`align_up` and
  :func:`stride_of` (``spec.memory_map.row_stride`` of a row): the execution units' address
  arithmetic.

The stream-format rounders (RN_fmt with a combinational core and a pipelined wrapper, RN32,
int8) are in :mod:`tellme.hw.elementwise.stream_fp`; every block imports from these two
modules and has no rounder or priority encoder of its own.
"""

from __future__ import annotations

from amaranth.hdl import C, Const, Module, Mux, Signal, Value, unsigned

from tellme.spec.memory_map import ROW_ALIGN


def times_const(x, k: int):
    """``x * k`` for a constant ``k`` by shifts and adds (a multiply would take a DSP slice)."""
    return sum(x << j for j in range(k.bit_length()) if k >> j & 1)


def align_up(x, a: int):
    """``x`` rounded up to a multiple of the power of two ``a``, at most 32 bits (the movers'
    stride and count fields)."""
    return (x + a - 1) & ~Const(a - 1, 32)


def stride_of(cols, elem_bytes: int):
    """``spec.memory_map.row_stride``: bytes from one row of ``cols`` elements of
    ``elem_bytes`` bytes to the next in an act buffer."""
    return align_up(times_const(cols, elem_bytes), ROW_ALIGN)


def ceil_log2(n: int) -> int:
    """Bits of an index of ``n`` items (0 for one item)."""
    return max(0, (n - 1).bit_length())


def addr_bits(n: int) -> int:
    """Address width of an ``n``-deep memory (at least 1)."""
    return max(1, ceil_log2(n))


def wire(m: Module, value, name: str | None = None) -> Signal:
    """A combinational net holding ``value`` (so that it is emitted once, not per use)."""
    value = Value.cast(value)
    s = Signal(value.shape(), name=name)
    m.d.comb += s.eq(value)
    return s


def _index_tree(m: Module, v: Value, highest: bool) -> tuple[Value, Value]:
    w = len(v)
    if w == 1:
        return v[0], C(0, 1)
    half = 1 << (ceil_log2(w) - 1)
    lo_any, lo_idx = _index_tree(m, v[:half], highest)
    hi_any, hi_idx = _index_tree(m, v[half:], highest)
    any_ = Signal()
    idx = Signal(ceil_log2(w))
    sel = Mux(hi_any, hi_idx + half, lo_idx) if highest else Mux(lo_any, lo_idx, hi_idx + half)
    m.d.comb += [any_.eq(lo_any | hi_any), idx.eq(sel)]
    return any_, idx


def msb_index(m: Module, v) -> tuple[Value, Value]:
    """(any bit set, index of the highest set bit) of an unsigned Value (log-depth tree)."""
    return _index_tree(m, wire(m, v), True)


def lsb_index(m: Module, v) -> tuple[Value, Value]:
    """(any bit set, index of the lowest set bit) of an unsigned Value (log-depth tree)."""
    return _index_tree(m, wire(m, v), False)


def bit_length(m: Module, x, width: int, name: str):
    """Number of significant bits of unsigned ``x`` (< 2**width; 0 for 0): the leading one of
    :func:`msb_index` plus one."""
    nz, idx = msb_index(m, Value.cast(x)[:width])
    bl = Signal(range(width + 1), name=f"{name}_bl")
    m.d.comb += bl.eq(Mux(nz, idx + 1, 0))
    return bl


def rne_shr(m: Module, x, s, width: int, name: str):
    """round-half-even(x / 2**s) for unsigned ``x`` < 2**width and a variable shift ``s >= 1``
    (combinational). Shifts beyond ``width + 1`` give 0 like ``width + 1`` does (the half-ulp
    constant would not fit the comparison width)."""
    sw = max(len(Value.cast(s)), (width + 1).bit_length())
    sc = Signal(unsigned(sw), name=f"{name}_sc")
    q = Signal(unsigned(width), name=f"{name}_q")
    rem = Signal(unsigned(width), name=f"{name}_rem")
    half = Signal(unsigned(width + 1), name=f"{name}_half")
    sm1 = Signal(unsigned(sw), name=f"{name}_sm1")
    m.d.comb += [
        sc.eq(Mux(s > width + 1, width + 1, s)),
        sm1.eq(sc - 1),
        q.eq(x >> sc),
        rem.eq(x - (q << sc)),
        half.eq(Const(1, width + 1) << sm1),
    ]
    up = (rem > half) | ((rem == half) & q[0])
    return q + up
