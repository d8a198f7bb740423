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
pass 2  the row is read back with the norm weight stream; h = RN_fmt(x*g*r) (2S-bit x*g
        product, times the 24-bit significand of r: 2S + 24 bits exact, one rounding);
        amax = max|h| is reported with the row's last beat.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .common import StallPipe, check_lanes, row_layout
from .scalar import ScalarUnit
from .stream_fp import ROUND_FP_LATENCY, fmt_of, mag_max, round_fp, unpack, unpack32

SQ_STAGES = 3                      # square, shift, lane tree (then accumulate)
EMIT_LATENCY = 3 + ROUND_FP_LATENCY  # row-buffer read + g, x*g, *r, rounder


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
        for lane in range(L):
            _, sig, sh = unpack(self.i.payload.data[lane], fmt)
            sq = Signal(2 * S, name=f"sq{lane}")
            sh2 = Signal(6, name=f"sh2_{lane}")
            m.d.sync += [sq.eq(sig * sig), sh2.eq(sh << 1)]
            s = Signal(2 * S + 58, name=f"sqs{lane}")
            m.d.sync += s.eq(sq << sh2)
            shifted.append(s)
        tree = shifted
        while len(tree) > 1:
            nxt = [a + b for a, b in zip(tree[0::2], tree[1::2], strict=False)]
            if len(tree) % 2:
                nxt.append(tree[-1])
            tree = nxt
        beat_sum = Signal(AB)
        m.d.sync += beat_sum.eq(tree[0])
        with m.If(sv[2]):
            m.d.sync += acc.eq(acc + beat_sum)

        # ---- V = S + n*eps*2**2F: eps = em * 2**(E-150), so n*eps*2**2F = em*n << (E-E_min)
        em, _ = unpack32(self.eps)
        eexp = self.eps[23:31]
        emin = eps_min_exp(fmt)
        esh = Mux(eexp >= emin, eexp - emin, 0)[:5 if F == 24 else 6]
        n_elems = Signal(range(self._n_max + 1))
        m.d.comb += n_elems.eq(nbeats * L)
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
            g = sp.reg(self.i_g.payload[lane])
            sx, sigx, shx = unpack(rd.data[B * lane:B * lane + B], fmt)
            sg, sigg, shg = unpack(g, fmt)
            xg = sp.reg(sigx * sigg)
            sign = sp.reg(sx ^ sg)
            e = sp.reg(shx + shg - 2 * F + re)
            prod = sp.reg(xg * rm)
            h = round_fp(sp, sp.reg(sign), prod, sp.reg(e), fmt)
            hs.append(h)
            m.d.comb += self.o.payload.data[lane].eq(h)
        last = sp.delay(issued == nbeats - 1, EMIT_LATENCY)
        sp.finish(self.o, EMIT_LATENCY)
        beat_max = mag_max(hs, fmt)
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
                with m.If(~(sv[0] | sv[1] | sv[2])):
                    m.d.sync += epsn.eq((em * n_elems) << esh)
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
