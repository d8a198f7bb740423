"""Combinational arithmetic helpers of the attention datapath (Amaranth expressions).

Each helper mirrors one step of the hw numerics in ``tellme.sim.golden`` exactly; the cocotb
tests compare the whole engine with :func:`tellme.sim.golden.hw.attention_decode`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned


def fp16_fields(x):
    """(sign, significand, shift) of an FP16 bit pattern: |x| = sig * 2**(shift - 24),
    sig < 2**11 (hidden bit for normals), shift in [0, 29] (golden ``fp16_fields``)."""
    e = x[10:15]
    m = x[0:10]
    normal = e != 0
    sig = Mux(normal, Cat(m, Const(1, 1)), m)
    shift = Mux(normal, e - 1, 0)
    return x[15], sig, shift


def rne_shr(m: Module, x, s, width: int, name: str):
    """round-half-even(x / 2**s) for unsigned ``x`` and a variable shift ``s >= 1``
    (combinational; ``width`` bounds x)."""
    q = Signal(unsigned(width), name=f"{name}_q")
    rem = Signal(unsigned(width), name=f"{name}_rem")
    half = Signal(unsigned(width + 1), name=f"{name}_half")
    sm1 = Signal(unsigned(len(Value.cast(s))), name=f"{name}_sm1")
    m.d.comb += [
        sm1.eq(s - 1),
        q.eq(x >> s),
        rem.eq(x - (q << s)),
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


def rn16(m: Module, mm, width: int, ee, name: str):
    """RN16 of the exact value ``mm * 2**ee`` (unsigned ``mm`` < 2**width, signed ``ee``):
    nearest-even, gradual underflow, saturating at 65504 (0x7BFF). Returns the 15-bit
    magnitude pattern (sign handled by the caller)."""
    blm = bit_length(m, mm, width, name)
    ev = Signal(signed(12), name=f"{name}_ev")          # value in [2**ev, 2**(ev+1))
    m.d.comb += ev.eq(blm - 1 + ee)
    lsb = Signal(signed(12), name=f"{name}_lsb")         # LSB of the FP16 result
    m.d.comb += lsb.eq(Mux(ev - 10 > -24, ev - 10, -24))
    sft = Signal(signed(13), name=f"{name}_s")
    m.d.comb += sft.eq(lsb - ee)
    sr = Signal(range(width + 2), name=f"{name}_sr")
    sl = Signal(range(16), name=f"{name}_sl")
    m.d.comb += [sr.eq(Mux(sft > width + 1, width + 1, Mux(sft < 1, 1, sft))),
                 sl.eq(Mux(sft < 0, -sft, 0))]
    r16 = Signal(width + 16, name=f"{name}_r")
    m.d.comb += r16.eq(Mux(sft <= 0, mm << sl, rne_shr(m, mm, sr, width, f"{name}r")))
    bits = Signal(17, name=f"{name}_bits")
    m.d.comb += bits.eq(Mux(ev >= -14, ((ev + 14) << 10) + r16, r16))
    return Mux(mm == 0, 0, Mux((ev > 15) | (bits >= 0x7C00), 0x7BFF, bits))[:15]
