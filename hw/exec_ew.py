"""The row execution unit of the top (docs/hw/top.md): class ``ew``, ``head`` and ``linear``
commands from the sequencer, rows from DDR through one set of row movers, the element-wise
blocks and the linear unit, rows back to DDR. The sequencer runs one record at a time, so
the classes share the movers.

This build executes:

* ``RESIDUAL``: dst = RN(x + y) (``ResidualAdd``);
* ``GATED_ACT``: dst = act(gate) * up, one rounding (``GatedAct``, ``act`` 0 SiLU, 1 ReLU^2);
* ``EMBED``: dst[r] = RN(table[ids[r]]) from a float32, float16 or bfloat16 table
  (``FloatToStream``);
* ``NORM``: h = RN(x * g * r) and amax = max|h| per row (``RMSNormAbsmax``, the gain through
  ``FloatToStream``);
* ``QUANT``: int8 q = clamp(RNE(h * s_q)), s_q = RN32(127 / amax) per row (``TokenScale``,
  ``Quantize``), rows zero-padded to ``kpad`` bytes;
* ``ROPE``: adjacent pairs (x[2i], x[2i+1]) rotated by the position's table row (``RoPE``);
* ``LINEAR`` (class ``linear``, with a ``preset``): y = RN(acc * s_tok) of the int8 rows and
  the ternary codes (``LinearUnit`` on its own weight master, ``TlmmOutBuffer``,
  ``Dequantize``);

and answers LM_HEAD with UNSUPPORTED_OP, so a program stops at it cleanly (the top routes
LM_HEAD to its LM-head unit, hw/exec_head.py, so it never gets one there). Semantics are
golden ``program_exec``'s ``_residual``, ``_gated_act``, ``_embed``, ``_norm``, ``_quant``,
``_rope`` and ``_linear``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.memory_map import ADDR_BITS, ROW_ALIGN
from tellme.spec.numerics import StreamFormat, stream_format
from tellme.spec.program import ERROR_CODES, OPS, PAIRINGS

from .arith import align_up, stride_of, times_const
from .convert import FloatToStream
from .elementwise.dequantize import Dequantize
from .elementwise.gated_act import GatedAct
from .elementwise.outbuf import TlmmOutBuffer
from .elementwise.quantize import Quantize
from .elementwise.residual import ResidualAdd
from .elementwise.rmsnorm import RMSNormAbsmax
from .elementwise.rope import RoPE
from .elementwise.scalar import TokenScale
from .exec_attn import AttnCtl, Regroup
from .linear import LinearUnit
from .presets import HwPreset
from .row_dma import RowDMA, axi_members, connect_axi
from .sequencer import command_layout

__all__ = ["EwUnit"]

_RESIDUAL, _GATED = OPS["RESIDUAL"].code, OPS["GATED_ACT"].code
_EMBED, _NORM, _QUANT = OPS["EMBED"].code, OPS["NORM"].code, OPS["QUANT"].code
_ROPE = OPS["ROPE"].code
_ADJACENT = PAIRINGS.index("adjacent")


class EwUnit(wiring.Component):
    """Row execution unit: NORM, QUANT, ROPE, RESIDUAL and GATED_ACT (class ``ew``), EMBED
    (class ``head``) and LINEAR (class ``linear``) over ``rows`` rows of ``cols`` elements.

    Parameters: ``lanes`` (elements per beat: the target's ew_lanes), ``fmt`` (stream format),
    ``addr_width``, ``data_width`` (AXI), ``count_width`` (beats per row), ``max_rows`` (rows
    an EMBED or NORM holds ids or absmaxes of: the target's tokens per call), ``max_cols``
    (NORM's row buffer: the target's row_max).

    Members
    -------
    i_cmd : In(stream command_layout("ew")); i_head : In(stream command_layout("head"))
        accepted while idle (one of them at a time: the sequencer's record in flight).
    done : Out(1)  one-cycle pulse once every row's last write response is in.
    error : Out(8)  one-cycle program error code instead of ``done``: UNSUPPORTED_OP (11) for
        LM_HEAD, and for LINEAR without a ``preset``; LIMIT (10) for a ROPE of split-half
        pairing (``pairing`` 0: the weight file must hold its q/k rows in adjacent-pair
        order), 0 or 256+ heads, a head_dim not a multiple of ``lanes`` or over 1023, a
        start position over 65535, and when ``cols`` is 0,
        not a multiple of ``lanes`` (rows are read and written in whole beats) or over
        ``2**count_width`` beats, a NORM row is over ``max_cols``, an EMBED, NORM or QUANT
        has more than ``max_rows`` rows, or a QUANT's ``kpad`` is below ``cols``, not a
        multiple of the writer's beat (``lanes`` stream elements' bytes: 6 at FP24 with 2
        lanes) or over 2**16; BAD_FIELD (8) when a token id is >= ``vocab`` (all ids are
        checked before any row is written: nothing is written then).
    axi_error : Out(1)  one-cycle pulse instead of ``done`` when a read or write response of
        this unit was not OKAY (the top raises ERR_FLAGS.AXI_SLVERR; SLVERR and DECERR are not
        told apart). The movers' command in flight still runs to its end, so the unit is idle
        and its masters quiet when it reports.
    busy : Out(1)  a command is in progress; stall : Out(1)  busy and no beat written this
        cycle (the EW counters of docs/hw/registers.md); linear_busy : Out(1)  the
        LinearUnit (weight streamer, buffer, TLMM) has work.
    r0_* / r1_*  AXI4 read masters (x / gate rows, token ids; y / up rows, table rows, the
        norm gain); w_aw*, w_w*, w_b*: AXI4 write master (dst rows, the absmax row).

    Dataflow of RESIDUAL / GATED_ACT, per row r (``RowDMA``): operand rows at x + r * stride
    and y + r * stride (stride = align64(cols * bytes per element)), ``cols / lanes`` beats
    each, combined beat by beat by the op's block, the result stored at dst + r * stride.
    ``dst`` may be an operand: a row is read before it is written. Throughput: one beat per
    cycle while the memory keeps up, plus the writer's per-row turnaround (``RowDMA``).

    EMBED: pass 1 reads the ``rows`` u32 ids (reader 0, ``lanes`` per vector) into a RAM and
    checks them against ``vocab``; pass 2, per row, forms ``table + id * cols * dtype bytes``
    (a shift-and-add multiply, one cycle per id bit) and moves that table row (reader 1,
    2- or 4-byte elements) through ``FloatToStream`` to dst + r * stride, one mover command per
    row.

    NORM: one mover command for the rows (x on reader 0; the gain on reader 1 with its address
    held, through ``FloatToStream``) into ``RMSNormAbsmax``; h rows to dst, each row's absmax
    into a RAM lane; then one write of the ``rows`` absmaxes to ``amax``, its last beat cut to
    ``rows % lanes`` elements by the writer's ``tail``. Per row: the norm block's two passes
    (docs/hw/elementwise.md), one beat per cycle each, the rsqrt between them.

    QUANT: a read-only command brings the absmax row into the same RAM while two long
    divisions by the writer's beat D (one quotient bit a cycle) give ``kpad / D`` and
    ``ceil(cols / D)``; then one mover command for the rows: h on reader 0 into ``Quantize``
    (int8 repacked to D per beat), its s_q per row from the RAM through ``TokenScale`` (about
    70 cycles a row, ahead of the row's first beat), and zero beats after each row's
    ``ceil(cols / D)`` up to ``kpad / D``, to dst + r * align64(kpad).

    ROPE: per token row one mover command whose rows are the heads: x on reader 0 (head h at
    src + r * stride + h * head_dim * bytes), the table row of position start + r on reader 1
    with its address held (replayed for every head), through ``RoPE`` to the same places
    under dst.

    LINEAR (``preset`` given: the TLMM geometry): the absmax row into the RAM as for QUANT; one
    ``LinearUnit`` command (it streams every tile's codes on ``wt_*`` into its ping-pong buffer
    ahead of the engine); then per tile one mover command: the int8 rows (``kb * 3T`` bytes at
    align64) on reader 0 as vectors of ``lanes`` 3-byte words, ``T / lanes`` of them per 3T
    activation beat, and the tile's columns of each output row written at dst + r * stride +
    (first column) * bytes, its last beat cut by ``tail`` (the accumulators of columns past
    ``n`` dropped). s_tok = RN32(amax * scale / 127) per token and tile from ``TokenScale``.
    The next tile's activations start when the previous tile's rows are written (the engine
    waits a read latency per tile).

    Members for LINEAR: ``i_linear`` (In(stream command_layout("linear"))); ``wt_*`` the
    LinearUnit's AXI4 read master; ``axi_port`` (Out(4)): ERR_INFO.PORT of ``axi_error``, 0
    (weights0) for a weight read error, else 3 (kv/act). LIMIT for rows 0 or over the tokens
    per call, kb or tile_nb 0 or over the preset, a tile over the buffer half, or n over nb * Q.
    """

    def __init__(self, *, lanes: int = 2, fmt: StreamFormat | None = None,
                 addr_width: int = ADDR_BITS, data_width: int = 128, count_width: int = 16,
                 max_rows: int = 1024, max_cols: int = 256, preset: HwPreset | None = None,
                 attn: dict | None = None):
        fmt = stream_format(fmt)
        self.lanes, self.fmt, self.count_width = lanes, fmt, count_width
        self.max_rows, self.max_cols = max_rows, max_cols
        self.preset = preset
        if preset is not None and preset.t % lanes:
            raise ValueError(f"LINEAR needs lanes={lanes} to divide T={preset.t} (activation "
                             f"beats of 3T int8 from vectors of 3 * lanes bytes)")
        self._dma = RowDMA(readers=2, lanes=lanes, fmt=fmt, addr_width=addr_width,
                           data_width=data_width, count_width=count_width)
        self._lin = (LinearUnit(preset, data_width=data_width, addr_width=addr_width)
                     if preset is not None else None)
        members = {"i_cmd": In(stream.Signature(command_layout("ew", addr_width))),
                   "i_head": In(stream.Signature(command_layout("head", addr_width))),
                   "i_linear": In(stream.Signature(command_layout("linear", addr_width))),
                   "done": Out(1), "error": Out(8), "axi_error": Out(1), "axi_port": Out(4),
                   "busy": Out(1), "stall": Out(1), "linear_busy": Out(1)}
        for prefix in ("r0", "r1", "w"):
            members.update(axi_members(self._dma, prefix, prefix))
        if self._lin is not None:
            members.update(axi_members(self._lin, "wt"))
        self._attn = (AttnCtl(lanes=lanes, fmt=fmt, addr_width=addr_width,
                              count_width=count_width, **attn) if attn is not None else None)
        if self._attn is not None:
            sig = self._attn.signature.members
            for name in ("i_kv", "i_attn", "kvq_cmd", "kvq", "kvq_busy", "kvq_error", "kv_sel",
                         "eng_cmd", "eng_q", "eng_o", "kvr_cmd", "kvr_error"):
                members[name] = sig[name]
            members["kv_clear"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        L, CW, R = self.lanes, self.count_width, self.max_rows
        done_r, error_r, axi_error_r = Signal(), Signal(8), Signal()    # the row ops' reports
        ctl = self._attn
        if ctl is not None:
            m.submodules.attn_ctl = ctl
        eb = self.fmt.bits // 8
        m.submodules.dma = dma = self._dma
        for prefix in ("r0", "r1", "w"):
            connect_axi(m, self, prefix, dma, prefix)
        m.submodules.res = res = ResidualAdd(lanes=L, fmt=self.fmt)
        m.submodules.gated = gated = GatedAct(lanes=L, fmt=self.fmt)
        m.submodules.conv = conv = FloatToStream(lanes=L, fmt=self.fmt)
        m.submodules.norm = norm = RMSNormAbsmax(lanes=L, n_max=self.max_cols, fmt=self.fmt)
        D = L * eb                            # int8 per written beat (the writer's width)
        m.submodules.tscale = tscale = TokenScale(fmt=self.fmt)
        m.submodules.quant = quant = Quantize(lanes=L, out_lanes=D, fmt=self.fmt)
        lgl = L.bit_length() - 1
        dtype = Signal(2)                     # weight-file float storage (EMBED, NORM)
        m.d.comb += conv.dtype.eq(dtype)

        dc = dma.i_cmd.payload

        def mover(**f):
            """Comb statements that offer one mover command: ``RowDMA`` fields by name,
            ``src0``/``src1`` and ``eb0``/``eb1`` the readers' addresses and element bytes."""
            out = [dma.i_cmd.valid.eq(1)]
            for k, v in f.items():
                field = (dc.src[int(k[3])] if k.startswith("src") else
                         dc.ebytes[int(k[2])] if k.startswith("eb") else getattr(dc, k))
                out.append(field.eq(v))
            return out

        def vecs(n):                          # beats of ``lanes`` elements holding n
            return (n + L - 1) >> lgl

        def lane(i):                          # element i's lane within its beat
            return i[:lgl] if L > 1 else 0

        def stream_words(dst, src):
            """A stream beat from a reader's vector: each word's low ``fmt.bits`` bits."""
            return [dst.payload.data[j].eq(src.payload.data[j][:self.fmt.bits])
                    for j in range(L)]

        def fits(cols):
            return (cols != 0) & (cols % L == 0) & (cols // L < 2 ** CW)

        # ---- class ew: decode, check, hand the geometry to the row movers
        c = self.i_cmd.payload
        is_gated, is_norm, is_quant = c.opcode == _GATED, c.opcode == _NORM, c.opcode == _QUANT
        is_rope = c.opcode == _ROPE
        r, g, nr, qr = c.args.residual, c.args.gated_act, c.args.norm, c.args.quant
        rr = c.args.rope
        cols = Signal(32)
        m.d.comb += cols.eq(Mux(is_gated, g.cols, Mux(is_norm, nr.cols,
                                                      Mux(is_quant, qr.cols, r.cols))))
        op = Signal(8)
        act = Signal()
        err = Signal(8)
        pending = Signal()                    # an ew command handed to the movers, not done
        emb = Signal()                        # an EMBED in progress
        qz = Signal()                         # a QUANT or LINEAR in progress
        rp = Signal()                         # a ROPE in progress
        idle = ~pending & ~emb & ~qz & ~rp & (err == 0)
        if ctl is not None:
            idle = idle & ~ctl.busy
        ew_cmd = Signal()                     # this cycle's mover command is the ew op's
        m.d.comb += ew_cmd.eq(self.i_cmd.valid & idle)
        with m.If(ew_cmd):
            m.d.comb += [dc.rows.eq(r.rows), dc.beats.eq(cols // L),
                         dc.stride.eq(stride_of(cols, eb)),
                         dc.wbeats.eq(cols // L), dc.wstride.eq(stride_of(cols, eb)),
                         dc.src[0].eq(Mux(is_gated, g.gate, Mux(is_norm, nr.src, r.x))),
                         dc.src[1].eq(Mux(is_gated, g.up, Mux(is_norm, nr.gain, r.y))),
                         dc.dst.eq(Mux(is_gated, g.dst, Mux(is_norm, nr.dst, r.dst))),
                         dc.ebytes[0].eq(eb),
                         dc.ebytes[1].eq(Mux(is_norm, Mux(nr.dtype == 0, 4, 2), eb)),
                         dc.use.eq(0b11), dc.hold.eq(Mux(is_norm, 0b10, 0)), dc.write.eq(1)]
        known = (c.opcode == _RESIDUAL) | is_gated | is_norm | is_quant | is_rope
        # ROPE: adjacent pairs only (a weight file with split-half q/k rows is permuted when it
        # is converted for the accelerator); whole beats per head
        rope_ok = ((rr.pairing == _ADJACENT) & (rr.heads != 0) & (rr.heads < 256)
                   & fits(rr.head_dim) & (rr.head_dim < 1024) & (rr.start < 2 ** 16))
        ok = Mux(is_rope, rope_ok,
                 fits(cols) & (~is_norm | ((cols <= self.max_cols) & (r.rows <= R)))
                 & (~is_quant | ((r.rows <= R) & (qr.kpad >= qr.cols) & (qr.kpad < 2 ** 16))))
        m.d.comb += self.i_cmd.ready.eq(idle & dma.i_cmd.ready)
        accept = self.i_cmd.valid & self.i_cmd.ready
        ew_go = Signal()
        m.d.comb += ew_go.eq(accept & known & ok & ~is_quant & ~is_rope)

        # NORM: phase 1 the rows (h out, each row's absmax into a RAM), phase 2 the absmax row
        n_p1 = Signal()                       # NORM rows in flight
        n_p2 = Signal()                       # NORM absmax row in flight
        n_cmd = Signal()                      # the absmax row's mover command is due
        n_rows = Signal(range(R + 1))
        n_amax = Signal(len(nr.amax))
        n_eps = Signal(32)
        m.d.comb += norm.eps.eq(n_eps)
        norm_more = n_p1 & (n_rows != 0)      # phase 1 ends in phase 2
        m.d.sync += [error_r.eq(0), done_r.eq(dma.done & pending & ~norm_more),
                     axi_error_r.eq(dma.axi_error & pending)]
        with m.If(accept):
            with m.If(~known):
                m.d.sync += err.eq(ERROR_CODES["UNSUPPORTED_OP"])
            with m.Elif(~ok):
                m.d.sync += err.eq(ERROR_CODES["LIMIT"])
            with m.Else():
                m.d.sync += [op.eq(c.opcode), act.eq(g.act[0]),
                             pending.eq(~is_quant & ~is_rope)]
                with m.If(is_norm):
                    m.d.sync += [n_p1.eq(1), n_rows.eq(nr.rows), n_amax.eq(nr.amax),
                                 n_eps.eq(nr.eps), dtype.eq(nr.dtype)]
        with m.If(err != 0):                          # report it, then idle
            m.d.sync += [error_r.eq(err), err.eq(0)]
        with m.If(dma.axi_error | (dma.done & ~norm_more)):
            m.d.sync += [pending.eq(0), n_p1.eq(0), n_p2.eq(0)]
        with m.Elif(dma.done):
            m.d.sync += [n_p1.eq(0), n_cmd.eq(1)]
        with m.If(n_cmd):
            m.d.comb += mover(rows=1, beats=vecs(n_rows), dst=n_amax, wbeats=vecs(n_rows),
                              write=1, tail=lane(n_rows))
            with m.If(dma.i_cmd.ready):
                m.d.sync += [n_cmd.eq(0), n_p2.eq(1)]

        # the absmaxes: one lane of a RAM word per row, read back as the absmax row
        words = -(-R // L)
        m.submodules.amax_ram = amax_ram = memory.Memory(shape=self.fmt.bits * L, depth=words,
                                                         init=[])
        a_w = amax_ram.write_port(granularity=self.fmt.bits)
        a_r = amax_ram.read_port()
        a_cnt = Signal(range(R + 1))          # absmaxes written (phase 1)
        a_ra = Signal(range(words + 1))       # next word to read (phase 2)
        a_valid = Signal()
        n_on = pending & (op == _NORM) & n_p1
        with m.If(accept):
            m.d.sync += [a_cnt.eq(0), a_ra.eq(0), a_valid.eq(0)]
        row_end = n_on & norm.o.valid & norm.o.ready & norm.o.payload.last
        m.d.comb += [a_w.addr.eq(a_cnt >> lgl),
                     a_w.data.eq(norm.o.payload.amax.replicate(L)),
                     a_w.en.eq(Mux(row_end, Const(1, L) << lane(a_cnt), 0))]
        with m.If(row_end):
            m.d.sync += a_cnt.eq(a_cnt + 1)
        nvec = vecs(n_rows)
        advance = n_p2 & (~a_valid | dma.i.ready)
        m.d.comb += [a_r.addr.eq(a_ra), a_r.en.eq(advance)]
        with m.If(advance):
            m.d.sync += a_valid.eq(a_ra < nvec)
            with m.If(a_ra < nvec):
                m.d.sync += a_ra.eq(a_ra + 1)

        # ---- QUANT: the absmax row into the RAM, then the rows: s_q per row (TokenScale) and
        # the int8 rows of kpad bytes, D per written beat, zero beats up to kpad
        q_rows = Signal(range(R + 1))
        q_src, q_amax, q_dst = Signal(len(qr.src)), Signal(len(qr.amax)), Signal(len(qr.dst))
        q_beats = Signal(CW)                  # h beats per row
        q_stride, q_wstride = Signal(32), Signal(32)
        q_kpad, q_colsd = Signal(16), Signal(17)             # kpad; cols + D - 1
        dv_k, dv_c = Signal(17), Signal(17)   # remainders of the two divisions by D
        q_wb, q_qb = Signal(17), Signal(17)   # kpad / D, ceil(cols / D)
        dv_i = Signal(range(18))              # quotient bits still to decide (0: done)
        dv_d = Signal(17 + D.bit_length())    # D << (dv_i - 1)
        dv_q = Signal(17)                     # 1 << (dv_i - 1)
        q_wc = Signal(range(words + 1))       # absmax words taken
        with m.If(dv_i != 0):                 # long division by the constant D, one bit a cycle
            m.d.sync += [dv_i.eq(dv_i - 1), dv_d.eq(dv_d >> 1), dv_q.eq(dv_q >> 1)]
            with m.If(dv_k >= dv_d):
                m.d.sync += [dv_k.eq(dv_k - dv_d), q_wb.eq(q_wb | dv_q)]
            with m.If(dv_c >= dv_d):
                m.d.sync += [dv_c.eq(dv_c - dv_d), q_qb.eq(q_qb | dv_q)]
        q_feed = Signal()                     # rows running: s_q fed, int8 rows written
        f_cb = Signal(16)                     # LINEAR: first column block of the fed tile
        l_scale_ready = Signal()
        dma_err_seen = Signal()               # LINEAR: a mover error, reported at the end
        f_r = Signal(range(R + 1))            # next row whose absmax is read
        f_lane = Signal(max(1, lgl))
        f_valid = Signal()
        pb = Signal(17)                       # written beat within the row
        # ---- class linear: the LinearUnit (weights on the wt_* master), activations and
        # outputs through the row movers, one mover command per tile
        lc = self.i_linear.payload
        la = lc.args
        lin = Signal()                        # the amax-row op in progress is a LINEAR
        l_go = Signal()
        p = self.preset
        if p is not None:
            lu = self._lin                    # (its sticky flags cleared by each LINEAR)
            m.d.comb += self.linear_busy.eq(lu.busy)
            m.submodules.linear = ResetInserter(l_go)(lu)
            connect_axi(m, self, "wt", lu)
            acc_w = lu.acc_width
            m.submodules.outbuf = outbuf = TlmmOutBuffer(q=p.q, lanes=L, acc_width=acc_w,
                                                         depth=2 * p.nbt_max)
            m.submodules.deq = deq = Dequantize(lanes=L, acc_width=acc_w, fmt=self.fmt)
            lgq = p.q.bit_length() - 1
            # (tile_nb * kb against the buffer half: checked from registers in L_CMD)
            l_ok = ((la.rows != 0) & (la.rows <= min(R, p.tok_max)) & (la.kb != 0)
                    & (la.kb <= p.kb_max) & (la.tile_nb != 0) & (la.tile_nb <= p.nbt_max)
                    & (la.nb != 0) & (la.n <= (la.nb << lgq)) & (la.n != 0))
        else:
            l_ok = Const(0)
        m.d.comb += self.i_linear.ready.eq(idle)
        l_acc = self.i_linear.valid & idle
        with m.If(l_acc):
            with m.If(Const(p is None) | ~l_ok):
                m.d.sync += err.eq(ERROR_CODES["UNSUPPORTED_OP"] if p is None
                                   else ERROR_CODES["LIMIT"])
        l_src, l_dst, l_wts = Signal(len(la.src)), Signal(len(la.dst)), Signal(len(la.weights))
        l_n, l_nb, l_kb, l_tnb = Signal(32), Signal(16), Signal(16), Signal(16)
        l_scale = Signal(32)
        l_rbeats = Signal(CW)                 # activation vectors per row: kb * T / lanes
        l_stride, l_wstride = Signal(32), Signal(32)
        l_cb = Signal(16)                     # first column block of the tile
        l_left = Signal(32)                   # output columns from the tile's first on
        l_tcols = Signal(32)                  # columns of a whole tile: tile_nb * Q
        l_valid = Signal(32)                  # columns of this tile
        m.d.comb += l_valid.eq(Mux(l_left < l_tcols, l_left, l_tcols))
        l_feed = Signal()

        with m.FSM(name="quant"):
            with m.State("IDLE"):
                with m.If(l_acc & l_ok):
                    m.d.comb += l_go.eq(1)
                    m.d.sync += [qz.eq(1), lin.eq(1), q_rows.eq(la.rows), q_amax.eq(la.amax),
                                 l_src.eq(la.src), l_dst.eq(la.dst), l_wts.eq(la.weights),
                                 l_n.eq(la.n), l_nb.eq(la.nb), l_kb.eq(la.kb),
                                 l_tnb.eq(la.tile_nb), l_scale.eq(la.scale),
                                 q_wc.eq(0), f_r.eq(0), f_valid.eq(0)]
                    if p is not None:
                        m.d.sync += [l_rbeats.eq(times_const(la.kb, p.t) >> lgl),
                                     l_stride.eq(align_up(times_const(la.kb, 3 * p.t), ROW_ALIGN)),
                                     l_wstride.eq(stride_of(la.n, eb)),
                                     l_tcols.eq(la.tile_nb << lgq)]
                    m.next = "AMAX"
                with m.If(accept & is_quant & ok):
                    m.d.sync += [qz.eq(1), lin.eq(0), q_rows.eq(qr.rows), q_src.eq(qr.src),
                                 q_amax.eq(qr.amax), q_dst.eq(qr.dst), q_beats.eq(qr.cols // L),
                                 q_stride.eq(stride_of(qr.cols, eb)),
                                 q_wstride.eq(align_up(qr.kpad, ROW_ALIGN)),
                                 q_kpad.eq(qr.kpad), q_colsd.eq(qr.cols + D - 1),
                                 q_wc.eq(0), f_r.eq(0), f_valid.eq(0), pb.eq(0)]
                    with m.If(qr.rows == 0):
                        m.d.sync += [qz.eq(0), done_r.eq(1)]
                    with m.Else():
                        m.next = "AMAX"
            with m.State("AMAX"):             # also: start the divisions
                m.d.sync += [dv_k.eq(q_kpad), dv_c.eq(q_colsd), q_wb.eq(0), q_qb.eq(0),
                             dv_i.eq(17), dv_d.eq(D << 16), dv_q.eq(1 << 16)]
                m.d.comb += mover(rows=1, beats=vecs(q_rows), src0=q_amax, eb0=eb,
                                  use=0b01, write=0)
                with m.If(dma.i_cmd.ready):
                    m.next = "AMAX_WAIT"
            with m.State("AMAX_WAIT"):
                m.d.comb += dma.o_0.ready.eq(1)
                with m.If(dma.o_0.valid):
                    m.d.sync += q_wc.eq(q_wc + 1)
                with m.If(dma.axi_error):
                    m.d.sync += [axi_error_r.eq(1), qz.eq(0)]
                    m.next = "IDLE"
                with m.Elif(dma.done & lin):
                    m.d.sync += [l_cb.eq(0), l_left.eq(l_n), f_cb.eq(0)]
                    if p is not None:
                        m.next = "L_CHECK"
                with m.Elif(dma.done):
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(dv_i == 0):
                    with m.If((dv_k != 0) | (q_wb >= 2 ** CW)):
                        m.d.sync += [err.eq(ERROR_CODES["LIMIT"]), qz.eq(0)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "ROWS"
            with m.State("ROWS"):
                m.d.comb += mover(rows=q_rows, beats=q_beats, stride=q_stride, src0=q_src,
                                  eb0=eb, use=0b01, write=1, wbeats=q_wb, wstride=q_wstride,
                                  dst=q_dst)
                with m.If(dma.i_cmd.ready):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += q_feed.eq(1)
                with m.If(dma.axi_error):
                    m.d.sync += [axi_error_r.eq(1), qz.eq(0)]
                    m.next = "IDLE"
                with m.Elif(dma.done):
                    m.d.sync += [done_r.eq(1), qz.eq(0)]
                    m.next = "IDLE"
            if p is not None:
                lcmd = lu.i_cmd.payload
                with m.State("L_CHECK"):      # a tile within a buffer half
                    with m.If(l_tnb * l_kb > p.half_depth):
                        m.d.sync += [err.eq(ERROR_CODES["LIMIT"]), qz.eq(0), lin.eq(0)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "L_CMD"
                with m.State("L_CMD"):        # the LinearUnit walks the tiles' weights
                    m.d.comb += [lu.i_cmd.valid.eq(1), lcmd.addr.eq(l_wts),
                                 lcmd.n_tokens.eq(q_rows), lcmd.kb.eq(l_kb), lcmd.nb.eq(l_nb),
                                 lcmd.tile_nb.eq(l_tnb), l_feed.eq(1)]
                    with m.If(lu.i_cmd.ready):
                        m.next = "L_TILE"
                with m.State("L_TILE"):       # per tile: activations in, the tile's columns out
                    m.d.comb += l_feed.eq(1)
                    m.d.comb += mover(rows=q_rows, beats=l_rbeats, stride=l_stride, src0=l_src,
                                      eb0=3, use=0b01, write=1,
                                      wbeats=vecs(l_valid), wstride=l_wstride, dst=l_dst,
                                      tail=lane(l_valid))
                    with m.If(dma.i_cmd.ready):
                        m.next = "L_RUN"
                with m.State("L_RUN"):       # (after a mover error the tiles still run, so
                    m.d.comb += l_feed.eq(1)  # the LinearUnit ends idle; reported at L_END)
                    with m.If(dma.done | dma.axi_error):
                        m.d.sync += [l_cb.eq(l_cb + l_tnb), l_left.eq(l_left - l_tcols),
                                     l_dst.eq(l_dst + times_const(l_tcols, eb))]
                        with m.If(l_cb + l_tnb < l_nb):
                            m.next = "L_TILE"
                        with m.Else():
                            m.next = "L_END"
                with m.State("L_END"):        # the LinearUnit idle: done, or its error
                    m.d.comb += l_feed.eq(1)
                    with m.If(~lu.busy):
                        m.d.sync += [qz.eq(0), lin.eq(0)]
                        with m.If(lu.error | dma_err_seen):
                            m.d.sync += axi_error_r.eq(1)
                        with m.Elif(lu.overflow):
                            m.d.sync += err.eq(ERROR_CODES["LIMIT"])
                        with m.Else():
                            m.d.sync += done_r.eq(1)
                        m.next = "IDLE"
        # absmax words from reader 0 into the RAM (the whole word: L rows)
        with m.If(qz & (q_wc < words) & ~q_feed):
            m.d.comb += [a_w.addr.eq(q_wc),
                         a_w.data.eq(Cat(*(dma.o_0.payload.data[j][:self.fmt.bits]
                                           for j in range(L)))),
                         a_w.en.eq(Mux(dma.o_0.valid & dma.o_0.ready, (1 << L) - 1, 0))]
        # s_q per row: the RAM (synchronous read) -> TokenScale -> Quantize.i_scale
        # (LINEAR: s_tok per token, again for every tile)
        feeding = q_feed | l_feed
        f_adv = feeding & (~f_valid | tscale.i.ready)
        with m.If(feeding):
            m.d.comb += [a_r.addr.eq(f_r >> lgl), a_r.en.eq(f_adv)]
        with m.If(f_adv):
            m.d.sync += [f_valid.eq(f_r < q_rows), f_lane.eq(lane(f_r))]
            with m.If(f_r < q_rows):
                m.d.sync += f_r.eq(f_r + 1)
            with m.Elif(l_feed & (f_cb + l_tnb < l_nb)):      # the next tile's tokens
                m.d.sync += [f_r.eq(0), f_cb.eq(f_cb + l_tnb)]
        m.d.comb += [tscale.ws.eq(Mux(lin, l_scale, 0)), tscale.i.valid.eq(f_valid),
                     tscale.i.payload.eq(a_r.data.word_select(f_lane, self.fmt.bits)
                                         if L > 1 else a_r.data),
                     quant.i_scale.valid.eq(tscale.o.valid & ~lin),
                     quant.i_scale.payload.eq(tscale.o.payload.s_q),
                     tscale.o.ready.eq(Mux(lin, l_scale_ready, quant.i_scale.ready))]
        # h rows -> Quantize -> D-byte beats, zero beats from ceil(cols / D) up to kpad / D
        m.d.comb += [quant.i.payload.last.eq(dma.o_0.payload.last),
                     quant.i.valid.eq(dma.o_0.valid & q_feed)]
        m.d.comb += stream_words(quant.i, dma.o_0)
        from_q = pb < q_qb
        with m.If(q_feed):
            m.d.comb += [dma.o_0.ready.eq(quant.i.ready),
                         dma.i.payload.data.as_value().eq(Mux(from_q,
                                                              quant.o.payload.as_value(), 0)),
                         dma.i.valid.eq(Mux(from_q, quant.o.valid, 1)),
                         quant.o.ready.eq(dma.i.ready & from_q)]
            with m.If(dma.i.valid & dma.i.ready):
                m.d.sync += pb.eq(Mux(pb == q_wb - 1, 0, pb + 1))
        with m.If(l_go):
            m.d.sync += dma_err_seen.eq(0)
        with m.If(lin & dma.axi_error):
            m.d.sync += dma_err_seen.eq(1)
        m.d.comb += self.axi_port.eq(3)               # kv/act (spec.registers.PORTS)
        if p is not None:
            with m.If(lin & lu.error):
                m.d.comb += self.axi_port.eq(0)       # weights0
            # activations: vectors of 3 * L bytes (L words of 3) -> beats of 3T int8
            # (restarted by each LINEAR)
            acts = Regroup(24, L, p.t)
            m.submodules.acts = ResetInserter(l_go)(acts)
            m.d.comb += [acts.i.payload.as_value().eq(
                             Cat(*(dma.o_0.payload.data[j][:24] for j in range(L)))),
                         acts.i.valid.eq(dma.o_0.valid & l_feed),
                         lu.i_act.payload.as_value().eq(acts.o.payload.as_value()),
                         lu.i_act.valid.eq(acts.o.valid), acts.o.ready.eq(lu.i_act.ready)]
            with m.If(l_feed):
                m.d.comb += dma.o_0.ready.eq(acts.i.ready)
            # accumulators -> outbuf -> Dequantize (s_tok per token and tile) -> the tile's
            # columns of each row (beats past them dropped)
            wiring.connect(m, lu.o, outbuf.i)
            wiring.connect(m, outbuf.o, deq.i)
            m.d.comb += [deq.i_scale.valid.eq(tscale.o.valid & lin),
                         deq.i_scale.payload.eq(tscale.o.payload.s_tok),
                         l_scale_ready.eq(deq.i_scale.ready)]
            tb = Signal(17)                   # beat within the token's tile segment
            keep = tb < vecs(l_valid)
            with m.If(l_feed):
                m.d.comb += [dma.i.payload.eq(deq.o.payload),
                             dma.i.valid.eq(deq.o.valid & keep),
                             deq.o.ready.eq(Mux(keep, dma.i.ready, 1))]
                with m.If(deq.o.valid & deq.o.ready):
                    m.d.sync += tb.eq(Mux(deq.o.payload.last, 0, tb + 1))
            with m.If(l_go):
                m.d.sync += tb.eq(0)

        # ---- ROPE: one mover command per token row, its heads as the mover's rows: x on reader
        # 0, the position's table row on reader 1 (held: replayed for every head)
        m.submodules.rope = rope = RoPE(lanes=L, fmt=self.fmt)
        r_rows, r_row = Signal(32), Signal(32)
        r_heads, r_hd = Signal(8), Signal(10)      # (within one DSP multiplier each)
        r_src, r_dst, r_tab = Signal(len(rr.src)), Signal(len(rr.dst)), Signal(len(rr.table))
        r_start, r_pos = Signal(16), Signal(26)      # r_pos: start * head_dim
        r_width = Signal(32)                  # heads * head_dim
        r_stride, r_hdeb = Signal(32), Signal(32)    # row stride; head_dim * element bytes
        r_on = Signal()
        with m.FSM(name="rope"):
            with m.State("IDLE"):
                with m.If(accept & is_rope & ok):
                    m.d.sync += [rp.eq(1), r_rows.eq(rr.rows), r_row.eq(0),
                                 r_heads.eq(rr.heads), r_hd.eq(rr.head_dim), r_src.eq(rr.src),
                                 r_dst.eq(rr.dst), r_tab.eq(rr.table), r_start.eq(rr.start)]
                    with m.If(rr.rows == 0):
                        m.d.sync += [rp.eq(0), done_r.eq(1)]
                    with m.Else():
                        m.next = "SIZE"
            with m.State("SIZE"):             # products of registered fields (DSP slices)
                m.d.sync += [r_width.eq(r_heads * r_hd), r_hdeb.eq(times_const(r_hd, eb)),
                             r_pos.eq(r_start * r_hd)]
                m.next = "TABLE"
            with m.State("TABLE"):
                m.d.sync += r_tab.eq(r_tab + times_const(r_pos, eb))
                m.next = "STRIDE"
            with m.State("STRIDE"):
                m.d.sync += r_stride.eq(stride_of(r_width, eb))
                m.next = "ROW"
            with m.State("ROW"):
                m.d.comb += r_on.eq(1)
                m.d.comb += mover(rows=r_heads, beats=r_hd >> lgl, stride=r_hdeb, src0=r_src,
                                  src1=r_tab, eb0=eb, eb1=eb, use=0b11, hold=0b10, write=1,
                                  wbeats=r_hd >> lgl, wstride=r_hdeb, dst=r_dst)
                with m.If(dma.i_cmd.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += r_on.eq(1)
                with m.If(dma.axi_error):
                    m.d.sync += [axi_error_r.eq(1), rp.eq(0)]
                    m.next = "IDLE"
                with m.Elif(dma.done):
                    m.d.sync += [r_row.eq(r_row + 1), r_src.eq(r_src + r_stride),
                                 r_dst.eq(r_dst + r_stride), r_tab.eq(r_tab + r_hdeb)]
                    with m.If(r_row + 1 == r_rows):
                        m.d.sync += [done_r.eq(1), rp.eq(0)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "ROW"
        m.d.comb += [rope.i.payload.last.eq(dma.o_0.payload.last),
                     rope.i.valid.eq(dma.o_0.valid & r_on),
                     rope.i_cs.valid.eq(dma.o_1.valid & r_on),
                     rope.o.ready.eq(dma.i.ready & r_on)]
        m.d.comb += stream_words(rope.i, dma.o_0)
        for j in range(L // 2):               # table element 2j: cos, 2j + 1: sin
            m.d.comb += [rope.i_cs.payload[j].cos.eq(dma.o_1.payload.data[2 * j][:self.fmt.bits]),
                         rope.i_cs.payload[j].sin.eq(
                             dma.o_1.payload.data[2 * j + 1][:self.fmt.bits])]
        with m.If(r_on):
            m.d.comb += [dma.o_0.ready.eq(rope.i.ready), dma.o_1.ready.eq(rope.i_cs.ready),
                         dma.i.payload.eq(rope.o.payload), dma.i.valid.eq(rope.o.valid)]

        # ---- class head: EMBED (two passes, see the class docstring)
        h = self.i_head.payload
        e = h.args.embed
        rows, row = Signal(range(R + 1)), Signal(range(R + 1))    # row: pass 2's row
        vocab = Signal(32)
        beats = Signal(CW)                    # of a table row
        table, dst = Signal(len(e.table)), Signal(len(e.dst))
        stride = Signal(32)
        row_bytes = Signal(CW + 5)            # cols * dtype bytes
        n_ids = Signal(range(R + L))          # ids taken in pass 1
        bad = Signal()
        mul_a, mul_b = Signal(32), Signal(len(e.table))   # shift-and-add: id bits, row bytes
        src = Signal(len(e.table))
        ids_addr = Signal(len(e.ids))
        m.submodules.ids = ids = memory.Memory(shape=32 * L, depth=-(-R // L), init=[])
        ids_w = ids.write_port()                      # one vector of ids per word
        ids_r = ids.read_port()                       # synchronous: a block RAM
        m.d.comb += ids_r.addr.eq(row >> lgl)
        the_id = ids_r.data.word_select(row[:lgl], 32) if L > 1 else ids_r.data
        e_go = Signal()
        m.d.comb += self.i_head.ready.eq(idle)
        with m.FSM(name="embed"):
            with m.State("IDLE"):
                with m.If(self.i_head.valid & idle):
                    with m.If(h.opcode != _EMBED):
                        m.d.sync += err.eq(ERROR_CODES["UNSUPPORTED_OP"])
                    with m.Elif(~fits(e.cols) | (e.rows > R)):
                        m.d.sync += err.eq(ERROR_CODES["LIMIT"])
                    with m.Elif(e.rows == 0):
                        m.d.sync += done_r.eq(1)
                    with m.Else():
                        m.d.sync += [rows.eq(e.rows), vocab.eq(e.vocab), beats.eq(e.cols // L),
                                     table.eq(e.table), dst.eq(e.dst), dtype.eq(e.dtype),
                                     stride.eq(stride_of(e.cols, eb)),
                                     row_bytes.eq(Mux(e.dtype == 0, e.cols << 2, e.cols << 1)),
                                     n_ids.eq(0), bad.eq(0), row.eq(0), emb.eq(1)]
                        m.d.comb += e_go.eq(1)
                        m.next = "IDS"
            with m.State("IDS"):                       # pass 1: the ids, one read command
                m.d.comb += mover(rows=1, beats=vecs(rows), src0=ids_addr, eb0=4,
                                  use=0b01, write=0)
                with m.If(dma.i_cmd.ready):
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += dma.o_0.ready.eq(1)
                with m.If(dma.o_0.valid):
                    m.d.sync += n_ids.eq(n_ids + L)
                    for j in range(L):
                        word = dma.o_0.payload.data[j]
                        with m.If(n_ids + j < rows):
                            with m.If(word >= vocab):
                                m.d.sync += bad.eq(1)
                m.d.comb += [ids_w.addr.eq(n_ids >> lgl),
                             ids_w.data.eq(dma.o_0.payload.data.as_value()),
                             ids_w.en.eq(dma.o_0.valid)]
                with m.If(dma.axi_error):
                    m.d.sync += [axi_error_r.eq(1), emb.eq(0)]
                    m.next = "IDLE"
                with m.Elif(dma.done):
                    with m.If(bad):
                        m.d.sync += [err.eq(ERROR_CODES["BAD_FIELD"]), emb.eq(0)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "ADDR"
            with m.State("ADDR"):                     # pass 2, per row: its id is read
                m.next = "LOAD"
            with m.State("LOAD"):                     # ... and its table address formed
                m.d.sync += [mul_a.eq(the_id), mul_b.eq(row_bytes), src.eq(table)]
                m.next = "MUL"
            with m.State("MUL"):
                with m.If(mul_a[0]):
                    m.d.sync += src.eq(src + mul_b)
                m.d.sync += [mul_a.eq(mul_a >> 1), mul_b.eq(mul_b << 1)]
                with m.If(mul_a == 0):
                    m.next = "ROW"
            with m.State("ROW"):
                m.d.comb += mover(rows=1, beats=beats, wbeats=beats, src1=src, dst=dst,
                                  eb1=Mux(dtype == 0, 4, 2), use=0b10, write=1)
                with m.If(dma.i_cmd.ready):
                    m.next = "MOVE"
            with m.State("MOVE"):
                with m.If(dma.axi_error):
                    m.d.sync += [axi_error_r.eq(1), emb.eq(0)]
                    m.next = "IDLE"
                with m.Elif(dma.done):
                    m.d.sync += [row.eq(row + 1), dst.eq(dst + stride)]
                    with m.If(row + 1 == rows):
                        m.d.sync += [done_r.eq(1), emb.eq(0)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "ADDR"
        with m.If(e_go):
            m.d.sync += ids_addr.eq(e.ids)
        with m.If(ew_go):
            m.d.comb += dma.i_cmd.valid.eq(1)

        # ---- data: movers -> the op's block -> movers
        m.d.comb += gated.act.eq(act)
        blocks = {_RESIDUAL: (res.i_x, res.i_y, res.o), _GATED: (gated.i_gate, gated.i_up,
                                                                 gated.o)}
        for code, (ia, ib, o) in blocks.items():
            on = pending & (op == code)
            for k, i in enumerate((ia, ib)):
                src_k = getattr(dma, f"o_{k}")
                m.d.comb += [i.payload.last.eq(src_k.payload.last), i.valid.eq(src_k.valid & on)]
                m.d.comb += stream_words(i, src_k)
            m.d.comb += o.ready.eq(dma.i.ready & on)
            with m.If(on):
                m.d.comb += [dma.o_0.ready.eq(ia.ready), dma.o_1.ready.eq(ib.ready),
                             dma.i.payload.eq(o.payload), dma.i.valid.eq(o.valid)]
        conv_on = emb | n_on
        m.d.comb += [conv.i.payload.eq(dma.o_1.payload), conv.i.valid.eq(dma.o_1.valid & conv_on),
                     conv.o.ready.eq(Mux(emb, dma.i.ready, norm.i_g.ready) & conv_on)]
        with m.If(emb):
            m.d.comb += [dma.o_1.ready.eq(conv.i.ready), dma.i.payload.eq(conv.o.payload),
                         dma.i.valid.eq(conv.o.valid)]
        # NORM: x -> norm.i, gain -> conv -> norm.i_g, h -> the writer; then the absmax row
        m.d.comb += [norm.i.payload.last.eq(dma.o_0.payload.last),
                     norm.i.valid.eq(dma.o_0.valid & n_on),
                     norm.i_g.payload.as_value().eq(conv.o.payload.data.as_value()),
                     norm.i_g.valid.eq(conv.o.valid & n_on),
                     norm.o.ready.eq(dma.i.ready & n_on)]
        m.d.comb += stream_words(norm.i, dma.o_0)
        with m.If(n_on):
            m.d.comb += [dma.o_0.ready.eq(norm.i.ready), dma.o_1.ready.eq(conv.i.ready),
                         dma.i.payload.data.as_value().eq(norm.o.payload.data.as_value()),
                         dma.i.payload.last.eq(norm.o.payload.last),
                         dma.i.valid.eq(norm.o.valid)]
        with m.If(n_p2):
            m.d.comb += [dma.i.payload.data.as_value().eq(a_r.data), dma.i.valid.eq(a_valid)]
        busy = pending | emb | qz | rp | dma.busy
        m.d.comb += [self.done.eq(done_r), self.error.eq(error_r),
                     self.axi_error.eq(axi_error_r)]

        # ---- KV_WRITE and ATTENTION: AttnCtl drives the movers while it runs a record
        if ctl is not None:
            for name in ("i_kv", "i_attn", "kvq_cmd", "kvq", "eng_cmd", "eng_q", "eng_o",
                         "kvr_cmd"):
                wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(ctl, name))
            m.d.comb += [ctl.kvq_busy.eq(self.kvq_busy), ctl.kvq_error.eq(self.kvq_error),
                         ctl.kvr_error.eq(self.kvr_error), self.kv_sel.eq(ctl.kv_sel),
                         self.kv_clear.eq(ctl.clear),
                         ctl.rd.payload.eq(dma.o_0.payload), ctl.rd.valid.eq(dma.o_0.valid),
                         ctl.mv_done.eq(dma.done & ctl.active),
                         ctl.mv_error.eq(dma.axi_error & ctl.active),
                         self.done.eq(done_r | ctl.done), self.error.eq(error_r | ctl.error),
                         self.axi_error.eq(axi_error_r | ctl.axi_error)]
            with m.If(ctl.active):
                m.d.comb += [dma.i_cmd.payload.eq(ctl.mv.payload),
                             dma.i_cmd.valid.eq(ctl.mv.valid), ctl.mv.ready.eq(dma.i_cmd.ready),
                             dma.o_0.ready.eq(ctl.rd.ready), dma.o_1.ready.eq(0),
                             dma.i.payload.eq(ctl.wr.payload), dma.i.valid.eq(ctl.wr.valid),
                             ctl.wr.ready.eq(dma.i.ready)]
            busy = busy | ctl.busy
        m.d.comb += [self.busy.eq(busy),
                     self.stall.eq(self.busy & ~(dma.i.valid & dma.i.ready))]
        return m
