"""FFN gating: SiLU(gate)*up or ReLU(gate)^2*up, chosen at run time (golden ``gated_act``,
SiLU unit ``numerics.silu_fx``)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .fp16 import ROUND16_LATENCY, abs_signed, round16, unpack16

LATENCY = 3 + ROUND16_LATENCY
ACT_SILU, ACT_RELU2 = 0, 1
T_BITS, D_BITS = 28, 21          # SILU_TABLE entries (|T| < 2**27) and slopes T[i+1]-T[i]


def silu_rom_words():
    """512 ROM words ``T[i] | (T[i+1]-T[i]) << T_BITS`` (two's complement fields)."""
    from tellme.sim.golden.numerics import SILU_TABLE

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

    Members
    -------
    act : In(1)
        0: SiLU (512-segment PWL in Q.22, one dual-port ROM per two lanes), 1: ReLU^2.
        Static while rows flow.
    i_gate, i_up : In(stream.Signature(row_layout(lanes)))
        Gate and up rows, beat-aligned (``last`` taken from ``i_gate``).
    o : Out(stream.Signature(row_layout(lanes)))
        ``silu``: RN16(silu_fx(g) * 2**-22 * up) (<= 39 x 11-bit exact product);
        ``relu2``: RN16(relu(g)^2 * up) (33-bit exact product); one rounding each.

    Timing: LATENCY (6) cycles (ROM read, interpolation, product, rounder), one beat per
    cycle, global stall on ``o``.
    """

    def __init__(self, *, lanes: int):
        self._lanes = check_lanes(lanes)
        lay = row_layout(lanes)
        super().__init__({"act": In(1), "i_gate": In(stream.Signature(lay)),
                          "i_up": In(stream.Signature(lay)), "o": Out(stream.Signature(lay))})

    def elaborate(self, platform):
        m = Module()
        sp = StallPipe(m, [self.i_gate, self.i_up])
        # one dual-port ROM (a BRAM) per two lanes
        words = silu_rom_words()
        for lane in range(self._lanes):
            if lane % 2 == 0:
                rom = memory.Memory(shape=T_BITS + D_BITS, depth=512, init=words)
                m.submodules["silu_rom" if lane == 0 else f"silu_rom{lane // 2}"] = rom
            rd = rom.read_port(domain="sync")
            g = self.i_gate.payload.data[lane]
            u = self.i_up.payload.data[lane]
            sg, sigg, shg = unpack16(g)
            xmag = sigg << shg                                 # |g| * 2**24
            x = Mux(sg, -xmag, xmag)
            uu = (x + (16 << 24)).as_signed()
            inside = (uu >= 0) & (uu < (32 << 24))
            m.d.comb += [rd.addr.eq(uu[20:29]), rd.en.eq(sp.en)]
            # stage 1: ROM word ready; interpolate
            r1 = sp.reg(uu[:20])
            in1 = sp.reg(inside)
            above1 = sp.reg(~uu[-1] & ~inside)
            x1 = sp.reg(x)
            g1 = sp.reg(g)
            u1 = sp.reg(u)
            t = rd.data[:T_BITS].as_signed()
            d = rd.data[T_BITS:].as_signed()
            y = t + ((d * r1 + (1 << 19)) >> 20)
            ysel = Mux(in1, y, Mux(above1, x1 >> 2, 0))
            # stage 2: products
            y2 = sp.reg(ysel.as_signed()[:40].as_signed())
            g2 = sp.reg(g1)
            u2 = sp.reg(u1)
            sg2, sigg2, shg2 = unpack16(g2)
            su2, sigu2, shu2 = unpack16(u2)
            yneg, ymag = abs_signed(m, y2)
            pos = ~sg2 & (sigg2 != 0)
            relu_mag = Mux(pos, sigg2 * sigg2 * sigu2, 0)
            silu_mag = ymag * sigu2
            relu = self.act == ACT_RELU2
            mag = sp.reg(Mux(relu, relu_mag, silu_mag))
            exp = sp.reg(Mux(relu, (shg2 << 1) - 48 + shu2 - 24, shu2 - 46))
            sign = sp.reg(Mux(relu, su2, yneg ^ su2))
            out = round16(sp, sign, mag, exp)
            m.d.comb += self.o.payload.data[lane].eq(out)
        m.d.comb += self.o.payload.last.eq(sp.delay(self.i_gate.payload.last, LATENCY))
        sp.finish(self.o, LATENCY)
        return m
