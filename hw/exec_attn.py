"""KV_WRITE and ATTENTION in the row unit (docs/hw/top.md): the records' sequencing around
the quantising KV writer, the int8 KV reader and the integer attention engine, which sit in
the top beside the row unit and share its row movers (the sequencer runs one record at a
time).

``AttnCtl`` turns one record into per-KV-head (KV_WRITE) or per-call (ATTENTION) commands of
those blocks and of the movers, and carries the rows between them. Semantics are golden
``program_exec``'s ``_kv_write`` (``kv_quant_int8`` into the int8 layout of
``spec.kv_layout``) and ``_attention`` (``attention_int`` over that layout; the calls of
``spec.attention.prefill_calls``, whose one-row form is ``decode_calls``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.kv_layout import KVLayout
from tellme.spec.memory_map import ADDR_BITS
from tellme.spec.numerics import StreamFormat, stream_format
from tellme.spec.program import ERROR_CODES

from .arith import align_up, stride_of, times_const
from .attention.int_engine import cmd_layout as engine_cmd_layout
from .attention.kv_dma import HD_BITS, read_command_layout
from .attention.kv_quant import quant_write_layout
from .convert import float_row_layout
from .elementwise.common import row_layout
from .row_dma import row_command_layout
from .sequencer import command_layout

__all__ = ["AttnCtl", "Regroup"]


class Regroup(wiring.Component):
    """Words of ``width`` bits regrouped from beats of ``n_in`` to beats of ``n_out`` (one a
    multiple of the other), in order. Combinational: no register on either path.

    i : In(stream ArrayLayout(unsigned(width), n_in)); o : Out(stream ArrayLayout(..., n_out)).
    Widening (n_out = k * n_in) keeps k - 1 beats in registers and sends the k-th straight
    through; narrowing (n_in = k * n_out) sends the held input's k parts in turn. Throughput:
    one beat per cycle on the narrow side."""

    def __init__(self, width: int, n_in: int, n_out: int):
        if max(n_in, n_out) % min(n_in, n_out):
            raise ValueError(f"beats of {n_in} and {n_out} words: one must divide the other")
        self.width, self.n_in, self.n_out = width, n_in, n_out
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(width), n_in))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(width), n_out)))})

    def elaborate(self, platform):
        m = Module()
        a, b = self.n_in, self.n_out
        if a == b:
            wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.o))
            return m
        k = max(a, b) // min(a, b)
        cnt = Signal(range(k))
        last = cnt == k - 1
        step = Mux(last, 0, cnt + 1)
        if b > a:                                      # widen
            held = [Signal(self.width * a, name=f"held{j}") for j in range(k - 1)]
            m.d.comb += [self.o.payload.as_value().eq(Cat(*held, self.i.payload.as_value())),
                         self.o.valid.eq(self.i.valid & last),
                         self.i.ready.eq(~last | self.o.ready)]
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += cnt.eq(step)
                for j, h in enumerate(held):
                    with m.If(cnt == j):
                        m.d.sync += h.eq(self.i.payload.as_value())
        else:                                          # narrow
            m.d.comb += [self.o.payload.as_value().eq(
                             self.i.payload.as_value().word_select(cnt, self.width * b)),
                         self.o.valid.eq(self.i.valid),
                         self.i.ready.eq(self.o.ready & last)]
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += cnt.eq(step)
        return m


class AttnCtl(wiring.Component):
    """KV_WRITE (class ``kv``) and ATTENTION (class ``attn``) for the row unit.

    Parameters: ``lanes`` (the row movers' elements per beat), ``fmt``, ``addr_width``,
    ``count_width`` (the movers'), ``engine`` (the integer engine's parameters: ``lanes``,
    ``beat`` (= the int8 layout's keys per block), ``head_dim``, ``ctx_bits``, ``q_beat``,
    ``o_beat`` (it and ``lanes`` must divide one another)), ``quant``
    (the KV quantiser's: ``beat``, ``max_head_dim``).

    Members
    -------
    i_kv, i_attn : In(stream command_layout("kv" / "attn")), accepted while idle.
    mv : Out(stream row_command_layout(2, ...))  mover commands (reader 0 only);
    rd : In(stream float_row_layout(lanes))  reader 0's rows; wr : Out(stream row_layout)
        the rows to write; mv_done, mv_error : In(1)  the movers' done / axi_error pulses.
    active : Out(1)  a record in progress: the movers are this unit's.
    kvq_cmd, kvq : Out(stream)  the quantising writer's commands (``quant_write_layout``) and
        its rows (``quant["beat"]`` elements per beat); kvq_busy, kvq_error : In(1).
    kv_sel : Out(1)  a KV_WRITE in progress: the writer owns the write channels of m_axi_kv.
    eng_cmd, eng_q : Out(stream)  the engine's calls and q rows; eng_o : In(stream
        ArrayLayout(unsigned(fmt.bits), o_beat)) its outputs, lane by lane.
    kvr_cmd : Out(stream read_command_layout(int8))  the KV reader's calls; kvr_error : In(1).
    clear : Out(1)  one-cycle pulse at a record's start (the blocks' sticky error flags).
    done : Out(1); error : Out(8); axi_error : Out(1)  one pulse per record, as the row unit's.
    busy : Out(1).

    KV_WRITE, per kind (K, then V) and KV head h: one writer command for keys start..start+rows
    -1 of head h (its K row, scale pair and V code addresses from the record's regions and
    strides, ``spec.kv_layout`` geometry at the run-time head_dim) and one read-only mover
    command for the rows' head_dim elements of head h (k_src or v_src + h * head_dim * bytes,
    at the row stride); the rows pass to the writer, regrouped to its beat. The pair ends when
    the mover is done and the writer idle (its last write response in). About ``kv_heads * 2
    * rows * (head_dim + 1)`` cycles for V at one code write per cycle.

    ATTENTION: the group g = heads / kv_heads and the rows per call n_pe = lanes // g (two
    small loops, one step a cycle); then per block of n_pe rows and KV head one engine call
    (lane i: row i // g, head kv * g + i % g; its last key start + row), one KV reader call
    (the head's K and V regions) and one mover command: the block's rows of the group's
    g * head_dim query elements on reader 0 into the engine, its outputs written to the same
    places under dst. A call ends when the mover is done (its last write response in).

    Errors: LIMIT (10) for a head_dim of 0, over the engine's (ATTENTION) or the quantiser's
    (KV_WRITE), or not a multiple of the quantiser's beat, the engine's q beat and o beat
    (ATTENTION; both 2 or more on every target, so every head_dim that passes is even) and
    ``lanes``;
    kv_heads or heads 0 or over 255; heads not g * kv_heads with g <= the engine's lanes;
    positions start + rows over 2**ctx_bits - 1. A non-OKAY response of a mover, the writer
    or the KV reader ends the record after the head or call in flight with ``axi_error``.
    """

    def __init__(self, *, lanes: int, engine: dict, quant: dict,
                 fmt: StreamFormat | None = None, addr_width: int = ADDR_BITS,
                 count_width: int = 16):
        self.fmt = fmt = stream_format(fmt)
        self.lanes, self.engine, self.quant = lanes, dict(engine), dict(quant)
        self.addr_width, self.count_width = addr_width, count_width
        E, Q = self.engine, self.quant
        if E["beat"] % Q["beat"] or (Q["beat"] % lanes and lanes % Q["beat"]):
            raise ValueError(f"quantiser beat {Q['beat']} must divide the engine beat "
                             f"{E['beat']} and be a multiple or divisor of lanes {lanes}")
        ob = E["o_beat"]
        if ob % lanes and lanes % ob:
            raise ValueError(f"engine o_beat {ob} must be a multiple or divisor of lanes "
                             f"{lanes}")
        aw, cb = addr_width, E["ctx_bits"]
        super().__init__({
            "i_kv": In(stream.Signature(command_layout("kv", aw))),
            "i_attn": In(stream.Signature(command_layout("attn", aw))),
            "mv": Out(stream.Signature(row_command_layout(2, aw, count_width))),
            "rd": In(stream.Signature(float_row_layout(lanes))),
            "wr": Out(stream.Signature(row_layout(lanes, fmt))),
            "mv_done": In(1), "mv_error": In(1), "active": Out(1),
            "kvq_cmd": Out(stream.Signature(quant_write_layout(aw, 20, E["beat"]))),
            "kvq": Out(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), Q["beat"]))),
            "kvq_busy": In(1), "kvq_error": In(1), "kv_sel": Out(1),
            "eng_cmd": Out(stream.Signature(engine_cmd_layout(E["lanes"], cb))),
            "eng_q": Out(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), E["q_beat"]))),
            "eng_o": In(stream.Signature(data.ArrayLayout(unsigned(fmt.bits), ob))),
            "kvr_cmd": Out(stream.Signature(read_command_layout(aw, cb, int8=True))),
            "kvr_error": In(1), "clear": Out(1),
            "done": Out(1), "error": Out(8), "axi_error": Out(1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        L, fmt, E, Q = self.lanes, self.fmt, self.engine, self.quant
        eb = fmt.bits // 8
        lgl = L.bit_length() - 1
        B, NQ, CB = E["beat"], E["lanes"], E["ctx_bits"]
        lb = B.bit_length() - 1
        lay = KVLayout(1, 1, 1, 1, dtype="int8", fmt=fmt, beat=B)
        pair, khdr = lay.pair_bytes, lay.k_header_bytes
        AW = self.addr_width

        def mults(x, k):                      # x is a multiple of the power of two k
            return (x & (k - 1)) == 0

        # ---- the regrouping of rows between the movers and the blocks
        m.submodules.to_kvq = to_kvq = Regroup(fmt.bits, L, Q["beat"])
        m.submodules.to_q = to_q = Regroup(fmt.bits, L, E["q_beat"])
        m.submodules.from_o = from_o = Regroup(fmt.bits, E["o_beat"], L)
        kv_on, at_on = Signal(), Signal()     # a KV_WRITE / ATTENTION in progress
        err = Signal(8)
        idle = ~kv_on & ~at_on & (err == 0)
        m.d.comb += [self.active.eq(kv_on | at_on), self.busy.eq(self.active),
                     self.kv_sel.eq(kv_on)]
        rd_words = [self.rd.payload.data[j][:fmt.bits] for j in range(L)]
        for dst, on in ((to_kvq.i, kv_on), (to_q.i, at_on)):
            m.d.comb += [dst.payload.as_value().eq(Cat(*rd_words)),
                         dst.valid.eq(self.rd.valid & on)]
        m.d.comb += [self.rd.ready.eq(Mux(kv_on, to_kvq.i.ready, to_q.i.ready)),
                     self.kvq.payload.eq(to_kvq.o.payload), self.kvq.valid.eq(to_kvq.o.valid),
                     to_kvq.o.ready.eq(self.kvq.ready),
                     self.eng_q.payload.eq(to_q.o.payload), self.eng_q.valid.eq(to_q.o.valid),
                     to_q.o.ready.eq(self.eng_q.ready),
                     from_o.i.payload.as_value().eq(self.eng_o.payload.as_value()),
                     from_o.i.valid.eq(self.eng_o.valid), self.eng_o.ready.eq(from_o.i.ready),
                     self.wr.payload.data.as_value().eq(from_o.o.payload.as_value()),
                     self.wr.valid.eq(from_o.o.valid), from_o.o.ready.eq(self.wr.ready)]

        mc = self.mv.payload

        def mover(**f):
            out = [self.mv.valid.eq(1), mc.use.eq(0b01), mc.ebytes[0].eq(eb)]
            for k, v in f.items():
                out.append((mc.src[0] if k == "src" else getattr(mc, k)).eq(v))
            return out

        # ---- the record's fields (both ops: the KV regions, strides, geometry)
        kc, ac = self.i_kv.payload.args, self.i_attn.payload.args
        m.d.comb += [self.i_kv.ready.eq(idle), self.i_attn.ready.eq(idle & ~self.i_kv.valid)]
        kv_acc = self.i_kv.valid & self.i_kv.ready
        at_acc = self.i_attn.valid & self.i_attn.ready
        m.d.comb += self.clear.eq(kv_acc | at_acc)
        rows, start = Signal(32), Signal(32)
        hd, kvh, heads = Signal(16), Signal(16), Signal(16)
        k_reg, v_reg = Signal(AW), Signal(AW)               # head h's K / V region
        k_base, v_base = Signal(AW), Signal(AW)             # head 0's
        k_stride, v_stride = Signal(32), Signal(32)
        src, dst = Signal(AW), Signal(AW)                   # head h's (or call's) row data
        src_base, dst_base = Signal(AW), Signal(AW)
        rstride = Signal(32)                                # row stride of the rows read
        hdeb = Signal(32)                                   # head_dim (* g) * element bytes
        h = Signal(16)                                      # KV head
        kind = Signal()                                     # KV_WRITE: 0 K, 1 V
        score_c = Signal(32)
        # int8 geometry at the run-time head_dim (spec.kv_layout)
        bpr_e = Signal(HD_BITS)                             # ceil(hd / B)
        k_row = Signal(HD_BITS + lb)                        # k_row_bytes
        kblock, vblock = Signal(32), Signal(32)
        blk, key = Signal(CB), Signal(max(1, lb))
        k_off, v_off = Signal(AW), Signal(AW)               # block * k/v block bytes
        kr_off = Signal(32)                                 # key * k_row
        seen, bad = Signal(), Signal()                      # mover done; a response error
        # ATTENTION
        grp, npe = Signal(range(NQ + 2)), Signal(range(NQ + 1))
        acc = Signal(17)
        r0, nb = Signal(32), Signal(range(NQ + 1))          # block's first row; its rows
        blk_stride = Signal(32)                             # n_pe * row stride

        hd_ok = (hd != 0) & mults(hd, L)
        m.d.sync += [self.done.eq(0), self.error.eq(0), self.axi_error.eq(0)]
        with m.If(err != 0):                 # report it, then idle
            m.d.sync += [self.error.eq(err), err.eq(0)]
        with m.If(self.kvq_error | self.kvr_error | self.mv_error):
            m.d.sync += bad.eq(1)

        with m.FSM(name="attn_ctl"):
            with m.State("IDLE"):
                m.d.sync += [seen.eq(0), bad.eq(0), h.eq(0), kind.eq(0), r0.eq(0)]
                with m.If(kv_acc):
                    m.d.sync += [rows.eq(kc.rows), start.eq(kc.start), hd.eq(kc.head_dim),
                                 kvh.eq(kc.kv_heads), k_base.eq(kc.k_dst), v_base.eq(kc.v_dst),
                                 k_reg.eq(kc.k_dst), v_reg.eq(kc.v_dst),
                                 k_stride.eq(kc.k_stride), v_stride.eq(kc.v_stride),
                                 src_base.eq(kc.v_src), src.eq(kc.k_src), kv_on.eq(1)]
                    m.next = "KV_CHECK"
                with m.Elif(at_acc):
                    m.d.sync += [rows.eq(ac.rows), start.eq(ac.start), hd.eq(ac.head_dim),
                                 kvh.eq(ac.kv_heads), heads.eq(ac.heads),
                                 k_base.eq(ac.k), v_base.eq(ac.v), k_reg.eq(ac.k),
                                 v_reg.eq(ac.v), k_stride.eq(ac.k_stride),
                                 v_stride.eq(ac.v_stride), src_base.eq(ac.q), src.eq(ac.q),
                                 dst_base.eq(ac.dst), dst.eq(ac.dst), score_c.eq(ac.score_c),
                                 grp.eq(1), acc.eq(ac.kv_heads), at_on.eq(1)]
                    m.next = "AT_CHECK"

            # ---- KV_WRITE
            with m.State("KV_CHECK"):
                ok = (hd_ok & (hd <= Q["max_head_dim"]) & mults(hd, Q["beat"])
                      & (kvh != 0) & (kvh < 256) & (start + rows < 2 ** CB))
                with m.If(~ok):
                    m.d.sync += [err.eq(ERROR_CODES["LIMIT"]), kv_on.eq(0)]
                    m.next = "IDLE"
                with m.Elif(rows == 0):
                    m.d.sync += [self.done.eq(1), kv_on.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [rstride.eq(stride_of(kvh * hd, eb)),
                                 hdeb.eq(times_const(hd, eb)),
                                 bpr_e.eq((hd + B - 1) >> lb), blk.eq(start >> lb),
                                 key.eq(start[:lb] if lb else 0)]
                    m.next = "GEO"
            with m.State("GEO"):
                m.d.sync += [k_row.eq(bpr_e << lb),
                             kblock.eq(align_up(khdr + (bpr_e << 2 * lb), 64)),
                             vblock.eq(align_up(hd << lb, 64))]
                m.next = "GEO2"
            with m.State("GEO2"):                # products of registered fields (DSP slices)
                m.d.sync += [k_off.eq(blk * kblock), v_off.eq(blk * vblock),
                             kr_off.eq(key * k_row)]
                m.next = "KV_WCMD"
            with m.State("KV_WCMD"):             # the quantising writer: keys of head h
                wc = self.kvq_cmd.payload
                m.d.comb += [self.kvq_cmd.valid.eq(1), wc.kind.eq(kind),
                             wc.addr.eq(Mux(kind, v_reg + v_off + key,
                                            k_reg + k_off + khdr + kr_off)),
                             wc.saddr.eq(k_reg + k_off + times_const(key, pair)),
                             wc.key.eq(key), wc.rows.eq(rows),
                             wc.bpr.eq(hd >> (Q["beat"].bit_length() - 1))]
                with m.If(self.kvq_cmd.ready):
                    m.next = "KV_MCMD"
            with m.State("KV_MCMD"):             # ... and their rows of head h
                m.d.comb += mover(rows=rows, beats=hd >> lgl, stride=rstride, src=src, write=0)
                with m.If(self.mv.ready):
                    m.next = "KV_WAIT"
            with m.State("KV_WAIT"):
                with m.If(self.mv_done | self.mv_error):
                    m.d.sync += seen.eq(1)
                with m.If(seen & ~self.kvq_busy):
                    m.d.sync += [seen.eq(0), h.eq(h + 1), k_reg.eq(k_reg + k_stride),
                                 v_reg.eq(v_reg + v_stride), src.eq(src + hdeb)]
                    with m.If(bad):
                        m.d.sync += [self.axi_error.eq(1), kv_on.eq(0)]
                        m.next = "IDLE"
                    with m.Elif(h + 1 != kvh):
                        m.next = "KV_WCMD"
                    with m.Elif(~kind):          # V: the same keys of every head again
                        m.d.sync += [kind.eq(1), h.eq(0), k_reg.eq(k_base), v_reg.eq(v_base),
                                     src.eq(src_base)]
                        m.next = "KV_WCMD"
                    with m.Else():
                        m.d.sync += [self.done.eq(1), kv_on.eq(0)]
                        m.next = "IDLE"

            # ---- ATTENTION
            with m.State("AT_CHECK"):            # g: heads = g * kv_heads, g <= NQ
                ok = (hd_ok & (hd <= E["head_dim"]) & mults(hd, E["q_beat"])
                      & mults(hd, E["o_beat"])
                      & (kvh != 0) & (heads < 256) & (start + rows < 2 ** CB))
                with m.If(~ok | (grp > NQ) | (acc > heads)):
                    m.d.sync += [err.eq(ERROR_CODES["LIMIT"]), at_on.eq(0)]
                    m.next = "IDLE"
                with m.Elif(acc == heads):
                    m.d.sync += [npe.eq(0), acc.eq(grp)]
                    m.next = "AT_NPE"
                with m.Else():
                    m.d.sync += [grp.eq(grp + 1), acc.eq(acc + kvh)]
            with m.State("AT_NPE"):              # n_pe = NQ // g
                with m.If(acc <= NQ):
                    m.d.sync += [npe.eq(npe + 1), acc.eq(acc + grp)]
                with m.Else():
                    m.d.sync += [rstride.eq(stride_of(heads * hd, eb)),
                                 hdeb.eq(times_const(grp * hd, eb))]
                    m.next = "AT_SIZE"
            with m.State("AT_SIZE"):
                with m.If(rows == 0):
                    m.d.sync += [self.done.eq(1), at_on.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += blk_stride.eq(npe * rstride)
                    m.next = "AT_BLOCK"
            with m.State("AT_BLOCK"):            # a block of rows r0.. (n_pe, the last fewer)
                m.d.sync += [nb.eq(Mux(rows - r0 < npe, rows - r0, npe)), h.eq(0),
                             k_reg.eq(k_base), v_reg.eq(v_base), src.eq(src_base),
                             dst.eq(dst_base)]
                m.next = "AT_ECMD"
            with m.State("AT_ECMD"):
                ec = self.eng_cmd.payload
                m.d.comb += [self.eng_cmd.valid.eq(1), ec.n.eq(start + r0 + nb),
                             ec.nq.eq(nb * grp), ec.c.eq(score_c), ec.hd.eq(hd)]
                for i in range(NQ):              # lane i: row i // g of the block
                    row_i = Signal(range(NQ + 1), name=f"lane{i}_row")
                    with m.Switch(grp):
                        for g in range(1, NQ + 1):
                            with m.Case(g):
                                m.d.comb += row_i.eq(i // g)
                    m.d.comb += ec.lim[i].eq(Mux(row_i < nb, start + r0 + row_i, 0))
                with m.If(self.eng_cmd.ready):
                    m.next = "AT_RCMD"
            with m.State("AT_RCMD"):
                rc = self.kvr_cmd.payload
                m.d.comb += [self.kvr_cmd.valid.eq(1), rc.k_addr.eq(k_reg),
                             rc.v_addr.eq(v_reg), rc.n.eq(start + r0 + nb), rc.hd.eq(hd)]
                with m.If(self.kvr_cmd.ready):
                    m.next = "AT_MCMD"
            with m.State("AT_MCMD"):
                beats = Signal(self.count_width)
                m.d.comb += beats.eq((grp * hd) >> lgl)
                m.d.comb += mover(rows=nb, beats=beats, stride=rstride, src=src, write=1,
                                  wbeats=beats, wstride=rstride, dst=dst)
                with m.If(self.mv.ready):
                    m.next = "AT_WAIT"
            with m.State("AT_WAIT"):
                with m.If(self.mv_done | self.mv_error):
                    m.d.sync += [h.eq(h + 1), k_reg.eq(k_reg + k_stride),
                                 v_reg.eq(v_reg + v_stride), src.eq(src + hdeb),
                                 dst.eq(dst + hdeb)]
                    with m.If(bad | self.mv_error):
                        m.d.sync += [self.axi_error.eq(1), at_on.eq(0)]
                        m.next = "IDLE"
                    with m.Elif(h + 1 != kvh):
                        m.next = "AT_ECMD"
                    with m.Elif(r0 + nb < rows):
                        m.d.sync += [r0.eq(r0 + nb), src_base.eq(src_base + blk_stride),
                                     dst_base.eq(dst_base + blk_stride)]
                        m.next = "AT_BLOCK"
                    with m.Else():
                        m.d.sync += [self.done.eq(1), at_on.eq(0)]
                        m.next = "IDLE"
        return m
