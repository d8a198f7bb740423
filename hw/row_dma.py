"""Row movers of the execution units (docs/hw/top.md): stream-format rows from DDR into a
block, and the block's rows back to DDR.

An ``act`` buffer row is ``cols`` packed little-endian elements at a stride of
``align64(cols * bytes)`` (spec/memory_map.py ``row_stride``). ``RowDMA`` reads up to
``readers`` operand rows per output row, each with a byte-granular ``RowReader`` (elements of
2, 3 or 4 bytes, chosen per command: stream-format rows, weight-file floats, token ids), and
writes the output row with the KV writer's AXI master (byte accumulator and strobes).
"""

from __future__ import annotations

from amaranth.hdl import Module, ResetInserter, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.memory_map import ADDR_BITS
from tellme.spec.numerics import StreamFormat, stream_format

from .attention.kv_dma import KVWriter
from .convert import float_row_layout
from .elementwise.common import row_layout
from .row_reader import RowReader

__all__ = ["RowDMA", "row_command_layout", "axi_members", "connect_axi"]


def row_command_layout(readers: int, addr_width: int, count_width: int) -> data.StructLayout:
    """``rows`` rows; operand k of row r at ``src[k] + r * stride`` (at ``src[k]`` for every
    row where bit k of ``hold`` is set) with elements of ``ebytes[k]`` bytes (read only where
    bit k of ``use`` is set), ``beats`` beats of ``lanes`` elements per operand row; output row
    r at ``dst + r * wstride`` (written only when ``write`` is set), ``wbeats`` beats of the
    writer's width, of its last beat only ``tail`` elements stored when ``tail`` is not 0."""
    return data.StructLayout({
        "rows": unsigned(32), "beats": unsigned(count_width), "stride": unsigned(addr_width),
        "wbeats": unsigned(count_width), "wstride": unsigned(addr_width),
        "src": data.ArrayLayout(unsigned(addr_width), readers), "dst": unsigned(addr_width),
        "ebytes": data.ArrayLayout(unsigned(3), readers), "use": unsigned(readers),
        "hold": unsigned(readers), "write": unsigned(1), "tail": unsigned(8)})


def axi_members(sub, prefix: str, sub_prefix: str = "m_axi") -> dict:
    """``sub``'s ``<sub_prefix>_*`` members renamed ``<prefix>_*`` (same flows and widths)."""
    return {f"{prefix}_{n[len(sub_prefix) + 1:]}": mem
            for n, mem in sub.signature.members.items() if n.startswith(sub_prefix + "_")}


def connect_axi(m: Module, outer, prefix: str, sub, sub_prefix: str = "m_axi") -> None:
    """Join ``sub``'s ``<sub_prefix>_*`` AXI members to ``outer``'s ``<prefix>_*``."""
    for n, mem in sub.signature.members.items():
        if n.startswith(sub_prefix + "_"):
            mine, theirs = getattr(outer, f"{prefix}_{n[len(sub_prefix) + 1:]}"), getattr(sub, n)
            m.d.comb += (mine.eq(theirs) if mem.flow == Out else theirs.eq(mine))


class RowDMA(wiring.Component):
    """``readers`` operand rows in, one row out, per row of a command.

    Members
    -------
    i_cmd : In(stream row_command_layout)  accepted while idle (``busy`` low).
    o_<k> (k < readers) : Out(stream float_row_layout(lanes))  operand k's rows, ``beats``
        beats each, ``last`` on a row's final beat; element i in the low ``8 * ebytes[k]``
        bits of word i (``RowReader``).
    i : In(stream row_layout(lanes, fmt))  the output rows, ``wbeats`` beats each (``last`` is
        not used: the command's geometry decides).
    done : Out(1)  one-cycle pulse after the last row's last write response (a command
        without ``write``: once its readers have delivered every row and are idle).
    axi_error : Out(1)  instead of ``done``: a read or write response of this command was
        not OKAY (the command still ran to its end, so the masters are quiet).
    busy : Out(1)
    r<k>_ar* / r<k>_r*  AXI4 read masters; w_aw* / w_w* / w_b*  the AXI4 write master.

    Timing: each reader takes its next row's command as soon as it can (it runs ahead by its
    command queue and R FIFO); the writer takes one row at a time (a command when idle), so
    a row's last write response precedes the next row's first AW. Throughput: one beat per
    cycle per stream while the memory keeps up.
    """

    def __init__(self, *, readers: int = 2, lanes: int = 2, fmt: StreamFormat | None = None,
                 addr_width: int = ADDR_BITS, data_width: int = 128, count_width: int = 16):
        self.fmt = fmt = stream_format(fmt)
        self.readers, self.lanes = readers, lanes
        self.addr_width, self.count_width = addr_width, count_width
        # rows are short (at most a few hundred beats): two bursts of 16 beats in flight per
        # reader keep a row streaming, and the R FIFO holds exactly those
        self._readers = [RowReader(lanes=lanes, data_width=data_width, addr_width=addr_width,
                                   count_width=count_width, max_burst=16, max_outstanding=2,
                                   jobs=2) for _ in range(readers)]
        self._writer = KVWriter(beat=lanes, data_width=data_width, addr_width=addr_width,
                                count_width=count_width, max_burst=16, max_outstanding=2,
                                fmt=fmt)
        lay = row_layout(lanes, fmt)
        members = {"i_cmd": In(stream.Signature(row_command_layout(readers, addr_width,
                                                                   count_width))),
                   "i": In(stream.Signature(lay)),
                   "done": Out(1), "axi_error": Out(1), "busy": Out(1)}
        for k, ws in enumerate(self._readers):
            members[f"o_{k}"] = Out(stream.Signature(float_row_layout(lanes)))
            members.update(axi_members(ws, f"r{k}"))
        members.update(axi_members(self._writer, "w"))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        readers, wr = self._readers, self._writer
        AW = self.addr_width
        # the movers' error flags are sticky: a command starts them from reset (they are idle
        # then: the previous command ended with its last write response)
        clear = Signal()
        for k, ws in enumerate(readers):
            m.submodules[f"reader{k}"] = ResetInserter(clear)(ws)
            connect_axi(m, self, f"r{k}", ws)
        m.submodules.writer = ResetInserter(clear)(wr)
        connect_axi(m, self, "w", wr)

        c = self.i_cmd.payload
        rows, beats, stride = Signal(32), Signal(self.count_width), Signal(AW)
        wbeats, wstride = Signal(self.count_width), Signal(AW)
        ebytes = [Signal(3, name=f"rd{k}_ebytes") for k in range(len(readers))]
        use, hold = Signal(len(readers)), Signal(len(readers))
        write = Signal()
        tail = Signal(8)
        running = Signal()
        m.d.comb += self.i_cmd.ready.eq(~self.busy)
        accept = self.i_cmd.valid & self.i_cmd.ready
        m.d.comb += clear.eq(accept)
        issued = [Signal(32, name=f"rd{k}_rows") for k in range(len(readers))]
        rd_addr = [Signal(AW, name=f"rd{k}_addr") for k in range(len(readers))]
        wr_rows, wr_done = Signal(32), Signal(32)
        w_addr = Signal(AW)
        m.d.sync += [self.done.eq(0), self.axi_error.eq(0)]
        with m.If(accept):
            m.d.sync += [rows.eq(c.rows), beats.eq(c.beats), stride.eq(c.stride),
                         wbeats.eq(c.wbeats), wstride.eq(c.wstride),
                         running.eq(c.rows != 0), w_addr.eq(c.dst),
                         wr_rows.eq(0), wr_done.eq(0)]
            m.d.sync += [a.eq(0) for a in issued]
            m.d.sync += [rd_addr[k].eq(c.src[k]) for k in range(len(readers))]
            m.d.sync += [ebytes[k].eq(c.ebytes[k]) for k in range(len(readers))]
            m.d.sync += [use.eq(c.use), hold.eq(c.hold), write.eq(c.write), tail.eq(c.tail)]
            with m.If(c.rows == 0):
                m.d.sync += self.done.eq(1)

        for k, ws in enumerate(readers):
            m.d.comb += [ws.i_cmd.payload.addr.eq(rd_addr[k]),
                         ws.i_cmd.payload.ebytes.eq(ebytes[k]),
                         ws.i_cmd.payload.count.eq(beats),
                         ws.i_cmd.valid.eq(running & use[k] & (issued[k] < rows))]
            with m.If(ws.i_cmd.valid & ws.i_cmd.ready):
                m.d.sync += issued[k].eq(issued[k] + 1)
                with m.If(~hold[k]):
                    m.d.sync += rd_addr[k].eq(rd_addr[k] + stride)
            wiring.connect(m, ws.o, wiring.flipped(getattr(self, f"o_{k}")))
        m.d.comb += [wr.i_cmd.payload.addr.eq(w_addr), wr.i_cmd.payload.beats.eq(wbeats),
                     wr.i_cmd.payload.tail.eq(tail),
                     wr.i_cmd.valid.eq(running & write & (wr_rows < rows)),
                     wr.i.payload.as_value().eq(self.i.payload.data.as_value()),
                     wr.i.valid.eq(self.i.valid), self.i.ready.eq(wr.i.ready)]
        with m.If(wr.i_cmd.valid & wr.i_cmd.ready):
            m.d.sync += [wr_rows.eq(wr_rows + 1), w_addr.eq(w_addr + wstride)]

        errors = wr.error
        for ws in readers:
            errors = errors | ws.error
        finish = Signal()
        with m.If(wr.done & running):
            m.d.sync += wr_done.eq(wr_done + 1)
            m.d.comb += finish.eq(wr_done + 1 == rows)
        read_only_end = running & ~write
        for k, ws in enumerate(readers):
            read_only_end = read_only_end & ~ws.busy & (~use[k] | (issued[k] == rows))
        with m.If(read_only_end):
            m.d.comb += finish.eq(1)
        with m.If(finish):
            m.d.sync += running.eq(0)
            with m.If(errors):
                m.d.sync += self.axi_error.eq(1)
            with m.Else():
                m.d.sync += self.done.eq(1)
        busy = running | wr.busy
        for ws in readers:
            busy = busy | ws.busy
        m.d.comb += self.busy.eq(busy)
        return m
