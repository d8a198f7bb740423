"""RoPE on the q/k streams with host-provided cos/sin tables in the stream format (golden
``rope``, adjacent
pairing: (x[2i], x[2i+1]) share frequency i, TeLLMe v2 §3.3.3; q/k rows are permuted offline
by ``tellme.quant.rope_permute`` so that this equals HF's rotate_half)."""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .stream_fp import (
    MUL_LATENCY,
    ROUND32_LATENCY,
    ROUND_FP_STAGES,
    ceil_log2,
    fmt_of,
    index_halves,
    pipe_mul,
    round32,
    round_fp,
    unpack,
    wire,
)

NORM_STAGES = 3      # leading one (tree halves) | normalising shift | order by magnitude
ADD_STAGES = 2       # alignment with sticky | add
LATENCY = MUL_LATENCY + NORM_STAGES + ADD_STAGES + ROUND32_LATENCY + ROUND_FP_STAGES
GUARD = 5            # FP16: 22-bit products + 5 zero bits = 24-bit result + guard, round, sticky


def prod_bits(fmt) -> int:
    """Width of an exact significand product (FP16 22, FP24 38)."""
    return 2 * fmt.sig_bits


def align_max(fmt) -> int:
    """Shifting a (prod_bits + GUARD)-bit operand this far leaves only its sticky bit."""
    return prod_bits(fmt) + GUARD + 1


def k_bias(fmt) -> int:
    """Bias of the normalised product exponent: shift+shift in [0, 60] minus <= prod_bits - 1
    normalisation must stay >= 0 (FP16 32, FP24 38)."""
    return max(32, prod_bits(fmt))


def cs_layout(pairs: int, fmt=None) -> data.ArrayLayout:
    w = fmt_of(fmt).bits
    return data.ArrayLayout(data.StructLayout({"cos": unsigned(w), "sin": unsigned(w)}), pairs)


class RoPE(wiring.Component):
    """Rotary embedding, ``lanes`` elements (``lanes/2`` adjacent pairs) per beat.

    Parameters
    ----------
    lanes : int
        Elements per beat (even).
    fmt : StreamFormat or None
        Stream format of x, the table and the output (default: the contract's
        ``STREAM_FORMAT``).

    Members
    -------
    i : In(stream.Signature(row_layout(lanes, fmt)))
        q or k elements (stream bits); any number of heads per row.
    i_cs : In(stream.Signature(ArrayLayout({cos, sin}, lanes/2)))
        cos/sin (stream bits, golden ``rope_table``) of each pair of the matching ``i`` beat:
        the feeder replays the position's table row for every head.
    o : Out(stream.Signature(row_layout(lanes, fmt)))
        a' = RN_fmt(RN32(a*c - b*s)), b' = RN_fmt(RN32(b*c + a*s)): four exact products
        (``prod_bits``: FP16 22, FP24 38 bits); each sum is an FP32-style aligned add of the
        two normalised products (the smaller shifted right with a sticky bit, GUARD = 5 extra
        bits: correctly rounded to 24 bits), rounded to FP32 then to the stream format (the
        golden model's two roundings). Any table value of the format is allowed.

    Timing: LATENCY (14) cycles (products 2, normalisation and order 3, aligned add 2, RN32
    3, the stream-format rounder 4), one beat per cycle, global stall on ``o``.
    """

    def __init__(self, *, lanes: int, fmt=None):
        check_lanes(lanes)
        if lanes % 2:
            raise ValueError(f"lanes must be even for pairs, got {lanes}")
        self._lanes = lanes
        self._fmt = fmt = fmt_of(fmt)
        lay = row_layout(lanes, fmt)
        super().__init__({"i": In(stream.Signature(lay)),
                          "i_cs": In(stream.Signature(cs_layout(lanes // 2, fmt))),
                          "o": Out(stream.Signature(lay))})

    def elaborate(self, platform):
        m = Module()
        fmt = self._fmt
        PB, AM, KB = prod_bits(fmt), align_max(fmt), k_bias(fmt)
        W = PB + GUARD
        DW = ceil_log2(AM + 1)
        sp = StallPipe(m, [self.i, self.i_cs])

        for k in range(self._lanes // 2):
            a = self.i.payload.data[2 * k]
            b = self.i.payload.data[2 * k + 1]
            c = self.i_cs.payload[k].cos
            s = self.i_cs.payload[k].sin
            outs = []
            for (x1, y1), (x2, y2), sub in (((a, c), (b, s), True), ((b, c), (a, s), False)):
                # stages 1-2: exact products (the subtraction negates the second)
                s1, p1, e1 = self._prod(sp, x1, y1, fmt)
                s2, p2, e2 = self._prod(sp, x2, y2, fmt)
                s2 = s2 ^ int(sub)
                # stages 3-4: normalise both products to [2**(PB-1), 2**PB)
                nz1, n1, k1 = self._norm(sp, p1, e1, PB, KB)
                nz2, n2, k2 = self._norm(sp, p2, e2, PB, KB)
                s1, s2 = sp.delay(s1, 2), sp.delay(s2, 2)
                # stage 5: order by magnitude; the exponent difference (both orders
                # clamped beside the compare, then chosen)
                z1, z2 = ~nz1, ~nz2
                swap = wire(m, ~z2 & (z1 | (Cat(n2, k2) > Cat(n1, k1))))

                def clamp(d):
                    return Mux(d > AM, AM, d)[:DW]
                d12, d21 = wire(m, clamp(k1 - k2)), wire(m, clamp(k2 - k1))
                big = sp.reg(Mux(swap, n2, n1))
                small = sp.reg(Mux(swap, n1, n2))
                dist = sp.reg(Mux(z1 | z2, AM, Mux(swap, d21, d12)))
                same = sp.delay(s1 == s2, 2)
                sbig = sp.delay(Mux(swap, s2, s1), 2)
                ebig = sp.delay(Mux(swap, k2, k1) - KB - 2 * fmt.frac - GUARD, 3)
                # an exact zero is -0 only if both terms are zeros with sign 1 (IEEE sum)
                negzero = sp.delay(z1 & z2 & s1 & s2, 2)
                # stage 6: align the small one (|big| >= |small|); the bits shifted out (the
                # sticky bit) registered apart and ORed into the LSB in the adder's stage
                full = Cat(C(0, GUARD), small)                      # W bits
                lost = sp.reg((full & ~(C((1 << (W + 1)) - 1, W + 1) << dist)[:W]) != 0)
                al = wire(m, sp.reg(full >> dist) | lost)
                bg = sp.reg(Cat(C(0, GUARD), big))
                # stage 7: add (z >= 0); an exact zero told by comparing the operands
                z = wire(m, Mux(same, bg + al, bg - al)[:W + 1])
                zero = Mux(same, (bg | al) == 0, bg == al)
                sign = sp.reg(Mux(zero, negzero, sbig))
                mag = sp.reg(z)
                # value = z * 2**(ebig - KB - 2F - GUARD)
                m32, e32 = round32(sp, mag, ebig)
                outs.append(round_fp(sp, sp.delay(sign, ROUND32_LATENCY), m32, e32, fmt,
                                     stages=ROUND_FP_STAGES))
            m.d.comb += [self.o.payload.data[2 * k].eq(outs[0]),
                         self.o.payload.data[2 * k + 1].eq(outs[1])]
        m.d.comb += self.o.payload.last.eq(sp.delay(self.i.payload.last, LATENCY))
        sp.finish(self.o, LATENCY)
        return m

    @staticmethod
    def _norm(sp, p, e, pb, kb):
        """Stages 3-4: (non-zero, the product normalised (``pb`` bits, top bit set unless
        p = 0), its biased exponent ``e - shift + kb`` (>= 0, < 128)): the leading one of
        each half, then the last tree level and the shift."""
        m = sp.m
        nz, msb, _ = index_halves(m, sp.reg, p)
        p3, e3 = sp.reg(p), sp.reg(e)
        lz = wire(m, (pb - 1 - msb).as_unsigned()[:ceil_log2(pb)])
        return (sp.reg(nz), sp.reg((p3 << lz)[:pb]),
                sp.reg((e3 + kb - lz).as_unsigned()[:7]))

    @staticmethod
    def _prod(sp, x, y, fmt):
        """Stages 1-2: sign, exact significand product and exponent sum of stream x*y (sign
        and exponent from registered copies of x and y: no logic shared with the DSP
        inputs)."""
        _, sigx, _ = unpack(x, fmt)
        _, sigy, _ = unpack(y, fmt)
        prod = pipe_mul(sp, sigx, sigy)
        sx, _, shx = unpack(sp.reg(x), fmt)
        sy, _, shy = unpack(sp.reg(y), fmt)
        return sp.reg(sx ^ sy), prod, sp.reg(shx + shy)
