"""RMS-MAX unit: RMSNorm with the per-token absmax (golden ``rmsnorm_absmax``).

Two passes over each row (TeLLMe v2 §3.5, with exact arithmetic instead of HLS floats):

With F = ``fmt.frac`` (FP16 24, FP24 32) and S = ``fmt.sig_bits`` (11, 19):

pass 1  the row's beats are written to an on-chip row buffer while their squares are summed
        exactly: each lane's square is the 2S-bit significand product shifted by 2*shift into a
        (2S + 58)-bit integer at LSB 2**-2F; a lane tree and an ``acc_bits(fmt)``-bit
        accumulator (FP16 96, FP24 112) add them (integer addition: order-free, so the lane
        count does not change the result).
scalar  r = RN32(1/sqrt(S*2**-2F/n + eps)) = RN32(sqrt(n*2**2F / V)), V = S + n*eps*2**2F, on
        the sequential :class:`~.scalar.ScalarUnit` (W = acc_bits(fmt)).
pass 2  the row is read back with the norm weight stream; h = RN_fmt(x*g*r) (the S-bit g
        times the 24-bit significand of r while x is read, then x times that: 2S + 24 bits
        exact, one rounding); amax = max|h| is reported with the row's last beat.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .scalar import ScalarUnit
from .stream_fp import (
    MUL_LATENCY,
    ROUND_FP_STAGES,
    Pipe,
    fmt_of,
    mag_max,
    pipe_mul,
    round_fp,
    unpack,
    unpack32,
)

SQ_STAGES = MUL_LATENCY + 2        # square (partial products, sum), shift, lane tree
# row-buffer read with g*r's partial products, x registered with g*r's sum, x*(g*r)'s
# partial products, their sum, rounder, h with the beat's max|h|
EMIT_LATENCY = 2 + MUL_LATENCY + ROUND_FP_STAGES + 1


def acc_bits(fmt=None) -> int:
    """Sum-of-squares accumulator width: a square is < 2**(2S + 58) at LSB 2**-2F, n <= 2**14
    of them (FP16: 2*11 + 58 + 14 = 94 -> 96; FP24: 2*19 + 58 + 14 = 110 -> 112)."""
    fmt = fmt_of(fmt)
    return -(-(2 * fmt.sig_bits + 58 + 14) // 16) * 16


def eps_min_exp(fmt=None) -> int:
    """Smallest FP32 biased exponent of eps for which n*eps*2**2F is an integer
    (eps = em * 2**(E - 150) with a 24-bit em): E >= 150 - 2F (FP16: 2**-25, FP24: 2**-41)."""
    return 150 - 2 * fmt_of(fmt).frac


def norm_out_layout(lanes: int, fmt=None) -> data.StructLayout:
    w = fmt_of(fmt).bits
    return data.StructLayout({"data": data.ArrayLayout(unsigned(w), lanes), "last": 1,
                              "amax": w})


class RMSNormAbsmax(wiring.Component):
    """RMSNorm + absmax of rows of ``n`` stream-format elements (n = beats * lanes, set by
    ``last``).

    Parameters
    ----------
    lanes : int
        Elements per beat.
    n_max : int
        Longest row (a multiple of ``lanes``, <= 16384): the row buffer holds n_max/lanes beats.
    fmt : StreamFormat or None
        Stream format of x, g, h (default: the contract's ``STREAM_FORMAT``).

    Members
    -------
    eps : In(32)
        FP32 bits of ``rms_norm_eps`` (static while rows flow); must be >= 2**-25 for FP16,
        2**-41 for FP24 (every published config uses 1e-5 or 1e-6).
    i : In(stream.Signature(row_layout(lanes, fmt)))
        The input row x, ``last`` on its final beat (at most n_max/lanes beats).
    i_g : In(stream.Signature(ArrayLayout(fmt.bits, lanes)))
        The norm weight (stream bits, i.e. RN_fmt(g)), one beat per row beat, consumed in
        pass 2.
    o : Out(stream.Signature({data, last, amax}))
        h = RN_fmt(x*g*r); ``amax`` = max|h| over the row, valid on the ``last`` beat.

    Timing: per row, pass 1 takes n/lanes cycles (``i`` is always ready in pass 1), then
    SQ_STAGES + 2 cycles to drain and start the scalar unit, the rsqrt (``cycles_ew``), then
    pass 2 at one beat per cycle (stalls on ``i_g`` or ``o``), EMIT_LATENCY cycles to the
    last beat. ``i`` is not ready outside pass 1 (single row buffer).
    """

    def __init__(self, *, lanes: int, n_max: int, fmt=None):
        check_lanes(lanes)
        self._fmt = fmt = fmt_of(fmt)
        if n_max % lanes or not lanes <= n_max <= 16384:
            raise ValueError(f"n_max must be a multiple of lanes={lanes} in [lanes, 16384], "
                             f"got {n_max}")
        self._lanes, self._n_max = lanes, n_max
        super().__init__({
            "eps": In(32),
            "i": In(stream.Signature(row_layout(lanes, fmt))),
            "i_g": In(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), lanes))),
            "o": Out(stream.Signature(norm_out_layout(lanes, fmt))),
        })

    @property
    def lanes(self):
        return self._lanes

    @property
    def n_max(self):
        return self._n_max

    @property
    def fmt(self):
        return self._fmt

    def elaborate(self, platform):
        m = Module()
        L = self._lanes
        fmt = self._fmt
        B, S, F = fmt.bits, fmt.sig_bits, fmt.frac
        AB = acc_bits(fmt)
        depth = self._n_max // L
        m.submodules.mem = mem = memory.Memory(shape=B * L, depth=depth, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")
        m.submodules.su = su = ScalarUnit(width=AB)

        cnt = Signal(range(depth + 1))        # beats written (pass 1)
        nbeats = Signal(range(depth + 1))
        issued = Signal(range(depth + 1))
        acc = Signal(AB)
        vden = Signal(AB)
        r = Signal(32)
        run_max = Signal(B - 1)

        # ---- pass 1: row buffer write + exact sum of squares (no backpressure)
        load = Signal()
        fire_in = load & self.i.valid
        m.d.comb += [self.i.ready.eq(load), wr.addr.eq(cnt), wr.data.eq(self.i.payload.data),
                     wr.en.eq(fire_in)]
        sv = [Signal(name=f"sq_valid{k}") for k in range(SQ_STAGES)]
        m.d.sync += sv[0].eq(fire_in)
        for k in range(1, SQ_STAGES):
            m.d.sync += sv[k].eq(sv[k - 1])
        shifted = []
        p1 = Pipe(m, 1)
        for lane in range(L):
            x = self.i.payload.data[lane]
            _, sig, _ = unpack(x, fmt)
            sq = pipe_mul(p1, sig, sig)
            _, _, sh = unpack(p1.reg(x), fmt)               # (no logic shared with the DSP)
            sh2 = p1.reg(sh << 1)
            shifted.append(p1.reg((sq << sh2)[:2 * S + 58], name=f"sqs{lane}"))
        tree = shifted
        while len(tree) > 1:
            nxt = [a + b for a, b in zip(tree[0::2], tree[1::2], strict=False)]
            if len(tree) % 2:
                nxt.append(tree[-1])
            tree = nxt
        beat_sum = Signal(AB)
        m.d.sync += beat_sum.eq(tree[0])
        with m.If(sv[-1]):
            m.d.sync += acc.eq(acc + beat_sum)

        # ---- V = S + n*eps*2**2F: eps = em * 2**(E-150), so n*eps*2**2F = em*n << (E-E_min)
        em, _ = unpack32(self.eps)
        eexp = self.eps[23:31]
        emin = eps_min_exp(fmt)
        esh = Signal(5 if F == 24 else 6)       # eps is static: its shift registered
        m.d.sync += esh.eq(Mux(eexp >= emin, eexp - emin, 0))
        n_elems = Signal(range(self._n_max + 1))
        m.d.comb += n_elems.eq(nbeats * L)
        epsm = Signal(24 + len(n_elems))         # em * n, registered (valid 1 cycle after n)
        m.d.sync += epsm.eq(em * n_elems)
        epsn = Signal(AB)

        # ---- pass 2: read back, h = RN_fmt(x*g*r), absmax
        emit = Signal()
        gate = emit & (issued < nbeats)
        sp = StallPipe(m, [self.i_g], gate=gate)
        m.d.comb += [rd.addr.eq(issued), rd.en.eq(sp.en)]
        with m.If(sp.fire):
            m.d.sync += issued.eq(issued + 1)
        rm, re = unpack32(r)
        hs = []
        for lane in range(L):
            # stage 1: the row buffer read; g*r's partial products
            g = self.i_g.payload[lane]
            _, sigg, _ = unpack(g, fmt)
            gr = pipe_mul(sp, sigg, rm)
            g1 = sp.reg(g)
            # stage 2: x registered (its significand apart: no logic shared with the DSP
            # inputs); g*r summed
            xb = rd.data[B * lane:B * lane + B]
            _, sigx, _ = unpack(xb, fmt)
            sigx2, x2 = sp.reg(sigx), sp.reg(xb)
            sg1, _, shg1 = unpack(g1, fmt)
            sg2, eg2 = sp.reg(sg1), sp.reg(shg1 - 2 * F + re)
            # stages 3-4: x*(g*r)
            prod = pipe_mul(sp, sigx2, gr)
            sx2, _, shx2 = unpack(x2, fmt)
            sign = sp.delay(sx2 ^ sg2, MUL_LATENCY)
            e = sp.delay(shx2 + eg2, MUL_LATENCY)
            h = round_fp(sp, sign, prod, e, fmt, stages=ROUND_FP_STAGES)
            hs.append(h)
            m.d.comb += self.o.payload.data[lane].eq(sp.reg(h))
        last = sp.delay(issued == nbeats - 1, EMIT_LATENCY)
        sp.finish(self.o, EMIT_LATENCY)
        beat_max = sp.reg(mag_max(hs, fmt))      # the beat's max|h|, beside h's last stage
        amax = Mux(beat_max > run_max, beat_max, run_max)
        m.d.comb += [self.o.payload.last.eq(last), self.o.payload.amax.eq(amax)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += run_max.eq(Mux(last, 0, amax))

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += load.eq(1)
                with m.If(fire_in):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(self.i.payload.last):
                        m.d.sync += nbeats.eq(cnt + 1)
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(~Cat(*sv).any()):
                    m.d.sync += epsn.eq(epsm << esh)
                    m.next = "SUM"
            with m.State("SUM"):
                m.d.sync += vden.eq(acc + epsn)
                m.next = "RSQRT"
            with m.State("RSQRT"):
                m.d.comb += [su.i.valid.eq(1), su.i.payload.num.eq(n_elems),
                             su.i.payload.den.eq(vden), su.i.payload.exp.eq(2 * F),
                             su.i.payload.sqrt.eq(1)]
                with m.If(su.i.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += su.o.ready.eq(1)
                with m.If(su.o.valid):
                    m.d.sync += [r.eq(su.o.payload), issued.eq(0)]
                    m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += emit.eq(1)
                with m.If(self.o.valid & self.o.ready & last):
                    m.d.sync += [cnt.eq(0), acc.eq(0)]
                    m.next = "LOAD"
        return m
