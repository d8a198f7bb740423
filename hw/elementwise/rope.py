"""RoPE on the q/k streams with host-provided FP16 cos/sin tables (golden ``rope``, adjacent
pairing: (x[2i], x[2i+1]) share frequency i, TeLLMe v2 §3.3.3; q/k rows are permuted offline
by ``tellme.quant.rope_permute`` so that this equals HF's rotate_half)."""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .fp16 import (ROUND16_LATENCY, ROUND32_LATENCY, msb_index, round16, round32, unpack16,
                   wire)

LATENCY = 3 + ROUND32_LATENCY + ROUND16_LATENCY
GUARD = 5            # 22-bit products + 5 zero bits = 24-bit result + guard, round, sticky
ALIGN_MAX = 28       # shifting a 27-bit operand by 28 leaves only its sticky bit
K_BIAS = 32          # product exponents shift+shift in [0, 60] minus <= 21 normalisation


def cs_layout(pairs: int) -> data.ArrayLayout:
    return data.ArrayLayout(data.StructLayout({"cos": unsigned(16), "sin": unsigned(16)}), pairs)


class RoPE(wiring.Component):
    """Rotary embedding, ``lanes`` elements (``lanes/2`` adjacent pairs) per beat.

    Parameters
    ----------
    lanes : int
        Elements per beat (even).

    Members
    -------
    i : In(stream.Signature(row_layout(lanes)))
        q or k elements (FP16 bits); any number of heads per row.
    i_cs : In(stream.Signature(ArrayLayout({cos, sin}, lanes/2)))
        cos/sin (FP16 bits, golden ``rope_table``) of each pair of the matching ``i`` beat: the
        feeder replays the position's table row for every head.
    o : Out(stream.Signature(row_layout(lanes)))
        a' = RN16(RN32(a*c - b*s)), b' = RN16(RN32(b*c + a*s)): four exact 22-bit products;
        each sum is an FP32-style aligned add of the two normalised products (the smaller
        shifted right with a sticky bit, GUARD = 5 extra bits: correctly rounded to 24 bits),
        rounded to FP32 then FP16 (the golden model's two roundings). Any FP16 table value
        is allowed.

    Timing: LATENCY (8) cycles, one beat per cycle, global stall on ``o``.
    """

    def __init__(self, *, lanes: int):
        check_lanes(lanes)
        if lanes % 2:
            raise ValueError(f"lanes must be even for pairs, got {lanes}")
        self._lanes = lanes
        lay = row_layout(lanes)
        super().__init__({"i": In(stream.Signature(lay)),
                          "i_cs": In(stream.Signature(cs_layout(lanes // 2))),
                          "o": Out(stream.Signature(lay))})

    def elaborate(self, platform):
        m = Module()
        sp = StallPipe(m, [self.i, self.i_cs])

        for k in range(self._lanes // 2):
            a = self.i.payload.data[2 * k]
            b = self.i.payload.data[2 * k + 1]
            c = self.i_cs.payload[k].cos
            s = self.i_cs.payload[k].sin
            outs = []
            for (x1, y1), (x2, y2), sub in (((a, c), (b, s), True), ((b, c), (a, s), False)):
                # stage 1: exact 22-bit products (the subtraction negates the second)
                s1, p1, e1 = self._prod(sp, x1, y1)
                s2, p2, e2 = self._prod(sp, x2, y2)
                s2 = s2 ^ int(sub)
                # stage 2: normalise both products to [2**21, 2**22), order by magnitude
                n1, k1 = self._norm(m, p1, e1)
                n2, k2 = self._norm(m, p2, e2)
                z1, z2 = p1 == 0, p2 == 0
                swap = wire(m, ~z2 & (z1 | (Cat(n2, k2) > Cat(n1, k1))))
                kb, ks = Mux(swap, k2, k1), Mux(swap, k1, k2)
                big = sp.reg(Mux(swap, n2, n1))
                small = sp.reg(Mux(swap, n1, n2))
                dist = sp.reg(Mux(z1 | z2, ALIGN_MAX, Mux(kb - ks > ALIGN_MAX, ALIGN_MAX,
                                                           kb - ks))[:5])
                same = sp.reg(s1 == s2)
                sbig = sp.reg(Mux(swap, s2, s1))
                ebig = sp.reg(kb)
                # an exact zero is -0 only if both terms are zeros with sign 1 (IEEE sum)
                negzero = sp.reg(z1 & z2 & s1 & s2)
                # stage 3: align with sticky, add (|big| >= |small|: z >= 0)
                full = Cat(C(0, GUARD), small)                      # 27 bits
                lost = (full & ((C(1, 28) << dist) - 1)[:27]) != 0
                al = (full >> dist) | lost
                bg = Cat(C(0, GUARD), big)
                z = wire(m, Mux(same, bg + al, bg - al)[:28])
                sign = sp.reg(Mux(z == 0, negzero, sbig))
                mag = sp.reg(z)
                # value = z * 2**(ebig - K_BIAS - 48 - GUARD)
                m32, e32 = round32(sp, mag, sp.reg(ebig - K_BIAS - 48 - GUARD))
                outs.append(round16(sp, sp.delay(sign, 2), m32, e32))
            m.d.comb += [self.o.payload.data[2 * k].eq(outs[0]),
                         self.o.payload.data[2 * k + 1].eq(outs[1])]
        m.d.comb += self.o.payload.last.eq(sp.delay(self.i.payload.last, LATENCY))
        sp.finish(self.o, LATENCY)
        return m

    @staticmethod
    def _norm(m, p, e):
        """Normalised product (22 bits, top bit set unless p = 0) and its biased exponent
        ``e - shift + K_BIAS`` (>= 0)."""
        _, msb = msb_index(m, p)
        lz = wire(m, (21 - msb).as_unsigned()[:5])
        return wire(m, (p << lz)[:22]), wire(m, (e + K_BIAS - lz).as_unsigned()[:7])

    @staticmethod
    def _prod(sp, x, y):
        """Stage 1: sign, 22-bit significand product and exponent sum of FP16 x*y."""
        sx, sigx, shx = unpack16(x)
        sy, sigy, shy = unpack16(y)
        return sp.reg(sx ^ sy), sp.reg(sigx * sigy), sp.reg(shx + shy)
