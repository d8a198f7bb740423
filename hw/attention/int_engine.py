"""Integer attention engine (issue 11 item 3): exact two-pass softmax attention of ``lanes``
query rows over one KV head, int8 K/V, integer dot products summed by one adder tree per lane.

Arithmetic: exactly golden ``attention_decode`` / ``attention_prefill`` of
sim/golden/attention_int.py (constants in spec/attention_int.py, docs/numerics.md §4.1).

Dataflow (docs/hw/attention.md, "integer engine"): every lane has ``beat`` MAC slots (one
DSP48E2 multiplier each) and one adder tree over them; a slot's first operand is a signed word
(``operand_bits``) from the lane's operand memory, its second the beat's int8 code. Operand
words are written whole, from a shift chain that collects one element or weight per cycle.

Four units work on consecutive calls at once, each with its own copy of what it reads of a
call (copied when the call moves on, so nothing changes under a unit while the ones before it
run ahead): the loader (call t+2), the quantiser (t+1), the stream unit (t: passes 1 and 2)
and the finishing unit (t-1).

* q (once per call): the loader takes the command and the lanes' rows (``q_beat`` elements
  per beat) into one of two raw-q banks, keeping max|q| per lane, then g per lane (one lane
  per cycle); it hands the call to the quantiser when that is free. The quantiser (one per
  lane, shared control) turns one element per cycle into q_int (int14 against the
  power-of-two scale of max|q * C|) and writes it to one of two q banks of the operand
  memory (slot c mod beat, word c / beat; zeros past hd up to the last K beat, so a head_dim
  that is not a multiple of ``beat``, such as bitnet_b1_58-large's 96, streams K rows padded
  with anything). Its words share the operand shift chain (and write port) with the weight
  preparation of the stream unit's V segments, so a word (beat consecutive elements) starts
  only where it is surely in the chain before the next weight: while the stream unit waits,
  in a V segment once all its weights are written (or its drain), or in a K segment with more
  than ceil((beat - T - 8) / bpr) rows left (T = 1 + tree levels: 0 below beat 16, 25 rows
  at beat 64 and bpr 2). The stream unit takes a quantised call (n, nq, lim, hd, each lane's
  g for the logit shift, the q bank) at its hand-off, or as soon as it is ready when idle.
* pass 1, K rows (row-major: ``bpr`` beats of ``beat`` channels per key): slot s multiplies
  q_int of its channel by k_int; the tree sums the beat, the lane accumulates the row's beats
  into S, folds the K row scale once (S * mk and one rounding shift) into the Q.16 logit t,
  stores t and the key's V scale (which the K beat carries) in the score buffers, and keeps
  the exact maximum m and the largest V-scale exponent Y of its visible keys.
* pass 2, V blocks (``beat`` keys per block, stored channel-major: one beat is one channel of
  the block's keys): before a block streams, its keys' weights are prepared one key per cycle
  per lane (p = exp2 table of m - t, w = rnd(p * mv * 2**(ev - Y - W_SHIFT)) <= 2**12, L += p)
  into a weight bank of the operand memory (slot = key mod beat); three banks let the
  preparation run two blocks ahead of the stream. Slot s then multiplies w of key s by the
  code of the beat's channel, the tree sums the block's contribution to that channel, and
  A[c] += sum (a read-modify-write in the lane's accumulator memory).
* finish: a second unit with its own accumulator bank (the next call streams into the other
  bank meanwhile): per lane 1/L by a 24-step restoring division, then one output per cycle
  (RN32(A), the 24 x 25-bit product, one rounding to the stream format). The divider works
  one lane ahead of the emitter, which keeps its own copy of the lane's 1/L; the normaliser
  stages carry 1/L and the exponent offset with each element, so lanes follow back to back.

Scores of up to ``depth`` keys per lane stay on chip; longer contexts follow ``kv_schedule``
(K of every tile but the last is re-streamed); V segments are whole blocks (tiles are
multiples of ``beat`` keys; keys past a lane's limit, including a partial last block, get
w = 0, so their codes may be anything).

Ports
-----
i_cmd : In(stream {n, nq, c, lim[lanes], hd})  n keys (>= 1), nq active lanes, c = score
        scale (``score_scale``), lim = last visible key per lane, hd = run-time head_dim
        (<= head_dim, a multiple of q_beat; K rows take bpr = ceil(hd / beat) beats).
        Accepted while the loader is free: up to two calls ahead of the one streaming.
i_q   : In(stream ArrayLayout(unsigned(fmt.bits), q_beat))  nq * head_dim / q_beat beats,
        lane-major, right after the call's command.
i_kv  : In(stream unsigned(8 * beat + 2 * fmt.bits))  the segments of ``kv_schedule``: a K
        row is bpr beats (int8 codes in bits [0, 8 * beat), the K row scale in the next
        fmt.bits, the V row scale of the same key in the next fmt.bits; codes past hd in the
        last beat are ignored: q is 0 there); a V segment is its
        blocks, head_dim beats each (beat c: the codes of channel c of the block's keys; the
        scale bits are ignored).
o     : Out(stream unsigned(fmt.bits))  nq * head_dim results, lane-major.
busy  : Out(1)

Throughput: one K/V beat per cycle (``beat`` MACs per lane) once a V block's weights are
ready; backpressure on ``o`` stalls only the finishing unit. Back to back, a call costs its
stream (K rows * bpr + V blocks * hd beats, the first block's weight preparation, a drain
of T + 5 cycles per segment) when the next call's q preparation fits in its windows (decode:
the q load, nq * hd / q_beat cycles, and bpr * beat quantiser cycles within the K segment;
otherwise the quantiser finishes at the hand-off) and its finish, 27 + (nq - 1) *
max(27, hd) + hd cycles, is not longer. Latency of one call alone: command, q load, g, the
quantiser (bpr * beat + 6), the stream, the finish, 3 cycles of normaliser. Exact timing (zero
stalls): ``calls_cycles`` in sim/cycles_attn_int.py.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.attention_int import (
    MAX_KEYS,
    P_ZERO_OCTAVES,
    Q_BITS,
    T_SAT,
    W_BITS,
    W_SHIFT,
    a_bits,
    s_bits,
)
from tellme.spec.numerics import EXP2_TABLE, StreamFormat, stream_format

from ..arith import bit_length, rne_shr
from ..elementwise.stream_fp import rn_fmt, unpack

C_BITS = 20            # score-scale register width
DIV_STEPS = 24
BANKS = 3              # weight banks: preparation up to two blocks ahead of the stream
QLAT = 4               # quantiser: read, multiply, round, shift in; then the word write


def operand_bits(q_bits: int = Q_BITS) -> int:
    """Signed width of a MAC operand: q_int (``q_bits``) or w (<= 2**W_BITS)."""
    return max(q_bits, W_BITS + 2)


def product_bits(q_bits: int = Q_BITS) -> int:
    """Signed width of a slot product: |q_int * code| < 2**(q_bits + 6), |w * code| <=
    2**(W_BITS + 7) (codes in [-128, 127])."""
    return max(q_bits + 7, W_BITS + 8)


def cmd_layout(lanes: int, ctx_bits: int) -> data.StructLayout:
    return data.StructLayout({
        "n": unsigned(ctx_bits + 1),
        "nq": range(lanes + 1),
        "c": unsigned(C_BITS),
        "lim": data.ArrayLayout(unsigned(ctx_bits), lanes),
        "hd": unsigned(16),
    })


def tree_levels(beat: int) -> int:
    """Registered adder-tree levels of a lane (one per halving of ``beat``)."""
    return (beat - 1).bit_length()


def _half(s, width: int):
    """2**(s - 1) for an unsigned shift ``s >= 1`` (the round-half-up constant)."""
    return Const(1, width) << (s - 1).as_unsigned()[:len(s)]


def _round_sat(m: Module, x, width: int, sh, left_max: int, limit: int, name: str):
    """clamp(rnd(x * 2**-sh), +-limit) for a signed ``x`` of ``width`` bits, a signed shift
    ``sh`` and ``limit = 2**k - 1``: round half up for sh >= 1, a left shift of at most
    ``left_max`` for sh <= 0 (golden ``rnd_shift`` / ``logits`` / ``quantize_q``). The left
    branch shifts only the low k + 1 bits: x << sl is within +-limit iff |x| <= limit >> sl,
    so the overflow test is a comparison, not a (width + left_max)-bit shifter."""
    k = limit.bit_length()
    assert limit == 2 ** k - 1, limit
    sr = Signal(range(width + 3), name=f"{name}_sr")
    m.d.comb += sr.eq(Mux(sh > width + 2, width + 2, Mux(sh < 1, 1, sh)))
    r = Signal(signed(width + 3), name=f"{name}_r")
    m.d.comb += r.eq((x + _half(sr, width + 3)) >> sr)
    rs = Mux(r > limit, limit, Mux(r < -limit, -limit, r))
    sl = Signal(range(left_max + 1), name=f"{name}_sl")
    m.d.comb += sl.eq(Mux(sh < -left_max, left_max, Mux(sh < 0, -sh, 0)))
    bound = Signal(k, name=f"{name}_bd")
    m.d.comb += bound.eq(Const(limit, k) >> sl)
    xs = Value.cast(x).as_signed()
    low = Signal(signed(k + 1), name=f"{name}_lo")
    m.d.comb += low.eq(xs[:k + 1].as_signed() << sl)
    ls = Mux(xs > bound, limit, Mux(xs < -bound, -limit, low))
    return Mux(sh >= 1, rs, ls)


def kv_beat_bits(beat: int, fmt: StreamFormat | None = None) -> int:
    return 8 * beat + 2 * stream_format(fmt).bits


def _delay(m: Module, sig, n: int, name: str) -> list:
    """[sig, sig delayed 1, ..., delayed n] (registers, no enable)."""
    out = [sig]
    for k in range(1, n + 1):
        r = Signal.like(out[-1], name=f"{name}_d{k}")
        m.d.sync += r.eq(out[-1])
        out.append(r)
    return out


class IntAttentionEngine(wiring.Component):
    """See the module docstring. ``head_dim``: largest run-time head_dim; ``lanes``;
    ``beat``: MAC slots per lane = K channels per beat = keys per V block
    (a power of two >= 2); ``depth``: score tile (a power of two, a multiple of ``beat``);
    ``ctx_bits``: n < 2**ctx_bits <= MAX_KEYS; ``fmt``: stream format of q, the K/V scales and
    o; ``q_beat``: q elements per i_q beat (divides ``beat``)."""

    def __init__(self, *, head_dim: int = 16, lanes: int = 4, beat: int = 4, depth: int = 64,
                 ctx_bits: int = 14, fmt: StreamFormat | None = None, q_bits: int = Q_BITS,
                 q_beat: int | None = None, score_ram: str | None = None):
        fmt = stream_format(fmt)
        q_beat = min(beat, 8) if q_beat is None else q_beat
        problem = None
        if beat < 2 or beat & (beat - 1):
            problem = f"beat {beat} must be a power of two >= 2"
        elif depth < 2 or depth & (depth - 1) or depth % beat:
            problem = f"score-buffer depth {depth} must be a power of two and a multiple of beat"
        elif not 8 <= q_bits <= 16:
            problem = f"q_bits {q_bits} outside 8..16"
        elif 2 ** ctx_bits > MAX_KEYS:
            problem = f"ctx_bits {ctx_bits}: more than {MAX_KEYS} keys"
        elif q_beat < 1 or beat % q_beat or head_dim % q_beat:
            problem = f"q_beat {q_beat} must divide beat {beat} and head_dim {head_dim}"
        elif score_ram not in (None, "ultra", "block", "distributed"):
            problem = (f"score_ram must be None, 'ultra', 'block' or 'distributed', "
                       f"got {score_ram!r}")
        if problem:
            self._MustUse__silence = True
            raise ValueError(problem)
        self.head_dim, self.lanes, self.beat, self.depth = head_dim, lanes, beat, depth
        self.ctx_bits, self.fmt, self.q_bits, self.q_beat = ctx_bits, fmt, q_bits, q_beat
        self.score_ram = score_ram
        super().__init__({
            "i_cmd": In(stream.Signature(cmd_layout(lanes, ctx_bits))),
            "i_q": In(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), q_beat))),
            "i_kv": In(stream.Signature(unsigned(kv_beat_bits(beat, fmt)))),
            "o": Out(stream.Signature(unsigned(fmt.bits))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        HD, NQ, W, D, CB = self.head_dim, self.lanes, self.beat, self.depth, self.ctx_bits
        QL = self.q_beat
        fmt = self.fmt
        EB, SB, F = fmt.bits, fmt.sig_bits, fmt.frac
        BPR = -(-HD // W)
        QB, QTOP, QMAX = self.q_bits, self.q_bits - 2, 2 ** (self.q_bits - 1) - 1
        LOG2D = D.bit_length() - 1
        LOG2W = W.bit_length() - 1
        LEV = tree_levels(W)
        SW = s_bits(HD, QB)           # exact score S
        QX = SB + C_BITS              # q * C magnitude bits
        TW = 32                       # logit t, |t| <= T_SAT
        LW = 25 + CB                  # L <= n * 2**23
        AW = a_bits(2 ** CB)          # |A| < n * 2**22
        PMW = 24 + SB                 # p * mv
        BPRB = (BPR - 1).bit_length()  # word-index bits of a q bank
        WADDR = 2 << BPRB             # operand memory: q banks 0, 1 (2**BPRB words each), then
        #                               the BANKS weight banks (depth <= 32: LUTRAM either way)
        QRD = HD // QL                # raw-q words per lane and bank
        NB = CB + 1 - LOG2W + 1       # block-index width
        OPW, PRODW = operand_bits(QB), product_bits(QB)
        TSW = PRODW + LEV             # tree sum

        # ---- the call as each unit holds it: the loader (i_cmd, i_q, g per lane), the
        # quantiser (one call behind), the stream unit (the call it streams; copied at the take,
        # so nothing it reads changes while the loader and quantiser run ahead)
        ln = Signal(CB + 1)
        lnq = Signal(range(NQ + 1))
        lc = Signal(C_BITS)
        lhd = Signal(range(HD + 1))
        llim = [Signal(CB, name=f"llim{i}") for i in range(NQ)]
        lg = [Signal(8, name=f"lg{i}") for i in range(NQ)]           # bitlen(max|q|*C) + qh
        qmx = [Signal(EB - 1, name=f"qmx{i}") for i in range(NQ)]   # max |q| (magnitude bits)
        lbank = Signal()                                             # raw-q bank being loaded
        qn_ = Signal(CB + 1, name="qn")
        qnq = Signal(range(NQ + 1))
        cval = Signal(C_BITS)
        qhd = Signal(range(HD + 1))
        qlim = [Signal(CB, name=f"qlim{i}") for i in range(NQ)]
        gq = [Signal(8, name=f"gq{i}") for i in range(NQ)]
        qrb = Signal()                # raw-q bank the quantiser reads
        qob = Signal()                # q operand bank the quantiser writes
        qbpr = Signal(range(BPR + 1))
        m.d.comb += qbpr.eq((qhd + W - 1) >> LOG2W)
        n = Signal(CB + 1)
        nact = Signal(range(NQ + 1))
        bpr = Signal(range(BPR + 1))
        hd = Signal(range(HD + 1))
        lim = [Signal(CB, name=f"lim{i}") for i in range(NQ)]
        sg = [Signal(8, name=f"sg{i}") for i in range(NQ)]
        sqb = Signal()                # q operand bank of the streaming call
        m.d.comb += bpr.eq((hd + W - 1) >> LOG2W)

        # ---- per-lane state
        mx = [Signal(signed(TW), name=f"m{i}") for i in range(NQ)]
        mvalid = [Signal(name=f"mvalid{i}") for i in range(NQ)]
        yh = [Signal(5, name=f"yh{i}") for i in range(NQ)]          # max V-scale shift
        lsum = [Signal(LW, name=f"L{i}") for i in range(NQ)]
        cbank = Signal()                                             # accumulator bank of the call
        xlsum = [Signal(LW, name=f"xL{i}") for i in range(NQ)]      # the finishing call's copies
        xyh = [Signal(5, name=f"xyh{i}") for i in range(NQ)]
        xnact = Signal(range(NQ + 1))
        xhd = Signal(range(HD + 1))
        xbank = Signal()
        xstart = Signal()
        xbusy = Signal()
        sacc = [Signal(signed(SW), name=f"s{i}") for i in range(NQ)]

        qraws, opms, amems, roms = [], [], [], []
        for i in range(NQ):
            qraw = memory.Memory(shape=unsigned(EB * QL), depth=2 * QRD, init=[])   # 2 banks
            m.submodules[f"qraw{i}"] = qraw
            qraws.append((qraw.write_port(), qraw.read_port()))
            opm = memory.Memory(shape=unsigned(OPW * W), depth=WADDR + BANKS, init=[])
            m.submodules[f"opm{i}"] = opm
            opms.append((opm.write_port(), opm.read_port()))
            amem = memory.Memory(shape=signed(AW), depth=2 * HD, init=[])    # 2 banks
            m.submodules[f"acc{i}"] = amem
            amems.append((amem.write_port(), amem.read_port(), amem.read_port()))
            rom = memory.Memory(shape=unsigned(24), depth=65, init=[int(v) for v in EXP2_TABLE])
            m.submodules[f"exp2_{i}"] = rom
            roms.append((rom.read_port(domain="comb"), rom.read_port(domain="comb")))
        # score buffer: every lane's logit t and the key's V scale in one word (the lanes
        # write a K row's scores in the same cycle and read a key's in the same cycle), so a
        # deep tile is one wide memory (kv260: 4096 x 152 bits = 3 URAM288)
        smem = memory.Memory(shape=unsigned(NQ * TW + EB), depth=D, init=[],
                             attrs={"ram_style": self.score_ram} if self.score_ram else None)
        m.submodules.scores = smem
        sc_wp, sc_rp = smem.write_port(), smem.read_port()
        vs_rp = sc_rp.data[NQ * TW:]

        # ---- segment control
        seg = Signal(2)               # 0: K pass 1, 1: V last tile, 2: K tile, 3: V tile
        row = Signal(CB + 1)          # K: next row
        row_end = Signal(CB + 1)
        blk = Signal(NB)              # V: block being streamed
        blk0 = Signal(NB)             # V: first block of the segment
        blk_end = Signal(NB)
        sbank = Signal(range(BANKS))  # weight bank of ``blk``
        bcnt = Signal(range(HD + 1))  # K: beat of the row; V: channel of the block
        tile = Signal(CB + 1)
        last_start = Signal(CB + 1)
        m.d.comb += last_start.eq(((n - 1) >> LOG2D) << LOG2D)
        in_v = Signal()               # streaming a V segment
        stream_on = Signal()
        accept = Signal()
        m.d.comb += accept.eq(self.i_kv.valid & self.i_kv.ready)

        # ---- weight preparation (V segments): one key per cycle per lane
        wp_on = Signal()              # enabled for the current V segment
        wp_blk = Signal(NB)           # next block to prepare
        wp_bank = Signal(range(BANKS))
        wp_key = Signal(range(W))
        rdy = Signal(NB)              # blocks < rdy have their weights in place
        issue_w = Signal()
        m.d.comb += issue_w.eq(wp_on & (wp_blk < blk_end) & (wp_blk < blk + BANKS))
        with m.If(issue_w):
            m.d.sync += wp_key.eq(wp_key + 1)
            with m.If(wp_key == W - 1):
                m.d.sync += [wp_key.eq(0), wp_blk.eq(wp_blk + 1),
                             wp_bank.eq(Mux(wp_bank == BANKS - 1, 0, wp_bank + 1))]
        wkey = Signal(CB + 2)
        m.d.comb += wkey.eq(Cat(wp_key, wp_blk))
        m.d.comb += [sc_rp.addr.eq(wkey[:LOG2D]), sc_rp.en.eq(1)]
        # P1 (buffers read) .. P5 (w into the operand shift chain), P6 (word write)
        wv = _delay(m, issue_w, 6, "wv")
        wk = _delay(m, wkey, 4, "wk")
        wslot = _delay(m, wp_key, 6, "wslot")
        wbk = _delay(m, wp_bank, 6, "wbank")
        wword = Signal()
        m.d.comb += wword.eq(wv[6] & (wslot[6] == W - 1))
        with m.If(wword):
            m.d.sync += rdy.eq(rdy + 1)
        vsP2 = Signal(EB, name="vsP2")
        vsP3 = Signal(EB, name="vsP3")
        m.d.sync += [vsP2.eq(vs_rp), vsP3.eq(vsP2)]

        # ---- K/V beat pipeline: stage 0 = accepted beat; products at 1; tree sum at T
        T = 1 + LEV
        v0, isv0, first0, last0, init0 = (Signal(name=x) for x in
                                          ("v0", "isv0", "first0", "last0", "init0"))
        row0 = Signal(CB + 1, name="row0")
        ch0 = Signal(range(HD + 1), name="ch0")
        p1_0 = Signal(name="p1_0")
        codes0 = Signal(8 * W, name="codes0")
        sc0 = Signal(2 * EB, name="sc0")
        m.d.sync += v0.eq(accept)
        with m.If(accept):
            m.d.sync += [
                isv0.eq(in_v), p1_0.eq(seg == 0), first0.eq(bcnt == 0),
                last0.eq(bcnt == bpr - 1), init0.eq((seg == 1) & (blk == blk0)),
                row0.eq(row), ch0.eq(bcnt),
                codes0.eq(self.i_kv.payload[:8 * W]), sc0.eq(self.i_kv.payload[8 * W:]),
            ]
        NS = T + 3
        v = _delay(m, v0, NS, "v")
        isv = _delay(m, isv0, NS, "isv")
        p1 = _delay(m, p1_0, NS, "p1")
        first = _delay(m, first0, NS, "first")
        last = _delay(m, last0, NS, "last")
        init = _delay(m, init0, T, "init")
        rowp = _delay(m, row0, NS, "row")
        chp = _delay(m, ch0, T, "ch")
        scp = _delay(m, sc0, NS, "sc")
        empty = ~Cat(*v).any() & ~Cat(*wv[1:]).any()

        def scale(word, which=0):              # (sig, shift) of a scale field
            _, g, h = unpack(word[EB * which:EB * (which + 1)], fmt)
            return g, h

        m.d.comb += [sc_wp.addr.eq(rowp[NS][:LOG2D]), sc_wp.data[NQ * TW:].eq(scp[NS][EB:]),
                     sc_wp.en.eq(v[NS] & ~isv[NS] & last[NS])]
        opaddr = Signal(range(WADDR + BANKS))
        m.d.comb += opaddr.eq(Mux(in_v, WADDR + sbank, Cat(bcnt[:BPRB], sqb)))

        def raw_addr(word, bank):              # raw-q word of a bank
            if QRD & (QRD - 1) == 0:
                return Cat(word[:QRD.bit_length() - 1], bank)
            return word + bank * QRD

        # q quantiser pipeline (shared control): element qe issued at Q0
        qe = Signal(range(BPR * W + 1))
        qiss = Signal()
        qv = _delay(m, qiss, QLAT, "qv")
        qel = _delay(m, qe, QLAT, "qe")
        qword = Signal()
        m.d.comb += qword.eq(qv[4] & (qel[4][:LOG2W] == W - 1))

        for i in range(NQ):
            (owp, orp), (awp, arp, afp) = opms[i], amems[i]
            t_rd = sc_rp.data[i * TW:(i + 1) * TW].as_signed()
            lane_on = Signal(name=f"on{i}")
            m.d.comb += lane_on.eq(i < nact)

            # -- weight preparation: P1 t and V scale read; exp2 lookup of m - t
            dlt = Signal(TW + 1, name=f"d{i}")
            m.d.comb += dlt.eq(mx[i] - t_rd)
            r0, r1 = roms[i]
            m.d.comb += [r0.addr.eq(dlt[10:16]), r1.addr.eq(dlt[10:16] + 1)]
            kB = Signal(range(32), name=f"k{i}")
            kbigB = Signal(name=f"kbig{i}")
            rB = Signal(10, name=f"r{i}")
            t0B = Signal(24, name=f"t0_{i}")
            dfB = Signal(17, name=f"df{i}")
            m.d.sync += [kB.eq(dlt[16:21]), kbigB.eq(dlt[16:] >= P_ZERO_OCTAVES),
                         rB.eq(dlt[0:10]), t0B.eq(r0.data), dfB.eq(r0.data - r1.data)]
            # P2: p (0 for keys the lane does not see)
            e = Signal(24, name=f"e{i}")
            m.d.comb += e.eq(t0B - ((dfB * rB + 512) >> 10))
            pC = Signal(24, name=f"p{i}")
            visB = (wk[2] <= lim[i]) & lane_on
            m.d.sync += pC.eq(Mux(kbigB | ~visB, 0, e >> kB))
            # P3: p * mv, the weight shift, L
            mv, vh = scale(vsP3)
            pmD = Signal(PMW, name=f"pm{i}")
            shwD = Signal(signed(8), name=f"shw{i}")
            m.d.sync += [pmD.eq(pC * mv), shwD.eq(W_SHIFT + yh[i] - vh)]
            with m.If(wv[3]):
                m.d.sync += lsum[i].eq(lsum[i] + pC)
            # P4: w = rnd(pm * 2**-shw)
            swc = Signal(range(PMW + 2), name=f"wsh{i}")
            m.d.comb += swc.eq(Mux(shwD > PMW + 1, PMW + 1, Mux(shwD < 1, 1, shwD)))
            wE = Signal(W_BITS + 1, name=f"w{i}")
            m.d.sync += wE.eq((pmD + _half(swc, PMW + 2)) >> swc)

            # -- q quantiser: Q1 raw element, Q2 q * C and the shift, Q3 rounded, Q4 write
            qwp, qrp = qraws[i]
            m.d.comb += [qrp.addr.eq(raw_addr(qe >> (QL.bit_length() - 1), qrb)), qrp.en.eq(1)]
            qsel = qel[1][:QL.bit_length() - 1]
            qraw_el = (Array(qrp.data[EB * k:EB * (k + 1)] for k in range(QL))[qsel]
                       if QL > 1 else qrp.data)
            sq, gs, hs = unpack(qraw_el, fmt)
            qx = Signal(signed(QX + 1), name=f"qx{i}")
            qsh = Signal(signed(9), name=f"qsh{i}")   # g - e = bitlen - 1 + hmax - h - QTOP
            m.d.sync += [qx.eq(Mux(sq, -(gs * cval), gs * cval)),
                         qsh.eq(gq[i] - hs - 1 - QTOP)]
            qint = Signal(signed(QB), name=f"qi{i}")
            m.d.sync += qint.eq(Mux(qel[2] < qhd,
                                    _round_sat(m, qx, QX + 1, qsh, 15, QMAX, f"q{i}"), 0))

            # -- operand memory: whole words from a shift chain that collects q elements
            # (quantiser) or weights (preparation) in slot order; the two never overlap
            chain = [Signal(OPW, name=f"oc{i}_{k}") for k in range(W)]
            with m.If(wv[5] | qv[3]):
                m.d.sync += [chain[0].eq(Mux(wv[5], wE, qint)[:OPW]),
                             *(chain[k].eq(chain[k - 1]) for k in range(1, W))]
            m.d.comb += [
                owp.addr.eq(Mux(wword, WADDR + wbk[6], Cat((qel[4] >> LOG2W)[:BPRB], qob))),
                owp.data.eq(Cat(*reversed(chain))),
                owp.en.eq(wword | qword),
                orp.addr.eq(opaddr), orp.en.eq(accept),
            ]

            # -- MAC slots (stage 1) and the adder tree (stages 2..T)
            level = []
            for s in range(W):
                opnd = orp.data[OPW * s:OPW * (s + 1)].as_signed()
                pr = Signal(signed(PRODW), name=f"mp{i}_{s}")
                m.d.sync += pr.eq(opnd * codes0[8 * s:8 * s + 8].as_signed())
                level.append(pr)
            lv = 0
            while len(level) > 1:
                lv += 1
                nxt = []
                for a, b in zip(level[::2], level[1::2], strict=True):
                    t = Signal(signed(len(a) + 1), name=f"ts{i}_{lv}_{len(nxt)}")
                    m.d.sync += t.eq(a + b)
                    nxt.append(t)
                level = nxt
            tsum = level[0]
            assert len(tsum) <= TSW

            # -- K (stage T+1): row score; (T+2) S * mk and the logit shift; (T+3) t
            with m.If(v[T] & ~isv[T]):
                m.d.sync += sacc[i].eq(Mux(first[T], 0, sacc[i]) + tsum)
            mk, kh = scale(scp[T + 1], 0)
            prodI = Signal(signed(SW + SB + 1), name=f"sk{i}")
            shtI = Signal(signed(9), name=f"sht{i}")
            m.d.sync += [prodI.eq(sacc[i] * mk),
                         shtI.eq(3 + QTOP + 2 * F - sg[i] - kh)]
            tJ = Signal(signed(TW), name=f"t{i}")
            m.d.sync += tJ.eq(_round_sat(m, prodI, SW + SB + 1, shtI, 31, T_SAT, f"t{i}"))
            # -- (NS = T+3) score -> buffer, maximum, Y
            _, vhJ = scale(scp[NS], 1)
            kdone = v[NS] & ~isv[NS] & last[NS]
            m.d.comb += sc_wp.data[i * TW:(i + 1) * TW].eq(tJ)
            with m.If(kdone & p1[NS] & (rowp[NS] <= lim[i])):
                with m.If(~mvalid[i] | (tJ > mx[i])):
                    m.d.sync += [mx[i].eq(tJ), mvalid[i].eq(1)]
                with m.If(vhJ > yh[i]):
                    m.d.sync += yh[i].eq(vhJ)

            # -- V (stage T): A[c] += tree sum (read at T-1; channels of consecutive beats
            # differ, so the write at T never meets the read of the next beat)
            m.d.comb += [arp.addr.eq(Cat(chp[T - 1][:HD.bit_length() - 1], cbank)
                                     if HD & (HD - 1) == 0 else chp[T - 1] + cbank * HD),
                         arp.en.eq(1)]
            anew = Signal(signed(AW), name=f"anew{i}")
            m.d.comb += anew.eq(Mux(init[T], 0, arp.data) + tsum)
            m.d.comb += [awp.addr.eq(Cat(chp[T][:HD.bit_length() - 1], cbank)
                                     if HD & (HD - 1) == 0 else chp[T] + cbank * HD),
                         awp.data.eq(anew), awp.en.eq(v[T] & isv[T])]

        # ---- loader: i_cmd, then the call's q rows into a raw-q bank (max|q| per lane on the
        # way), then g per lane; hands the call to the quantiser when that is idle
        flane = Signal(range(NQ + 1))
        qb = Signal(range(QRD + 1))
        qin = self.i_q.payload.as_value()
        bmax = qin[0:EB - 1]
        for k in range(1, QL):            # a chain of signals (a nested Mux expression would
            x = qin[EB * k:EB * k + EB - 1]   # duplicate bmax at every level when emitted)
            nxt = Signal(EB - 1, name=f"qmax{k}")
            m.d.comb += nxt.eq(Mux(x > bmax, x, bmax))
            bmax = nxt
        cur_qmx = Array(qmx)[flane]
        _, gmax, hmax = unpack(Cat(cur_qmx, 0), fmt)
        mq = Signal(QX, name="qmc")
        m.d.comb += mq.eq(gmax * lc)
        blq = bit_length(m, mq, QX, "qbl")
        cur_g = Array(lg)[flane]
        for i in range(NQ):
            qwp, _ = qraws[i]
            m.d.comb += [qwp.addr.eq(raw_addr(qb, lbank)), qwp.data.eq(qin),
                         qwp.en.eq(self.i_q.valid & self.i_q.ready & (flane == i))]

        l_busy, l_hand, q_idle, q_busy, q_ready, take = (
            Signal(name=x) for x in ("l_busy", "l_hand", "q_idle", "q_busy", "q_ready", "take"))
        with m.FSM(name="loader"):
            with m.State("LIDLE"):
                m.d.comb += self.i_cmd.ready.eq(1)
                with m.If(self.i_cmd.valid):
                    p = self.i_cmd.payload
                    m.d.sync += [ln.eq(p.n), lnq.eq(p.nq), lc.eq(p.c), lhd.eq(p.hd), qb.eq(0),
                                 flane.eq(0)]
                    m.d.sync += [llim[i].eq(p.lim[i]) for i in range(NQ)]
                    m.d.sync += [qmx[i].eq(0) for i in range(NQ)]
                    m.next = "LOAD_Q"
            with m.State("LOAD_Q"):
                m.d.comb += [self.i_q.ready.eq(1), l_busy.eq(1)]
                with m.If(self.i_q.valid):
                    m.d.sync += qb.eq(qb + 1)
                    with m.If(bmax > cur_qmx):
                        m.d.sync += cur_qmx.eq(bmax)
                    with m.If(qb == (lhd >> (QL.bit_length() - 1)) - 1):
                        m.d.sync += [qb.eq(0), flane.eq(flane + 1)]
                        with m.If(flane + 1 == lnq):
                            m.d.sync += flane.eq(0)
                            m.next = "QG"
            # -- each lane's g from max|q| * C (one lane per cycle)
            with m.State("QG"):
                m.d.comb += l_busy.eq(1)
                m.d.sync += [cur_g.eq(blq + hmax), flane.eq(flane + 1)]
                with m.If(flane + 1 == lnq):
                    m.next = "LHAND"
            with m.State("LHAND"):
                m.d.comb += [l_busy.eq(1), l_hand.eq(q_idle)]
                with m.If(q_idle):
                    m.d.sync += lbank.eq(~lbank)
                    m.next = "LIDLE"

        # ---- quantiser: all lanes one element per cycle into the q operand bank ``qob``.
        # The operand shift chain is shared with the weight preparation, so a word (beat
        # consecutive elements, each in the chain 3 cycles after issue) starts only if it is
        # in the chain before the stream unit's next V segment can shift its first weight (5
        # cycles after its first issue): while the stream unit waits (idle or hand-off), in a
        # V segment or its drain once all its weights are written (the next V segment is at
        # least a K tile of depth >= beat beats away, or follows a take, which waits for this
        # quantiser), or in a K segment with at least W - T - 7 beats left, each at least a
        # cycle, then >= T + 6 cycles to the V segment's first weight issue: so with more than
        # ceil((W - T - 8) / bpr) rows left (the current row has >= 1 beat left).
        s_wait = Signal()             # stream unit idle or at the hand-off
        KGAP = max(0, W - T - 8)
        thr = Array(Const(-(-KGAP // max(b, 1)), CB + 1) for b in range(BPR + 1))[bpr]
        q_ok = Signal()
        m.d.comb += q_ok.eq(s_wait | (in_v & (rdy == blk_end))
                            | (stream_on & ~in_v & (row_end - row > thr)))
        with m.FSM(name="quant"):
            with m.State("QIDLE"):
                m.d.comb += q_idle.eq(1)
                with m.If(l_hand):
                    m.d.sync += [qn_.eq(ln), qnq.eq(lnq), cval.eq(lc), qhd.eq(lhd),
                                 qrb.eq(lbank), qe.eq(0)]
                    m.d.sync += [qlim[i].eq(llim[i]) for i in range(NQ)]
                    m.d.sync += [gq[i].eq(lg[i]) for i in range(NQ)]
                    m.next = "QUANT"
            with m.State("QUANT"):
                m.d.comb += [q_busy.eq(1), qiss.eq(q_ok | (qe[:LOG2W] != 0))]
                with m.If(qiss):
                    m.d.sync += qe.eq(qe + 1)
                    with m.If(qe == (qbpr << LOG2W) - 1):
                        m.next = "QDRAIN"
            with m.State("QDRAIN"):   # the last word written: the call may be taken
                m.d.comb += [q_busy.eq(1), q_ready.eq(~Cat(*qv[1:]).any())]
                with m.If(q_ready):
                    m.next = "QDONE"
                    with m.If(take):
                        m.next = "QIDLE"
            with m.State("QDONE"):
                m.d.comb += [q_busy.eq(1), q_ready.eq(1)]
                with m.If(take):
                    m.next = "QIDLE"
        with m.If(take):
            m.d.sync += qob.eq(~qob)

        # ---- finishing unit: a divider (1/L of lane dl: a 24-step restoring division of
        # 2**(beta+23) by L, beta = bitlen(L - 1)) runs one lane ahead of the emitter (lane el,
        # one element per cycle into the normaliser, with its own copy of 1/L)
        beta = Signal(range(LW + 1))
        dn = Signal(LW + 1)
        rem = Signal(LW + 2)
        quo = Signal(25)
        it = Signal(range(DIV_STEPS + 1))
        dl = Signal(range(NQ + 1))
        d_hold, e_take, e_emit, d_busy = (Signal(name=x) for x in
                                          ("d_hold", "e_take", "e_emit", "d_busy"))
        oquo = Signal(25)
        obeta = Signal(range(LW + 1))
        el = Signal(range(NQ + 1))
        xc = Signal(range(HD + 1))
        # normaliser pipeline: issue (el, xc; 1/L and the exponent offset of the lane go
        # along) -> N1 (RN32(A)) -> N2 (product, rounding) -> o
        s1v, s2v, ov = Signal(), Signal(), Signal()
        xl1 = Signal(range(NQ + 1))
        q1, q2 = Signal(25), Signal(25)
        e1, e2 = Signal(signed(8)), Signal(signed(8))
        qa = Signal(25)
        sa = Signal(range(64))
        neg = Signal()
        obits = Signal(EB)
        adv = Signal()
        issue = Signal()
        m.d.comb += adv.eq(~ov | self.o.ready)
        for i in range(NQ):
            afp = amems[i][2]
            m.d.comb += [afp.addr.eq(Cat(xc[:HD.bit_length() - 1], xbank)
                                     if HD & (HD - 1) == 0 else xc + xbank * HD),
                         afp.en.eq(adv)]
        with m.If(adv):
            m.d.sync += [s1v.eq(issue), s2v.eq(s1v), ov.eq(s2v),
                         xl1.eq(el), q1.eq(oquo), e1.eq(Array(xyh)[el] - obeta),
                         q2.eq(q1), e2.eq(e1)]
        av = Signal(signed(AW), name="n1_a")
        m.d.comb += av.eq(Array(mm[2].data for mm in amems)[xl1])
        amag = Signal(AW, name="n1_mag")
        m.d.comb += amag.eq(Mux(av < 0, -av, av))
        abl = bit_length(m, amag, AW, "n1")
        shv = Signal(range(AW), name="n1_sh")
        m.d.comb += shv.eq(Mux(abl > 24, abl - 24, 0))
        arnd = rne_shr(m, amag, Mux(shv == 0, 1, shv), AW, "n1r")
        with m.If(adv):
            m.d.sync += [qa.eq(Mux(shv == 0, amag, arnd)), sa.eq(shv), neg.eq(av < 0)]
        mm_ = Signal(50, name="n2_m")
        m.d.comb += mm_.eq(qa * q2)
        ee = Signal(signed(10), name="n2_e")
        m.d.comb += ee.eq(sa + e2 + W_SHIFT - F - 23)
        omag = rn_fmt(m, mm_, 50, ee, fmt, "n2")
        with m.If(adv):
            m.d.sync += obits.eq(Cat(omag, neg))
        m.d.comb += [self.o.valid.eq(ov), self.o.payload.eq(obits)]

        # ---- stream unit: takes a quantised call, streams its K/V segments, hands the sums
        # to the finishing unit
        stream_busy = Signal()
        m.d.comb += xbusy.eq(d_busy | e_emit)
        m.d.comb += self.busy.eq(l_busy | q_busy | stream_busy | xbusy | s1v | s2v | ov)
        m.d.comb += self.i_kv.ready.eq(stream_on & Mux(in_v, rdy > blk, 1))

        def take_call():
            m.d.comb += take.eq(1)
            m.d.sync += [n.eq(qn_), nact.eq(qnq), hd.eq(qhd), sqb.eq(qob), bcnt.eq(0),
                         seg.eq(0), row.eq(0), row_end.eq(qn_)]
            m.d.sync += [lim[i].eq(qlim[i]) for i in range(NQ)]
            m.d.sync += [sg[i].eq(gq[i]) for i in range(NQ)]
            m.d.sync += [mvalid[i].eq(0) for i in range(NQ)]
            m.d.sync += [yh[i].eq(0) for i in range(NQ)]
            m.d.sync += [lsum[i].eq(0) for i in range(NQ)]
            m.next = "STREAM"

        with m.FSM(name="stream"):
            with m.State("IDLE"):
                m.d.comb += s_wait.eq(1)
                with m.If(q_ready):
                    take_call()
            with m.State("STREAM"):
                m.d.comb += [stream_on.eq(1), stream_busy.eq(1)]
                with m.If(accept):
                    m.d.sync += bcnt.eq(bcnt + 1)
                    with m.If(in_v):
                        with m.If(bcnt == hd - 1):
                            m.d.sync += [bcnt.eq(0), blk.eq(blk + 1),
                                         sbank.eq(Mux(sbank == BANKS - 1, 0, sbank + 1))]
                            with m.If(blk + 1 == blk_end):
                                m.next = "DRAIN"
                    with m.Else():
                        with m.If(bcnt == bpr - 1):
                            m.d.sync += [bcnt.eq(0), row.eq(row + 1)]
                            with m.If(row + 1 == row_end):
                                m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += stream_busy.eq(1)
                with m.If(empty):
                    m.next = "STREAM"
                    m.d.sync += [in_v.eq(0), wp_on.eq(0)]

                    def v_seg(first_key, end_key):
                        b0 = first_key >> LOG2W
                        b1 = (end_key + W - 1) >> LOG2W
                        return [in_v.eq(1), wp_on.eq(1), blk.eq(b0), blk0.eq(b0),
                                blk_end.eq(b1), wp_blk.eq(b0), rdy.eq(b0), wp_key.eq(0),
                                sbank.eq(0), wp_bank.eq(0)]
                    with m.Switch(seg):
                        with m.Case(0):
                            m.d.sync += [seg.eq(1), *v_seg(last_start, n)]
                        with m.Case(1):
                            m.d.sync += [seg.eq(2), tile.eq(0), row.eq(0), row_end.eq(D)]
                            with m.If(last_start == 0):
                                m.next = "HANDOFF"
                        with m.Case(2):
                            m.d.sync += [seg.eq(3), *v_seg(tile, tile + D)]
                        with m.Case(3):
                            m.d.sync += [seg.eq(2), tile.eq(tile + D), row.eq(tile + D),
                                         row_end.eq(tile + 2 * D)]
                            with m.If(tile + D == last_start):
                                m.next = "HANDOFF"
            # -- hand the sums to the finishing unit (once it is free) and take the next
            # call in the same cycle if it is quantised
            with m.State("HANDOFF"):
                m.d.comb += [s_wait.eq(1), stream_busy.eq(1)]
                with m.If(~xbusy):
                    m.d.comb += xstart.eq(1)
                    m.d.sync += [xl_.eq(l_) for xl_, l_ in zip(xlsum, lsum, strict=True)]
                    m.d.sync += [xy_.eq(y_) for xy_, y_ in zip(xyh, yh, strict=True)]
                    m.d.sync += [xnact.eq(nact), xhd.eq(hd), xbank.eq(cbank),
                                 cbank.eq(~cbank)]
                    m.next = "IDLE"
                    with m.If(q_ready):
                        take_call()

        # ---- finishing unit control
        with m.FSM(name="divider"):
            with m.State("DIDLE"):
                with m.If(xstart):
                    m.d.sync += dl.eq(0)
                    m.next = "DIV_INIT"
            with m.State("DIV_INIT"):
                m.d.comb += d_busy.eq(1)
                lv = Array(xlsum)[dl]
                lvm1 = Signal(LW, name="lvm1")
                m.d.comb += lvm1.eq(lv - 1)
                b = bit_length(m, lvm1, LW, "lm1")
                nsh = Signal(range(LW + 1), name="nsh")
                m.d.comb += nsh.eq(LW - b)
                m.d.sync += [beta.eq(b), dn.eq(lv << nsh), rem.eq(1 << (LW - 1)),
                             quo.eq(0), it.eq(0)]
                m.next = "DIV"
            with m.State("DIV"):
                m.d.comb += d_busy.eq(1)
                r2 = rem << 1
                with m.If(r2 >= dn):
                    m.d.sync += [rem.eq(r2 - dn), quo.eq((quo << 1) | 1)]
                with m.Else():
                    m.d.sync += [rem.eq(r2), quo.eq(quo << 1)]
                m.d.sync += it.eq(it + 1)
                with m.If(it == DIV_STEPS - 1):
                    m.next = "DIV_ROUND"
            with m.State("DIV_ROUND"):
                m.d.comb += d_busy.eq(1)
                r2 = rem << 1
                m.d.sync += quo.eq(quo + ((r2 > dn) | ((r2 == dn) & quo[0])))
                m.next = "DHOLD"
            with m.State("DHOLD"):                   # 1/L of lane dl ready for the emitter
                m.d.comb += [d_busy.eq(1), d_hold.eq(1)]
                with m.If(e_take):
                    m.d.sync += dl.eq(dl + 1)
                    m.next = "DIV_INIT"
                    with m.If(dl + 1 == xnact):
                        m.next = "DIDLE"

        def emitter_take():
            m.d.comb += e_take.eq(1)
            m.d.sync += [oquo.eq(quo), obeta.eq(beta), el.eq(dl), xc.eq(0)]
            m.next = "EMIT"

        with m.FSM(name="emitter"):
            with m.State("EWAIT"):
                with m.If(d_hold):
                    emitter_take()
            with m.State("EMIT"):                    # one element per cycle into the normaliser
                m.d.comb += [issue.eq(1), e_emit.eq(1)]
                with m.If(adv):
                    m.d.sync += xc.eq(xc + 1)
                    with m.If(xc == xhd - 1):
                        m.next = "EWAIT"
                        with m.If(d_hold):
                            emitter_take()
        return m
