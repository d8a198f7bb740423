"""Per-token scalar unit: correctly rounded FP32 quotients and reciprocal square roots
(golden ``round_ratio_fp32`` / ``rsqrt_fp32``), and the per-token scale unit built on it.

The value ``num / den * 2**exp`` (integers num, den > 0) is computed by

1. normalisation: num and den are shifted left until their top bits are set (by 16 while the
   top 16 bits are clear, else by 1), ``exp`` absorbs the shifts;
2. restoring long division, one quotient bit per cycle: Q = floor(num * 2**(B-1) / den) with
   B = 26 bits (division) or 51 + (exp odd) bits (square root: the exponent is made even);
3. square root only: bitwise restoring integer square root, one bit per cycle, of Q
   (26 iterations), w = floor(sqrt(Q));
4. round to nearest even on the 26-bit result w with sticky = (remainders non-zero): w has 25 or
   26 significant bits, so the round bit is w[0] or w[1]. floor(sqrt(floor(x))) = floor(sqrt(x))
   and the result is inexact iff either remainder is non-zero, so this is RN32 exactly.

Cycles per operation: 1 (accept) + normalisation (<= W/16 + 15 per operand, operands in
parallel) + B + 26 (sqrt) + 1 (round) + 1 (output), see sim/cycles_ew.py.
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .stream_fp import Pipe, fmt_of, pipe_mul, unpack, unpack32

EXP_BITS = 12
SQRT_STEPS = 26
DIV_BITS = 26


def scalar_op_layout(width: int) -> data.StructLayout:
    return data.StructLayout({"num": width, "den": width, "exp": signed(EXP_BITS), "sqrt": 1})


class ScalarUnit(wiring.Component):
    """Sequential RN32 divider / reciprocal-square-root unit.

    Parameters
    ----------
    width : int
        Bits of ``num`` and ``den`` (W).

    Members
    -------
    i : In(stream.Signature({num: W, den: W, exp: signed(12), sqrt: 1}))
        One operation: ``RN32(num/den * 2**exp)`` or, with ``sqrt``, ``RN32(sqrt(num/den *
        2**exp))``. num, den must be non-zero; the result must be an FP32 normal number.
    o : Out(stream.Signature(32))
        The FP32 bits. Held until accepted; the next operation is accepted after that.

    Timing: one operation at a time, ``op_cycles`` (see module docstring) from acceptance to
    ``o.valid``.
    """

    def __init__(self, *, width: int):
        if width < 26:
            raise ValueError(f"width must be >= 26, got {width}")
        self._w = width
        super().__init__({"i": In(stream.Signature(scalar_op_layout(width))),
                          "o": Out(stream.Signature(32))})

    def elaborate(self, platform):
        m = Module()
        W = self._w
        num = Signal(W)
        den = Signal(W)
        rem = Signal(W + 1)
        exp = Signal(signed(EXP_BITS + 2))
        sq = Signal()
        q = Signal(52)
        cnt = Signal(range(64))
        root = Signal(27)
        srem = Signal(30)
        inexact = Signal()
        result = Signal(32)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [num.eq(self.i.payload.num), den.eq(self.i.payload.den),
                                 exp.eq(self.i.payload.exp), sq.eq(self.i.payload.sqrt),
                                 q.eq(0), root.eq(0), srem.eq(0), inexact.eq(0)]
                    m.next = "NORM"
            with m.State("NORM"):
                n_ok = num[W - 1]
                d_ok = den[W - 1]
                with m.If(~n_ok):
                    with m.If(num[W - 16:] == 0):
                        m.d.sync += num.eq(num << 16)
                    with m.Else():
                        m.d.sync += num.eq(num << 1)
                with m.If(~d_ok):
                    with m.If(den[W - 16:] == 0):
                        m.d.sync += den.eq(den << 16)
                    with m.Else():
                        m.d.sync += den.eq(den << 1)
                dn = Mux(n_ok, 0, Mux(num[W - 16:] == 0, 16, 1))
                dd = Mux(d_ok, 0, Mux(den[W - 16:] == 0, 16, 1))
                m.d.sync += exp.eq(exp - dn + dd)
                with m.If(n_ok & d_ok):
                    odd = sq & exp[0]
                    m.d.sync += [rem.eq(num), exp.eq(exp - odd),
                                 cnt.eq(Mux(sq, 51 + odd, DIV_BITS))]
                    m.next = "DIV"
            with m.State("DIV"):
                ge = rem >= den
                r1 = Mux(ge, rem - den, rem)
                m.d.sync += [q.eq(Cat(ge, q[:-1])), rem.eq(r1 << 1), cnt.eq(cnt - 1)]
                with m.If(cnt == 1):
                    m.d.sync += cnt.eq(SQRT_STEPS)
                    m.next = "SQRT_OR_ROUND"
            with m.State("SQRT_OR_ROUND"):
                m.d.sync += inexact.eq(rem != 0)
                with m.If(sq):
                    m.next = "SQRT"
                with m.Else():
                    m.next = "ROUND"
            with m.State("SQRT"):
                cur = Cat(q[50:52], srem)                # (srem << 2) | top two bits of q
                trial = Cat(C(1, 2), root)               # (root << 2) | 1
                ge = cur >= trial
                m.d.sync += [srem.eq(Mux(ge, cur - trial, cur)), root.eq(Cat(ge, root)),
                             q.eq(q << 2), cnt.eq(cnt - 1)]
                with m.If(cnt == 1):
                    m.next = "SQRT_DONE"
            with m.State("SQRT_DONE"):
                m.d.sync += inexact.eq(inexact | (srem != 0))
                m.next = "ROUND"
            with m.State("ROUND"):
                w = Mux(sq, root[:26], q[:26])
                # value = (w + f) * 2**y0, f > 0 iff inexact
                y0 = Mux(sq, exp >> 1, exp) - 25
                top = w[25]
                mant = Mux(top, w[2:26], w[1:25])
                rnd = Mux(top, w[1], w[0])
                st = inexact | (top & w[0])
                y = y0 + 1 + top
                inc = rnd & (st | mant[0])
                bits = ((y + 149).as_unsigned()[:9] << 23) + mant + inc
                m.d.sync += result.eq(bits[:32])
                m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(result)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m


class TokenScale(wiring.Component):
    """Per-token quantisation scales from the row's absmax (golden ``quant_scale`` and
    ``dequant_scale``), on one :class:`ScalarUnit` (W = 48: amax's significand times the
    24-bit ``ws`` significand is <= 43 bits for FP24).

    Parameters
    ----------
    fmt : StreamFormat or None
        Stream format of amax (default: the contract's ``STREAM_FORMAT``).

    Members
    -------
    ws : In(32)
        FP32 bits of the linear's ``weight_scale`` (static while tokens flow).
    i : In(stream.Signature(fmt.bits))
        amax (stream bits, >= 0) of one token.
    o : Out(stream.Signature({s_q: 32, s_tok: 32}))
        ``s_q = RN32(127 / max(amax, 1e-5f))``, ``s_tok = RN32(max(amax, 1e-5f) * ws / 127)``.

    Timing: two scalar operations per token, about 70 cycles (sim/cycles_ew.py).
    """

    def __init__(self, *, fmt=None):
        self._fmt = fmt = fmt_of(fmt)
        super().__init__({"ws": In(32), "i": In(stream.Signature(fmt.bits)),
                          "o": Out(stream.Signature(data.StructLayout({"s_q": 32,
                                                                       "s_tok": 32})))})

    def elaborate(self, platform):
        import math
        from fractions import Fraction

        import numpy as np

        from tellme.spec.numerics import QUANT_EPS

        m = Module()
        fmt = self._fmt
        m.submodules.su = su = ScalarUnit(width=48)
        eps_bits = int(np.float32(QUANT_EPS).view(np.uint32))
        # amax < eps (as exact values) iff amax * 2**F < ceil(eps * 2**F): amax is on the
        # 2**-F grid. Only subnormals can be below 1e-5 (< 2**-14), and a subnormal's magnitude
        # code is its value in units of 2**-F.
        eps_grid = math.ceil(Fraction(float(QUANT_EPS)) * 2 ** fmt.frac)
        assert eps_grid <= 1 << fmt.man
        s_q = Signal(32)
        amax = self.i.payload
        _, sig, sh = unpack(amax, fmt)
        below = (amax[:fmt.bits - 1] < eps_grid)
        em, ee = unpack32(C(eps_bits, 32))
        # max(amax, eps) = dm * 2**de, registered when amax is taken
        dm = Signal(24)
        de = Signal(signed(EXP_BITS))
        wm, we = unpack32(self.ws)
        # dm * wm for the second operation: partial products, sum (ready two cycles after dm;
        # the first operation takes more than 26)
        num_t = pipe_mul(Pipe(m, 1), dm, wm)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [dm.eq(Mux(below, em, sig)), de.eq(Mux(below, ee, sh - fmt.frac))]
                    m.next = "Q"
            with m.State("Q"):
                m.d.comb += [su.i.valid.eq(1), su.i.payload.num.eq(127),
                             su.i.payload.den.eq(dm), su.i.payload.exp.eq(-de),
                             su.i.payload.sqrt.eq(0)]
                with m.If(su.i.ready):
                    m.next = "QW"
            with m.State("QW"):
                m.d.comb += su.o.ready.eq(1)
                with m.If(su.o.valid):
                    m.d.sync += s_q.eq(su.o.payload)
                    m.next = "T"
            with m.State("T"):
                m.d.comb += [su.i.valid.eq(1), su.i.payload.num.eq(num_t),
                             su.i.payload.den.eq(127), su.i.payload.exp.eq(de + we),
                             su.i.payload.sqrt.eq(0)]
                with m.If(su.i.ready):
                    m.next = "TW"
            with m.State("TW"):
                m.d.comb += [self.o.valid.eq(su.o.valid), self.o.payload.s_q.eq(s_q),
                             self.o.payload.s_tok.eq(su.o.payload),
                             su.o.ready.eq(self.o.ready)]
                with m.If(su.o.valid & self.o.ready):
                    m.next = "IDLE"
        return m
