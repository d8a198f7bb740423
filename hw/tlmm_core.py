"""TLMMCore: the TLMM engine wired to its ping-pong weight buffer.

This is the unit the weight streamer feeds (``i_w``) and the sequencer commands (``i_cmd``,
``i_act``); it is also the device under test of the RTL tests, so the engine is always verified
against the real buffer.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .presets import HwPreset, make_tlmm, make_weight_buffer
from .tlmm import act_layout, cmd_layout, out_layout
from .weight_buffer import fill_layout


class TLMMCore(wiring.Component):
    """TLMM engine + weight buffer.

    Members
    -------
    i_w : In(stream.Signature(fill_layout(t, v)))
        Weight fill stream (see :class:`~tellme.hw.weight_buffer.WeightBuffer`): V index
        vectors per beat in layout-v1 tile order, ``last`` at the end of each tile.
    i_cmd, i_act, o :
        As :class:`~tellme.hw.tlmm.TLMM`: one command per tile, tiles consumed in fill order.
    overflow : Out(1)
        Sticky: a tile larger than one buffer half was written.

    Timing: as the engine; the fill of tile n+1 proceeds while tile n is computed.
    """

    def __init__(self, p: HwPreset):
        self._engine = make_tlmm(p)
        self._buffer = make_weight_buffer(p)
        e = self._engine
        super().__init__({
            "i_w": In(stream.Signature(fill_layout(p.t, p.v))),
            "i_cmd": In(stream.Signature(cmd_layout(kb_max=p.kb_max, nbt_max=p.nbt_max,
                                                    tok_max=p.tok_max))),
            "i_act": In(stream.Signature(act_layout(t=p.t))),
            "o": Out(stream.Signature(out_layout(q=p.q, acc_width=e.acc_width))),
            "overflow": Out(1),
        })

    engine = property(lambda self: self._engine)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = e = self._engine
        m.submodules.buffer = b = self._buffer
        wiring.connect(m, e.w, b.r)
        wiring.connect(m, wiring.flipped(self.i_w), b.i)
        wiring.connect(m, wiring.flipped(self.i_cmd), e.i_cmd)
        wiring.connect(m, wiring.flipped(self.i_act), e.i_act)
        wiring.connect(m, e.o, wiring.flipped(self.o))
        m.d.comb += self.overflow.eq(b.overflow)
        return m
