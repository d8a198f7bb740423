"""The quantising KV writer: stream-format K/V rows -> an int8 KV cache (codes + row scales).

``KVQuantizer`` quantises each row (one token of one KV head, ``bpr`` beats of ``beat``
stream-format elements) exactly as the golden ``kv_quant_int8``
(sim/golden/attention_hw.py): ``s = RN_fmt(max|x| / 127)``, ``q = clamp(RNE(x / s), -127,
127)``, an all-zero row (or one whose scale underflows) gives ``s = 0`` and ``q = 0``. Its
output beats carry ``beat`` codes in bits [0, 8*beat) and the row's scale in the next
``fmt.bits`` bits (golden ``kv_quant_int8_beats``).

``KVInt8Writer`` stores such beats in the int8 layout of :mod:`tellme.spec.kv_layout` (K rows
padded to the integer engine's beats, V codes channel-major in blocks of the engine's beat,
both row scales of a key in its K block's header) with single-beat AXI4 writes;
``KVQuantWriter`` is the two in series (command + stream-format rows in, AXI4 writes out),
and ``KVInt8Reader`` (hw/attention/kv_dma.py) reads the result into the integer engine.
docs/hw/attention.md, "Quantising writer", has the rates, the exactness argument and the area.

Exactness (tests/rtl/test_kv_quant.py checks both methods against ``kv_quant_int8``: the
scale over every FP16 and FP24 magnitude, the codes over every consistent FP16 (x, s) pair):

* scale: ``amax = sig * 2**(sh - F)``; ``Q = floor(sig * 2**P / 127)`` with P = 8 by long
  division in base 128 (128 = 1 mod 127, so a digit is the remainder plus a carry: one 8-bit
  add per digit), sticky = remainder != 0; ``round_fp`` of ``(2Q + sticky) * 2**(sh - F - P -
  1)``. No rounding boundary of the format lies strictly between Q and Q + 1 (the result's ulp
  is at least 2 units of Q: Q has at least ``sig_bits + 1`` bits for a normal amax, and a
  subnormal amax gives a subnormal scale whose ulp is 2**P units), so the surrogate rounds as
  the exact quotient.
* codes: ``2x/s = sig_x * 2**D / sig_s`` with ``D = sh_x - sh_s + 1``; ``A = floor(sig_x *
  2**D)`` (one shift; the bits shifted out are a sticky bit), ``Q2 = floor(A / sig_s)`` by 9
  division steps (``|x| <= amax < 190.5 s`` for every row, subnormal scales included, so
  ``Q2 < 381 < 2**9``), sticky = remainder or shifted-out bits; then ``RNE(x/s) = (Q2 >> 1) +
  (Q2[0] & (sticky | Q2[1]))``, clamped at 127. Integer division with its remainder: exact by
  construction. (``round_int8`` of stream_fp is not used here: the binary point is fixed, its
  clamp is -128, and its variable shifter would be built for a constant exponent.)
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import C, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.numerics import StreamFormat, stream_format
from tellme.spec.targets import TARGETS

from ..elementwise.stream_fp import (
    ROUND_FP_LATENCY,
    ROUND_FP_STAGES,
    Pipe,
    ceil_log2,
    mag_max,
    round_fp,
    unpack,
    wire,
)

__all__ = ["KVQuantizer", "KVInt8Writer", "KVQuantWriter", "KV_QUANT_PRESETS", "SCALE_P",
           "max_stages", "quant_write_layout", "quant_writer_commands", "scale_bits_int",
           "codes_int", "make_kv_quant", "report_blocks", "writer_transactions"]

SCALE_P = 8            # fraction bits of the quotient amax / 127 (exhaustively enough: tests)
Q_STEPS = 9            # division steps of a code: 2x/s < 381 < 2**9
Q_STEPS_PER_STAGE = 2  # of them per pipeline stage

# The quantiser's preset per target is the target table's ``kv_quant`` (spec/targets.py says
# why: beat, lanes, max_head_dim); this is a view of it by target name.
KV_QUANT_PRESETS = {name: tg.kv_quant for name, tg in TARGETS.items()}


def _format(fmt) -> StreamFormat:
    fmt = stream_format(fmt)
    if not isinstance(fmt, StreamFormat) or fmt.bits % 8:
        raise TypeError(f"fmt must be a StreamFormat of whole bytes (FP16, FP24), not {fmt!r}")
    return fmt


def _silenced(init):
    """Run a constructor body; an argument error leaves no 'unused component' warning."""
    def wrapper(self, **kw):
        try:
            init(self, **kw)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
    wrapper.__doc__ = init.__doc__
    return wrapper


# --------------------------------------------------------------------------- integer models

def _fields(bits, fmt):
    u = np.asarray(bits, dtype=np.int64)
    e = (u >> fmt.man) & 0x1F
    f = u & ((1 << fmt.man) - 1)
    return (u >> (fmt.bits - 1)) & 1, np.where(e > 0, f | (1 << fmt.man), f), \
        np.where(e > 0, e - 1, 0)


def scale_bits_int(amax_bits, fmt: StreamFormat | None = None) -> np.ndarray:
    """The hardware's scale method on magnitude codes ``amax_bits``: ``Q = floor(sig * 2**P /
    127)``, sticky, one RN_fmt of ``(2Q + sticky) * 2**(sh - F - P - 1)`` (``fmt.round`` of
    that exact value stands for ``round_fp``). Returns the scale's bit patterns."""
    fmt = _format(fmt)
    _, sig, sh = _fields(amax_bits, fmt)
    n = sig << SCALE_P
    mag = ((n // 127) << 1) | (n % 127 != 0)
    return fmt.to_bits(fmt.round(np.ldexp(mag.astype(np.float64),
                                          sh - fmt.frac - SCALE_P - 1)))


def codes_int(x_bits, s_bits, fmt: StreamFormat | None = None) -> np.ndarray:
    """The hardware's code method: ``x_bits`` element codes, ``s_bits`` the row scale codes
    (broadcast); returns int8 codes (0 where ``s`` is 0). See the module docstring."""
    fmt = _format(fmt)
    sx, gx, hx = _fields(x_bits, fmt)
    _, gs, hs = _fields(s_bits, fmt)
    d = hx - hs + 1
    a = np.where(d >= 0, gx << np.clip(d, 0, 62), gx >> np.clip(-d, 0, 62))
    lost = np.where(d >= 0, 0, gx & ((1 << np.clip(-d, 0, 62)) - 1)) != 0
    safe = np.where(gs > 0, gs, 1)
    q2, rem = a // safe, a % safe
    if np.any((gs > 0) & (q2 >= 1 << Q_STEPS)):
        raise ValueError("2x/s >= 512: |x| > amax of the row")
    st = (rem != 0) | lost
    qi, rnd = q2 >> 1, q2 & 1
    q = np.minimum(qi + (rnd & (st | (qi & 1))), 127)
    return np.where(gs > 0, np.where(sx == 1, -q, q), 0).astype(np.int8)


# --------------------------------------------------------------------------- quantiser

class KVQuantizer(wiring.Component):
    """Per-row int8 quantiser of K/V rows (``kv_quant_int8``, bit-exact).

    Parameters: ``beat`` (elements per beat, in and out), ``lanes`` (codes computed per
    cycle; divides ``beat``), ``max_head_dim`` (multiple of ``beat``; a bank holds one row),
    ``fmt`` (stream format, default ``STREAM_FORMAT``).

    Ports
    -----
    bpr  : In(8)  beats per row (run-time head_dim / beat, >= 1); change it only while idle.
    i    : In(stream ArrayLayout(unsigned(fmt.bits), beat))  the rows back to back, ``bpr``
           beats each, element 0 in the low bits.
    o    : Out(stream ArrayLayout(unsigned(fmt.bits), beat))  one int8 beat per input
           beat: codes (two's complement bytes, code 0 lowest) in bits [0, 8*beat), the row's
           scale (``fmt``, sign 0) in the next ``fmt.bits`` bits, zeros above.
    busy : Out(1)  a row is held (in, being scaled or out).

    Structure: two row banks (a ``2 * max_head_dim / beat`` x ``beat * fmt.bits`` memory,
    LUTRAM). In: one beat per cycle into the free bank; the row's max magnitude follows in a
    comparator tree (``mag_max`` levels, a register after every second: ``max_stages(beat)``
    cycles) and a running max. Scale: once the row's max is in, its significand times 2**8 is
    divided by 127 one base-128 digit per cycle (128 = 1 mod 127: digit = r + c, remainder
    r + d - 127c, c = [r + d >= 127]) and rounded by ``round_fp``; the row is ready
    ``scale_cycles(fmt)`` cycles after the scale unit starts (FP24 12, FP16 11: ``round_fp``
    in 4 stages of one cycle, its inputs held :attr:`ROUND_HOLD` (6) cycles). Out: ``lanes``
    elements per cycle from the bank through a global-stall pipeline of :attr:`LATENCY` (11)
    stages: read, lane select, unpack and shift amount, shift, 9 non-restoring division steps
    (2 per stage), round and clamp, beat register (sign applied). The next row streams into
    the other bank meanwhile.

    Latency (empty block, no stalls): the first code beat ``bpr + max_stages(beat) +
    scale_cycles(fmt) + beat/lanes - 1 + LATENCY`` cycles after the row's first input beat.
    Throughput: a row every ``max(bpr*beat/lanes, scale_cycles, (bpr*(beat/lanes + 1) +
    max_stages + scale_cycles + LATENCY) / 2)`` cycles for a run of equal rows (a bank is
    refilled only after its row has left): ``lanes`` codes per cycle for head_dim 96 and 128
    at beat 8, 2 lanes (48 and 64 cycles per row). ``sim/cycles_kv_quant.py`` is the exact
    model at zero stalls. Backpressure: ``o.ready`` low stalls the out pipeline; ``i`` stalls
    only while both banks hold rows.
    """

    @_silenced
    def __init__(self, *, beat: int = 4, lanes: int = 2, max_head_dim: int = 16,
                 fmt: StreamFormat | None = None):
        self.fmt = fmt = _format(fmt)
        if not isinstance(beat, int) or beat < 2 or 8 * beat + fmt.bits > fmt.bits * beat:
            raise ValueError(f"beat {beat!r}: {beat} int8 codes and a {fmt.name} scale must "
                             f"fit one beat of {beat} {fmt.name} elements")
        if not isinstance(lanes, int) or lanes < 1 or beat % lanes:
            raise ValueError(f"lanes {lanes!r} must divide the beat {beat}")
        if max_head_dim < beat or max_head_dim % beat:
            raise ValueError(f"max_head_dim {max_head_dim} is not a multiple of beat {beat}")
        if max_head_dim // beat > 255:
            raise ValueError(f"max_head_dim / beat = {max_head_dim // beat} > 255 beats per row")
        self.beat, self.lanes, self.max_head_dim = beat, lanes, max_head_dim
        lay = data.ArrayLayout(unsigned(fmt.bits), beat)
        super().__init__({
            "bpr": In(8),
            "i": In(stream.Signature(lay)),
            "o": Out(stream.Signature(lay)),
            "busy": Out(1),
        })

    # out pipeline from a lane group's issue to its beat on ``o``: read, lane select, unpack,
    # shift, division, round, beat register
    LATENCY = 4 + -(-Q_STEPS // Q_STEPS_PER_STAGE) + 2
    # cycles the scale's round_fp inputs are held: its 4 stages (ROUND_FP_STAGES) and 2 more,
    # the hold of the former 3-stage round_fp at two cycles per stage (the scale's timing kept)
    ROUND_HOLD = 2 * ROUND_FP_LATENCY

    def max_stages(self) -> int:
        """Cycles from a beat's transfer to the running max including it (extra registers
        of the comparator tree: ceil_log2(beat) levels and the running max, two per stage)."""
        return max_stages(self.beat)

    @staticmethod
    def scale_cycles(fmt: StreamFormat | None = None) -> int:
        """Cycles from the scale unit's start (the cycle after the row's max is in) to the row
        being ready to send: base-128 digits of sig * 2**8, ``round_fp`` with its inputs held
        for :attr:`ROUND_HOLD` cycles, capture."""
        s = _format(fmt).sig_bits
        return -(-(s + SCALE_P) // 7) + KVQuantizer.ROUND_HOLD + 2

    def elaborate(self, platform):
        m = Module()
        fmt = self.fmt
        W, L = self.beat, self.lanes
        G = W // L
        B, NB, S, F = fmt.bits, fmt.bits - 1, fmt.sig_bits, fmt.frac
        MB = self.max_head_dim // W
        m.submodules.mem = mem = memory.Memory(shape=unsigned(W * B), depth=2 * MB, init=[])
        wp = mem.write_port()
        rp = mem.read_port()

        def bank_bit(b):
            return Mux(b, C(2, 2), C(1, 2))

        # per bank: full (row in or being stored), have (its max is in), scaled, issued
        flags = {n: Signal(2, name=n) for n in ("full", "have", "scaled", "issued")}
        sets = {n: Signal(2, name=f"{n}_set") for n in flags}
        clr = Signal(2)
        for n, f in flags.items():
            m.d.sync += f.eq((f & ~clr) | sets[n])
        full, have, scaled, issued = (flags[n] for n in ("full", "have", "scaled", "issued"))
        amax = [Signal(NB, name=f"amax{b}") for b in range(2)]
        scale = [Signal(NB, name=f"scale{b}") for b in range(2)]

        # ---- in: one beat per cycle into the free bank
        wbank = Signal()
        wcol = Signal(8)
        take = Signal()
        row_in = Signal()
        m.d.comb += [
            self.i.ready.eq(~full.bit_select(wbank, 1)),
            take.eq(self.i.valid & self.i.ready),
            row_in.eq(wcol == self.bpr - 1),
            wp.addr.eq(Mux(wbank, MB + wcol, wcol)),
            wp.data.eq(self.i.payload.as_value()),
            wp.en.eq(take),
            sets["full"].eq(Mux(take & row_in, bank_bit(wbank), 0)),
        ]
        with m.If(take):
            with m.If(row_in):
                m.d.sync += [wcol.eq(0), wbank.eq(~wbank)]
            with m.Else():
                m.d.sync += wcol.eq(wcol + 1)
        # the row's max: comparator tree (mag_max per level), then the running max; a register
        # after every second level
        vals = [self.i.payload[k] for k in range(W)]
        mt = dict(v=take, first=wcol == 0, last=take & row_in, b=wbank)
        run = Signal(NB)
        levels = ceil_log2(W)
        for lv in range(levels):
            vals = [wire(m, mag_max(vals[j:j + 2], fmt), f"mx{lv}_{j // 2}")
                    for j in range(0, len(vals), 2)]
            if lv % 2 == 1:
                vals = [self._reg(m, v, f"mr{lv}_{j}") for j, v in enumerate(vals)]
                mt = {n: self._reg(m, v, f"mt{lv}_{n}") for n, v in mt.items()}
        bmax = Value.cast(vals[0])[:NB]
        newmax = wire(m, Mux(mt["first"] | (bmax > run), bmax, run), "newmax")
        with m.If(mt["v"]):
            m.d.sync += run.eq(newmax)
            with m.If(mt["last"]):
                for b in range(2):
                    with m.If(mt["b"] == b):
                        m.d.sync += amax[b].eq(newmax)
        m.d.comb += sets["have"].eq(Mux(mt["last"], bank_bit(mt["b"]), 0))

        # ---- scale: Q = floor(sig * 2**P / 127), one base-128 digit per cycle; round_fp in
        # its 4 single-cycle stages (ROUND_FP_STAGES), inputs held for RL cycles
        RL = self.ROUND_HOLD
        assert RL >= ROUND_FP_STAGES
        ndig = -(-(S + SCALE_P) // 7)
        sbank = Signal()
        nreg, qreg = Signal(7 * ndig), Signal(7 * ndig)
        rreg = Signal(7)
        shreg = Signal(5)
        scnt = Signal(range(ndig + RL + 2))
        _, sig_a, sh_a = unpack(Cat(Mux(sbank, amax[1], amax[0]), C(0, 1)), fmt)
        start = wire(m, (scnt == 0) & have.bit_select(sbank, 1) & ~scaled.bit_select(sbank, 1),
                     "s_start")
        dsum = wire(m, rreg + nreg[-7:], "s_sum")                 # r + d < 254
        carry = wire(m, dsum[7] | (dsum[:7] == 127), "s_c")     # r + d >= 127
        with m.If(start):
            m.d.sync += [nreg.eq(sig_a << SCALE_P), qreg.eq(0), rreg.eq(0), shreg.eq(sh_a),
                         scnt.eq(ndig + RL + 1)]
        with m.Elif(scnt != 0):
            m.d.sync += scnt.eq(scnt - 1)
            with m.If(scnt > RL + 1):
                m.d.sync += [nreg.eq(nreg << 7), qreg.eq(Cat((rreg + carry)[:7], qreg)),
                             rreg.eq((dsum[:7] + carry)[:7])]
        sp = Pipe(m, C(1, 1))     # free-running; its inputs are held
        s_new = round_fp(sp, C(0, 1), Cat(rreg != 0, qreg),
                         shreg + C(-(F + SCALE_P + 1), signed(8)), fmt, stages=ROUND_FP_STAGES)
        with m.If(scnt == 1):
            m.d.sync += sbank.eq(~sbank)
            for b in range(2):
                with m.If(sbank == b):
                    m.d.sync += scale[b].eq(s_new[:NB])
        m.d.comb += sets["scaled"].eq(Mux(scnt == 1, bank_bit(sbank), 0))

        # ---- out: issue (bank, beat, lane group) tokens; global-stall pipeline
        en = Signal()
        rbank = Signal()
        rcol = Signal(8)
        rg = Signal(range(max(G, 2)))
        issue = Signal()
        lastg = wire(m, rg == G - 1, "lastg")
        lastcol = wire(m, rcol == self.bpr - 1, "lastcol")
        m.d.comb += [
            en.eq(~self.o.valid | self.o.ready),
            issue.eq(en & scaled.bit_select(rbank, 1) & ~issued.bit_select(rbank, 1)),
            rp.addr.eq(Mux(rbank, MB + rcol, rcol)),
            rp.en.eq(en),
            sets["issued"].eq(Mux(issue & lastg & lastcol, bank_bit(rbank), 0)),
        ]
        with m.If(issue):
            with m.If(lastg):
                m.d.sync += rg.eq(0)
                with m.If(lastcol):
                    m.d.sync += [rcol.eq(0), rbank.eq(~rbank)]
                with m.Else():
                    m.d.sync += rcol.eq(rcol + 1)
            with m.Else():
                m.d.sync += rg.eq(rg + 1)

        p = Pipe(m, en)

        def regs(d, stage):
            return {n: p.reg(v, f"t{stage}_{n}") for n, v in d.items()}

        # stage 1: the read word and the token
        meta = regs(dict(v=issue, g=rg, lg=lastg, lr=lastg & lastcol, b=rbank), 1)
        word = rp.data
        # stage 2: this group's elements; the row's scale fields
        s_sel = wire(m, Mux(meta["b"], scale[1], scale[0]), "s_sel")
        _, sig_s, sh_s = unpack(Cat(s_sel, C(0, 1)), fmt)
        els = [word.word_select(meta["g"] * L + ln, B) if G > 1 else word[ln * B:(ln + 1) * B]
               for ln in range(L)]
        lanes = [dict(x=p.reg(e, f"t2_x{ln}")) for ln, e in enumerate(els)]
        meta = regs(dict(meta, z=s_sel == 0, d=sig_s, nd=-sig_s, hs=sh_s + (S + 8)), 2)
        # stage 3: unpack; shift amount k = S + 9 - D = (S + 8 + sh_s) - sh_x, D = sh_x - sh_s
        # + 1: 1 <= k <= S + 38 for a consistent row (below 0 only if |x| > amax); k >= 2S + 9
        # shifts all of sig << (S + 9) out
        kbits = ceil_log2(S + 39)
        for ln, t in enumerate(lanes):
            sx, gx, hx = unpack(t["x"], fmt)
            k = wire(m, meta["hs"] - hx, f"k{ln}")
            kc = Mux(k[-1], 0, k[:kbits])
            t.update(s=p.reg(sx, f"t3_s{ln}"), g=p.reg(gx, f"t3_g{ln}"), k=p.reg(kc, f"t3_k{ln}"))
        meta = regs(meta, 3)
        # stage 4: A = floor(sig_x * 2**D) (S + 9 bits: 2x/s < 381), sticky of the bits lost
        for ln, t in enumerate(lanes):
            a = wire(m, (Cat(C(0, S + 9), t["g"]) >> t["k"])[:S + 9], f"a{ln}")
            # bit i of sig_x is shifted out iff i + S + 9 < k (a constant compare per bit)
            lost = Cat(*(t["g"][i] & (t["k"] > i + S + 9) for i in range(S))).any()
            t.update(a=p.reg(a, f"t4_a{ln}"), st=p.reg(lost, f"t4_st{ln}"),
                     s=p.reg(t["s"], f"t4_s{ln}"))
        meta = regs(meta, 4)
        # stages 5..: Q2 = floor(A / sig_s) by non-restoring steps (quotient bits and the
        # remainder as restoring division's); w: the partial remainder's top, signed
        for t in lanes:
            t["w"] = Cat(t["a"][Q_STEPS - 1:], C(0, 1)).as_signed()   # A >> 8, < 2 sig_s
            t["q"] = C(0, 0)
        stage = 5
        step = Q_STEPS - 1
        while step >= 0:
            for _ in range(min(Q_STEPS_PER_STAGE, step + 1)):
                for ln, t in enumerate(lanes):
                    w = t["w"]
                    if step < Q_STEPS - 1:
                        w = Cat(t["a"][step], w).as_signed()    # 2w + a_step
                    # one adder: w + (d ^ m) + c with m, c = ~sign (subtract when w >= 0)
                    sub = ~w[-1]
                    dx = Cat(meta["d"], C(0, 2)) ^ sub.replicate(S + 2)
                    w = wire(m, ((Cat(C(1, 1), w[:S + 2]) + Cat(sub, dx)) >> 1)[:S + 2]
                             .as_signed(), f"w{step}_{ln}")
                    t["w"] = w
                    t["q"] = Cat(~w[-1], t["q"])
                step -= 1
            for ln, t in enumerate(lanes):
                t.update(w=p.reg(t["w"], f"t{stage}_w{ln}"), q=p.reg(t["q"], f"t{stage}_q{ln}"),
                         st=p.reg(t["st"], f"t{stage}_st{ln}"), s=p.reg(t["s"], f"t{stage}_s{ln}"))
                if step >= 0:
                    t["a"] = p.reg(t["a"][:step + 1], f"t{stage}_a{ln}")
            meta = regs(meta, stage)
            stage += 1
        # round: 2x/s = Q2 + f with f in [0, 1): RNE(x/s) = Q2 >> 1 plus Q2[0] & (f != 0 or
        # Q2[1]); clamp at 127
        for ln, t in enumerate(lanes):
            rem = (t["w"] != 0) & (t["w"] != meta["nd"])        # remainder != 0
            q2 = t["q"]
            qi = wire(m, (q2 >> 1) + (q2[0] & (rem | t["st"] | q2[1])), f"qi{ln}")
            t.update(mag=p.reg(Mux(qi > 127, 127, qi)[:7], f"t{stage}_m{ln}"),
                     s=p.reg(t["s"], f"t{stage}_s{ln}"))
        meta = regs(meta, stage)
        # beat register: lane group g of the beat, sign applied; the beat leaves with its last
        codes = [Mux(meta["z"], 0, Mux(t["s"], -t["mag"], t["mag"]))[:8] for t in lanes]
        obuf = Signal(8 * W)
        o_bank, o_last = Signal(), Signal()
        with m.If(en):
            m.d.sync += self.o.valid.eq(meta["v"] & meta["lg"])
            with m.If(meta["v"]):
                m.d.sync += [o_bank.eq(meta["b"]), o_last.eq(meta["lr"])]
                for g in range(G):
                    with m.If(meta["g"] == g):
                        m.d.sync += obuf[8 * L * g:8 * L * (g + 1)].eq(Cat(*codes))
        m.d.comb += [
            self.o.payload.as_value().eq(Cat(obuf, Mux(o_bank, scale[1], scale[0]), C(0, 1))),
            clr.eq(Mux(self.o.valid & self.o.ready & o_last, bank_bit(o_bank), 0)),
            self.busy.eq((full != 0) | (wcol != 0)),
        ]
        return m

    @staticmethod
    def _reg(m, value, name):
        """A free-running register (the max tree runs without stalls)."""
        value = Value.cast(value)
        s = Signal(value.shape(), name=name)
        m.d.sync += s.eq(value)
        return s


def max_stages(beat: int) -> int:
    """Registers between a beat's transfer and the running max update: the comparator tree
    (ceil_log2(beat) levels) has a register after every second level."""
    return ceil_log2(beat) // 2


# --------------------------------------------------------------------------- int8 writer

def quant_write_layout(addr_width: int, count_width: int, kv_beat: int = 4
                       ) -> data.StructLayout:
    """One command per (kind, KV head) of a prefill block or decode step: ``kind`` 0 K, 1 V;
    ``addr``: K: byte address of the first key's (padded) K row, V: of its channel-0 V code;
    ``saddr``: byte address of the first key's scale pair (its K block's header); ``key``: the
    first key's index in its block (position mod ``kv_beat``); ``rows``: keys that follow
    (>= 1); ``bpr``: input beats per row (head_dim / beat)."""
    return data.StructLayout({"kind": unsigned(1), "addr": unsigned(addr_width),
                              "saddr": unsigned(addr_width),
                              "key": unsigned(max(1, (kv_beat - 1).bit_length())),
                              "rows": unsigned(count_width), "bpr": unsigned(8)})


def quant_writer_commands(layout, layer: int, start: int, count: int, beat: int) -> list[dict]:
    """Commands storing keys ``start .. start+count-1`` of every KV head of ``layer`` in an int8
    ``layout`` (kind K then V, then KV head, as ``writer_commands``); the row stream carries
    those rows in the same order, ``bpr = head_dim / beat`` beats each (``beat``: the
    quantiser's)."""
    if layout.dtype != "int8":
        raise ValueError(f"the quantising writer stores int8 layouts, not {layout.dtype!r}")
    if layout.head_dim % beat:
        raise ValueError(f"head_dim {layout.head_dim} is not a multiple of the beat {beat}")
    if layout.beat % beat:
        raise ValueError(f"the layout's beat {layout.beat} is not a multiple of the beat {beat}")
    if count < 1 or start < 0 or start + count > layout.max_ctx:
        raise ValueError(f"rows {start}..{start + count - 1} outside the KV cache "
                         f"(max_ctx {layout.max_ctx})")
    return [dict(kind=int(kind == "V"),
                 addr=(layout.row_addr(layer, "K", h, start) if kind == "K"
                       else layout.v_addr(layer, h, start, 0)),
                 saddr=layout.scale_addr(layer, "K", h, start), key=start % layout.beat,
                 rows=count, bpr=layout.head_dim // beat)
            for kind in ("K", "V") for h in range(layout.num_kv_heads)]


def writer_transactions(kind: str, rows: int, *, head_dim: int, beat: int,
                        kv_beat: int) -> int:
    """AXI writes (one beat each) :class:`KVInt8Writer` issues for a command: per K row its
    padded row in ``beat``-byte pieces and the K scale, per V row one per code and the V
    scale. At one write per cycle this is the writer's cycle count when neither the
    quantiser nor the port holds it back."""
    bpr_e = -(-head_dim // kv_beat)
    per_row = bpr_e * kv_beat // beat + 1 if kind == "K" else head_dim + 1
    return rows * per_row


class KVInt8Writer(wiring.Component):
    """AXI4 writer of the int8 KV layout: int8 beats (codes + row scale) -> K rows, V codes
    and scale pairs at the addresses of :mod:`tellme.spec.kv_layout`.

    Parameters: ``beat`` (codes per input beat: the quantiser's, a power of two >= 2),
    ``kv_beat`` (the layout's and the integer engine's beat, a multiple of ``beat``), ``fmt``
    (scale format), ``data_width`` (128 or 256), ``addr_width``, ``count_width`` (rows per
    command), ``max_outstanding`` (writes awaiting B).

    Ports
    -----
    i_cmd : In(stream quant_write_layout)  (``quant_writer_commands``) accepted when idle.
    i     : In(stream ArrayLayout(unsigned(fmt.bits), beat))  int8 beats (the quantiser's
            ``o``): ``rows * bpr`` of them; a row's scale is taken from its last beat.
    busy, done (one-cycle pulse after the command's last B), error (sticky non-OKAY B).
    m_axi_aw* / m_axi_w* / m_axi_b*  AXI4 write channels, single-beat writes (``awlen`` 0,
            ``awsize`` the bus width), bytes selected by ``wstrb``, ids 0.

    Every write is one AXI beat: the data is the piece replicated over the bus (so no byte
    shifter) and ``wstrb`` selects its bytes. Per K row: ``bpr`` input beats to the row's
    ``beat``-byte pieces, zeros for the rest of the padded row (``ceil(hd / kv_beat) *
    kv_beat`` bytes), then the K scale into the key's header pair (bytes [0, s)). Per V row:
    each code to its channel's byte (``kv_beat`` bytes apart: one write per code), then the V
    scale and the pair's zero padding (bytes [s, pair)). Addresses advance per row by the
    row / pair / byte step, and at a block boundary by the block's (run-time head_dim).

    Rate: one write per cycle (``writer_transactions``) while ``max_outstanding`` writes
    cover the write-response latency: a K row of head_dim 128 takes 17 writes at the kv260
    beat 8 (under the quantiser's 64 cycles per row), a V row 129 (above them: the V codes
    are ``kv_beat`` bytes apart, one write each). Whole-block writes (a block buffer of
    ``kv_beat * head_dim`` bytes, 8 KiB at kv260) would give V full bursts in prefill but
    not in decode (one key per step), so they are not built: docs/hw/attention.md,
    "Quantising writer". Backpressure: ``wready`` / ``awready`` low or ``max_outstanding``
    reached stalls ``i``.
    """

    @_silenced
    def __init__(self, *, beat: int = 4, kv_beat: int = 4, data_width: int = 128,
                 addr_width: int = 40, count_width: int = 20, max_outstanding: int = 16,
                 fmt: StreamFormat | None = None):
        self.fmt = fmt = _format(fmt)
        if not isinstance(beat, int) or beat < 2 or beat & (beat - 1) or \
                8 * beat + fmt.bits > fmt.bits * beat:
            raise ValueError(f"beat {beat!r} must be a power of two >= 2 and hold {beat} codes"
                             f" and a {fmt.name} scale")
        if not isinstance(kv_beat, int) or kv_beat < beat or kv_beat % beat or \
                kv_beat & (kv_beat - 1):
            raise ValueError(f"kv_beat {kv_beat!r} must be a power of two multiple of the "
                             f"beat {beat}")
        if data_width not in (128, 256) or 8 * beat > data_width:
            raise ValueError(f"data_width {data_width!r} must be 128 or 256 and hold a beat")
        if not isinstance(max_outstanding, int) or max_outstanding < 1:
            raise ValueError(f"max_outstanding must be >= 1, not {max_outstanding!r}")
        self.beat, self.kv_beat, self.count_width = beat, kv_beat, count_width
        self.data_width, self.addr_width, self.max_outstanding = data_width, addr_width, \
            max_outstanding
        aw = addr_width
        super().__init__({
            "i_cmd": In(stream.Signature(quant_write_layout(aw, count_width, kv_beat))),
            "i": In(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), beat))),
            "busy": Out(1), "done": Out(1), "error": Out(1),
            "m_axi_awid": Out(1), "m_axi_awaddr": Out(aw), "m_axi_awlen": Out(8),
            "m_axi_awsize": Out(3), "m_axi_awburst": Out(2), "m_axi_awlock": Out(1),
            "m_axi_awcache": Out(4), "m_axi_awprot": Out(3), "m_axi_awqos": Out(4),
            "m_axi_awvalid": Out(1), "m_axi_awready": In(1),
            "m_axi_wdata": Out(data_width), "m_axi_wstrb": Out(data_width // 8),
            "m_axi_wlast": Out(1), "m_axi_wvalid": Out(1), "m_axi_wready": In(1),
            "m_axi_bid": In(1), "m_axi_bresp": In(2), "m_axi_bvalid": In(1),
            "m_axi_bready": Out(1),
        })

    def elaborate(self, platform):
        from tellme.spec.kv_layout import KVLayout

        m = Module()
        Q, B, EB = self.beat, self.kv_beat, self.fmt.bits
        lq, lb = Q.bit_length() - 1, B.bit_length() - 1
        NB = self.data_width // 8
        lnb = NB.bit_length() - 1
        lay = KVLayout(1, 1, 1, 1, dtype="int8", fmt=self.fmt, beat=B)
        sb, pair, khdr = EB // 8, lay.pair_bytes, lay.k_header_bytes
        AW, MO = self.addr_width, self.max_outstanding

        # ---- command registers and the run-time geometry
        c = self.i_cmd.payload
        kind = Signal()
        addr, saddr = Signal(AW), Signal(AW)     # current row (K) / channel-0 code (V); pair
        key = Signal(lb)                         # key in its block
        left = Signal(self.count_width)
        bpr = Signal(8)
        nch = Signal(8 + lb)                     # writes of a padded K row
        row_wrap = Signal(AW)                    # address steps at a block boundary
        pair_wrap = Signal(AW)
        v_wrap = Signal(AW)
        hd = c.bpr << lq
        bpr_e = (hd + B - 1) >> lb
        kblock = (khdr + (bpr_e << 2 * lb) + 63) >> 6 << 6
        vblock = ((hd << lb) + 63) >> 6 << 6
        st = Signal(range(3))                    # 0 data, 1 pad (K), 2 scale
        busy_cmd = Signal()
        accept = Signal()
        m.d.comb += [self.i_cmd.ready.eq(~self.busy),
                     accept.eq(self.i_cmd.valid & self.i_cmd.ready)]
        with m.If(accept):
            m.d.sync += [kind.eq(c.kind), addr.eq(c.addr), saddr.eq(c.saddr), key.eq(c.key),
                         left.eq(c.rows), bpr.eq(c.bpr), nch.eq(bpr_e << (lb - lq)),
                         row_wrap.eq(kblock - (bpr_e << 2 * lb) + (bpr_e << lb)),
                         pair_wrap.eq(kblock - (B - 1) * pair),
                         v_wrap.eq(vblock - (B - 1)), busy_cmd.eq(c.rows != 0), st.eq(0)]

        # ---- one write per cycle: AW and W loaded together
        i_cnt = Signal(8 + lb)                   # K: piece of the row; V: input beat
        k_cnt = Signal(range(Q))                 # V: code of the beat
        wptr = Signal(AW)                        # address of this piece / code
        srow = Signal(EB)                        # the row's scale
        outstanding = Signal(range(MO + 1))
        b_fire = Signal()
        free = Signal()
        can = Signal()
        issue = Signal()
        in_data = Signal()
        m.d.comb += [
            self.m_axi_bready.eq(1), b_fire.eq(self.m_axi_bvalid),
            free.eq((~self.m_axi_awvalid | self.m_axi_awready)
                    & (~self.m_axi_wvalid | self.m_axi_wready)),
            can.eq(busy_cmd & free & (outstanding < MO)),
            in_data.eq(st == 0),
            self.i.ready.eq(can & in_data & (~kind | (k_cnt == Q - 1))),
            issue.eq(can & (~in_data | self.i.valid)),
        ]
        m.d.sync += outstanding.eq(outstanding + issue - b_fire)
        with m.If(b_fire & (self.m_axi_bresp != 0)):
            m.d.sync += self.error.eq(1)

        codes = self.i.payload.as_value()[:8 * Q]
        scale_in = self.i.payload.as_value()[8 * Q:8 * Q + EB]
        slot = Cat(srow, srow, C(0, 8 * pair - 2 * EB))
        kdata = Mux(in_data, codes, 0)
        vcode = codes.word_select(k_cnt, 8)
        waddr = Mux(st == 2, saddr, wptr)
        wdata = Mux(st == 2, slot.replicate(NB // pair),
                    Mux(kind, vcode.replicate(NB), kdata.replicate(NB // Q)))
        smask = Mux(kind, C(((1 << (pair - sb)) - 1) << sb, NB), C((1 << sb) - 1, NB))
        wstrb = Mux(st == 2, smask,
                    Mux(kind, C(1, NB), C((1 << Q) - 1, NB))) << waddr[:lnb]
        with m.If(self.m_axi_awready):
            m.d.sync += self.m_axi_awvalid.eq(0)
        with m.If(self.m_axi_wready):
            m.d.sync += self.m_axi_wvalid.eq(0)
        with m.If(issue):
            m.d.sync += [self.m_axi_awvalid.eq(1), self.m_axi_wvalid.eq(1),
                         self.m_axi_awaddr.eq(Cat(C(0, lnb), waddr[lnb:])),
                         self.m_axi_wdata.eq(wdata), self.m_axi_wstrb.eq(wstrb[:NB])]
        m.d.comb += [self.m_axi_awsize.eq(lnb), self.m_axi_awburst.eq(1),
                     self.m_axi_awcache.eq(0b0011), self.m_axi_wlast.eq(1)]

        # ---- walk: pieces / codes of a row, its scale, then the next row
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        last_beat = i_cnt == bpr - 1
        with m.If(take & last_beat & Mux(kind, k_cnt == Q - 1, 1)):
            m.d.sync += srow.eq(scale_in)
        wrap = key == B - 1
        with m.If(accept):
            m.d.sync += [i_cnt.eq(0), k_cnt.eq(0), wptr.eq(c.addr)]
        with m.Elif(issue):
            with m.Switch(st):
                with m.Case(0):
                    with m.If(kind):
                        m.d.sync += [wptr.eq(wptr + B), k_cnt.eq(k_cnt + 1)]
                        with m.If(k_cnt == Q - 1):
                            m.d.sync += [k_cnt.eq(0), i_cnt.eq(i_cnt + 1)]
                            with m.If(last_beat):
                                m.d.sync += st.eq(2)
                    with m.Else():
                        m.d.sync += [wptr.eq(wptr + Q), i_cnt.eq(i_cnt + 1)]
                        with m.If(last_beat):
                            m.d.sync += st.eq(Mux(i_cnt == nch - 1, 2, 1))
                with m.Case(1):
                    m.d.sync += [wptr.eq(wptr + Q), i_cnt.eq(i_cnt + 1)]
                    with m.If(i_cnt == nch - 1):
                        m.d.sync += st.eq(2)
                with m.Case(2):          # the row is done: next row's addresses
                    step = Mux(kind, Mux(wrap, v_wrap, 1),
                               Mux(wrap, row_wrap, nch << lq))
                    m.d.sync += [st.eq(0), i_cnt.eq(0), key.eq(key + 1),
                                 addr.eq(addr + step), wptr.eq(addr + step),
                                 saddr.eq(saddr + Mux(wrap, pair_wrap, pair)),
                                 left.eq(left - 1)]
                    with m.If(left == 1):
                        m.d.sync += busy_cmd.eq(0)

        m.d.comb += self.busy.eq(busy_cmd | self.m_axi_awvalid | self.m_axi_wvalid
                                 | (outstanding != 0))
        busy_q = Signal()
        m.d.sync += busy_q.eq(self.busy)
        m.d.comb += self.done.eq(busy_q & ~self.busy)
        return m


class KVQuantWriter(wiring.Component):
    """The quantising KV writer: :class:`KVQuantizer` -> :class:`KVInt8Writer`.

    Parameters: those of :class:`KVInt8Writer` plus ``lanes`` and ``max_head_dim`` of the
    quantiser (same ``beat`` and ``fmt``).

    Ports: ``i_cmd`` (``quant_write_layout``: ``quant_writer_commands`` fills it; accepted when
    both parts are idle; its ``bpr`` also sets the quantiser's), ``i`` (stream-format rows,
    ``rows * bpr`` beats of ``beat`` elements), ``busy``, ``done``, ``error``, ``m_axi_aw*`` /
    ``m_axi_w*`` / ``m_axi_b*``. Throughput: the quantiser's (``lanes`` elements per cycle) for
    K rows, one code per cycle for V rows (the writer's); latency: the quantiser's plus the
    writer's.
    """

    @_silenced
    def __init__(self, *, beat: int = 4, kv_beat: int = 4, lanes: int = 2,
                 max_head_dim: int = 16, data_width: int = 128, addr_width: int = 40,
                 count_width: int = 20, max_outstanding: int = 16,
                 fmt: StreamFormat | None = None):
        self.quant = KVQuantizer(beat=beat, lanes=lanes, max_head_dim=max_head_dim, fmt=fmt)
        try:
            self.writer = KVInt8Writer(beat=beat, kv_beat=kv_beat, data_width=data_width,
                                       addr_width=addr_width, count_width=count_width,
                                       max_outstanding=max_outstanding, fmt=fmt)
        except (TypeError, ValueError):
            self.quant._MustUse__silence = True
            raise
        self.fmt = self.quant.fmt
        sig = {"i_cmd": self.writer.signature.members["i_cmd"],
               "i": self.quant.signature.members["i"],
               "busy": Out(1), "done": Out(1), "error": Out(1)}
        for name, member in self.writer.signature.members.items():
            if name.startswith("m_axi_"):
                sig[name] = member
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        m.submodules.quant = q = self.quant
        m.submodules.writer = w = self.writer
        wiring.connect(m, q.o, w.i)
        # the command's rows (and only they) enter the quantiser, with the command's bpr
        bpr = Signal(8)
        rows = Signal(len(self.i_cmd.payload.rows))
        col = Signal(8)
        accept = Signal()
        gate = Signal()
        m.d.comb += [
            gate.eq(rows != 0),
            q.i.payload.eq(self.i.payload),
            q.i.valid.eq(self.i.valid & gate),
            self.i.ready.eq(q.i.ready & gate),
            w.i_cmd.payload.eq(self.i_cmd.payload),
            w.i_cmd.valid.eq(self.i_cmd.valid & ~q.busy & ~gate),
            self.i_cmd.ready.eq(w.i_cmd.ready & ~q.busy & ~gate),
            accept.eq(self.i_cmd.valid & self.i_cmd.ready),
            q.bpr.eq(bpr),
            self.busy.eq(w.busy | q.busy | gate),
            self.done.eq(w.done),
            self.error.eq(w.error),
        ]
        with m.If(accept):
            m.d.sync += [bpr.eq(self.i_cmd.payload.bpr), rows.eq(self.i_cmd.payload.rows),
                         col.eq(0)]
        with m.Elif(self.i.valid & self.i.ready):
            with m.If(col == bpr - 1):
                m.d.sync += [col.eq(0), rows.eq(rows - 1)]
            with m.Else():
                m.d.sync += col.eq(col + 1)
        for name, member in self.signature.members.items():
            if name.startswith("m_axi_"):
                if member.flow == Out:
                    m.d.comb += getattr(self, name).eq(getattr(w, name))
                else:
                    m.d.comb += getattr(w, name).eq(getattr(self, name))
        return m


# --------------------------------------------------------------------------- registry

def make_kv_quant(target: str, fmt: StreamFormat | None = None) -> KVQuantizer:
    try:
        params = KV_QUANT_PRESETS[target]
    except KeyError:
        raise ValueError(f"no KV-quantiser preset for target {target!r}; known: "
                         f"{', '.join(KV_QUANT_PRESETS)}") from None
    return KVQuantizer(**params, fmt=fmt)


def make_kv_writer(target: str, fmt: StreamFormat | None = None) -> KVInt8Writer:
    """The int8 KV writer behind the quantiser of ``target``: its beat in, the layout of the
    target's integer engine (``attention_int`` beat of spec/targets.py) out."""
    from .presets import INT_PRESETS

    params = KV_QUANT_PRESETS[target]
    return KVInt8Writer(beat=params["beat"], kv_beat=INT_PRESETS[target]["beat"], fmt=fmt)


def make_kv_reader(target: str, fmt: StreamFormat | None = None):
    """The int8 KV reader feeding the integer engine of ``target`` (its beat, tile, head_dim
    and context; spec/targets.py ``attention_int``)."""
    from .kv_dma import KVInt8Reader
    from .presets import INT_PRESETS

    e = INT_PRESETS[target]
    return KVInt8Reader(beat=e["beat"], depth=e["depth"], max_head_dim=e["head_dim"],
                        ctx_bits=e["ctx_bits"], fmt=fmt)


def report_blocks() -> dict:
    """Block-registry entries (hw/blocks.py): the KV DMA line's blocks."""
    return {"kv_quant": ("KV quantiser (int8 K/V rows + stream-format row scales; "
                         "kv_quant_int8)", lambda p, fmt: make_kv_quant(p.name, fmt=fmt)),
            "kv_writer": ("int8 KV writer (K rows, V codes channel-major, scale pairs; "
                          "single-beat AXI4 writes)",
                          lambda p, fmt: make_kv_writer(p.name, fmt=fmt)),
            "kv_reader": ("int8 KV reader feeding the integer attention engine (AXI4 read "
                          "bursts per block, kv_schedule, fixed width conversion)",
                          lambda p, fmt: make_kv_reader(p.name, fmt=fmt))}
