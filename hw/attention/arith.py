"""Combinational arithmetic helpers of the attention datapath (Amaranth expressions).

Each helper mirrors one step of the hw numerics in the golden model (sim/golden/) exactly, for any
stream format ``fmt`` (:class:`tellme.spec.numerics.StreamFormat`: FP16 = 1-5-10,
FP24 = 1-5-18); the cocotb tests compare the whole engine with
golden `attention_decode` (sim/golden/hw_numerics.py).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed, unsigned

from tellme.spec.numerics import StreamFormat

from ..elementwise.stream_fp import sat_code


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


def bit_length(m: Module, x, width: int, name: str):
    """Number of significant bits of unsigned ``x`` (0 for 0): a priority encoder."""
    bl = Signal(range(width + 1), name=f"{name}_bl")
    m.d.comb += bl.eq(0)
    for i in range(width):
        with m.If(x[i]):
            m.d.comb += bl.eq(i + 1)
    return bl


def rn_fmt(m: Module, mm, width: int, ee, fmt: StreamFormat, name: str):
    """RN_fmt of the exact value ``mm * 2**ee`` (unsigned ``mm`` < 2**width, signed ``ee``):
    nearest-even, gradual underflow, saturating at the largest finite value. Returns the
    ``fmt.bits - 1``-bit magnitude pattern (sign handled by the caller)."""
    M, F = fmt.man, fmt.frac
    blm = bit_length(m, mm, width, name)
    ev = Signal(signed(12), name=f"{name}_ev")          # value in [2**ev, 2**(ev+1))
    m.d.comb += ev.eq(blm - 1 + ee)
    lsb = Signal(signed(12), name=f"{name}_lsb")         # LSB of the result
    m.d.comb += lsb.eq(Mux(ev - M > -F, ev - M, -F))
    sft = Signal(signed(13), name=f"{name}_s")
    m.d.comb += sft.eq(lsb - ee)
    sr = Signal(range(width + 2), name=f"{name}_sr")
    sl = Signal(range(max(16, M + 2)), name=f"{name}_sl")   # left shift <= M (mm >= 1)
    m.d.comb += [sr.eq(Mux(sft > width + 1, width + 1, Mux(sft < 1, 1, sft))),
                 sl.eq(Mux(sft < 0, -sft, 0))]
    r = Signal(width + max(16, M + 2), name=f"{name}_r")
    m.d.comb += r.eq(Mux(sft <= 0, mm << sl, rne_shr(m, mm, sr, width, f"{name}r")))
    bits = Signal(fmt.bits + 1, name=f"{name}_bits")
    m.d.comb += bits.eq(Mux(ev >= -14, ((ev + 14) << M) + r, r))
    top = sat_code(fmt)                                  # largest finite magnitude pattern
    return Mux(mm == 0, 0, Mux((ev > 15) | (bits > top), top, bits))[:fmt.bits - 1]
