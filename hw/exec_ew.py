"""The element-wise execution unit of the top (docs/hw/top.md): class ``ew`` commands from the
sequencer, rows from DDR, the element-wise blocks, rows back to DDR.

This build executes the two-operand row ops:

* ``RESIDUAL``: dst = RN(x + y) (``ResidualAdd``);
* ``GATED_ACT``: dst = act(gate) * up, one rounding (``GatedAct``, ``act`` 0 SiLU, 1 ReLU^2);

and answers the class's other ops (NORM, QUANT, ROPE) with UNSUPPORTED_OP, so a program stops
at them cleanly. Semantics are golden ``program_exec``'s ``_residual`` / ``_gated_act``.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.spec.memory_map import ADDR_BITS, ROW_ALIGN
from tellme.spec.numerics import StreamFormat, stream_format
from tellme.spec.program import ERROR_CODES, OPS

from .elementwise.gated_act import GatedAct
from .elementwise.residual import ResidualAdd
from .row_dma import RowDMA, axi_members, connect_axi
from .sequencer import command_layout

__all__ = ["EwUnit"]

_RESIDUAL, _GATED = OPS["RESIDUAL"].code, OPS["GATED_ACT"].code


class EwUnit(wiring.Component):
    """Element-wise execution unit: RESIDUAL and GATED_ACT over ``rows`` rows of ``cols``.

    Parameters: ``lanes`` (elements per beat: the target's ew_lanes), ``fmt`` (stream format),
    ``addr_width``, ``data_width`` (AXI), ``count_width`` (beats per row).

    Members
    -------
    i_cmd : In(stream command_layout("ew"))  accepted while idle.
    done : Out(1)  one-cycle pulse once every row's last write response is in.
    error : Out(8)  one-cycle program error code instead of ``done``: UNSUPPORTED_OP (11) for
        NORM, QUANT and ROPE; LIMIT (10) when ``cols`` is 0, not a multiple of ``lanes`` (rows
        are read and written in whole beats) or over ``2**count_width`` beats.
    axi_error : Out(1)  one-cycle pulse instead of ``done`` when a read or write response of
        this unit was not OKAY (the top raises ERR_FLAGS.AXI_SLVERR; SLVERR and DECERR are not
        told apart). The command still runs to its last write response, so the unit is idle
        and its masters quiet when it reports.
    busy : Out(1)  a command is in progress; stall : Out(1)  busy and no beat written this
        cycle (the EW counters of docs/hw/registers.md).
    r0_* / r1_*  AXI4 read masters (x / gate rows, y / up rows); w_aw*, w_w*, w_b*: AXI4 write
        master (dst rows).

    Dataflow per row r (``RowDMA``): operand rows at x + r * stride and y + r * stride
    (stride = align64(cols * bytes per element)), ``cols / lanes`` beats each, combined beat
    by beat by the op's block, the result stored at dst + r * stride. ``dst`` may be an
    operand: a row is read before it is written. Throughput: one beat per cycle while the
    memory keeps up, plus the writer's per-row turnaround (``RowDMA``).
    """

    def __init__(self, *, lanes: int = 2, fmt: StreamFormat | None = None,
                 addr_width: int = ADDR_BITS, data_width: int = 128, count_width: int = 16):
        fmt = stream_format(fmt)
        self.lanes, self.fmt, self.count_width = lanes, fmt, count_width
        self._dma = RowDMA(readers=2, lanes=lanes, fmt=fmt, addr_width=addr_width,
                           data_width=data_width, count_width=count_width)
        members = {"i_cmd": In(stream.Signature(command_layout("ew", addr_width))),
                   "done": Out(1), "error": Out(8), "axi_error": Out(1), "busy": Out(1),
                   "stall": Out(1)}
        for prefix in ("r0", "r1", "w"):
            members.update(axi_members(self._dma, prefix, prefix))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        L, CW = self.lanes, self.count_width
        eb = self.fmt.bits // 8
        m.submodules.dma = dma = self._dma
        for prefix in ("r0", "r1", "w"):
            connect_axi(m, self, prefix, dma, prefix)
        m.submodules.res = res = ResidualAdd(lanes=L, fmt=self.fmt)
        m.submodules.gated = gated = GatedAct(lanes=L, fmt=self.fmt)

        # ---- the command: decode, check, hand the geometry to the row movers
        c = self.i_cmd.payload
        is_gated = c.opcode == _GATED
        r, g = c.args.residual, c.args.gated_act
        cols = Signal(32)
        m.d.comb += cols.eq(Mux(is_gated, g.cols, r.cols))
        op = Signal(8)
        act = Signal()
        err = Signal(8)
        pending = Signal()                    # a command handed to the movers, not yet done
        dc = dma.i_cmd.payload
        m.d.comb += [dc.rows.eq(r.rows), dc.beats.eq(cols // L),
                     dc.stride.eq((cols * eb + ROW_ALIGN - 1) & ~Const(ROW_ALIGN - 1, 32)),
                     dc.src[0].eq(Mux(is_gated, g.gate, r.x)),
                     dc.src[1].eq(Mux(is_gated, g.up, r.y)),
                     dc.dst.eq(Mux(is_gated, g.dst, r.dst))]
        known = (c.opcode == _RESIDUAL) | is_gated
        fits = (cols != 0) & (cols % L == 0) & (cols // L < 2 ** CW)
        m.d.comb += [self.i_cmd.ready.eq(~pending & (err == 0) & dma.i_cmd.ready),
                     dma.i_cmd.valid.eq(self.i_cmd.valid & self.i_cmd.ready & known & fits)]
        accept = self.i_cmd.valid & self.i_cmd.ready
        m.d.sync += [self.error.eq(0), self.done.eq(dma.done & pending),
                     self.axi_error.eq(dma.axi_error & pending)]
        with m.If(accept):
            with m.If(~known):
                m.d.sync += err.eq(ERROR_CODES["UNSUPPORTED_OP"])
            with m.Elif(~fits):
                m.d.sync += err.eq(ERROR_CODES["LIMIT"])
            with m.Else():
                m.d.sync += [op.eq(c.opcode), act.eq(g.act[0]), pending.eq(1)]
        with m.If(err != 0):                          # report it, then idle
            m.d.sync += [self.error.eq(err), err.eq(0)]
        with m.If(dma.done | dma.axi_error):
            m.d.sync += pending.eq(0)

        # ---- data: movers -> the op's block -> movers
        m.d.comb += gated.act.eq(act)
        blocks = {_RESIDUAL: (res.i_x, res.i_y, res.o), _GATED: (gated.i_gate, gated.i_up,
                                                                 gated.o)}
        for code, (ia, ib, o) in blocks.items():
            on = op == code
            for k, i in enumerate((ia, ib)):
                src = getattr(dma, f"o_{k}")
                m.d.comb += [i.payload.eq(src.payload), i.valid.eq(src.valid & on)]
            m.d.comb += o.ready.eq(dma.i.ready & on)
            with m.If(on):
                m.d.comb += [dma.o_0.ready.eq(ia.ready), dma.o_1.ready.eq(ib.ready),
                             dma.i.payload.eq(o.payload), dma.i.valid.eq(o.valid)]
        m.d.comb += [self.busy.eq(pending | dma.busy),
                     self.stall.eq(self.busy & ~(dma.i.valid & dma.i.ready))]
        return m
