"""Integer attention engine (issue 11 item 3): exact two-pass softmax attention of ``lanes``
query rows over one KV head, int8 K/V, integer dot products summed by DSP48E2 cascades and one
short adder tree per lane.

Arithmetic: exactly golden ``attention_decode`` / ``attention_prefill`` of
sim/golden/attention_int.py (constants in spec/attention_int.py, docs/numerics.md §4.1).

Dataflow (docs/hw/attention.md, "integer engine"): every lane has ``beat`` MAC slots (one
DSP48E2 each), summed by cascades of min(beat, CHAIN) slices (hw/dsp.py: PCOUT -> PCIN, slice p
fed p cycles after the beat) and one registered tree over the cascades' sums (T =
``mac_latency`` stages); a slot's first operand is a signed word (``operand_bits``) from the
lane's operand memory (one memory per cascade position, read p cycles late), its second the
beat's int8 code (delayed p cycles, shared by the lanes). Operand
words are written whole, from a shift chain that collects one element or weight per cycle.

Four units work on consecutive calls at once, each with its own copy of what it reads of a
call (copied when the call moves on, so nothing changes under a unit while the ones before it
run ahead): the loader (call t+2), the quantiser (t+1), the stream unit (t: passes 1 and 2)
and the finishing unit (t-1).

* q (once per call): the loader takes the command and the lanes' rows (``q_beat`` elements
  per beat, registered) into one of two raw-q banks, keeping max|q| per lane (a max tree of
  two levels per stage), then g per lane (one lane per cycle into a G_LAT-stage pipeline:
  max|q| * C in DSP parts, its leading one); it hands the call to the quantiser when that is
  free. The quantiser (one per lane, shared control) turns one element per cycle into q_int
  (int14 against the power-of-two scale of max|q * C|) and writes it to one of two q banks of
  the operand memory (slot c mod beat, word c / beat; zeros past hd up to the last K beat, so
  a head_dim that is not a multiple of ``beat``, such as bitnet_b1_58-large's 96, streams K
  rows padded with anything). Its words share the operand shift chain (and write port) with
  the weight preparation of the stream unit's V segments, so a word (beat consecutive
  elements) starts only where it is surely in the chain before the next weight: while the
  stream unit waits, in a V segment once all its weights are written (or its drain), or in a
  K segment with more than ceil((beat - T - 10) / bpr) rows left (``k_gap``; T =
  ``mac_latency``: 0 at beat 16, 104 rows at beat 128 and bpr 1). The stream unit takes a quantised
  call (n, nq, lim, hd, each lane's g for the logit shift, the q bank) at its hand-off, or as
  soon as it is ready when idle.
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
  A[c] += sum (a read-modify-write in the lane's accumulator memories: ``o_beat`` of them,
  channel c in memory c mod o_beat, each with two banks).
* finish: a second unit with its own accumulator bank (the next call streams into the other
  bank meanwhile): per lane 1/L by a 24-step restoring division, then ``o_beat`` consecutive
  outputs of the lane per cycle (one word of each accumulator memory) into an N_LAT (11)
  stage normaliser (A read, |A|, RN32(A) by ``round32``, the 25 x 25-bit product by
  ``pipe_mul``, one rounding to the stream format by ``round_fp``; o_beat copies of the
  datapath from |A| on, shared control; all stages advance together under the output's
  backpressure). The divider works one lane ahead of the emitter, which keeps its own copy of
  the lane's 1/L; the normaliser stages carry 1/L and the exponent offset (the lane's, shared
  by a beat's elements) with each beat, so lanes follow back to back once a lane's hd /
  o_beat cycles cover the divider's 29.

Pipelining (250 MHz, the timing proxy of docs/hw/timing.md): every multiply wider than one
DSP48E2 is registered in parts and summed a stage later (``pipe_mul``); the logit and q
round-and-clamps are split (the shift's clamps | half added | shift | clamp), the weight's
rounding half rides in p * mv's sum and its shift feeds the operand chain; table lookups,
priority trees and carry chains each get their own stage. Depths: quantiser QLAT, weight
preparation WLAT, K tail K_TAIL, loader G_LAT, normaliser N_LAT (the constants below;
sim/cycles_attn_int.py mirrors them).

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
o     : Out(stream ArrayLayout(unsigned(fmt.bits), o_beat))  nq * hd results, lane-major,
        o_beat to a beat (channels c, c + 1 of one lane, c in element 0), so the run-time hd
        must be a multiple of o_beat (the top's AttnCtl checks it; its q_beat, 2 or more on
        every target, already makes hd even).
busy  : Out(1)

Throughput: one K/V beat per cycle (``beat`` MACs per lane) once a V block's weights are
ready; backpressure on ``o`` stalls only the finishing unit. Back to back, a call costs its
stream (K rows * bpr + V blocks * hd beats, the first block's weight preparation, beat + 9
cycles, a drain of T + 8 cycles per segment) when the next call's q preparation fits in its
windows (decode: the q load, nq * hd / q_beat cycles, and bpr * beat quantiser cycles within
the K segment; otherwise the quantiser finishes at the hand-off) and its finish, 29 + (nq - 1)
* max(29, hd_out) + hd_out cycles (hd_out = hd / o_beat), is not longer. Latency of one call
alone: command, q load, 2 cycles to the last max|q|, g (nq + 4), the quantiser (bpr * beat +
10), the stream, the finish, 11 cycles of normaliser. Exact timing (zero stalls):
``calls_cycles`` in sim/cycles_attn_int.py.
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

from ..arith import msb_index, wire
from ..dsp import chain_latency, dot_chain, skew
from ..elementwise.stream_fp import (
    DSP_A,
    DSP_B,
    MUL_LATENCY,
    ROUND32_LATENCY,
    ROUND_FP_STAGES,
    Pipe,
    abs_signed,
    pipe_mul,
    round32,
    round_fp,
    unpack,
)

C_BITS = 20            # score-scale register width
DIV_STEPS = 24
BANKS = 3              # weight banks: preparation up to two blocks ahead of the stream
# pipeline depths (registers after the issue cycle; docs/hw/attention.md, sim/cycles_attn_int.py)
QLAT = 8               # quantiser: Q1 element, Q2 q * C parts, Q3 q * C, Q4-Q6 rounding,
#                        Q7 into the operand chain, Q8 the word write
Q_CHAIN = QLAT - 1
WLAT = 9               # weight preparation: P1 m - t, P2 exp2 table, P3 interpolation
#                        product, P4 e, P5 p, P6 p * mv parts (L += p), P7 p * mv + half,
#                        P8 w (shifted) into the operand chain, P9 the word write
W_CHAIN = WLAT - 1
K_TAIL = 6             # K beat after the tree sum (stage T): S, S * mk parts, S * mk,
#                        rounding (3): the logit at T + K_TAIL
G_LAT = 4              # loader g per lane: select, max|q| * C parts, the product, bit length,
#                        then g written
N_LAT = 2 + ROUND32_LATENCY + MUL_LATENCY + ROUND_FP_STAGES   # finish normaliser: A read,
#                        |A|, RN32, the product (DSP parts, sum), RN_fmt (its last register is
#                        the output register)
assert MUL_LATENCY == 2, "QLAT, WLAT, K_TAIL and G_LAT count a pipe_mul as two stages"


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


CHAIN = 8              # DSP48E2 slices per MAC cascade (hw/dsp.py), at most the beat


def tree_levels(beat: int) -> int:
    """Registered adder-tree levels of a lane over its cascades' sums (one per halving)."""
    return (beat // min(beat, CHAIN) - 1).bit_length()


def mac_latency(beat: int) -> int:
    """T: stages from an accepted K/V beat (stage 0) to the lane's sum of its ``beat``
    products: the cascades of min(beat, CHAIN) slices, then the tree over their sums."""
    return chain_latency(min(beat, CHAIN)) + tree_levels(beat)


def k_gap(beat: int) -> int:
    """K beats a quantiser word needs left in a K segment when it starts: its last element
    enters the operand chain (issue + Q_CHAIN) before the next V segment's first weight does
    (that segment's first weight issue comes drain = T + K_TAIL + 2 cycles after the K
    segment's last beat, T = ``mac_latency``, and enters W_CHAIN cycles later)."""
    t = mac_latency(beat)
    return max(0, beat + Q_CHAIN - W_CHAIN - (t + K_TAIL) - 3)


def _half(s, width: int):
    """2**(s - 1) for an unsigned shift ``s >= 1`` (the round-half-up constant)."""
    return Const(1, width) << (s - 1).as_unsigned()[:len(s)]


def _reg(m: Module, v, name: str) -> Signal:
    """``v`` registered (no enable)."""
    r = Signal(Value.cast(v).shape(), name=name)
    m.d.sync += r.eq(v)
    return r


def _sat_shift(m: Module, sh, width: int, left_max: int, limit: int, name: str) -> list:
    """The shift terms of :func:`_round_sat` for a signed shift ``sh`` (a stage ahead of the
    value; the caller registers them): [right = sh >= 1, the right shift sr = clamp(sh, 1,
    width + 2), the left shift sl = clamp(-sh, 0, left_max), +-(limit >> sl)]."""
    k = limit.bit_length()
    right = Signal(name=f"{name}_rt")
    sr = Signal(range(width + 3), name=f"{name}_sr")
    sl = Signal(range(left_max + 1), name=f"{name}_sl")
    bound = Signal(k, name=f"{name}_bd")
    nbound = Signal(signed(k + 1), name=f"{name}_nbd")
    assert k <= left_max
    # limit >> sl = 2**(k - sl) - 1 and its negation, bit by bit from sh (sl < k iff sh > -k)
    inside = sh > -k
    m.d.comb += [right.eq(sh >= 1),
                 sr.eq(Mux(sh > width + 2, width + 2, Mux(sh < 1, 1, sh))),
                 sl.eq(Mux(sh < -left_max, left_max, Mux(sh < 0, -sh, 0))),
                 bound.eq(Cat(*(sh > b - k for b in range(k)))),
                 nbound.eq(Cat(inside, *(inside & (sh <= b - k) for b in range(1, k)), inside))]
    return [right, sr, sl, bound, nbound]


def _round_sat(m: Module, x, width: int, shifts, limit: int, name: str):
    """clamp(rnd(x * 2**-sh), +-limit) for a signed ``x`` of ``width`` bits, ``shifts`` the
    registered :func:`_sat_shift` of a signed shift ``sh``, and ``limit = 2**k - 1``: round
    half up for sh >= 1, a left shift of at most ``left_max`` for sh <= 0 (golden
    ``rnd_shift`` / ``logits`` / ``quantize_q``). Three stages, two registered here: the
    half added and the left branch whole | the right shift | the clamp and the branch select
    (the caller registers the result). The left branch shifts only the low k + 1 bits:
    x << sl is within +-limit iff |x| <= limit >> sl, so the overflow test is a comparison,
    not a (width + left_max)-bit shifter."""
    k = limit.bit_length()
    assert limit == 2 ** k - 1, limit
    right, sr, sl, bound, nbound = shifts
    xh = Signal(signed(width + 3), name=f"{name}_xh")   # |x| + 2**(width + 1) fits
    m.d.comb += xh.eq(x + _half(sr, width + 3))
    xs = Value.cast(x).as_signed()
    low = Signal(signed(k + 1), name=f"{name}_lo")
    m.d.comb += low.eq(xs[:k + 1].as_signed() << sl)
    ls = Mux(xs > bound, limit, Mux(xs < nbound, -limit, low))
    xh2, sr2, right2, ls2 = (_reg(m, v, f"{name}_{nm}") for v, nm in
                             ((xh, "xh2"), (sr, "sr2"), (right, "rt2"), (ls, "ls2")))
    r = Signal(signed(width + 3), name=f"{name}_r")
    m.d.comb += r.eq(xh2 >> sr2)
    r3, right3, ls3 = (_reg(m, v, f"{name}_{nm}") for v, nm in
                       ((r, "r3"), (right2, "rt3"), (ls2, "ls3")))
    rs = Mux(r3 > limit, limit, Mux(r3 < -limit, -limit, r3))
    return Mux(right3, rs, ls3)


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
    o; ``q_beat``: q elements per i_q beat (divides ``beat``); ``o_beat``: outputs per ``o``
    beat (1 or 2, divides ``head_dim``)."""

    def __init__(self, *, head_dim: int = 16, lanes: int = 4, beat: int = 4, depth: int = 64,
                 ctx_bits: int = 14, fmt: StreamFormat | None = None, q_bits: int = Q_BITS,
                 q_beat: int | None = None, score_ram: str | None = None, o_beat: int = 1):
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
        elif o_beat not in (1, 2) or head_dim % o_beat:
            problem = f"o_beat {o_beat} must be 1 or 2 and divide head_dim {head_dim}"
        elif score_ram not in (None, "ultra", "block", "distributed"):
            problem = (f"score_ram must be None, 'ultra', 'block' or 'distributed', "
                       f"got {score_ram!r}")
        if problem:
            self._MustUse__silence = True
            raise ValueError(problem)
        self.head_dim, self.lanes, self.beat, self.depth = head_dim, lanes, beat, depth
        self.ctx_bits, self.fmt, self.q_bits, self.q_beat = ctx_bits, fmt, q_bits, q_beat
        self.score_ram, self.o_beat = score_ram, o_beat
        super().__init__({
            "i_cmd": In(stream.Signature(cmd_layout(lanes, ctx_bits))),
            "i_q": In(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), q_beat))),
            "i_kv": In(stream.Signature(unsigned(kv_beat_bits(beat, fmt)))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), o_beat))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        HD, NQ, W, D, CB = self.head_dim, self.lanes, self.beat, self.depth, self.ctx_bits
        QL, OB = self.q_beat, self.o_beat
        LOGOB = OB.bit_length() - 1
        HA = HD // OB                 # accumulator words per lane, memory and bank
        fmt = self.fmt
        EB, SB, F = fmt.bits, fmt.sig_bits, fmt.frac
        BPR = -(-HD // W)
        QB, QTOP, QMAX = self.q_bits, self.q_bits - 2, 2 ** (self.q_bits - 1) - 1
        LOG2D = D.bit_length() - 1
        LOG2W = W.bit_length() - 1
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
        TSW = PRODW + (W - 1).bit_length()   # lane sum
        C = min(W, CHAIN)             # slices per cascade; slot s = j * C + p: slice p of j
        free = Pipe(m, Const(1, 1))   # registers of the pipelines that never stall

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
        cneg = Signal(signed(C_BITS + 1))                            # -C
        qhd = Signal(range(HD + 1))
        qlim = [Signal(CB, name=f"qlim{i}") for i in range(NQ)]
        gq = [Signal(8, name=f"gq{i}") for i in range(NQ)]
        qrb = Signal()                # raw-q bank the quantiser reads
        qob = Signal()                # q operand bank the quantiser writes
        qbpr = Signal(range(BPR + 1))
        m.d.comb += qbpr.eq((qhd + W - 1) >> LOG2W)
        n = Signal(CB + 1)
        nact = Signal(range(NQ + 1))
        bpr = Signal(range(BPR + 1))  # K beats per row (ceil(hd / beat), set at the take)
        hd = Signal(range(HD + 1))
        lim = [Signal(CB, name=f"lim{i}") for i in range(NQ)]
        sg = [Signal(8, name=f"sg{i}") for i in range(NQ)]
        sqb = Signal()                # q operand bank of the streaming call

        # ---- per-lane state
        mx = [Signal(signed(TW), name=f"m{i}") for i in range(NQ)]
        mvalid = [Signal(name=f"mvalid{i}") for i in range(NQ)]
        yh = [Signal(5, name=f"yh{i}") for i in range(NQ)]          # max V-scale shift
        lsum = [Signal(LW, name=f"L{i}") for i in range(NQ)]
        cbank = Signal()                                             # accumulator bank of the call
        xlsum = [Signal(LW, name=f"xL{i}") for i in range(NQ)]      # the finishing call's copies
        xyh = [Signal(5, name=f"xyh{i}") for i in range(NQ)]
        xnact = Signal(range(NQ + 1))
        xhd = Signal(range(HD + 1))     # the finishing call's last channel step: hd - o_beat
        xbank = Signal()
        xstart = Signal()
        xbusy = Signal()
        sacc = [Signal(signed(SW), name=f"s{i}") for i in range(NQ)]

        qraws, opms, amems, roms = [], [], [], []
        EXP2 = [int(v) for v in EXP2_TABLE]
        EXP2D = [(EXP2[a] - EXP2[a + 1]) & (2 ** 17 - 1) for a in range(64)]
        for i in range(NQ):
            qraw = memory.Memory(shape=unsigned(EB * QL), depth=2 * QRD, init=[])   # 2 banks
            m.submodules[f"qraw{i}"] = qraw
            qraws.append((qraw.write_port(), qraw.read_port()))
            # one memory per cascade position p (slots j * C + p), so slice p's operands are
            # read p cycles after the beat (no operand delay registers)
            parts = []
            for p_ in range(C):
                opm = memory.Memory(shape=unsigned(OPW * (W // C)), depth=WADDR + BANKS,
                                    init=[])
                m.submodules[f"opm{i}_{p_}"] = opm
                parts.append((opm.write_port(), opm.read_port()))
            opms.append(parts)
            # accumulators: o_beat memories of 2 banks (channel c in memory c mod o_beat,
            # word c // o_beat), so the finish reads a beat's o_beat channels at once
            aps = []
            for j in range(OB):
                amem = memory.Memory(shape=signed(AW), depth=2 * HA, init=[])
                m.submodules[f"acc{i}" if OB == 1 else f"acc{i}_{j}"] = amem
                aps.append((amem.write_port(), amem.read_port(), amem.read_port()))
            amems.append(aps)
            # exp2 table (UQ1.23 at 64 points) and the difference to the next point
            rom = memory.Memory(shape=unsigned(24), depth=64, init=EXP2[:64])
            m.submodules[f"exp2_{i}"] = rom
            drom = memory.Memory(shape=unsigned(17), depth=64, init=EXP2D)
            m.submodules[f"exp2d_{i}"] = drom
            roms.append((rom.read_port(domain="comb"), drom.read_port(domain="comb")))
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
        rleft = Signal(CB + 1)        # K: rows left in the segment (the current one included)
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
        # P1 (buffers read) .. P8 (w into the operand shift chain), P9 (word write)
        wv = _delay(m, issue_w, WLAT, "wv")
        wk = _delay(m, wkey, 5, "wk")
        wslot = _delay(m, wp_key, WLAT, "wslot")
        wbk = _delay(m, wp_bank, WLAT, "wbank")
        wword = Signal()
        m.d.comb += wword.eq(wv[WLAT] & (wslot[WLAT] == W - 1))
        with m.If(wword):
            m.d.sync += rdy.eq(rdy + 1)
        vsP = _delay(m, vs_rp, 4, "vsP")          # the key's V scale at P1 .. P5

        # ---- K/V beat pipeline: stage 0 = accepted beat; products at 1; tree sum at T
        T = mac_latency(W)
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
        NS = T + K_TAIL
        # cascade position p: the beat's codes and the operand reads p cycles late
        codes_sk = skew(m, [Cat(*(codes0[8 * (j * C + p_):8 * (j * C + p_) + 8]
                                  for j in range(W // C))) for p_ in range(C)], "codes")
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
        opaddr_d = _delay(m, opaddr, C - 1, "opaddr")
        accept_d = _delay(m, accept, C - 1, "accept")

        def acc_addr(ch, bank):                # accumulator word of channel ch in a bank
            if HA & (HA - 1) == 0:
                return Cat(ch[LOGOB:][:HA.bit_length() - 1], bank)
            return (ch >> LOGOB) + bank * HA

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
        m.d.comb += qword.eq(qv[QLAT] & (qel[QLAT][:LOG2W] == W - 1))

        for i in range(NQ):
            oparts, aps = opms[i], amems[i]
            t_rd = sc_rp.data[i * TW:(i + 1) * TW].as_signed()
            lane_on = Signal(name=f"on{i}")
            m.d.comb += lane_on.eq(i < nact)

            # -- weight preparation: P1 t and V scale read, d = m - t
            dltB = Signal(TW + 1, name=f"d{i}")
            m.d.sync += dltB.eq(mx[i] - t_rd)
            # P2: exp2 table of the fraction of d at its 64-entry point, the step to the next
            r0, r1 = roms[i]
            m.d.comb += [r0.addr.eq(dltB[10:16]), r1.addr.eq(dltB[10:16])]
            kC = Signal(range(32), name=f"k{i}")
            kbigC = Signal(name=f"kbig{i}")
            rC = Signal(10, name=f"r{i}")
            t0C = Signal(24, name=f"t0_{i}")
            dfC = Signal(17, name=f"df{i}")
            m.d.sync += [kC.eq(dltB[16:21]), kbigC.eq(dltB[16:] >= P_ZERO_OCTAVES),
                         rC.eq(dltB[0:10]), t0C.eq(r0.data), dfC.eq(r1.data)]
            # P3: the interpolation product; P4: e (the fraction's exp2)
            ipD = Signal(27, name=f"ip{i}")
            m.d.sync += ipD.eq(dfC * rC)
            t0D, kD, kbigD = (_reg(m, x, f"{x.name}d") for x in (t0C, kC, kbigC))
            eE = Signal(24, name=f"e{i}")
            m.d.sync += eE.eq(t0D - ((ipD + 512) >> 10))
            kE, kbigE = (_reg(m, x, f"{x.name}e") for x in (kD, kbigD))
            # P5: p (0 for keys the lane does not see)
            pF = Signal(24, name=f"p{i}")
            visE = (wk[5] <= lim[i]) & lane_on
            m.d.sync += pF.eq(Mux(kbigE | ~visE, 0, eE >> kE))
            mv, vh = scale(vsP[4])
            mvF = _reg(m, mv, f"mv{i}")
            shwF = _reg(m, W_SHIFT + yh[i] - vh, f"shw{i}")
            # P6: p * mv (DSP parts) with the rounding half of the weight shift, L; P7: the sum
            swcG = Signal(range(PMW + 2), name=f"wsh{i}")
            m.d.comb += swcG.eq(Mux(shwF > PMW + 1, PMW + 1, Mux(shwF < 1, 1, shwF)))
            pmH = pipe_mul(free, pF, mvF, addend=_half(swcG, PMW + 2))
            swcH = _delay(m, swcG, MUL_LATENCY, f"wsh{i}")[MUL_LATENCY]
            with m.If(wv[6]):
                m.d.sync += lsum[i].eq(lsum[i] + pF)
            # P8: w = rnd(pm * 2**-shw) (into the chain)
            wH = Signal(W_BITS + 1, name=f"w{i}")
            m.d.comb += wH.eq(pmH >> swcH)

            # -- q quantiser: Q1 raw element (unpacked, the shift, +-C), Q2 q * C parts and the
            # shift's clamps, Q3 q * C, Q4 half added, Q5 shifted, Q6 clamped, Q7 in the chain
            qwp, qrp = qraws[i]
            m.d.comb += [qrp.addr.eq(raw_addr(qe >> (QL.bit_length() - 1), qrb)), qrp.en.eq(1)]
            qsel = qel[1][:QL.bit_length() - 1]
            qraw_el = (Array(qrp.data[EB * k:EB * (k + 1)] for k in range(QL))[qsel]
                       if QL > 1 else qrp.data)
            sq, gs, hs = unpack(qraw_el, fmt)
            qcB = Signal(signed(C_BITS + 1), name=f"qc{i}")
            qgB = Signal(SB, name=f"qg{i}")
            qsh = Signal(signed(9), name=f"qsh{i}")   # g - e = bitlen - 1 + hmax - h - QTOP
            m.d.sync += [qcB.eq(Mux(sq, cneg, cval)), qgB.eq(gs),
                         qsh.eq(gq[i] - hs - 1 - QTOP)]
            qx = pipe_mul(free, qcB, qgB)             # q * C (QX + 1 bits, signed)
            qshC = [_reg(m, x, f"{x.name}C") for x in _sat_shift(m, qsh, QX + 1, 15, QMAX,
                                                                   f"q{i}")]
            qshD = [_reg(m, x, f"{x.name}D") for x in qshC]
            qint = Signal(signed(QB), name=f"qi{i}")
            m.d.sync += qint.eq(Mux(qel[6] < qhd,
                                    _round_sat(m, qx, QX + 1, qshD, QMAX, f"q{i}"), 0))

            # -- operand memory: whole words from a shift chain that collects q elements
            # (quantiser) or weights (preparation) in slot order; the two never overlap
            chain = [Signal(OPW, name=f"oc{i}_{k}") for k in range(W)]
            with m.If(wv[W_CHAIN] | qv[Q_CHAIN]):
                m.d.sync += [chain[0].eq(Mux(wv[W_CHAIN], wH, qint)[:OPW]),
                             *(chain[k].eq(chain[k - 1]) for k in range(1, W))]
            # (slot s is chain[W - 1 - s]). A read p cycles late never meets a write of its
            # bank: a q bank is written only while the other one streams, and a weight bank
            # again only a whole block (>= beat + WLAT cycles of preparation) after its stream
            wr_addr = Mux(wword, WADDR + wbk[WLAT], Cat((qel[QLAT] >> LOG2W)[:BPRB], qob))
            for p_, (owp, orp) in enumerate(oparts):
                m.d.comb += [
                    owp.addr.eq(wr_addr),
                    owp.data.eq(Cat(*(chain[W - 1 - (j * C + p_)] for j in range(W // C)))),
                    owp.en.eq(wword | qword),
                    orp.addr.eq(opaddr_d[p_]), orp.en.eq(accept_d[p_]),
                ]

            # -- MAC slots: W // C DSP48E2 cascades (slice p's operands at stage p, the
            # cascade's sum at stage chain_latency(C)), then the tree over their sums (.. T)
            level = []
            for j in range(W // C):
                pairs = [(oparts[p_][1].data[OPW * j:OPW * (j + 1)].as_signed(),
                          codes_sk[p_][8 * j:8 * j + 8].as_signed()) for p_ in range(C)]
                sj = Signal(signed(PRODW + (C - 1).bit_length()), name=f"mc{i}_{j}")
                m.d.comb += sj.eq(dot_chain(m, pairs, f"mac{i}_{j}"))
                level.append(sj)
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

            # -- K (stage T+1): row score, the K scale; (T+2) S * mk parts and the logit shift;
            # (T+3) S * mk and the shift's clamps; (T+4) half added; (T+5) shifted; (T+6) t
            with m.If(v[T] & ~isv[T]):
                m.d.sync += sacc[i].eq(Mux(first[T], 0, sacc[i]) + tsum)
            mk, kh = (_reg(m, x, f"{nm}{i}") for x, nm in zip(scale(scp[T], 0), ("mk", "kh"),
                                                              strict=True))
            if SW <= DSP_A + 1:                       # S whole on the DSPs' A port
                prodJ = pipe_mul(free, sacc[i], mk)
            else:                                     # (pipe_mul takes an unsigned b) mk on
                assert SW <= 2 * DSP_B + 1            # A, S in two B pieces, the top signed
                prodJ = free.reg((free.reg(mk * sacc[i][:DSP_B])
                                  + free.reg(mk * sacc[i][DSP_B:].as_signed())
                                  .shift_left(DSP_B))
                                 [:SW + SB + 1].as_signed())
            assert len(prodJ) <= SW + SB + 1, len(prodJ)
            shtI = Signal(signed(9), name=f"sht{i}")
            m.d.sync += shtI.eq(3 + QTOP + 2 * F - sg[i] - kh)
            shtJ = [_reg(m, x, f"{x.name}J") for x in _sat_shift(m, shtI, SW + SB + 1, 31,
                                                                   T_SAT, f"t{i}")]
            tL = Signal(signed(TW), name=f"t{i}")
            m.d.sync += tL.eq(_round_sat(m, prodJ, SW + SB + 1, shtJ, T_SAT, f"t{i}"))
            # -- (NS = T + K_TAIL) score -> buffer, maximum, Y
            _, vhL = scale(scp[NS], 1)
            kdone = v[NS] & ~isv[NS] & last[NS]
            m.d.comb += sc_wp.data[i * TW:(i + 1) * TW].eq(tL)
            with m.If(kdone & p1[NS] & (rowp[NS] <= lim[i])):
                with m.If(~mvalid[i] | (tL > mx[i])):
                    m.d.sync += [mx[i].eq(tL), mvalid[i].eq(1)]
                with m.If(vhL > yh[i]):
                    m.d.sync += yh[i].eq(vhL)

            # -- V (stage T): A[c] += tree sum (read at T-1 in every accumulator memory, the
            # word of channel c's memory used; channels of consecutive beats differ, so the
            # write at T never meets the read of the next beat; with o_beat 2 they are in
            # different memories)
            ard = aps[0][1].data
            if OB > 1:
                ard = Signal(signed(AW), name=f"ard{i}")
                m.d.comb += ard.eq(Array(rp.data for _, rp, _ in aps)[chp[T][:LOGOB]])
            anew = Signal(signed(AW), name=f"anew{i}")
            m.d.comb += anew.eq(Mux(init[T], 0, ard) + tsum)
            for j, (awp, arp, _) in enumerate(aps):
                wen = v[T] & isv[T]
                m.d.comb += [arp.addr.eq(acc_addr(chp[T - 1], cbank)), arp.en.eq(1),
                             awp.addr.eq(acc_addr(chp[T], cbank)), awp.data.eq(anew),
                             awp.en.eq(wen & (chp[T][:LOGOB] == j) if OB > 1 else wen)]

        # ---- loader: i_cmd, then the call's q rows into a raw-q bank (max|q| per lane on the
        # way), then g per lane; hands the call to the quantiser when that is idle
        flane = Signal(range(NQ + 1))
        qb = Signal(range(QRD + 1))
        qin = self.i_q.payload.as_value()
        q_acc = Signal()
        m.d.comb += q_acc.eq(self.i_q.valid & self.i_q.ready)
        # R: the accepted beat, registered (raw-q write; max|q| tree, two levels per stage,
        # the last level with the lane's running maximum)
        qrv, qrl, qrw, qrd = (Signal(name="qrv"), Signal(range(NQ + 1), name="qrl"),
                              Signal(range(QRD + 1), name="qrw"), Signal(EB * QL, name="qrd"))
        m.d.sync += qrv.eq(q_acc)
        with m.If(q_acc):
            m.d.sync += [qrl.eq(flane), qrw.eq(qb), qrd.eq(qin)]
        for i in range(NQ):
            qwp, _ = qraws[i]
            m.d.comb += [qwp.addr.eq(raw_addr(qrw, lbank)), qwp.data.eq(qrd),
                         qwp.en.eq(qrv & (qrl == i))]

        def max_level(vals, tag):             # one level of the max|q| tree (magnitude codes
            out = []                          # order like integers)
            for j, (a, b) in enumerate(zip(vals[0::2], vals[1::2], strict=False)):
                x = Signal(EB - 1, name=f"qmax{tag}_{j}")
                m.d.comb += x.eq(Mux(b > a, b, a))
                out.append(x)
            return out + vals[len(vals) & ~1:]

        vals = [qrd[EB * k:EB * k + EB - 1] for k in range(QL)]
        for lv_ in range(max(0, (QL - 1).bit_length() - 1)):
            vals = max_level(vals, lv_)
        qmv, qml = Signal(name="qmv"), Signal(range(NQ + 1), name="qml")
        m.d.sync += [qmv.eq(qrv), qml.eq(qrl)]
        mregs = [Signal(EB - 1, name=f"qmr{j}") for j in range(len(vals))]
        m.d.sync += [r.eq(x) for r, x in zip(mregs, vals, strict=True)]
        vals = mregs
        while len(vals) > 1:
            vals = max_level(vals, "f")
        cur_qmx = Array(qmx)[qml]
        with m.If(qmv & (vals[0] > cur_qmx)):
            m.d.sync += cur_qmx.eq(vals[0])
        mx_busy = qrv | qmv
        # g per lane, one lane per cycle: G0 the lane's max|q| (unpacked), G1 max|q| * C parts,
        # G2 max|q| * C, G3 its bit length, G4 g written
        g_iss = Signal()
        gv = _delay(m, g_iss, G_LAT, "gv")
        gl = _delay(m, flane, G_LAT, "gl")
        _, gmax, hmax = unpack(Cat(Array(qmx)[flane], 0), fmt)
        gmB = Signal(SB, name="gm")
        m.d.sync += gmB.eq(gmax)
        ghm = _delay(m, wire(m, hmax, "ghm"), G_LAT, "ghm")
        mqD = pipe_mul(free, lc, gmB)              # max|q| * C (QX bits)
        gnz, gidx = msb_index(m, mqD)
        gnzE, gidxE = _reg(m, gnz, "qnz"), _reg(m, gidx, "qbl")
        with m.If(gv[G_LAT]):                 # g = bitlen(max|q| * C) + hmax
            m.d.sync += Array(lg)[gl[G_LAT]].eq(Mux(gnzE, gidxE + 1, 0) + ghm[G_LAT])
        g_busy = Cat(*gv[1:]).any()

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
                    with m.If(qb == (lhd >> (QL.bit_length() - 1)) - 1):
                        m.d.sync += [qb.eq(0), flane.eq(flane + 1)]
                        with m.If(flane + 1 == lnq):
                            m.d.sync += flane.eq(0)
                            m.next = "QG"
            # -- each lane into the g pipeline (one per cycle) once the last beat's max|q| is in
            with m.State("QG"):
                m.d.comb += l_busy.eq(1)
                with m.If(~mx_busy):
                    m.d.comb += g_iss.eq(1)
                    m.d.sync += flane.eq(flane + 1)
                    with m.If(flane + 1 == lnq):
                        m.next = "LHAND"
            with m.State("LHAND"):               # the last g written: hand the call over
                m.d.comb += [l_busy.eq(1), l_hand.eq(q_idle & ~g_busy)]
                with m.If(l_hand):
                    m.d.sync += lbank.eq(~lbank)
                    m.next = "LIDLE"

        # ---- quantiser: all lanes one element per cycle into the q operand bank ``qob``.
        # The operand shift chain is shared with the weight preparation, so a word (beat
        # consecutive elements, each in the chain Q_CHAIN cycles after issue) starts only if it
        # is in the chain before the stream unit's next V segment can shift its first weight
        # (W_CHAIN cycles after its first issue): while the stream unit waits (idle or
        # hand-off), in a V segment or its drain once all its weights are written (the next V
        # segment is at least a K tile of depth >= beat beats away, or follows a take, which
        # waits for this quantiser), or in a K segment with at least KGAP beats left after the
        # current one, each at least a cycle, then a drain of NS + 2 cycles to the V segment's
        # first weight issue (``k_gap``): so with more than ceil(KGAP / bpr) rows left (the
        # current row has >= 1 beat left).
        s_wait = Signal()             # stream unit idle or at the hand-off
        KGAP = k_gap(W)
        thr = Signal(CB + 1)          # rows the streaming call's K segments keep (at the take)
        q_ok = Signal()
        m.d.comb += q_ok.eq(s_wait | (in_v & (rdy == blk_end))
                            | (stream_on & ~in_v & (rleft > thr)))
        with m.FSM(name="quant"):
            with m.State("QIDLE"):
                m.d.comb += q_idle.eq(1)
                with m.If(l_hand):
                    m.d.sync += [qn_.eq(ln), qnq.eq(lnq), cval.eq(lc), cneg.eq(-lc),
                                 qhd.eq(lhd), qrb.eq(lbank), qe.eq(0)]
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
        # o_beat consecutive elements per cycle into the normaliser, with its own copy of 1/L)
        beta = Signal(range(LW + 1))
        dlv = Signal(LW, name="dlv")                # L of lane dl, and L - 1
        dlm1 = Signal(LW, name="dlm1")
        bnz = Signal(name="bnz")                    # L - 1 > 0, and its leading one
        bidx = Signal(range(LW), name="bidx")
        rge = Signal()                              # the 25th step: 1/L rounds up or ties
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
        # normaliser pipeline (every stage advances on ``adv``): issue (el, xc; 1/L and the
        # exponent offset of the lane go along) -> N1 A read -> N2 |A| -> N3, N4 RN32(|A|)
        # (round32) -> N5 the 25 x 25-bit product's DSP parts -> N6 the product -> N7 .. N9
        # RN_fmt (round_fp; N9 is the output register) -> o. With o_beat 2, channels xc and
        # xc + 1 (one word of each accumulator memory) from |A| on in two copies of the
        # datapath; 1/L and the exponent offset are the lane's, shared.
        adv = Signal()
        issue = Signal()
        pn = Pipe(m, adv)
        nv = [issue]
        for k in range(N_LAT):
            nv.append(pn.reg(nv[-1], f"nv{k + 1}"))
        m.d.comb += adv.eq(~nv[N_LAT] | self.o.ready)
        for i in range(NQ):
            for _, _, afp in amems[i]:
                m.d.comb += [afp.addr.eq(acc_addr(xc, xbank)), afp.en.eq(adv)]
        # N1: the lane's A word; 1/L and the result's exponent offset (Y - beta + W_SHIFT - 23,
        # the RN32 significand's and 1/L's binary points)
        xl1 = pn.reg(el, "xl1")
        q1 = pn.reg(oquo, "q1")
        e0 = Signal(signed(10), name="n0_e")
        m.d.comb += e0.eq(Array(xyh)[el] - obeta + (W_SHIFT - F - 23))
        e1 = pn.reg(e0, "e1")
        q2, e2 = pn.reg(q1, "q2"), pn.reg(e1, "e2")
        qm = pn.delay(q2, ROUND32_LATENCY, "qm")
        obits = []
        for j in range(OB):                  # element j of the beat: channel xc + j
            sx = "" if OB == 1 else str(j)
            av = Signal(signed(AW), name=f"n1_a{sx}")
            m.d.comb += av.eq(Array(mm[j][2].data for mm in amems)[xl1])
            neg1, amag1 = abs_signed(m, av)
            # N2: |A|; N3, N4: RN32(|A|) = qa * 2**ea (qa < 2**25, the exponent offset in)
            neg2, amag2 = pn.reg(neg1, f"neg2{sx}"), pn.reg(amag1, f"amag2{sx}")
            qa, ea = round32(pn, amag2, e2)
            negr = pn.delay(neg2, ROUND32_LATENCY, f"negr{sx}")
            # then qa * 1/L (pipe_mul: DSP parts, sum), one rounding to the format (round_fp)
            mm_ = pipe_mul(pn, qa, qm)
            obits.append(round_fp(pn, pn.delay(negr, MUL_LATENCY, f"negm{sx}"), mm_,
                                  pn.delay(ea, MUL_LATENCY, f"em{sx}"), fmt,
                                  stages=ROUND_FP_STAGES))
        m.d.comb += [self.o.valid.eq(nv[N_LAT]), self.o.payload.as_value().eq(Cat(*obits))]

        # ---- stream unit: takes a quantised call, streams its K/V segments, hands the sums
        # to the finishing unit
        stream_busy = Signal()
        m.d.comb += xbusy.eq(d_busy | e_emit)
        m.d.comb += self.busy.eq(l_busy | q_busy | stream_busy | xbusy | Cat(*nv[1:]).any())
        m.d.comb += self.i_kv.ready.eq(stream_on & Mux(in_v, rdy > blk, 1))

        def take_call():
            m.d.comb += take.eq(1)
            m.d.sync += [n.eq(qn_), nact.eq(qnq), hd.eq(qhd), bpr.eq(qbpr), sqb.eq(qob),
                         bcnt.eq(0), seg.eq(0), row.eq(0), rleft.eq(qn_),
                         thr.eq(Array(Const(-(-KGAP // max(b, 1)), CB + 1)
                                      for b in range(BPR + 1))[qbpr])]
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
                            m.d.sync += [bcnt.eq(0), row.eq(row + 1), rleft.eq(rleft - 1)]
                            with m.If(rleft == 1):
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
                            m.d.sync += [seg.eq(2), tile.eq(0), row.eq(0), rleft.eq(D)]
                            with m.If(last_start == 0):
                                m.next = "HANDOFF"
                        with m.Case(2):
                            m.d.sync += [seg.eq(3), *v_seg(tile, tile + D)]
                        with m.Case(3):
                            m.d.sync += [seg.eq(2), tile.eq(tile + D), row.eq(tile + D),
                                         rleft.eq(D)]
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
                    m.d.sync += [xnact.eq(nact), xhd.eq(hd - OB), xbank.eq(cbank),
                                 cbank.eq(~cbank)]
                    m.next = "IDLE"
                    with m.If(q_ready):
                        take_call()

        # ---- finishing unit control
        with m.FSM(name="divider"):
            with m.State("DIDLE"):
                with m.If(xstart):
                    m.d.sync += dl.eq(0)
                    m.next = "DIV_SEL"
            with m.State("DIV_SEL"):                 # the lane's L and L - 1
                m.d.comb += d_busy.eq(1)
                lv = Array(xlsum)[dl]
                m.d.sync += [dlv.eq(lv), dlm1.eq(lv - 1)]
                m.next = "DIV_BL"
            with m.State("DIV_BL"):                  # the leading one of L - 1
                m.d.comb += d_busy.eq(1)
                lnz, lidx = msb_index(m, dlm1)
                m.d.sync += [bnz.eq(lnz), bidx.eq(lidx)]
                m.next = "DIV_NORM"
            with m.State("DIV_NORM"):                # beta = bitlen(L - 1); L normalised to
                m.d.comb += d_busy.eq(1)             # [2**(LW-1), 2**LW]
                nsh = Signal(range(LW + 1), name="nsh")
                m.d.comb += nsh.eq(Mux(bnz, LW - 1 - bidx, LW))
                m.d.sync += [beta.eq(Mux(bnz, bidx + 1, 0)), dn.eq(dlv << nsh),
                             rem.eq(1 << (LW - 1)), quo.eq(0), it.eq(0)]
                m.next = "DIV"
            with m.State("DIV"):
                m.d.comb += d_busy.eq(1)
                r2 = rem << 1
                dif = Signal(LW + 4, name="ddif")    # r2 - dn; the top bit: r2 < dn
                m.d.comb += dif.eq(r2 - dn)
                with m.If(~dif[-1]):
                    m.d.sync += [rem.eq(dif), quo.eq((quo << 1) | 1)]
                with m.Else():
                    m.d.sync += [rem.eq(r2), quo.eq(quo << 1)]
                m.d.sync += it.eq(it + 1)
                with m.If(it == DIV_STEPS - 1):
                    m.next = "DIV_ROUND"
            with m.State("DIV_ROUND"):               # a 25th step for the rounding: up if the
                m.d.comb += d_busy.eq(1)             # remainder is >= dn, on a tie (0 left)
                dif = Signal(LW + 4, name="rdif")    # to even (added at the emitter take)
                m.d.comb += dif.eq((rem << 1) - dn)
                m.d.sync += [rge.eq(~dif[-1]), rem.eq(dif)]
                m.next = "DHOLD"
            with m.State("DHOLD"):                   # 1/L of lane dl ready for the emitter
                m.d.comb += [d_busy.eq(1), d_hold.eq(1)]
                with m.If(e_take):
                    m.d.sync += dl.eq(dl + 1)
                    m.next = "DIV_SEL"
                    with m.If(dl + 1 == xnact):
                        m.next = "DIDLE"

        def emitter_take():
            m.d.comb += e_take.eq(1)
            rup = rge & (rem.any() | quo[0])
            m.d.sync += [oquo.eq(quo + rup), obeta.eq(beta), el.eq(dl), xc.eq(0)]
            m.next = "EMIT"

        with m.FSM(name="emitter"):
            with m.State("EWAIT"):
                with m.If(d_hold):
                    emitter_take()
            with m.State("EMIT"):                    # o_beat elements per cycle into the
                m.d.comb += [issue.eq(1), e_emit.eq(1)]  # normaliser
                with m.If(adv):
                    m.d.sync += xc.eq(xc + OB)
                    with m.If(xc == xhd):
                        m.next = "EWAIT"
                        with m.If(d_hold):
                            emitter_take()
        return m
