"""RoPE on the q/k streams with host-provided FP16 cos/sin tables (golden ``rope``, adjacent
pairing: (x[2i], x[2i+1]) share frequency i, TeLLMe v2 §3.3.3; q/k rows are permuted offline
by ``tellme.quant.rope_permute`` so that this equals HF's rotate_half)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .fp16 import ROUND16_LATENCY, ROUND32_LATENCY, abs_signed, round16, round32, unpack16

LATENCY = 3 + ROUND32_LATENCY + ROUND16_LATENCY


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
        a' = RN16(RN32(a*c - b*s)), b' = RN16(RN32(b*c + a*s)): four exact 22-bit products,
        placed at LSB 2**-48 (81-bit integers), one exact sum each, rounded to FP32 then FP16.

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
            for (x1, y1), (x2, y2), op in (((a, c), (b, s), "sub"), ((b, c), (a, s), "add")):
                s1, p1, e1 = self._prod(sp, x1, y1)
                s2, p2, e2 = self._prod(sp, x2, y2)
                # stage 2: exact fixed point at LSB 2**-48, one exact add
                f1 = (p1 << e1)
                f2 = (p2 << e2)
                v1 = Mux(s1, -f1, f1)
                v2 = Mux(s2, -f2, f2)
                # second operand negated for the subtraction: x - y = x + (-y)
                s2e = s2 ^ (op == "sub")
                v2e = -v2 if op == "sub" else v2
                z = sp.reg(v1 + v2e)
                # an exact zero is -0 only if both terms are zeros with sign 1 (IEEE sum)
                negzero = sp.reg((p1 == 0) & (p2 == 0) & s1 & s2e)
                # stage 3: sign / magnitude
                zneg, zmag = abs_signed(m, z)
                sign = sp.reg(zneg | negzero)
                mag = sp.reg(zmag)
                m32, e32 = round32(sp, mag, -48)
                outs.append(round16(sp, sp.delay(sign, 2), m32, e32))
            m.d.comb += [self.o.payload.data[2 * k].eq(outs[0]),
                         self.o.payload.data[2 * k + 1].eq(outs[1])]
        m.d.comb += self.o.payload.last.eq(sp.delay(self.i.payload.last, LATENCY))
        sp.finish(self.o, LATENCY)
        return m

    @staticmethod
    def _prod(sp, x, y):
        """Stage 1: sign, 22-bit significand product and exponent sum of FP16 x*y."""
        sx, sigx, shx = unpack16(x)
        sy, sigy, shy = unpack16(y)
        return sp.reg(sx ^ sy), sp.reg(sigx * sigy), sp.reg(shx + shy)
