"""FFN gating: SiLU(gate)*up or ReLU(gate)^2*up, chosen at run time (golden ``gated_act``,
SiLU unit ``numerics.silu_fx``), in any stream format."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .stream_fp import (
    MUL_LATENCY,
    ROUND_FP_STAGES,
    abs_signed,
    fmt_of,
    pipe_mul,
    round_fp,
    unpack,
    wire,
)

LATENCY = 4 + 2 * MUL_LATENCY + ROUND_FP_STAGES
ACT_RELU2 = 1                    # act register: 0 = SiLU, 1 = ReLU^2
T_BITS, D_BITS = 28, 21          # SILU_TABLE entries (|T| < 2**27) and slopes T[i+1]-T[i]


def silu_rom_words():
    """512 ROM words ``T[i] | (T[i+1]-T[i]) << T_BITS`` (two's complement fields)."""
    from tellme.spec.numerics import SILU_TABLE

    t = [int(v) for v in SILU_TABLE]
    words = []
    for i in range(512):
        d = t[i + 1] - t[i]
        assert -(1 << (T_BITS - 1)) <= t[i] < (1 << (T_BITS - 1))
        assert -(1 << (D_BITS - 1)) <= d < (1 << (D_BITS - 1))
        words.append((t[i] & ((1 << T_BITS) - 1)) | ((d & ((1 << D_BITS) - 1)) << T_BITS))
    return words


class GatedAct(wiring.Component):
    """Gated activation, ``lanes`` elements per beat.

    Parameters
    ----------
    lanes : int
        Elements per beat.
    fmt : StreamFormat or None
        Stream format of gate, up and the output (default: the contract's ``STREAM_FORMAT``).

    Members
    -------
    act : In(1)
        0: SiLU (512-segment PWL in Q.22, one dual-port ROM per two lanes), 1: ReLU^2.
        Static while rows flow.
    i_gate, i_up : In(stream.Signature(row_layout(lanes, fmt)))
        Gate and up rows, beat-aligned (``last`` taken from ``i_gate``).
    o : Out(stream.Signature(row_layout(lanes, fmt)))
        ``silu``: RN_fmt(silu_fx(g) * 2**-22 * up) (<= 39 x S-bit exact product, S =
        ``fmt.sig_bits``); ``relu2``: RN_fmt(relu(g)^2 * up) (3S-bit exact product, g^2
        first, then times up); one rounding each. The PWL index and fraction come from
        X = g * 2**F (F = ``fmt.frac``): i = U >> (F-4), r = U mod 2**(F-4), U = X + 16 * 2**F
        (golden ``silu_fx`` for the format).

    Timing: LATENCY (12) cycles: X, ROM address, ROM word, the slope times r (partial
    products, sum), T[i] + the rounded slope term and |y|, the product with up (partial
    products, sum), the four-stage rounder; one beat per cycle, global stall on ``o``.
    """

    def __init__(self, *, lanes: int, fmt=None):
        self._lanes = check_lanes(lanes)
        self._fmt = fmt = fmt_of(fmt)
        lay = row_layout(lanes, fmt)
        super().__init__({"act": In(1), "i_gate": In(stream.Signature(lay)),
                          "i_up": In(stream.Signature(lay)), "o": Out(stream.Signature(lay))})

    def elaborate(self, platform):
        m = Module()
        sp = StallPipe(m, [self.i_gate, self.i_up])
        # one dual-port ROM (a BRAM) per two lanes
        words = silu_rom_words()
        fmt = self._fmt
        F = fmt.frac
        R = F - 4                                          # PWL fraction bits (16 segments/unit)
        relu = self.act == ACT_RELU2
        for lane in range(self._lanes):
            if lane % 2 == 0:
                rom = memory.Memory(shape=T_BITS + D_BITS, depth=512, init=words)
                m.submodules["silu_rom" if lane == 0 else f"silu_rom{lane // 2}"] = rom
            rd = rom.read_port(domain="sync")
            # stage 1: |X| = |g| * 2**F
            g0 = self.i_gate.payload.data[lane]
            u0 = self.i_up.payload.data[lane]
            sg0, sigg0, _ = unpack(g0, fmt)
            eg0 = g0[fmt.man:fmt.man + 5]
            xm1 = sp.reg((sigg0 << (eg0 | (eg0 == 0)))[1:])  # shift + 1 = max(e, 1)
            sg1, g1, u1 = sp.reg(sg0), sp.reg(g0), sp.reg(u0)
            gp1 = sp.reg(Mux(sg0, 0, sigg0))              # relu: sig(g) if g > 0, else 0
            _, sigu0, _ = unpack(u0, fmt)
            mu1 = sp.reg(sigu0)                           # sig(up), registered for the DSP
            # stage 2: U = X + 16 * 2**F -> ROM address (the read is this stage's register)
            xs1 = Cat(xm1, Const(0, 1)).as_signed()
            uu = wire(m, Mux(sg1, (16 << F) - xs1, (16 << F) + xs1))
            inside = (uu >= 0) & (uu < (32 << F))
            m.d.comb += [rd.addr.eq(uu[R:R + 9]), rd.en.eq(sp.en)]
            r2 = sp.reg(uu[:R])
            in2 = sp.reg(inside)
            above2 = sp.reg(~uu[-1] & ~inside)             # X >= 16 * 2**F: X = |X|
            xm2, g2, u2 = sp.reg(xm1), sp.reg(g1), sp.reg(u1)
            # stage 3: the ROM word (or the tail: y = X >> (F-22) above, 0 below) registered
            t = rd.data[:T_BITS].as_signed()
            d = rd.data[T_BITS:].as_signed()
            d3 = sp.reg(Mux(in2, d, 0))
            t3 = sp.reg(Mux(in2, t, Mux(above2, xm2 >> (F - 22), 0))[:40].as_signed())
            r3 = sp.reg(r2)
            g3, u3 = sp.reg(g2), sp.reg(u2)
            # stages 4-5: d*r (partial products, sum)
            dr5 = pipe_mul(sp, d3, r3)
            t5 = sp.delay(t3, MUL_LATENCY)
            # relu: g^2 (g <= 0 -> 0) beside it
            _, _, shg3 = unpack(g3, fmt)
            gp3 = sp.delay(gp1, 2)
            gsq5 = pipe_mul(sp, gp3, gp3)
            exp5 = sp.delay(Mux(relu, (shg3 << 1) - 2 * F, -22), MUL_LATENCY)
            u5 = sp.delay(u3, MUL_LATENCY)
            # stage 6: y = T[i] + floor((d*r + 2**(R-1)) / 2**R) (the rounding constant is a
            # carry into bit R), |y|; the multiplicand of up: |y| or g^2
            y = wire(m, (dr5[R:].as_signed() + t5 + dr5[R - 1])[:40].as_signed())
            yneg, ymag = abs_signed(m, y)
            a6 = sp.reg(Mux(relu, gsq5, ymag))
            yneg6, exp6, u6 = sp.reg(yneg), sp.reg(exp5), sp.reg(u5)
            # stages 7-8: times sig(up)
            su6, _, shu6 = unpack(u6, fmt)
            mag = pipe_mul(sp, a6, sp.delay(mu1, 5))
            exp = sp.delay(exp6 + shu6 - F, MUL_LATENCY)
            sign = sp.delay(Mux(relu, su6, yneg6 ^ su6), MUL_LATENCY)
            out = round_fp(sp, sign, mag, exp, fmt, stages=ROUND_FP_STAGES)
            m.d.comb += self.o.payload.data[lane].eq(out)
        m.d.comb += self.o.payload.last.eq(sp.delay(self.i_gate.payload.last, LATENCY))
        sp.finish(self.o, LATENCY)
        return m
