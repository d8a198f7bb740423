"""Residual add: y = RN_fmt(x + r) per element (golden ``residual_add``), fused on the o_proj
and down_proj outputs."""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .stream_fp import ROUND_FP_STAGES, fmt_of, round_fp, unpack, wire

GUARD = 3                      # guard, round and sticky positions below the significand
LATENCY = 3 + ROUND_FP_STAGES


class ResidualAdd(wiring.Component):
    """Stream-format residual adder, ``lanes`` elements per beat.

    Parameters
    ----------
    lanes : int
        Elements per beat.
    fmt : StreamFormat or None
        Stream format of the rows (default: the contract's ``STREAM_FORMAT``).

    Members
    -------
    i_x, i_y : In(stream.Signature(row_layout(lanes)))
        The two operand rows, beat-aligned (the output takes ``last`` from ``i_x``).
    o : Out(stream.Signature(row_layout(lanes)))
        ``RN_fmt(x + y)``, one rounding, saturating at the format's maximum; an exact zero sum
        is -0 only when both operands are -0 (IEEE). Classic aligned adder: the operand of
        larger magnitude keeps its significand (``fmt.sig_bits``) plus GUARD (3) zero bits,
        the other is shifted right by the exponent difference with the shifted-out bits ORed
        into its LSB (sticky); the sum/difference (one bit wider) then goes through the shared
        rounder. With 3 guard bits this
        is the correctly rounded sum (a cancellation of more than one bit only happens for
        exponent differences <= 1, where nothing is shifted out).

    Timing: latency ``LATENCY`` (7) cycles (order and exponent difference, alignment, add,
    the four-stage rounder), one beat per cycle, global stall on ``o`` backpressure (a beat
    enters when both inputs are valid and ``o`` is not stalled).
    """

    def __init__(self, *, lanes: int, fmt=None):
        self._lanes = check_lanes(lanes)
        self._fmt = fmt = fmt_of(fmt)
        lay = row_layout(lanes, fmt)
        super().__init__({"i_x": In(stream.Signature(lay)), "i_y": In(stream.Signature(lay)),
                          "o": Out(stream.Signature(lay))})

    @property
    def lanes(self):
        return self._lanes

    @property
    def fmt(self):
        return self._fmt

    def elaborate(self, platform):
        m = Module()
        fmt = self._fmt
        M, nb, W = fmt.man, fmt.bits - 1, fmt.sig_bits + GUARD  # magnitude bits; aligned width
        sp = StallPipe(m, [self.i_x, self.i_y])
        for lane in range(self._lanes):
            a = self.i_x.payload.data[lane]
            b = self.i_y.payload.data[lane]
            # stage 1: order by magnitude; exponent difference (both orders, then chosen)
            swap = wire(m, b[:nb] > a[:nb])                 # |y| > |x|
            ea, eb = (v[M:M + 5] | (v[M:M + 5] == 0) for v in (a, b))   # shift + 1
            d = sp.reg(Mux(swap, eb - ea, ea - eb)[:5])     # >= 0
            big = sp.reg(Mux(swap, b, a))
            small = sp.reg(Mux(swap, a, b))
            negzero = sp.reg(a[nb] & b[nb])
            sb, sigb, shb = unpack(big, fmt)
            ss, sigs, _ = unpack(small, fmt)
            # stage 2: aligned operands: the small one shifted right by d, the bits shifted
            # out ORed into its LSB (sticky)
            full = Cat(C(0, GUARD), sigs)                   # W bits
            lost = Cat(*(full[j] & (d > j) for j in range(W))).any()
            al = sp.reg((full >> d) | lost)
            bg = sp.reg(Cat(C(0, GUARD), sigb))
            sub = sp.reg(sb ^ ss)
            sign1 = sp.reg(sb)
            negzero2 = sp.reg(negzero)
            exp1 = sp.reg(shb - fmt.frac - GUARD)
            # stage 3: add / subtract (the big operand dominates: z >= 0); an exact zero sum
            # (told by comparing the operands, beside the adder)
            z = wire(m, Mux(sub, bg - al, bg + al)[:W + 1])
            zero = Mux(sub, bg == al, (bg | al) == 0)
            sign = sp.reg(Mux(zero, negzero2, sign1))
            mag = sp.reg(z)
            out = round_fp(sp, sign, mag, sp.reg(exp1), fmt, stages=ROUND_FP_STAGES)
            m.d.comb += self.o.payload.data[lane].eq(out)
        m.d.comb += self.o.payload.last.eq(sp.delay(self.i_x.payload.last, LATENCY))
        sp.finish(self.o, LATENCY)
        return m
