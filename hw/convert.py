"""Weight-file floats to the stream format (docs/hw/top.md): the embedding rows of EMBED and
the norm gains of NORM are stored as float32, float16 or bfloat16 (the record's ``dtype``)
and enter the datapath as RN_fmt of their value.

Golden: :func:`tellme.sim.golden.hw_numerics.float_to_stream`.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.numerics import StreamFormat, stream_format

from .elementwise.common import StallPipe, row_layout
from .elementwise.stream_fp import ROUND_FP_STAGES, round_fp

__all__ = ["FloatToStream", "FLOAT_FIELDS", "float_row_layout"]

# record dtype -> (exponent bits, fraction bits, bias) of the storage format
FLOAT_FIELDS = {0: (8, 23, 127), 1: (5, 10, 15), 2: (8, 7, 127)}   # float32, float16, bfloat16


def float_row_layout(lanes: int) -> data.StructLayout:
    """``lanes`` storage words (a 16-bit format in the low half of its word) and ``last``."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(32), lanes), "last": 1})


class FloatToStream(wiring.Component):
    """RN_fmt of float32 / float16 / bfloat16 values, ``lanes`` per beat.

    Members
    -------
    dtype : In(2)  0 float32, 1 float16, 2 bfloat16 (the spec.program dtype codes); held
        while a row is in flight.
    i : In(stream float_row_layout(lanes))
    o : Out(stream row_layout(lanes, fmt))  ``last`` passed through.

    Each value is the exact ``(-1)**s * mag * 2**exp`` of its fields (normal: the hidden one
    and ``exp = e - bias - frac``; subnormal: ``exp = 1 - bias - frac``) rounded once by the
    stream rounder (``round_fp``): nearest-even, gradual underflow, saturation at the largest
    finite value. Infinities saturate; a NaN has no stream value and gives the saturated value
    of its sign (the golden function refuses NaN: weight files hold finite values).

    Timing: latency 1 + ROUND_FP_STAGES cycles (the 250 MHz rounder), one beat per cycle,
    global stall on ``o``.
    """

    def __init__(self, *, lanes: int = 2, fmt: StreamFormat | None = None):
        self.lanes, self.fmt = lanes, stream_format(fmt)
        super().__init__({"dtype": In(2), "i": In(stream.Signature(float_row_layout(lanes))),
                          "o": Out(stream.Signature(row_layout(lanes, self.fmt)))})

    def elaborate(self, platform):
        m = Module()
        sp = StallPipe(m, [self.i])
        dt = self.dtype
        for lane in range(self.lanes):
            w = self.i.payload.data[lane]
            sign, mag, exp = Signal(), Signal(24), Signal(signed(10))   # |exp| < 2**9
            for code, (eb, fb, bias) in FLOAT_FIELDS.items():
                with m.If(dt == code):
                    e = w[fb:fb + eb]
                    normal = e.any()
                    m.d.comb += [
                        sign.eq(w[fb + eb]),
                        mag.eq(Mux(normal, Const(1 << fb, 24) | w[:fb], w[:fb])),
                        exp.eq(Mux(normal, e - (bias + fb), 1 - bias - fb)),
                    ]
            s1, g1, x1 = sp.reg(sign), sp.reg(mag), sp.reg(exp)
            m.d.comb += self.o.payload.data[lane].eq(round_fp(sp, s1, g1, x1, self.fmt,
                                                              stages=ROUND_FP_STAGES))
        last = sp.reg(self.i.payload.last)
        for _ in range(ROUND_FP_STAGES):
            last = sp.reg(last)
        m.d.comb += self.o.payload.last.eq(last)
        sp.finish(self.o, 1 + ROUND_FP_STAGES)
        return m
