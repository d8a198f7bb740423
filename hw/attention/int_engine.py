"""Integer attention engine (issue 11 item 3): exact two-pass softmax attention of ``lanes``
query rows over one KV head, with int8 K/V and integer dot products (one DSP48E2 per MAC).

Arithmetic: exactly golden ``attention_decode`` / ``attention_prefill`` of
sim/golden/attention_int.py (constants in spec/attention_int.py, docs/numerics.md §4.1):

* q: each lane's row is loaded in the stream format, then quantised once to int16 (``q_bits``)
  against the power-of-two scale of max|q * C| (``quantize_q``: q * C exact, round half up);
* pass 1 (K rows): S = sum q_int * k_int exact (``beat`` MACs per lane and cycle), the K row
  scale folded once per key into the Q.16 logit t (S * mk and a rounding shift), t into the
  score buffer, running exact maximum m and largest V-scale exponent Y of the visible keys
  (K beats carry the V row's scale too);
* pass 2 (V rows): p = exp2 table (the FP contract's unit), w = rnd(p * mv * 2**(ev - Y - 16))
  (once per key), A_c += w * v_int8 (``beat`` MACs per lane), L += p;
* the MAC array is shared by the passes: one 27 x 8-bit signed multiplier per lane and channel
  takes q_int (pass 1) or w (pass 2) times the beat's int8 code;
* finish: a second unit with its own accumulator bank (the call's sums are handed to it, and
  the next call streams into the other bank meanwhile): per lane 1/L correctly rounded by a
  24-step restoring division, then a pipelined normaliser at one output per cycle (RN32(A),
  the 24 x 25-bit product, one rounding to the stream format).

Pipeline (one K/V beat per cycle): A..D form p and w (V), E multiplies, F sums the beat (K) or
accumulates A (V, read-modify-write with forwarding), G..J form S, t, the maximum and Y (K).
Scores of up to ``depth`` keys per lane stay on chip; longer contexts follow ``kv_schedule``
(K of every tile but the last is re-streamed), as in ``AttentionEngine``.

Ports
-----
i_cmd : In(stream {n, nq, c, lim[lanes], bpr})  n keys (>= 1), nq active lanes, c = score
        scale (``score_scale``), lim = last visible key per lane, bpr = beats per row.
i_q   : In(stream ArrayLayout(unsigned(fmt.bits), beat))  nq * bpr beats, lane-major.
i_kv  : In(stream unsigned(8 * beat + 2 * fmt.bits))  rows of ``kv_schedule``, bpr beats each:
        codes (int8) in bits [0, 8 * beat), the row's scale (stream format) in the next
        fmt.bits bits; on K rows the V row's scale of the same key in the next fmt.bits
        (ignored on V rows).
o     : Out(stream unsigned(fmt.bits))  nq * bpr * beat results, lane-major.
busy  : Out(1)

Timing (zero stalls): `call_cycles` in sim/cycles_attn_int.py.
"""

from __future__ import annotations

from itertools import pairwise

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.attention_int import (
    MAX_KEYS,
    P_ZERO_OCTAVES,
    Q_BITS,
    T_SAT,
    W_SHIFT,
    a_bits,
    s_bits,
)
from tellme.spec.numerics import EXP2_TABLE, StreamFormat, stream_format

from ..elementwise.stream_fp import unpack
from .arith import bit_length, rn_fmt, rne_shr

C_BITS = 20            # score-scale register width
DIV_STEPS = 24
PIPE = 10              # K/V pipeline registers A..J


def cmd_layout(lanes: int, ctx_bits: int) -> data.StructLayout:
    return data.StructLayout({
        "n": unsigned(ctx_bits + 1),
        "nq": range(lanes + 1),
        "c": unsigned(C_BITS),
        "lim": data.ArrayLayout(unsigned(ctx_bits), lanes),
        "bpr": unsigned(16),
    })


def _half(s, width: int):
    """2**(s - 1) for an unsigned shift ``s >= 1`` (the round-half-up constant)."""
    return Const(1, width) << (s - 1).as_unsigned()[:len(s)]


def _round_sat(m: Module, x, width: int, sh, left_max: int, limit: int, name: str):
    """clamp(rnd(x * 2**-sh), +-limit) for a signed ``x`` of ``width`` bits and a signed shift
    ``sh``: round half up for sh >= 1, a left shift of at most ``left_max`` for sh <= 0
    (golden ``rnd_shift`` / ``logits`` / ``quantize_q``)."""
    sr = Signal(range(width + 3), name=f"{name}_sr")
    m.d.comb += sr.eq(Mux(sh > width + 2, width + 2, Mux(sh < 1, 1, sh)))
    r = Signal(signed(width + 3), name=f"{name}_r")
    m.d.comb += r.eq((x + _half(sr, width + 3)) >> sr)
    sl = Signal(range(left_max + 1), name=f"{name}_sl")
    m.d.comb += sl.eq(Mux(sh < -left_max, left_max, Mux(sh < 0, -sh, 0)))
    v = Signal(signed(width + left_max + 1), name=f"{name}_v")
    m.d.comb += v.eq(Mux(sh >= 1, r, x << sl))
    return Mux(v > limit, limit, Mux(v < -limit, -limit, v))


def kv_beat_bits(beat: int, fmt: StreamFormat | None = None) -> int:
    return 8 * beat + 2 * stream_format(fmt).bits


class IntAttentionEngine(wiring.Component):
    """See the module docstring. Parameters as ``AttentionEngine``: ``head_dim`` (largest,
    multiple of ``beat``), ``lanes``, ``beat`` (int8 codes per K/V beat and q elements per q
    beat), ``depth`` (score tile, power of two >= 2), ``ctx_bits`` (n < 2**ctx_bits <=
    MAX_KEYS), ``fmt`` (stream format of q, the K/V scales and o)."""

    def __init__(self, *, head_dim: int = 16, lanes: int = 4, beat: int = 4, depth: int = 64,
                 ctx_bits: int = 14, fmt: StreamFormat | None = None, q_bits: int = Q_BITS):
        fmt = stream_format(fmt)
        problem = None
        if head_dim % beat:
            problem = f"head_dim {head_dim} is not a multiple of beat {beat}"
        elif depth < 2 or depth & (depth - 1):
            problem = f"score-buffer depth {depth} must be a power of two >= 2"
        elif not 8 <= q_bits <= 16:
            problem = f"q_bits {q_bits} outside 8..16"
        elif 2 ** ctx_bits > MAX_KEYS:
            problem = f"ctx_bits {ctx_bits}: more than {MAX_KEYS} keys"
        if problem:
            self._MustUse__silence = True
            raise ValueError(problem)
        self.head_dim, self.lanes, self.beat, self.depth = head_dim, lanes, beat, depth
        self.ctx_bits, self.fmt, self.q_bits = ctx_bits, fmt, q_bits
        super().__init__({
            "i_cmd": In(stream.Signature(cmd_layout(lanes, ctx_bits))),
            "i_q": In(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), beat))),
            "i_kv": In(stream.Signature(unsigned(kv_beat_bits(beat, fmt)))),
            "o": Out(stream.Signature(unsigned(fmt.bits))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        HD, NQ, W, D, CB = self.head_dim, self.lanes, self.beat, self.depth, self.ctx_bits
        fmt = self.fmt
        EB, SB, F = fmt.bits, fmt.sig_bits, fmt.frac
        BPR = HD // W
        QB, QTOP, QMAX = self.q_bits, self.q_bits - 2, 2 ** (self.q_bits - 1) - 1
        LOG2D = D.bit_length() - 1
        SW = s_bits(HD)               # exact score S
        QX = SB + C_BITS              # q * C magnitude bits
        TW = 32                       # logit t, |t| <= T_SAT
        LW = 25 + CB                  # L <= n * 2**23
        AW = a_bits(2 ** CB)          # |A| < n * 2**33
        PMW = 24 + SB                 # p * mv
        WB = 27                       # w (unsigned < 2**26) as a signed DSP operand

        # ---- command registers
        n = Signal(CB + 1)
        nact = Signal(range(NQ + 1))
        cval = Signal(C_BITS)
        bpr = Signal(range(BPR + 1))
        lim = [Signal(CB, name=f"lim{i}") for i in range(NQ)]

        # ---- per-lane state
        mx = [Signal(signed(TW), name=f"m{i}") for i in range(NQ)]
        mvalid = [Signal(name=f"mvalid{i}") for i in range(NQ)]
        yh = [Signal(5, name=f"yh{i}") for i in range(NQ)]          # max V-scale shift
        gq = [Signal(8, name=f"gq{i}") for i in range(NQ)]          # bitlen(max|q|*C) + qh
        qmx = [Signal(EB - 1, name=f"qmx{i}") for i in range(NQ)]   # max |q| (magnitude bits)
        lsum = [Signal(LW, name=f"L{i}") for i in range(NQ)]
        cbank = Signal()                                             # accumulator bank of the call
        # the finishing call's copies (the normaliser runs while the next call streams)
        xlsum = [Signal(LW, name=f"xL{i}") for i in range(NQ)]
        xyh = [Signal(5, name=f"xyh{i}") for i in range(NQ)]
        xnact = Signal(range(NQ + 1))
        xbpr = Signal(range(BPR + 1))
        xbank = Signal()
        xstart = Signal()
        xbusy = Signal()
        sacc = [Signal(signed(SW), name=f"s{i}") for i in range(NQ)]

        qrwps, qrrps, qiwps, qirps, awps, arps, afps, wps, rps, roms = ([] for _ in range(10))
        for i in range(NQ):
            qraw = memory.Memory(shape=unsigned(EB * W), depth=BPR, init=[])
            m.submodules[f"qraw{i}"] = qraw
            qrwps.append(qraw.write_port())
            qrrps.append(qraw.read_port())
            qint = memory.Memory(shape=unsigned(QB * W), depth=BPR, init=[])
            m.submodules[f"qint{i}"] = qint
            qiwps.append(qint.write_port())
            qirps.append(qint.read_port())
            amem = memory.Memory(shape=unsigned(AW * W), depth=2 * BPR, init=[])  # 2 banks
            m.submodules[f"acc{i}"] = amem
            awps.append(amem.write_port())
            arps.append(amem.read_port(transparent_for=(awps[-1],)))
            afps.append(amem.read_port())
            mem = memory.Memory(shape=signed(TW), depth=D, init=[])
            m.submodules[f"scores{i}"] = mem
            wps.append(mem.write_port())
            rps.append(mem.read_port())
            rom = memory.Memory(shape=unsigned(24), depth=65, init=[int(v) for v in EXP2_TABLE])
            m.submodules[f"exp2_{i}"] = rom
            roms.append((rom.read_port(domain="comb"), rom.read_port(domain="comb")))

        # ---- segment control (as AttentionEngine)
        seg = Signal(2)               # 0: K pass 1, 1: V last tile, 2: K tile, 3: V tile
        row = Signal(CB + 1)
        row_end = Signal(CB + 1)
        bcnt = Signal(range(BPR + 1))
        tile = Signal(CB + 1)
        last_start = Signal(CB + 1)
        m.d.comb += last_start.eq(((n - 1) >> LOG2D) << LOG2D)

        # ---- K/V pipeline: stages A..J
        S = "ABCDEFGHIJ"
        v = {s: Signal(name=f"v{s}") for s in S}
        isv = {s: Signal(name=f"isv{s}") for s in S}
        p1 = {s: Signal(name=f"p1{s}") for s in S}
        first = {s: Signal(name=f"first{s}") for s in S}
        init = {s: Signal(name=f"init{s}") for s in S}
        last = {s: Signal(name=f"last{s}") for s in S}
        rowp = {s: Signal(CB + 1, name=f"row{s}") for s in S}
        beatp = {s: Signal(range(BPR), name=f"beat{s}") for s in S}
        dat = {s: Signal(len(self.i_kv.payload), name=f"dat{s}") for s in S}
        empty = ~Cat(*v.values()).any()

        accept = Signal()
        m.d.comb += accept.eq(self.i_kv.valid & self.i_kv.ready)
        m.d.sync += v["A"].eq(accept)
        with m.If(accept):
            m.d.sync += [
                isv["A"].eq(seg[0]), p1["A"].eq(seg == 0), first["A"].eq(bcnt == 0),
                init["A"].eq((seg == 1) & (row == last_start)),
                last["A"].eq(bcnt == bpr - 1), rowp["A"].eq(row), beatp["A"].eq(bcnt),
                dat["A"].eq(self.i_kv.payload),
            ]
        for a, b in pairwise(S):
            m.d.sync += [v[b].eq(v[a]), isv[b].eq(isv[a]), p1[b].eq(p1[a]),
                         first[b].eq(first[a]), init[b].eq(init[a]), last[b].eq(last[a]),
                         rowp[b].eq(rowp[a]), beatp[b].eq(beatp[a])]
            if b in dat:
                m.d.sync += dat[b].eq(dat[a])

        def codes(word):
            return [word[8 * w:8 * w + 8].as_signed() for w in range(W)]

        def scale(word, which=0):              # (sig, shift) of the row scale (>= 0)
            _, g, h = unpack(word[8 * W + EB * which:8 * W + EB * (which + 1)], fmt)
            return g, h

        for i in range(NQ):
            rp, wp = rps[i], wps[i]
            m.d.comb += [rp.addr.eq(row[:LOG2D]), rp.en.eq(1)]
            lane_on = Signal(name=f"on{i}")
            m.d.comb += lane_on.eq(i < nact)

            # -- A: V: exp2 lookup of m - t
            dlt = Signal(TW + 1, name=f"d{i}")
            m.d.comb += dlt.eq(mx[i] - rp.data)
            kB = Signal(range(32), name=f"k{i}")
            kbigB = Signal(name=f"kbig{i}")
            rB = Signal(10, name=f"r{i}")
            t0B = Signal(24, name=f"t0_{i}")
            dfB = Signal(17, name=f"df{i}")
            r0, r1 = roms[i]
            m.d.comb += [r0.addr.eq(dlt[10:16]), r1.addr.eq(dlt[10:16] + 1)]
            m.d.sync += [kB.eq(dlt[16:21]), kbigB.eq(dlt[16:] >= P_ZERO_OCTAVES),
                         rB.eq(dlt[0:10]), t0B.eq(r0.data), dfB.eq(r0.data - r1.data)]

            # -- B: V: p
            e = Signal(24, name=f"e{i}")
            m.d.comb += e.eq(t0B - ((dfB * rB + 512) >> 10))
            pC = Signal(24, name=f"p{i}")
            visB = (rowp["B"] <= lim[i]) & lane_on
            m.d.sync += pC.eq(Mux(kbigB | ~visB, 0, e >> kB))

            # -- C: V: p * mv, the weight shift, L
            mv, vh = scale(dat["C"], 0)
            pmD = Signal(PMW, name=f"pm{i}")
            shwD = Signal(signed(8), name=f"shw{i}")
            m.d.sync += [pmD.eq(pC * mv), shwD.eq(W_SHIFT + yh[i] - vh)]
            with m.If(v["C"] & isv["C"] & first["C"]):
                m.d.sync += lsum[i].eq(lsum[i] + pC)

            # -- D: V: w = rnd(pm * 2**-shw)
            swc = Signal(range(PMW + 2), name=f"wsh{i}")
            m.d.comb += swc.eq(Mux(shwD > PMW + 1, PMW + 1, Mux(shwD < 1, 1, shwD)))
            wE = Signal(WB - 1, name=f"w{i}")
            m.d.sync += wE.eq((pmD + _half(swc, PMW + 2)) >> swc)

            # -- E: the MAC array, one multiplier per channel for both passes:
            # K: q_int (16 bits) x k_int; V: w (26 bits) x v_int (one DSP48E2 each)
            qw = qirps[i].data                    # q word of this beat (read at D)
            m.d.comb += [qirps[i].addr.eq(beatp["D"]), qirps[i].en.eq(1)]
            cE = codes(dat["E"])
            svt = []
            for w in range(W):
                opa = Signal(signed(WB), name=f"ma{i}_{w}")
                m.d.comb += opa.eq(Mux(isv["E"], wE, qw[QB * w:QB * (w + 1)].as_signed()))
                t = Signal(signed(WB + 8), name=f"mp{i}_{w}")
                m.d.sync += t.eq(opa * cE[w])
                svt.append(t)

            # -- F: K: sum of the beat's products
            bsum = Signal(signed(SW), name=f"bsum{i}")
            m.d.sync += bsum.eq(sum(svt[1:], svt[0]))

            # -- G: K: row score
            with m.If(v["G"] & ~isv["G"]):
                m.d.sync += sacc[i].eq(Mux(first["G"], 0, sacc[i]) + bsum)

            # -- H: K: S * mk and the logit shift
            mk, kh = scale(dat["H"], 0)
            prodI = Signal(signed(SW + SB + 1), name=f"sk{i}")
            shtI = Signal(signed(9), name=f"sht{i}")
            m.d.sync += [prodI.eq(sacc[i] * mk),
                         shtI.eq(3 + QTOP + 2 * F - gq[i] - kh)]

            # -- I: K: t = clamp(rnd(S * mk * 2**-sht))
            tJ = Signal(signed(TW), name=f"t{i}")
            m.d.sync += tJ.eq(_round_sat(m, prodI, SW + SB + 1, shtI, 31, T_SAT, f"t{i}"))

            # -- J: K: score -> buffer, maximum, Y
            _, vhJ = scale(dat["J"], 1)
            m.d.comb += [wp.addr.eq(rowp["J"][:LOG2D]), wp.data.eq(tJ),
                         wp.en.eq(v["J"] & ~isv["J"] & last["J"])]
            with m.If(v["J"] & ~isv["J"] & last["J"] & p1["J"] & (rowp["J"] <= lim[i])):
                with m.If(~mvalid[i] | (tJ > mx[i])):
                    m.d.sync += [mx[i].eq(tJ), mvalid[i].eq(1)]
                with m.If(vhJ > yh[i]):
                    m.d.sync += yh[i].eq(vhJ)

            # -- F: A[beat] += terms (read at D, transparent for the write at F; F -> E
            # forwarding when consecutive beats hit the same word)
            arp, awp = arps[i], awps[i]
            wdata = Signal(AW * W, name=f"aw{i}")
            oldF = Signal(AW * W, name=f"aold{i}")
            m.d.comb += [arp.addr.eq(beatp["D"] + cbank * BPR), arp.en.eq(1)]
            m.d.sync += oldF.eq(Mux(v["F"] & isv["F"] & (beatp["F"] == beatp["E"]), wdata,
                                    arp.data))
            parts = []
            for w in range(W):
                old = oldF[AW * w:AW * (w + 1)].as_signed()
                parts.append((Mux(init["F"], 0, old) + svt[w])[:AW])
            m.d.comb += [wdata.eq(Cat(*parts)), awp.addr.eq(beatp["F"] + cbank * BPR),
                         awp.data.eq(wdata),
                         awp.en.eq(v["F"] & isv["F"])]

        # ---- q load, quantiser, finish
        flane = Signal(range(NQ + 1))
        fb = Signal(range(BPR + 1))
        for i in range(NQ):
            m.d.comb += [qrrps[i].addr.eq(fb), qrrps[i].en.eq(1)]

        # q beat magnitude maximum (load) and the lane's g (quantiser)
        qin = self.i_q.payload.as_value()
        bmax = qin[0:EB - 1]
        for w in range(1, W):             # a chain of signals (a nested Mux expression would
            x = qin[EB * w:EB * w + EB - 1]   # duplicate bmax at every level when emitted)
            nxt = Signal(EB - 1, name=f"qmax{w}")
            m.d.comb += nxt.eq(Mux(x > bmax, x, bmax))
            bmax = nxt
        cur_qmx = Array(qmx)[flane]
        _, gmax, hmax = unpack(Cat(cur_qmx, 0), fmt)
        mq = Signal(QX, name="qmc")
        m.d.comb += mq.eq(gmax * cval)
        blq = bit_length(m, mq, QX, "qbl")
        cur_g = Array(gq)[flane]
        qword = Array(rp.data for rp in qrrps)[flane]
        qparts = []
        for w in range(W):
            sq, gs, hs = unpack(qword[EB * w:EB * (w + 1)], fmt)
            x = Signal(signed(QX + 1), name=f"qx{w}")
            m.d.comb += x.eq(Mux(sq, -(gs * cval), gs * cval))
            sh = Signal(signed(9), name=f"qsh{w}")      # g - e = bitlen - 1 + hmax - h - QTOP
            m.d.comb += sh.eq(cur_g - hs - 1 - QTOP)
            qparts.append(_round_sat(m, x, QX + 1, sh, 15, QMAX, f"q{w}")[:QB])
        for i in range(NQ):
            m.d.comb += [qiwps[i].addr.eq(fb), qiwps[i].data.eq(Cat(*qparts))]

        beta = Signal(range(LW + 1))
        dn = Signal(LW + 1)
        rem = Signal(LW + 2)
        quo = Signal(25)
        it = Signal(range(DIV_STEPS + 1))
        # normaliser pipeline: issue (xb, xw) -> N1 (RN32(A)) -> N2 (product, rounding) -> o
        xl = Signal(range(NQ + 1))
        xb = Signal(range(BPR + 1))
        xw = Signal(range(W))
        s1v, s2v, ov = Signal(), Signal(), Signal()
        fw1 = Signal(range(W))
        qa = Signal(25)
        sa = Signal(range(64))
        neg = Signal()
        obits = Signal(EB)
        adv = Signal()
        issue = Signal()
        m.d.comb += adv.eq(~ov | self.o.ready)
        for i in range(NQ):
            m.d.comb += [afps[i].addr.eq(xb + xbank * BPR), afps[i].en.eq(adv)]
        with m.If(adv):
            m.d.sync += [s1v.eq(issue), s2v.eq(s1v), ov.eq(s2v)]
            with m.If(issue):
                m.d.sync += fw1.eq(xw)
        word = Signal(AW * W, name="n1_word")
        m.d.comb += word.eq(Array(rp.data for rp in afps)[xl])
        av = Signal(signed(AW), name="n1_a")
        m.d.comb += av.eq(Array(word[AW * w:AW * (w + 1)] for w in range(W))[fw1])
        amag = Signal(AW, name="n1_mag")
        m.d.comb += amag.eq(Mux(av < 0, -av, av))
        abl = bit_length(m, amag, AW, "n1")
        shv = Signal(range(AW), name="n1_sh")
        m.d.comb += shv.eq(Mux(abl > 24, abl - 24, 0))
        arnd = rne_shr(m, amag, Mux(shv == 0, 1, shv), AW, "n1r")
        with m.If(adv):
            m.d.sync += [qa.eq(Mux(shv == 0, amag, arnd)), sa.eq(shv), neg.eq(av < 0)]
        mm = Signal(50, name="n2_m")
        m.d.comb += mm.eq(qa * quo)
        ee = Signal(signed(10), name="n2_e")
        cur_y = Array(xyh)[xl]
        m.d.comb += ee.eq(sa - beta + cur_y - F - 7)
        omag = rn_fmt(m, mm, 50, ee, fmt, "n2")
        with m.If(adv):
            m.d.sync += obits.eq(Cat(omag, neg))
        m.d.comb += [self.o.valid.eq(ov), self.o.payload.eq(obits)]

        main_busy = Signal()
        m.d.comb += [main_busy.eq(1), self.busy.eq(main_busy | xbusy | ov)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.i_cmd.ready.eq(1), main_busy.eq(0)]
                with m.If(self.i_cmd.valid):
                    p = self.i_cmd.payload
                    m.d.sync += [n.eq(p.n), nact.eq(p.nq), cval.eq(p.c), bpr.eq(p.bpr),
                                 bcnt.eq(0)]
                    m.d.sync += [lim[i].eq(p.lim[i]) for i in range(NQ)]
                    m.d.sync += [mvalid[i].eq(0) for i in range(NQ)]
                    m.d.sync += [yh[i].eq(0) for i in range(NQ)]
                    m.d.sync += [qmx[i].eq(0) for i in range(NQ)]
                    m.d.sync += [lsum[i].eq(0) for i in range(NQ)]
                    m.d.sync += [flane.eq(0), fb.eq(0)]
                    m.next = "LOAD_Q"
            with m.State("LOAD_Q"):
                m.d.comb += self.i_q.ready.eq(1)
                for i in range(NQ):
                    m.d.comb += [qrwps[i].addr.eq(bcnt), qrwps[i].data.eq(qin),
                                 qrwps[i].en.eq(self.i_q.valid & (flane == i))]
                with m.If(self.i_q.valid):
                    m.d.sync += bcnt.eq(bcnt + 1)
                    with m.If(bmax > cur_qmx):
                        m.d.sync += cur_qmx.eq(bmax)
                    with m.If(bcnt == bpr - 1):
                        m.d.sync += [bcnt.eq(0), flane.eq(flane + 1)]
                        with m.If(flane + 1 == nact):
                            m.d.sync += [flane.eq(0), fb.eq(0)]
                            m.next = "QG"
            # -- quantise each lane's q: g from max|q| * C, then one beat per two cycles
            with m.State("QG"):
                m.d.sync += cur_g.eq(blq + hmax)
                m.next = "QR"
            with m.State("QR"):                      # raw q word fb being read
                m.next = "QW"
            with m.State("QW"):
                for i in range(NQ):
                    m.d.comb += qiwps[i].en.eq(flane == i)
                m.d.sync += fb.eq(fb + 1)
                m.next = "QR"
                with m.If(fb == bpr - 1):
                    m.d.sync += [fb.eq(0), flane.eq(flane + 1)]
                    m.next = "QG"
                    with m.If(flane + 1 == nact):
                        m.d.sync += [flane.eq(0), seg.eq(0), row.eq(0), row_end.eq(n)]
                        m.next = "STREAM"
            with m.State("STREAM"):
                m.d.comb += self.i_kv.ready.eq(1)
                with m.If(self.i_kv.valid):
                    m.d.sync += bcnt.eq(bcnt + 1)
                    with m.If(bcnt == bpr - 1):
                        m.d.sync += [bcnt.eq(0), row.eq(row + 1)]
                        with m.If(row + 1 == row_end):
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(empty):
                    m.next = "STREAM"
                    with m.Switch(seg):
                        with m.Case(0):
                            m.d.sync += [seg.eq(1), row.eq(last_start), row_end.eq(n)]
                        with m.Case(1):
                            m.d.sync += [seg.eq(2), tile.eq(0), row.eq(0), row_end.eq(D)]
                            with m.If(last_start == 0):
                                m.next = "HANDOFF"
                        with m.Case(2):
                            m.d.sync += [seg.eq(3), row.eq(tile), row_end.eq(tile + D)]
                        with m.Case(3):
                            m.d.sync += [seg.eq(2), tile.eq(tile + D), row.eq(tile + D),
                                         row_end.eq(tile + 2 * D)]
                            with m.If(tile + D == last_start):
                                m.next = "HANDOFF"
            # -- hand the sums to the finishing unit (once it is free) and take the next call
            with m.State("HANDOFF"):
                with m.If(~xbusy):
                    m.d.comb += xstart.eq(1)
                    m.d.sync += [xl_.eq(l_) for xl_, l_ in zip(xlsum, lsum, strict=True)]
                    m.d.sync += [xy_.eq(y_) for xy_, y_ in zip(xyh, yh, strict=True)]
                    m.d.sync += [xnact.eq(nact), xbpr.eq(bpr), xbank.eq(cbank),
                                 cbank.eq(~cbank)]
                    m.next = "IDLE"

        # ---- finishing unit: per lane 1/L, then one output per cycle
        with m.FSM():
            with m.State("XIDLE"):
                with m.If(xstart):
                    m.d.sync += [xl.eq(0), xb.eq(0), xw.eq(0)]
                    m.next = "DIV_INIT"
            # -- 1/L: restoring division of 2**(beta+23) by L, beta = bitlen(L - 1); waits
            # for the previous lane's outputs to leave the normaliser
            with m.State("DIV_INIT"):
                m.d.comb += xbusy.eq(1)
                with m.If(~s1v & ~s2v):
                    lv = Array(xlsum)[xl]
                    lvm1 = Signal(LW, name="lvm1")
                    m.d.comb += lvm1.eq(lv - 1)
                    b = bit_length(m, lvm1, LW, "lm1")
                    nsh = Signal(range(LW + 1), name="nsh")
                    m.d.comb += nsh.eq(LW - b)
                    m.d.sync += [beta.eq(b), dn.eq(lv << nsh), rem.eq(1 << (LW - 1)),
                                 quo.eq(0), it.eq(0)]
                    m.next = "DIV"
            with m.State("DIV"):
                m.d.comb += xbusy.eq(1)
                r2 = rem << 1
                with m.If(r2 >= dn):
                    m.d.sync += [rem.eq(r2 - dn), quo.eq((quo << 1) | 1)]
                with m.Else():
                    m.d.sync += [rem.eq(r2), quo.eq(quo << 1)]
                m.d.sync += it.eq(it + 1)
                with m.If(it == DIV_STEPS - 1):
                    m.next = "DIV_ROUND"
            with m.State("DIV_ROUND"):
                m.d.comb += xbusy.eq(1)
                r2 = rem << 1
                m.d.sync += quo.eq(quo + ((r2 > dn) | ((r2 == dn) & quo[0])))
                m.next = "EMIT"
            with m.State("EMIT"):                    # one element per cycle into the normaliser
                m.d.comb += [issue.eq(1), xbusy.eq(1)]
                with m.If(adv):
                    m.d.sync += xw.eq(xw + 1)
                    with m.If(xw == W - 1):
                        m.d.sync += [xw.eq(0), xb.eq(xb + 1)]
                        with m.If(xb == xbpr - 1):
                            m.d.sync += xb.eq(0)
                            m.next = "NEXT"
            with m.State("NEXT"):                    # lane done issuing: wait for N1/N2
                m.d.comb += xbusy.eq(1)
                with m.If(adv & ~s1v):
                    m.d.sync += xl.eq(xl + 1)
                    m.next = "DIV_INIT"
                    with m.If(xl + 1 == xnact):
                        m.d.sync += xl.eq(0)
                        m.next = "XIDLE"
        return m
