"""Residual add: y = RN16(x + r) per element (golden ``residual_add``), fused on the o_proj and
down_proj outputs."""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .fp16 import ROUND16_LATENCY, round16, unpack16, wire

GUARD = 3                      # guard, round and sticky positions below the significand
LATENCY = 2 + ROUND16_LATENCY


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
        ``RN16(x + y)``, one rounding, saturating at +-65504; an exact zero sum is -0 only
        when both operands are -0 (IEEE). Classic aligned adder: the operand of larger
        magnitude keeps its 11-bit significand plus GUARD (3) zero bits, the other is shifted
        right by the exponent difference with the shifted-out bits ORed into its LSB (sticky);
        the 15-bit sum/difference then goes through the shared rounder. With 3 guard bits this
        is the correctly rounded sum (a cancellation of more than one bit only happens for
        exponent differences <= 1, where nothing is shifted out).

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
            swap = b[:15] > a[:15]                          # |y| > |x|
            big = Mux(swap, b, a)
            small = Mux(swap, a, b)
            sb, sigb, shb = unpack16(big)
            ss, sigs, shs = unpack16(small)
            d = (shb - shs).as_unsigned()[:5]               # >= 0
            # stage 1: aligned operands
            full = Cat(C(0, GUARD), sigs)                   # 14 bits
            dc = Mux(d > 14, 14, d)[:4]
            lost = (full & ((C(1, 15) << dc) - 1)[:14]) != 0
            al = sp.reg((full >> dc) | lost)
            bg = sp.reg(Cat(C(0, GUARD), sigb))
            sub = sp.reg(sb ^ ss)
            sign1 = sp.reg(sb)
            negzero = sp.reg(a[15] & b[15])
            exp1 = sp.reg(shb - 24 - GUARD)
            # stage 2: add / subtract (the big operand dominates: z >= 0)
            z = wire(m, Mux(sub, bg - al, bg + al)[:15])
            sign = sp.reg(Mux(z == 0, negzero, sign1))
            mag = sp.reg(z)
            out = round16(sp, sign, mag, sp.reg(exp1))
            m.d.comb += self.o.payload.data[lane].eq(out)
        m.d.comb += self.o.payload.last.eq(sp.delay(self.i_x.payload.last, LATENCY))
        sp.finish(self.o, LATENCY)
        return m
