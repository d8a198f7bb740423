"""Residual add: y = RN16(x + r) per element (golden ``residual_add``), fused on the o_proj and
down_proj outputs."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .fp16 import ROUND16_LATENCY, abs_signed, round16, unpack16

LATENCY = 2 + ROUND16_LATENCY


def fp16_to_fixed(bits):
    """FP16 bits -> exact signed integer ``x * 2**24`` (41 bits)."""
    sign, sig, sh = unpack16(bits)
    mag = sig << sh                                  # < 2**41
    return Mux(sign, -mag, mag)


class ResidualAdd(wiring.Component):
    """FP16 residual adder, ``lanes`` elements per beat.

    Parameters
    ----------
    lanes : int
        Elements per beat.

    Members
    -------
    i_x, i_y : In(stream.Signature(row_layout(lanes)))
        The two operand rows, beat-aligned (the output takes ``last`` from ``i_x``).
    o : Out(stream.Signature(row_layout(lanes)))
        ``RN16(x + y)``: both operands are placed exactly at LSB 2**-24 (41-bit integers), added
        exactly, rounded once (saturating at +-65504); an exact zero sum is -0 only when both
        operands are -0 (IEEE).

    Timing: latency ``LATENCY`` (5) cycles, one beat per cycle, global stall on ``o``
    backpressure (a beat enters when both inputs are valid and ``o`` is not stalled).
    """

    def __init__(self, *, lanes: int):
        self._lanes = check_lanes(lanes)
        lay = row_layout(lanes)
        super().__init__({"i_x": In(stream.Signature(lay)), "i_y": In(stream.Signature(lay)),
                          "o": Out(stream.Signature(lay))})

    @property
    def lanes(self):
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        sp = StallPipe(m, [self.i_x, self.i_y])
        for lane in range(self._lanes):
            a = self.i_x.payload.data[lane]
            b = self.i_y.payload.data[lane]
            xa = sp.reg(fp16_to_fixed(a))
            xb = sp.reg(fp16_to_fixed(b))
            both_neg0 = sp.reg((a == 0x8000) & (b == 0x8000))
            z = xa + xb
            neg, mag = abs_signed(m, z)
            sign = sp.reg(neg | both_neg0)
            mag = sp.reg(mag)
            out = round16(sp, sign, mag, -24)
            m.d.comb += self.o.payload.data[lane].eq(out)
        m.d.comb += self.o.payload.last.eq(sp.delay(self.i_x.payload.last, LATENCY))
        sp.finish(self.o, LATENCY)
        return m
