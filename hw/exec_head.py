"""LM_HEAD's control in the top (docs/hw/lm_head.md): the reads and writes around the LM-head
unit (``hw/lm_head.py``).

Per output row r of an LM_HEAD record (spec/program.py):

1. the row's absmax (one stream-format element at ``amax + r * elem bytes``: the AXI beat or
   two that hold it) and its int8 activation codes (``cols`` bytes at ``src + r * stride``,
   stride = align64(kpad)) are read on ``m_axi_w1``; the unit gets (cols, vocab, amax) and the
   codes;
2. the head region (blocks of 64 vocabulary rows: 64 float32 scales, then ``cols`` columns of
   64 int8 codes; ``spec.lm_head``) is streamed to the unit on the same master, one block's
   range at a time (block bytes = 256 + 64 * cols, a multiple of 16: whole AXI beats);
3. the unit's ``vocab`` float32 logits are written to ``dst + r * align64(vocab * 4)`` by a
   ``KVWriter`` (32-bit elements) on ``m_axi_kv``'s write channels, which the top hands to this
   block while it is busy (the sequencer runs one record at a time: nothing else writes).

The weights are read once per output row: a decode step has one (the last position's); a
prefill with every row's logits (``tellme logits``) reads them ``rows`` times.

Members
-------
i_cmd : In(stream command_layout("head"))  LM_HEAD commands (the top routes EMBED elsewhere);
    taken while idle.
done : Out(1)  one-cycle pulse once the last row's last write response is in.
error : Out(8)  instead of ``done``: LIMIT (10) when ``cols`` is over ``max_d`` or not a
    multiple of ``spec.lm_head.Q_BEAT`` (the unit's code beat), or ``vocab`` is over
    2**vocab_bits - 1; nothing is read or written then.
axi_error : Out(1)  instead of ``done``: a read (port weights1) or write (kv/act) response of
    the record was not OKAY; ``axi_port`` (Out(4)) says which. The record runs to its end first
    (the masters are quiet when it reports).
busy : Out(1)  a record is in progress.
u_cmd, u_q, u_w : Out(stream)  to the unit's ``cmd``, ``q`` and ``w``; u_o : In(stream) from its
    ``o``.
r_ar* / r_r*  AXI4 read master (``m_axi_w1``); w_aw*, w_w*, w_b*  AXI4 write master.

Throughput: one AXI beat per cycle on ``m_axi_w1`` while the memory keeps up (bursts of up to
``max_burst`` beats, ``max_outstanding`` in flight, never across 4 KiB); the unit takes one
weight beat per cycle (``lanes`` = 16 int8 codes on a 128-bit port). Per row: the absmax and
code reads (latency of the memory + cols / 16 beats) before the first weight beat, and the
last write response after the last logit.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.lm_head import HEAD_ROWS, Q_BEAT, SCALE_BYTES
from tellme.spec.memory_map import ADDR_BITS, ROW_ALIGN
from tellme.spec.numerics import FP16, stream_format
from tellme.spec.program import ERROR_CODES
from tellme.spec.registers import PORTS

from .arith import align_up
from .attention.kv_dma import KVWriter, burst_read_master, write_command_layout
from .axi_arbiter import read_port_members
from .lm_head import VOCAB_BITS
from .row_dma import axi_members, connect_axi
from .sequencer import command_layout

__all__ = ["HeadCtl"]

class HeadCtl(wiring.Component):
    def __init__(self, *, unit, addr_width: int = ADDR_BITS, data_width: int = 128,
                 vocab_bits: int = VOCAB_BITS, max_burst: int = 16, max_outstanding: int = 4,
                 fmt=None):
        self.fmt = stream_format(fmt)
        self.lanes = unit.lanes
        if data_width != 8 * self.lanes:
            self._MustUse__silence = True
            raise ValueError(f"HeadCtl: the unit's weight beat ({self.lanes} bytes) must be the "
                             f"AXI beat ({data_width // 8} bytes)")
        self.addr_width, self.data_width = addr_width, data_width
        self.max_d, self.vocab_bits = unit.max_d, vocab_bits
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        self._writer = KVWriter(beat=2, fmt=FP16, data_width=data_width, addr_width=addr_width,
                                count_width=vocab_bits)
        super().__init__({
            "i_cmd": In(stream.Signature(command_layout("head", addr_width))),
            "done": Out(1), "error": Out(8), "axi_error": Out(1), "axi_port": Out(4),
            "busy": Out(1),
            "u_cmd": Out(stream.Signature(unit.cmd.payload.shape())),
            "u_q": Out(stream.Signature(unit.q.payload.shape())),
            "u_w": Out(stream.Signature(unit.w.payload.shape())),
            "u_o": In(stream.Signature(unit.o.payload.shape())),
            **read_port_members("r", addr_width, data_width, master=True),
            **axi_members(self._writer, "w"),
        })

    def elaborate(self, platform):
        m = Module()
        NB = self.data_width // 8
        lnb = NB.bit_length() - 1
        eb = self.fmt.bits // 8
        aw = self.addr_width

        clear = Signal()                        # a new record: the sticky error flags go
        m.submodules.writer = wr = ResetInserter(clear)(self._writer)
        connect_axi(m, self, "w", wr)

        # -- the record's fields and the row's running addresses ------------------------------
        a = self.i_cmd.payload.args.lm_head
        rows, row = Signal(32), Signal(32)
        cols, vocab = Signal(16), Signal(self.vocab_bits)
        head, amax_a, q_a, dst_a = (Signal(aw, name=n) for n in ("head", "amax_a", "q_a",
                                                                 "dst_a"))
        q_stride, o_stride = Signal(aw), Signal(aw)
        blocks = Signal(self.vocab_bits)

        amax_off = Signal(range(NB))            # the absmax's byte in its first beat
        amax_two = Signal()                     # ... and whether it spills into a second
        q_beats = Signal(16)
        blk_beats = Signal(24)                  # (256 + 64 * cols) / NB
        m.d.comb += [amax_off.eq(amax_a[:lnb]), amax_two.eq(amax_a[:lnb] + eb > NB),
                     q_beats.eq((cols + NB - 1) >> lnb),
                     blk_beats.eq((SCALE_BYTES + (cols << _LOG_ROWS)) >> lnb)]

        # -- the read master on m_axi_w1 and its address side: absmax, codes, then the head a
        # block's range at a time, each loaded once the previous range is all requested
        rd_addr, rd_beats = Signal(aw), Signal(24)
        pop, rd_err = Signal(), Signal()
        rf = burst_read_master(m, self, "r", addr=rd_addr, beats=rd_beats, pop=pop,
                               max_burst=self.max_burst, max_outstanding=self.max_outstanding,
                               error=rd_err)
        m.d.comb += [self.r_arid.eq(0), self.r_arlock.eq(0), self.r_arprot.eq(0),
                     self.r_arqos.eq(0)]
        with m.If(clear):
            m.d.sync += rd_err.eq(0)
        start_row = Signal()
        rd_blk = Signal(self.vocab_bits)        # blocks left to request
        with m.FSM(name="rd"):
            with m.State("IDLE"):
                with m.If(start_row):
                    m.d.sync += [rd_addr.eq(Cat(Const(0, lnb), amax_a[lnb:])),
                                 rd_beats.eq(1 + amax_two), rd_blk.eq(blocks)]
                    m.next = "Q"
            with m.State("Q"):
                with m.If(rd_beats == 0):
                    m.d.sync += [rd_addr.eq(q_a), rd_beats.eq(q_beats)]
                    m.next = "W0"
            with m.State("W0"):
                with m.If(rd_beats == 0):
                    m.d.sync += [rd_addr.eq(head), rd_beats.eq(blk_beats),
                                 rd_blk.eq(rd_blk - 1)]
                    m.next = "W"
            with m.State("W"):
                with m.If(rd_blk == 0):
                    m.next = "IDLE"
                with m.Elif(rd_beats == 0):
                    m.d.sync += [rd_beats.eq(blk_beats), rd_blk.eq(rd_blk - 1)]

        # -- data side ------------------------------------------------------------------------
        first = Signal(self.data_width)         # the absmax's first beat, its spill
        spill = Signal(8 * eb)
        amax_bits = Signal(self.fmt.bits)
        window = Cat(first, spill)
        left = Signal(24)                       # beats left of the current range
        blk_left = Signal(self.vocab_bits)
        sent_u, sent_w = Signal(), Signal()
        piece = Signal(range(_QPIECES))         # the q beat's piece of its AXI beat

        err_code = Signal(8)
        lim = ERROR_CODES["LIMIT"]
        m.d.comb += [
            self.u_cmd.payload.d.eq(cols), self.u_cmd.payload.vocab.eq(vocab),
            self.u_cmd.payload.amax.eq(amax_bits),
            self.u_q.payload.eq(rf.r_data.word_select(piece, 8 * Q_BEAT)),
            self.u_w.payload.eq(rf.r_data),
            wr.i.payload.eq(self.u_o.payload), wr.i.valid.eq(self.u_o.valid),
            self.u_o.ready.eq(wr.i.ready),
        ]
        with m.If((a.cols > self.max_d) | (a.cols[:_LOG_QB] != 0)
                  | (a.vocab >> self.vocab_bits != 0)):
            m.d.comb += err_code.eq(lim)
        wcmd = Signal(write_command_layout(aw, self.vocab_bits, 2))
        m.d.comb += [wcmd.addr.eq(dst_a), wcmd.beats.eq(vocab), wcmd.tail.eq(0),
                     wr.i_cmd.payload.eq(wcmd)]
        m.d.sync += [self.done.eq(0), self.error.eq(0), self.axi_error.eq(0)]

        with m.FSM(name="head"):
            with m.State("IDLE"):
                m.d.comb += self.i_cmd.ready.eq(1)
                with m.If(self.i_cmd.valid):
                    m.d.comb += clear.eq(1)
                    with m.If(err_code != 0):
                        m.d.sync += self.error.eq(err_code)
                    with m.Else():
                        m.d.sync += [rows.eq(a.rows), cols.eq(a.cols), vocab.eq(a.vocab),
                                     head.eq(a.head), amax_a.eq(a.amax), q_a.eq(a.src),
                                     dst_a.eq(a.dst), row.eq(0),
                                     q_stride.eq(align_up(a.kpad, ROW_ALIGN)),
                                     o_stride.eq(align_up(a.vocab << 2, ROW_ALIGN)),
                                     blocks.eq((a.vocab + HEAD_ROWS - 1) >> _LOG_ROWS)]
                        m.next = "ROW"
            with m.State("ROW"):
                m.d.comb += [self.busy.eq(1), start_row.eq(1)]
                m.next = "AMAX0"
            with m.State("AMAX0"):
                m.d.comb += [self.busy.eq(1), pop.eq(rf.r_rdy)]
                with m.If(rf.r_rdy):
                    m.d.sync += first.eq(rf.r_data)
                    m.next = "AMAX1"
                    with m.If(~amax_two):        # the absmax lies in this beat
                        m.next = "PICK"
            with m.State("AMAX1"):
                m.d.comb += [self.busy.eq(1), pop.eq(rf.r_rdy)]
                with m.If(rf.r_rdy):
                    m.d.sync += spill.eq(rf.r_data[:8 * eb])
                    m.next = "PICK"
            with m.State("PICK"):                # a byte multiplexer per absmax byte
                m.d.comb += self.busy.eq(1)
                m.d.sync += [amax_bits.eq(Cat(*(window.word_select(amax_off + j, 8)
                                                for j in range(eb)))),
                             sent_u.eq(0), sent_w.eq(0), left.eq(cols >> _LOG_QB),
                             piece.eq(0)]
                m.next = "CMD"
            with m.State("CMD"):                 # the unit's and the writer's commands
                m.d.comb += [self.busy.eq(1), self.u_cmd.valid.eq(~sent_u),
                             wr.i_cmd.valid.eq(~sent_w)]
                u_ok = sent_u | self.u_cmd.ready
                w_ok = sent_w | wr.i_cmd.ready
                m.d.sync += [sent_u.eq(u_ok), sent_w.eq(w_ok)]
                with m.If(u_ok & w_ok):
                    m.next = "Q"
            with m.State("Q"):                   # Q_BEAT codes a beat, NB / Q_BEAT per AXI beat
                last_piece = (piece == _QPIECES - 1) | (left == 1)
                m.d.comb += [self.busy.eq(1), self.u_q.valid.eq(rf.r_rdy),
                             pop.eq(rf.r_rdy & self.u_q.ready & last_piece)]
                with m.If(rf.r_rdy & self.u_q.ready):
                    m.d.sync += [left.eq(left - 1), piece.eq(Mux(last_piece, 0, piece + 1))]
                    with m.If(left == 1):
                        m.d.sync += [left.eq(blk_beats), blk_left.eq(blocks)]
                        m.next = "W"
            with m.State("W"):
                m.d.comb += [self.busy.eq(1), self.u_w.valid.eq(rf.r_rdy),
                             pop.eq(rf.r_rdy & self.u_w.ready)]
                with m.If(pop):
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        m.d.sync += [left.eq(blk_beats), blk_left.eq(blk_left - 1)]
                        with m.If(blk_left == 1):
                            m.next = "WAIT_B"
            with m.State("WAIT_B"):              # the row's last write response
                m.d.comb += self.busy.eq(1)
                with m.If(wr.done):
                    m.d.sync += [row.eq(row + 1), amax_a.eq(amax_a + eb), q_a.eq(q_a + q_stride),
                                 dst_a.eq(dst_a + o_stride)]
                    m.next = "ROW"
                    with m.If(row + 1 == rows):
                        m.next = "END"
            with m.State("END"):
                m.d.comb += self.busy.eq(1)
                with m.If(rd_err | wr.error):
                    m.d.sync += self.axi_error.eq(1)
                with m.Else():
                    m.d.sync += self.done.eq(1)
                m.next = "IDLE"
        m.d.comb += self.axi_port.eq(PORTS.index("weights1"))
        with m.If(wr.error):
            m.d.comb += self.axi_port.eq(PORTS.index("kv/act"))
        return m


_LOG_ROWS = HEAD_ROWS.bit_length() - 1
_LOG_QB = Q_BEAT.bit_length() - 1
_QPIECES = 128 // (8 * Q_BEAT)            # q beats per 128-bit AXI beat
assert HEAD_ROWS == 1 << _LOG_ROWS

