"""The PL LM-head unit: int8 GEMV of the head (spec/lm_head.py layout) against one row of
activation codes, logits in FP32 (golden ``lm_head_int8``, sim/golden/lm_head_int.py,
bit-exact). docs/hw/lm_head.md has the contract, the rates and the area.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.lm_head import HEAD_ROWS, MAX_D, Q_BEAT, SCALE_BYTES
from tellme.spec.numerics import QUANT_EPS, StreamFormat

from .arith import ceil_log2, wire
from .elementwise.stream_fp import (
    MUL_LATENCY,
    ROUND32_LATENCY,
    Pipe,
    fmt_of,
    pipe_mul,
    round32,
    unpack,
    unpack32,
)

__all__ = ["LmHead", "MAC_STAGES", "POST_LATENCY", "VOCAB_BITS", "cmd_layout", "make_lm_head",
           "report_blocks"]

VOCAB_BITS = 18              # vocab < 2**18 (2B4T: 128256)
MAC_STAGES = 4               # weight beat accepted -> its product added (q read, operands, M)
CAPTURE = MAC_STAGES + 1     # last beat accepted -> hold bank full (visible)
# post-processor: issue -> operands (P1) -> multiplier operands (P2) -> pipe_mul -> round32 ->
# FP32 pack (the output / s-RAM write register)
POST_LATENCY = 2 + MUL_LATENCY + ROUND32_LATENCY + 1
FLT_MAX_BITS = 0x7F7FFFFF


def cmd_layout(max_d: int, fmt: StreamFormat) -> data.StructLayout:
    """One command per output row: ``d`` (columns, a multiple of 8, <= max_d), ``vocab``
    (logits wanted, >= 1), ``amax`` (the row's absmax, stream-format bits)."""
    return data.StructLayout({"d": unsigned(ceil_log2(max_d + 1)), "vocab": unsigned(VOCAB_BITS),
                              "amax": unsigned(fmt.bits)})


class LmHead(wiring.Component):
    """int8 LM head: ``logit_j = RN32(acc_j * RN32(A * dscale_j))``, ``acc_j = sum_i q_i
    w8_ji`` (golden ``lm_head_int8``), ``lanes`` int8 MACs per cycle.

    Parameters
    ----------
    lanes : int
        int8 MACs per cycle = bytes per weight beat (a power of two, 4..64): 16 for one
        128-bit AXI port, 64 for the KV260's DDR rate.
    max_d : int
        Largest row width (a multiple of 8; the activation buffer holds ``max_d`` codes).
    fmt : StreamFormat or None
        Format of the ``amax`` field (default: the contract's).

    Members
    -------
    cmd : In(stream.Signature(cmd_layout(max_d, fmt)))
        One per output row (``d``, ``vocab``, ``amax``); accepted when the front is idle (the
        previous row's weights are all in; its last logits may still be computed).
    q : In(stream.Signature(ArrayLayout(signed(8), 8)))
        The row's activation codes, 8 per beat, ``d / 8`` beats after its command (column
        ``8 k + i`` in element ``i`` of beat ``k``); loaded into the activation buffer (one
        BRAM36 per 4096 columns) before the weights stream.
    w : In(stream.Signature(8 * lanes))
        The packed head (spec/lm_head.py), ``lanes`` bytes per beat (byte 0 lowest), ``ceil(vocab
        / 64) * (256 + 64 d) / lanes`` beats per row, from the start of block 0.
    o : Out(stream.Signature(32))
        FP32 logits, one per beat, exactly ``vocab`` per row in row order.
    busy : Out(1)
        A row is in the unit (loading, streaming or being finished).

    Structure: lane ``l`` multiplies byte ``l`` of a column beat by the column's code (one
    DSP48E2 multiplier each, registered operands and product) into ``64 / lanes`` accumulators
    (a rotating register chain: beat ``g`` of a column is rows ``g * lanes + l``). At the
    block's last beat the accumulators are copied into a hold bank (registers, no mux on the
    way in) and the next block accumulates while a serial post-processor takes the hold bank's
    rows. The post-processor has one multiplier (``pipe_mul``, 2 DSP48E2) and the shared RN32
    rounder (``round32``) and runs two sweeps per block: ``s_j = RN32(A * dscale_j)`` for the
    block's rows into a 64 x 32-bit s-RAM as soon as the block's scales are in (they wait in
    ``lanes / 4`` register chains, read one per cycle), then ``logit_j = RN32(acc_j * s_j)``
    once the block's accumulators are held: one row per cycle and sweep, 2 cycles per logit.

    Latency (no stalls): the first logit ``POST_LATENCY`` (8) cycles after its issue; a row
    takes ``sim.cycles_lm_head.row_cycles`` cycles from the command to its last logit.
    Throughput: one weight beat per cycle in steady state while a block's MAC beats
    (``64 d / lanes``) cover its two sweeps (``2 * 64 + POST_LATENCY + CAPTURE + 5`` cycles):
    ``d >= 160`` at 64 lanes, ``d >= 40`` at 16; smaller ``d`` is bound by the
    post-processor. Backpressure: ``o.ready`` low stalls the post-processor only; the weight
    stream waits when the hold bank or the scale chains are still needed (a block's first
    scale beat until the previous block's scales are used, its last MAC beat until the
    previous block's logits are issued). ``cmd``, ``q`` and ``w`` may be idle at any time.
    """

    def __init__(self, *, lanes: int = 16, max_d: int = 256, fmt: StreamFormat | None = None):
        try:
            self._check(lanes, max_d)
            fmt = fmt_of(fmt)
        except (TypeError, ValueError):
            self._MustUse__silence = True          # an argument error leaves no warning
            raise
        self._lanes, self._max_d, self._fmt = lanes, max_d, fmt
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(max_d, fmt))),
            "q": In(stream.Signature(data.ArrayLayout(signed(8), Q_BEAT))),
            "w": In(stream.Signature(8 * lanes)),
            "o": Out(stream.Signature(32)),
            "busy": Out(1),
        })

    @staticmethod
    def _check(lanes, max_d):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 4 or \
                lanes > HEAD_ROWS or lanes & (lanes - 1):
            raise ValueError(f"lanes must be a power of two in [4, {HEAD_ROWS}], got {lanes!r}")
        if isinstance(max_d, bool) or not isinstance(max_d, int) or max_d < Q_BEAT or \
                max_d > MAX_D or max_d % Q_BEAT:
            raise ValueError(f"max_d must be a multiple of {Q_BEAT} in [{Q_BEAT}, {MAX_D}], "
                             f"got {max_d!r}")

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def max_d(self) -> int:
        return self._max_d

    @property
    def fmt(self) -> StreamFormat:
        return self._fmt

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width: |acc| <= 128 * 127 * max_d."""
        return (128 * 127 * self._max_d).bit_length() + 1

    def elaborate(self, platform):
        m = Module()
        L, fmt = self._lanes, self._fmt
        G = HEAD_ROWS // L                     # accumulators per lane (beats per column)
        SB = SCALE_BYTES // L                  # scale beats per block
        NC = L // 4                            # scales per beat = scale chains
        AW = self.acc_bits
        DB = ceil_log2(self._max_d + 1)

        # ---- command: A = max(amax, eps) = a_m * 2**a_e (a_m <= 24 bits)
        eps_bits = int(np.float32(QUANT_EPS).view(np.uint32))
        eps_grid = math.ceil(Fraction(float(QUANT_EPS)) * 2 ** fmt.frac)
        assert eps_grid <= 1 << fmt.man        # only subnormal codes are below eps
        em, ee = unpack32(C(eps_bits, 32))
        c = self.cmd.payload
        _, c_sig, c_sh = unpack(c.amax, fmt)
        below = c.amax[:fmt.bits - 1] < eps_grid
        a_m = Signal(24)
        a_e = Signal(signed(12))
        d_r = Signal(DB)
        rem = Signal(VOCAB_BITS)               # rows from the current block on
        n_cur = wire(m, Mux(rem >= HEAD_ROWS, HEAD_ROWS, rem)[:7], "n_cur")

        # ---- front: IDLE -> LOADQ (d/8 q beats) -> RUN (blocks: SB scale beats, d*G MAC beats)
        qmem = memory.Memory(shape=unsigned(8 * Q_BEAT), depth=self._max_d // Q_BEAT, init=[])
        m.submodules.qmem = qmem
        qwp = qmem.write_port()
        qrp = qmem.read_port(transparent_for=())
        qcnt = Signal(DB)
        in_scale = Signal()
        bcnt = Signal(range(SB))
        col = Signal(DB)
        grp = Signal(range(G))
        ch_full = Signal()
        hold_full = Signal()
        w_fire = Signal()
        mac_fire = Signal()
        cap_n = Signal(7)                      # rows of the block whose last beat is in

        is_last = wire(m, (col == d_r - 1) & (grp == G - 1), "is_last")
        # scale chains: chain k holds the scales k, k + NC, ... of the block (head first)
        chains = [[Signal(32, name=f"ch{k}_{p}") for p in range(SB)] for k in range(NC)]
        ch_am = Signal(24)
        ch_ae = Signal(signed(12))
        ch_n = Signal(7)
        ch_shift = Signal()
        load_shift = Signal()
        m.d.comb += [qrp.addr.eq(col[3:]), qrp.en.eq(1)]

        with m.FSM(name="front"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [
                        a_m.eq(Mux(below, em, c_sig)),
                        a_e.eq(Mux(below, ee, c_sh - fmt.frac)),
                        d_r.eq(c.d), rem.eq(c.vocab), qcnt.eq(0),
                    ]
                    m.next = "LOADQ"
            with m.State("LOADQ"):
                m.d.comb += [self.q.ready.eq(1), qwp.addr.eq(qcnt[3:]),
                             qwp.data.eq(self.q.payload.as_value()),
                             qwp.en.eq(self.q.valid)]
                with m.If(self.q.valid):
                    m.d.sync += qcnt.eq(qcnt + Q_BEAT)
                    with m.If(qcnt + Q_BEAT == d_r):
                        m.d.sync += [in_scale.eq(1), bcnt.eq(0)]
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [
                    self.w.ready.eq(Mux(in_scale, (bcnt != 0) | ~ch_full,
                                        ~is_last | ~hold_full)),
                    w_fire.eq(self.w.valid & self.w.ready),
                    mac_fire.eq(w_fire & ~in_scale),
                    load_shift.eq(w_fire & in_scale),
                ]
                with m.If(w_fire & in_scale):
                    with m.If(bcnt == 0):
                        m.d.sync += [ch_am.eq(a_m), ch_ae.eq(a_e), ch_n.eq(n_cur)]
                    m.d.sync += bcnt.eq(bcnt + 1)
                    with m.If(bcnt == SB - 1):
                        m.d.sync += [ch_full.eq(1), in_scale.eq(0), col.eq(0), grp.eq(0)]
                with m.If(mac_fire):
                    m.d.sync += grp.eq(grp + 1)
                    with m.If(grp == G - 1):
                        m.d.sync += [grp.eq(0), col.eq(col + 1)]
                    with m.If(is_last):
                        m.d.sync += [cap_n.eq(n_cur), rem.eq(rem - HEAD_ROWS),
                                     in_scale.eq(1), bcnt.eq(0)]
                        with m.If(rem <= HEAD_ROWS):
                            m.next = "IDLE"
        wv = self.w.payload
        for k in range(NC):
            with m.If(load_shift | ch_shift):
                for p in range(SB - 1):
                    m.d.sync += chains[k][p].eq(chains[k][p + 1])
                m.d.sync += chains[k][SB - 1].eq(wv[32 * k:32 * (k + 1)])

        # ---- MAC pipeline (free-running, valid bits): accept -> w1 (q word) -> operands ->
        # product -> accumulate
        v1, f1, l1 = Signal(), Signal(), Signal()
        w1 = Signal(8 * L)
        sel1 = Signal(3)
        m.d.sync += [v1.eq(mac_fire), f1.eq(col == 0), l1.eq(mac_fire & is_last),
                     w1.eq(wv), sel1.eq(col[:3])]
        qbyte = wire(m, qrp.data.word_select(sel1, 8).as_signed(), "qbyte")
        v2, f2, l2 = Signal(), Signal(), Signal()
        b2 = Signal(signed(8))
        m.d.sync += [v2.eq(v1), f2.eq(f1), l2.eq(l1), b2.eq(qbyte)]
        v3, f3, l3 = Signal(), Signal(), Signal()
        m.d.sync += [v3.eq(v2), f3.eq(f2), l3.eq(l2)]
        cap = Signal()
        m.d.sync += cap.eq(v3 & l3)
        accs = []
        for ln in range(L):
            a2 = Signal(signed(8), name=f"a2_{ln}")
            p3 = Signal(signed(16), name=f"p3_{ln}")
            m.d.sync += [a2.eq(w1[8 * ln:8 * ln + 8].as_signed()), p3.eq(a2 * b2)]
            acc = [Signal(signed(AW), name=f"acc{ln}_{k}") for k in range(G)]
            with m.If(v3):
                m.d.sync += acc[0].eq(Mux(f3, 0, acc[G - 1]) + p3)
                for k in range(1, G):
                    m.d.sync += acc[k].eq(acc[k - 1])
            accs.append(acc)
        # hold bank: row r = g * L + l was accumulated in acc[G - 1 - g] of lane l
        hold = {}
        for ln in range(L):
            for k in range(G):
                h = Signal(signed(AW), name=f"hold{ln}_{k}")
                with m.If(cap):
                    m.d.sync += h.eq(accs[ln][k])
                hold[(ln, k)] = h
        hold_rows = Array(hold[(r % L, G - 1 - r // L)] for r in range(HEAD_ROWS))
        hold_n = Signal(7)
        with m.If(cap):
            m.d.sync += [hold_full.eq(1), hold_n.eq(cap_n)]

        # ---- post-processor: jobs S (s-RAM of a block) and L (its logits), alternating
        en = Signal()
        m.d.comb += en.eq(~(self.o.valid & ~self.o.ready))
        p = Pipe(m, en)
        active = Signal()
        jkind = Signal()                       # 0: S, 1: L
        nxt = Signal()                         # the next job's kind
        jcnt = Signal(7)
        jn = Signal(7)
        s_ready = Signal()
        issue = Signal()
        m.d.comb += issue.eq(active & en)
        with m.If(~active & Mux(nxt, hold_full & s_ready, ch_full)):
            m.d.sync += [active.eq(1), jkind.eq(nxt), jcnt.eq(0),
                         jn.eq(Mux(nxt, hold_n, ch_n))]
            with m.If(nxt):
                m.d.sync += s_ready.eq(0)
        jlast = wire(m, jcnt == jn - 1, "jlast")
        with m.If(issue):
            m.d.sync += jcnt.eq(jcnt + 1)
            with m.If(jlast):
                m.d.sync += [active.eq(0), nxt.eq(~nxt)]
                with m.If(jkind):
                    m.d.sync += hold_full.eq(0)
                with m.Else():
                    m.d.sync += ch_full.eq(0)
        slot = jcnt[:max(1, ceil_log2(NC))] if NC > 1 else C(0, 1)
        m.d.comb += ch_shift.eq(issue & ~jkind & ((slot == NC - 1) | jlast))
        heads = Array(chains[k][0] for k in range(NC))

        sram = memory.Memory(shape=unsigned(32), depth=HEAD_ROWS, init=[])
        m.submodules.sram = sram
        srp = sram.read_port(domain="sync", transparent_for=())
        swp = sram.write_port()
        m.d.comb += [srp.addr.eq(jcnt[:6]), srp.en.eq(en)]

        # P1: the item's operands
        v_1 = p.reg(issue, "pv1")
        k_1 = p.reg(jkind, "pk1")
        j_1 = p.reg(jcnt[:6], "pj1")
        last_1 = p.reg(jlast, "pl1")
        hv_1 = p.reg(hold_rows[jcnt[:6]], "hv1")
        cv_1 = p.reg(heads[slot], "cv1")
        am_1 = p.reg(ch_am, "am1")
        ae_1 = p.reg(ch_ae, "ae1")
        s_1 = srp.data
        # P2: multiplier operands: S: a_m x dscale significand; L: |acc| x s significand
        sm, se = unpack32(s_1)
        dm, de = unpack32(cv_1)
        neg = hv_1[-1]
        mag = wire(m, Mux(neg, -hv_1, hv_1).as_unsigned()[:AW - 1], "accmag")
        a_op = p.reg(Mux(k_1, mag, am_1), "aop2")
        b_op = p.reg(Mux(k_1, sm, dm), "bop2")
        e_2 = p.reg(Mux(k_1, se, ae_1 + de).as_signed()[:12].as_signed(), "e2")
        z_2 = p.reg(Mux(k_1, (hv_1 == 0) | (s_1 == 0), cv_1[23:31] == 0), "z2")
        sg_2 = p.reg(k_1 & neg, "sg2")
        meta = dict(v=p.reg(v_1, "pv2"), k=p.reg(k_1, "pk2"), j=p.reg(j_1, "pj2"),
                    l=p.reg(last_1, "pl2"))
        prod = pipe_mul(p, a_op, b_op)
        rm, re = round32(p, prod, p.delay(e_2, MUL_LATENCY, "e3"))
        n_rnd = MUL_LATENCY + ROUND32_LATENCY
        z_r = p.delay(z_2, n_rnd, "zr")
        sg_r = p.delay(sg_2, n_rnd, "sgr")
        vs = [v_1, meta["v"]]
        for st in range(n_rnd):
            meta = {k: p.reg(v, f"r{st}{k}") for k, v in meta.items()}
            vs.append(meta["v"])
        # pack: value rm * 2**re, rm in [2**23, 2**24]; flush below 2**-126, saturate at 2**128
        ebias = wire(m, (re + 150 + rm[24]).as_signed(), "ebias")
        frac = Mux(rm[24], 0, rm[:23])
        flush = z_r | (ebias < 1)
        sat = ebias > 254
        bits = Mux(flush, 0, Cat(Mux(sat, C(FLT_MAX_BITS, 31), Cat(frac, ebias[:8])), sg_r))
        out = p.reg(bits, "obits")
        meta = {k: p.reg(v, f"o{k}") for k, v in meta.items()}
        vs.append(meta["v"])
        m.d.comb += [
            swp.addr.eq(meta["j"]), swp.data.eq(out),
            swp.en.eq(en & meta["v"] & ~meta["k"]),
            self.o.valid.eq(meta["v"] & meta["k"]), self.o.payload.eq(out),
        ]
        with m.If(en & meta["v"] & ~meta["k"] & meta["l"]):
            m.d.sync += s_ready.eq(1)

        m.d.comb += self.busy.eq(~self.cmd.ready | ch_full | hold_full | active | v1 | v2 | v3
                                 | cap | s_ready | Cat(*vs).any())
        return m


def make_lm_head(target: str, fmt: StreamFormat | None = None, lanes: int | None = None
                 ) -> LmHead:
    """The LM-head unit of ``target``'s top (spec/targets.py ``lm_head``: 16 lanes, one
    128-bit port's bytes a cycle; rows up to 4096 columns, every public model of
    spec/models.py: 1536, 2560, 3200); ``lanes`` overrides the preset's."""
    from tellme.spec.targets import TARGETS

    p = TARGETS[target].lm_head
    return LmHead(lanes=lanes or p["lanes"], max_d=p["max_d"], fmt=fmt)


def report_blocks() -> dict:
    """Block-registry entries (hw/blocks.py): the top's LM-head unit and the 64-lane unit of
    the DDR rate (not built: it needs the weight ports striped, docs/hw/lm_head.md)."""
    return {"lm_head": ("LM-head unit of the top (int8 GEMV, the target's lanes, FP32 logits; "
                        "lm_head_int8)", lambda p, fmt: make_lm_head(p.name, fmt=fmt)),
            "lm_head_ddr": ("LM-head unit at the KV260's DDR rate (64 lanes; not in the top)",
                            lambda p, fmt: make_lm_head(p.name, fmt=fmt, lanes=64))}
