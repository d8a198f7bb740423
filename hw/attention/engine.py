"""Attention engine: exact two-pass softmax attention of ``lanes`` query rows over one KV head.

One engine serves decode and prefill (docs/hw/attention.md):

* decode: the lanes are the query heads of one GQA group (all with the same last key);
* prefill: the lanes are N_pe query rows x the heads of a group, each with its own causal limit
  (key j is visible to lane i iff ``j <= lim[i]``); masked keys cost no arithmetic change.

Arithmetic is exactly golden `attention_decode` (sim/golden/hw_numerics.py) (scores with the exact
per-row maximum, exact integer S.V and softmax sums, correctly rounded 1/L, one rounding to
the stream format). Because the maximum must be known before any weight is formed, the engine
makes two passes over the keys:

pass 1  K rows 0..n-1: scores t_j (Q.16 log2 domain) into the score buffer, running max;
pass 2  for each tile of ``depth`` keys: (re-stream K of the tile to rebuild its scores unless
        they are still in the buffer), stream V of the tile, accumulate.

The score buffer holds ``depth`` scores per lane; after pass 1 it holds the *last* tile, so
contexts up to ``depth`` need K once and V once; longer contexts re-read K for all tiles but the
last (:func:`kv_schedule` gives the exact row order the feeder must supply).

Ports
-----
i_cmd : In(stream {n, nq, c, lim[lanes]})  one command per call: n keys (>= 1), nq active lanes,
        c = score scale (golden `score_scale` (sim/golden/hw_numerics.py)), lim = last visible
        key of each lane (< n; decode: n - 1).
        bpr = beats per row (run-time head_dim / beat; rows shorter than a beat multiple are
        zero-padded by the feeder), int8 = K/V beats carry int8 codes + the row's scale.
i_q   : In(stream ArrayLayout(unsigned(fmt.bits), beat))  nq * bpr beats: lane-major q.
i_kv  : In(stream ArrayLayout(unsigned(fmt.bits), beat))  K or V rows, bpr beats each, in the
        order of :func:`kv_schedule`. int8 mode: codes in bits [0, 8*beat), the row's scale
        (stream format) in the next fmt.bits bits.
o     : Out(stream unsigned(fmt.bits))  nq * bpr * beat results, lane-major, one per beat.
busy  : Out(1)

All of q, K, V, the int8 row scales and o are in the stream format ``fmt``
(:class:`tellme.spec.numerics.StreamFormat`, default the contract's ``STREAM_FORMAT``):
FP16 (1-5-10, 11-bit significands) or FP24 (1-5-18, 19-bit significands). Only significand
widths change with the format; every integer accumulator keeps its width because the exponent
range is FP16's (terms at fixed LSBs: q*k at 2**-20 < 2**52, p*v at 2**-24 < 2**41).

Multipliers per lane and channel (DSP48E2: 27x18 signed, i.e. 26x17 unsigned per DSP):
q*k significands 11x11 (FP16: 1 DSP) / 19x19 (FP24: 2 DSPs, or 1 DSP plus a 19x2-bit LUT
partial product: 19 bits exceed the 17-bit port); p*v 24x11 (FP16: 1 DSP) / 24x19 (FP24: 2
DSPs, same split). The int8 dequantiser (8 x sig_bits per channel), the score scale (45x20 per
lane) and the output product (24x25, one per engine) do not depend on the lanes x beat array.
So the lanes x beat array costs 2 DSPs per lane-channel at FP16 and 4 at FP24 (kv260 preset,
8 lanes x 8 channels: 128 -> 256; whole-block counts: ``tellme hw report``). The pipeline depth
is the same for both formats, so the cycle model does not depend on the format.

Timing: one K or V beat per cycle when the feeder keeps up (i_kv is ready for the whole of a
segment); a drain of :data:`DRAIN` cycles between segments (the buffer is written at the end of
the pipeline and read at its start); the result costs 26 cycles per lane (1/L by restoring
division) plus 1 per accumulator word and 3 per element. Exact counts:
the cycle model `expected_cycles` in sim/cycles_attn.py.
Backpressure on ``o`` only stalls the output; random idle on any input only delays it.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.attention import QK_FRAC, SCORE_SAT, SV_FRAC
from tellme.spec.numerics import EXP2_TABLE, StreamFormat, stream_format

from ..arith import bit_length, rne_shr
from ..elementwise.stream_fp import rn_fmt, unpack

MAX_SHIFT = 29         # largest shift of a finite stream value (exponent field 30)
C_BITS = 20            # score-scale register width
DIV_STEPS = 24


def cmd_layout(lanes: int, ctx_bits: int) -> data.StructLayout:
    """Command: n keys, nq active lanes, score scale c, per-lane last visible key, int8 KV mode,
    bpr = beats per row (head_dim / beat at run time, 1 <= bpr <= max head_dim / beat)."""
    return data.StructLayout({
        "n": unsigned(ctx_bits + 1),
        "nq": range(lanes + 1),
        "c": unsigned(C_BITS),
        "lim": data.ArrayLayout(unsigned(ctx_bits), lanes),
        "int8": 1,
        "bpr": unsigned(16),
    })


class AttentionEngine(wiring.Component):
    """See the module docstring. Parameters: ``head_dim`` (largest head_dim served, multiple
    of ``beat``; the actual one is run-time data), ``lanes``
    (query rows served by one K/V stream), ``beat`` (stream elements per K/V/q beat),
    ``depth`` (score-buffer tile, power of two >= 2), ``ctx_bits`` (n <= 2**ctx_bits - 1),
    ``fmt`` (stream format of q, K, V, the int8 scales and o; None: ``STREAM_FORMAT``)."""

    def __init__(self, *, head_dim: int = 16, lanes: int = 4, beat: int = 4, depth: int = 64,
                 ctx_bits: int = 16, fmt: StreamFormat | None = None):
        fmt = stream_format(fmt)
        problem = None
        if head_dim % beat:
            problem = f"head_dim {head_dim} is not a multiple of beat {beat}"
        elif depth < 2 or depth & (depth - 1):
            problem = f"score-buffer depth {depth} must be a power of two >= 2"
        elif 8 * beat + fmt.bits > fmt.bits * beat:
            problem = (f"beat {beat}: an int8 K/V beat ({beat} codes + one {fmt.name} scale) "
                       f"does not fit {beat} {fmt.name} elements")
        if problem:
            self._MustUse__silence = True      # not elaborated: do not warn about it
            raise ValueError(problem)
        self.head_dim, self.lanes, self.beat, self.depth = head_dim, lanes, beat, depth
        self.ctx_bits, self.fmt = ctx_bits, fmt
        elem = data.ArrayLayout(unsigned(fmt.bits), beat)
        super().__init__({
            "i_cmd": In(stream.Signature(cmd_layout(lanes, ctx_bits))),
            "i_q": In(stream.Signature(elem)),
            "i_kv": In(stream.Signature(elem)),
            "o": Out(stream.Signature(unsigned(fmt.bits))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        HD, NQ, W, D, CB = self.head_dim, self.lanes, self.beat, self.depth, self.ctx_bits
        fmt = self.fmt
        EB, SB, F = fmt.bits, fmt.sig_bits, fmt.frac   # element bits, significand bits
        # q*k = Pq * Pk * 2**(sh - 2F): the term at LSB 2**-20 is RNE(P * 2**(sh - QK_SHIFT))
        QK_SHIFT = 2 * F - QK_FRAC
        # p*v at LSB 2**-24 (p integer UQ1.23): RNE(p * Sv * 2**(sh - SV_SHIFT))
        SV_SHIFT = F + 23 - SV_FRAC
        QKP = 2 * SB                  # q*k significand product bits
        SVP = 24 + SB                 # p*v product bits
        BPR = HD // W                 # beats per row at the largest head_dim
        LOG2D = D.bit_length() - 1
        TW = 44                       # |t| < 2**42
        LW = 25 + CB                  # L <= n * 2**23
        AW = 44 + CB                  # |A| < n * 2**42

        # ---- command registers
        n = Signal(CB + 1)
        nact = Signal(range(NQ + 1))
        cval = Signal(C_BITS)
        int8 = Signal()
        bpr = Signal(range(BPR + 1))
        lim = [Signal(CB, name=f"lim{i}") for i in range(NQ)]

        # ---- per-lane state
        mx = [Signal(signed(TW), name=f"m{i}") for i in range(NQ)]
        mvalid = [Signal(name=f"mvalid{i}") for i in range(NQ)]
        lsum = [Signal(LW, name=f"L{i}") for i in range(NQ)]
        sacc = [Signal(signed(64), name=f"s{i}") for i in range(NQ)]

        # ---- per lane: q rows, S.V accumulators (one word = one beat's W channels), score
        # buffer, exp2 ROM
        wps, rps, roms, qwps, qrps, awps, arps, afps = [], [], [], [], [], [], [], []
        for i in range(NQ):
            qmem = memory.Memory(shape=unsigned(EB * W), depth=BPR, init=[])
            m.submodules[f"q{i}"] = qmem
            qwps.append(qmem.write_port())
            qrps.append(qmem.read_port())
            amem = memory.Memory(shape=unsigned(AW * W), depth=BPR, init=[])
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

        # ---- segment control
        seg = Signal(2)               # 0: K pass 1, 1: V last tile, 2: K tile, 3: V tile
        row = Signal(CB + 1)
        row_end = Signal(CB + 1)
        bcnt = Signal(range(BPR + 1))
        tile = Signal(CB + 1)
        last_start = Signal(CB + 1)
        m.d.comb += last_start.eq(((n - 1) >> LOG2D) << LOG2D)

        # ---- pipeline registers: input stage (A) .. D
        vA, vB, vC, vD = (Signal(name=f"v{s}") for s in "ABCD")
        isvA, isvB, isvC, isvD = (Signal(name=f"isv{s}") for s in "ABCD")
        p1A, p1B, p1C, p1D = (Signal(name=f"p1{s}") for s in "ABCD")
        firstA, firstB, firstC = (Signal(name=f"first{s}") for s in "ABC")
        initA, initB, initC, initD = (Signal(name=f"init{s}") for s in "ABCD")
        lastA, lastB, lastC, lastD = (Signal(name=f"last{s}") for s in "ABCD")
        rowA, rowB, rowC, rowD = (Signal(CB + 1, name=f"row{s}") for s in "ABCD")
        beatA, beatB, beatC, beatD = (Signal(range(BPR), name=f"beat{s}") for s in "ABCD")
        datA, datB, datC = (Signal(EB * W, name=f"dat{s}") for s in "ABC")
        empty = ~(vA | vB | vC | vD)

        # int8 KV beats: W codes (int8) in the low 8W bits, the row's scale (stream format)
        # above them; dequantised on input to RN_fmt(code * scale) (golden kv_dequant_int8)
        raw = self.i_kv.payload.as_value()
        sc_s, sc_g, sc_h = unpack(raw[8 * W:8 * W + EB], fmt)
        deq_parts = []
        for w in range(W):
            code = raw[8 * w:8 * w + 8].as_signed()
            cm = Signal(8, name=f"dq{w}_c")
            m.d.comb += cm.eq(Mux(code < 0, -code, code))
            mm = Signal(8 + SB, name=f"dq{w}_m")
            ee = Signal(signed(7), name=f"dq{w}_e")
            m.d.comb += [mm.eq(cm * sc_g), ee.eq(sc_h - F)]
            deq_parts += [rn_fmt(m, mm, 8 + SB, ee, fmt, f"dq{w}"), (code < 0) ^ sc_s]
        deq = Cat(*deq_parts)

        accept = Signal()
        m.d.comb += accept.eq(self.i_kv.valid & self.i_kv.ready)
        m.d.sync += vA.eq(accept)
        with m.If(accept):
            m.d.sync += [
                isvA.eq(seg[0]), p1A.eq(seg == 0), firstA.eq(bcnt == 0),
                initA.eq((seg == 1) & (row == last_start)),
                lastA.eq(bcnt == bpr - 1), rowA.eq(row), beatA.eq(bcnt),
                datA.eq(Mux(int8, deq, self.i_kv.payload.as_value())),
            ]
        m.d.sync += [vB.eq(vA), vC.eq(vB), vD.eq(vC),
                     isvB.eq(isvA), isvC.eq(isvB), isvD.eq(isvC),
                     p1B.eq(p1A), p1C.eq(p1B), p1D.eq(p1C),
                     firstB.eq(firstA), firstC.eq(firstB),
                     initB.eq(initA), initC.eq(initB), initD.eq(initC),
                     lastB.eq(lastA), lastC.eq(lastB), lastD.eq(lastC),
                     rowB.eq(rowA), rowC.eq(rowB), rowD.eq(rowC),
                     beatB.eq(beatA), beatC.eq(beatB), beatD.eq(beatC),
                     datB.eq(datA), datC.eq(datB)]

        for i in range(NQ):
            rp, wp = rps[i], wps[i]
            m.d.comb += [rp.addr.eq(row[:LOG2D]), rp.en.eq(1)]
            lane_on = Signal(name=f"on{i}")
            m.d.comb += lane_on.eq(i < nact)

            # -- stage A: K: q.k terms of this beat; V: softmax exponent from the stored score
            qbeat = qrps[i].data                  # addressed by the beat counter at input
            m.d.comb += [qrps[i].addr.eq(bcnt), qrps[i].en.eq(1)]
            terms = []
            for w in range(W):
                sq, gq, hq = unpack(qbeat[EB * w:EB * (w + 1)], fmt)
                sk, gk, hk = unpack(datA[EB * w:EB * (w + 1)], fmt)
                prod = Signal(QKP, name=f"qk{i}_{w}_p")
                sh = Signal(6, name=f"qk{i}_{w}_sh")
                shl = Signal(range(2 * MAX_SHIFT - QK_SHIFT + 1), name=f"qk{i}_{w}_shl")
                shr = Signal(range(QK_SHIFT + 1), name=f"qk{i}_{w}_shr")
                m.d.comb += [prod.eq(gq * gk), sh.eq(hq + hk),
                             shl.eq(Mux(sh >= QK_SHIFT, sh - QK_SHIFT, 0)),
                             shr.eq(Mux(sh >= QK_SHIFT, 1, QK_SHIFT - sh))]
                mag = Signal(52, name=f"qk{i}_{w}_mag")     # < 2**QKP << (58 - QK_SHIFT)
                m.d.comb += mag.eq(Mux(sh >= QK_SHIFT, prod << shl,
                                       rne_shr(m, prod, shr, QKP, f"qk{i}_{w}")))
                term = Signal(signed(54), name=f"qk{i}_{w}_t")
                m.d.comb += term.eq(Mux(sq ^ sk, -mag, mag))
                terms.append(term)
            bsum = Signal(signed(58), name=f"bsum{i}")
            m.d.sync += bsum.eq(sum(terms[1:], terms[0]))

            dlt = Signal(TW + 1, name=f"d{i}")
            m.d.comb += dlt.eq(mx[i] - rp.data)
            kB = Signal(range(32), name=f"k{i}")
            kbigB = Signal(name=f"kbig{i}")
            rB = Signal(10, name=f"r{i}")
            t0B = Signal(24, name=f"t0_{i}")
            dfB = Signal(17, name=f"df{i}")
            r0, r1 = roms[i]
            m.d.comb += [r0.addr.eq(dlt[10:16]), r1.addr.eq(dlt[10:16] + 1)]
            m.d.sync += [kB.eq(dlt[16:21]), kbigB.eq(dlt[16:] >= 24), rB.eq(dlt[0:10]),
                         t0B.eq(r0.data), dfB.eq(r0.data - r1.data)]

            # -- stage B: K: row score accumulation; V: p = 2**-d (0 beyond 24 octaves / masked)
            snew = Signal(signed(64), name=f"snew{i}")
            m.d.comb += snew.eq(Mux(firstB, 0, sacc[i]) + bsum)
            with m.If(vB & ~isvB):
                m.d.sync += sacc[i].eq(snew)
            e = Signal(24, name=f"e{i}")
            m.d.comb += e.eq(t0B - ((dfB * rB + 512) >> 10))
            pC = Signal(24, name=f"p{i}")
            visible = (rowB <= lim[i]) & lane_on
            m.d.sync += pC.eq(Mux(kbigB | ~visible, 0, e >> kB))

            # -- stage C: K: saturate and scale; V: p.v terms, L
            ssat = Signal(signed(45), name=f"ssat{i}")
            s = sacc[i]
            m.d.comb += ssat.eq(Mux(s > SCORE_SAT, SCORE_SAT, Mux(s < -SCORE_SAT, -SCORE_SAT, s)))
            prodD = Signal(signed(66), name=f"sc{i}")
            m.d.sync += prodD.eq(ssat * cval)
            svt = []
            for w in range(W):
                sv, gv, hv = unpack(datC[EB * w:EB * (w + 1)], fmt)
                pv = Signal(SVP, name=f"sv{i}_{w}_p")
                shr = Signal(range(SV_SHIFT + 1), name=f"sv{i}_{w}_shr")
                m.d.comb += [pv.eq(pC * gv),
                             shr.eq(Mux(hv >= SV_SHIFT, 1, SV_SHIFT - hv))]
                mag = Signal(42, name=f"sv{i}_{w}_mag")      # |term| < 2**41
                rounded = rne_shr(m, pv, shr, SVP, f"sv{i}_{w}")
                if MAX_SHIFT >= SV_SHIFT:                     # FP16: large V shift left
                    shl = Signal(range(MAX_SHIFT - SV_SHIFT + 1), name=f"sv{i}_{w}_shl")
                    m.d.comb += shl.eq(Mux(hv >= SV_SHIFT, hv - SV_SHIFT, 0))
                    m.d.comb += mag.eq(Mux(hv >= SV_SHIFT, pv << shl, rounded))
                else:                                         # FP24: always a right shift
                    m.d.comb += mag.eq(rounded)
                t = Signal(signed(43), name=f"sv{i}_{w}_t")
                m.d.sync += t.eq(Mux(sv, -mag, mag))
                svt.append(t)
            with m.If(vC & isvC & firstC):
                m.d.sync += lsum[i].eq(lsum[i] + pC)

            # -- stage D: K: t = floor((s*C + 2**21) / 2**22) -> buffer, max; V: accumulate
            tD = Signal(signed(TW), name=f"t{i}")
            m.d.comb += tD.eq((prodD + (1 << 21)) >> 22)
            m.d.comb += [wp.addr.eq(rowD[:LOG2D]), wp.data.eq(tD),
                         wp.en.eq(vD & ~isvD & lastD)]
            with m.If(vD & ~isvD & lastD & p1D & (rowD <= lim[i])):
                with m.If(~mvalid[i] | (tD > mx[i])):
                    m.d.sync += [mx[i].eq(tD), mvalid[i].eq(1)]
            # accumulator read-modify-write: read at B (transparent for the write at D, which
            # covers a distance of 2 beats), forward D -> C for back-to-back beats (bpr = 1)
            arp, awp = arps[i], awps[i]
            wdata = Signal(AW * W, name=f"aw{i}")
            oldD = Signal(AW * W, name=f"aold{i}")
            m.d.comb += [arp.addr.eq(beatB), arp.en.eq(1)]
            m.d.sync += oldD.eq(Mux(vD & isvD & (beatD == beatC), wdata, arp.data))
            parts = []
            for w in range(W):
                old = oldD[AW * w:AW * (w + 1)].as_signed()
                parts.append((Mux(initD, 0, old) + svt[w])[:AW])
            m.d.comb += [wdata.eq(Cat(*parts)), awp.addr.eq(beatD), awp.data.eq(wdata),
                         awp.en.eq(vD & isvD)]

        # ---- finalisation registers
        flane = Signal(range(NQ + 1))
        fb = Signal(range(BPR + 1))
        fw = Signal(range(W))
        for i in range(NQ):
            m.d.comb += [afps[i].addr.eq(fb), afps[i].en.eq(1)]
        beta = Signal(range(LW + 1))
        dn = Signal(LW + 1)
        rem = Signal(LW + 2)
        quo = Signal(25)
        it = Signal(range(DIV_STEPS + 1))
        qa = Signal(25)
        sa = Signal(range(64))
        neg = Signal()
        obits = Signal(EB)

        m.d.comb += self.busy.eq(1)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.i_cmd.ready.eq(1), self.busy.eq(0)]
                with m.If(self.i_cmd.valid):
                    p = self.i_cmd.payload
                    m.d.sync += [n.eq(p.n), nact.eq(p.nq), cval.eq(p.c), int8.eq(p.int8),
                                 bpr.eq(p.bpr), bcnt.eq(0)]
                    m.d.sync += [lim[i].eq(p.lim[i]) for i in range(NQ)]
                    m.d.sync += [mvalid[i].eq(0) for i in range(NQ)]
                    m.d.sync += [lsum[i].eq(0) for i in range(NQ)]
                    m.d.sync += [flane.eq(0), fb.eq(0), fw.eq(0)]
                    m.next = "LOAD_Q"
            with m.State("LOAD_Q"):
                m.d.comb += self.i_q.ready.eq(1)
                for i in range(NQ):
                    m.d.comb += [qwps[i].addr.eq(bcnt),
                                 qwps[i].data.eq(self.i_q.payload.as_value()),
                                 qwps[i].en.eq(self.i_q.valid & (flane == i))]
                with m.If(self.i_q.valid):
                    m.d.sync += bcnt.eq(bcnt + 1)
                    with m.If(bcnt == bpr - 1):
                        m.d.sync += [bcnt.eq(0), flane.eq(flane + 1)]
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
                                m.next = "DIV_INIT"
                        with m.Case(2):
                            m.d.sync += [seg.eq(3), row.eq(tile), row_end.eq(tile + D)]
                        with m.Case(3):
                            m.d.sync += [seg.eq(2), tile.eq(tile + D), row.eq(tile + D),
                                         row_end.eq(tile + 2 * D)]
                            with m.If(tile + D == last_start):
                                m.next = "DIV_INIT"
            # -- 1/L: restoring division of 2**(beta+23) by L, beta = bitlen(L - 1)
            with m.State("DIV_INIT"):
                lv = Array(lsum)[flane]
                lvm1 = Signal(LW, name="lvm1")
                m.d.comb += lvm1.eq(lv - 1)
                b = bit_length(m, lvm1, LW, "lm1")
                nsh = Signal(range(LW + 1), name="nsh")
                m.d.comb += nsh.eq(LW - b)
                m.d.sync += [beta.eq(b), dn.eq(lv << nsh), rem.eq(1 << (LW - 1)),
                             quo.eq(0), it.eq(0)]
                m.next = "DIV"
            with m.State("DIV"):
                r2 = rem << 1
                with m.If(r2 >= dn):
                    m.d.sync += [rem.eq(r2 - dn), quo.eq((quo << 1) | 1)]
                with m.Else():
                    m.d.sync += [rem.eq(r2), quo.eq(quo << 1)]
                m.d.sync += it.eq(it + 1)
                with m.If(it == DIV_STEPS - 1):
                    m.next = "DIV_ROUND"
            with m.State("DIV_ROUND"):
                r2 = rem << 1
                m.d.sync += quo.eq(quo + ((r2 > dn) | ((r2 == dn) & quo[0])))
                m.next = "X0"
            with m.State("X0"):                      # accumulator word fb being read
                m.next = "X1"
            # -- a = RN32(A) (leading-zero count, RNE)
            with m.State("X1"):
                word = Signal(AW * W, name="x1_word")
                m.d.comb += word.eq(Array(rp.data for rp in afps)[flane])
                av = Signal(signed(AW), name="x1_a")
                m.d.comb += av.eq(Array(word[AW * w:AW * (w + 1)] for w in range(W))[fw])
                mag = Signal(AW, name="x1_mag")
                m.d.comb += mag.eq(Mux(av < 0, -av, av))
                bl = bit_length(m, mag, AW, "x1")
                shv = Signal(range(AW), name="x1_sh")
                m.d.comb += shv.eq(Mux(bl > 24, bl - 24, 0))
                rnd = rne_shr(m, mag, Mux(shv == 0, 1, shv), AW, "x1r")
                m.d.sync += [qa.eq(Mux(shv == 0, mag, rnd)), sa.eq(shv), neg.eq(av < 0)]
                m.next = "X2"
            # -- o = RN_fmt(a * RN32(1/L) / 2), saturating
            with m.State("X2"):
                mm = Signal(50, name="x2_m")
                m.d.comb += mm.eq(qa * quo)
                ee = Signal(signed(10), name="x2_e")          # value = mm * 2**ee
                m.d.comb += ee.eq(sa - beta - 24)
                mag = rn_fmt(m, mm, 50, ee, fmt, "x2")
                m.d.sync += obits.eq(Cat(mag, neg))
                m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(obits)]
                with m.If(self.o.ready):
                    m.d.sync += fw.eq(fw + 1)
                    m.next = "X1"
                    with m.If(fw == W - 1):
                        m.d.sync += [fw.eq(0), fb.eq(fb + 1)]
                        m.next = "X0"
                        with m.If(fb == bpr - 1):
                            m.d.sync += [fb.eq(0), flane.eq(flane + 1)]
                            m.next = "DIV_INIT"
                            with m.If(flane + 1 == nact):
                                m.next = "IDLE"
        return m
