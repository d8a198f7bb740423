"""FFN gating: SiLU(gate)*up or ReLU(gate)^2*up, chosen at run time (golden ``gated_act``,
SiLU unit ``numerics.silu_fx``), in any stream format."""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .stream_fp import ROUND_FP_LATENCY, abs_signed, fmt_of, round_fp, unpack

LATENCY = 4 + ROUND_FP_LATENCY
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
        ``fmt.sig_bits``); ``relu2``: RN_fmt(relu(g)^2 * up) (3S-bit exact product, formed as
        g^2 in one stage and times up in the next); one rounding each. The PWL index and
        fraction come from X = |g| * 2**F (F = ``fmt.frac``): i = U >> (F-4), r = U mod
        2**(F-4), U = X + 16 * 2**F (golden ``silu_fx`` for the format).

    Timing: LATENCY (7) cycles (ROM read, interpolation, square, product, rounder), one beat
    per cycle, global stall on ``o``.
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
        for lane in range(self._lanes):
            if lane % 2 == 0:
                rom = memory.Memory(shape=T_BITS + D_BITS, depth=512, init=words)
                m.submodules["silu_rom" if lane == 0 else f"silu_rom{lane // 2}"] = rom
            rd = rom.read_port(domain="sync")
            g = self.i_gate.payload.data[lane]
            u = self.i_up.payload.data[lane]
            sg, sigg, shg = unpack(g, fmt)
            xmag = sigg << shg                                 # |g| * 2**F
            x = Mux(sg, -xmag, xmag)
            uu = (x + (16 << F)).as_signed()
            inside = (uu >= 0) & (uu < (32 << F))
            m.d.comb += [rd.addr.eq(uu[R:R + 9]), rd.en.eq(sp.en)]
            # stage 1: ROM word ready; interpolate
            r1 = sp.reg(uu[:R])
            in1 = sp.reg(inside)
            above1 = sp.reg(~uu[-1] & ~inside)
            x1 = sp.reg(x)
            g1 = sp.reg(g)
            u1 = sp.reg(u)
            t = rd.data[:T_BITS].as_signed()
            d = rd.data[T_BITS:].as_signed()
            y = t + ((d * r1 + (1 << (R - 1))) >> R)
            ysel = Mux(in1, y, Mux(above1, x1 >> (F - 22), 0))
            # stage 2: |y| and g^2 (relu)
            y2 = sp.reg(ysel.as_signed()[:40].as_signed())
            g2 = sp.reg(g1)
            u2 = sp.reg(u1)
            sg2, sigg2, shg2 = unpack(g2, fmt)
            yneg, ymag = abs_signed(m, y2)
            pos = ~sg2 & (sigg2 != 0)
            relu = self.act == ACT_RELU2
            a3 = sp.reg(Mux(relu, Mux(pos, sigg2 * sigg2, 0), ymag))
            exp3 = sp.reg(Mux(relu, (shg2 << 1) - 2 * F, -22))
            yneg3 = sp.reg(yneg)
            u3 = sp.reg(u2)
            # stage 3: product with up
            su3, sigu3, shu3 = unpack(u3, fmt)
            mag = sp.reg(a3 * sigu3)
            exp = sp.reg(exp3 + shu3 - F)
            sign = sp.reg(Mux(relu, su3, yneg3 ^ su3))
            out = round_fp(sp, sign, mag, exp, fmt)
            m.d.comb += self.o.payload.data[lane].eq(out)
        m.d.comb += self.o.payload.last.eq(sp.delay(self.i_gate.payload.last, LATENCY))
        sp.finish(self.o, LATENCY)
        return m
