"""Stream layouts and the join/valid plumbing shared by the element-wise blocks."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data

from .stream_fp import Pipe, fmt_of


def row_layout(lanes: int, fmt=None) -> data.StructLayout:
    """One beat of a stream-format row: ``lanes`` elements of ``fmt.bits`` (FP16: 16, FP24:
    24; element ``b*lanes + l`` at lane l of beat b) and ``last`` on the row's final beat."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(fmt_of(fmt).bits), lanes),
                              "last": 1})


def check_lanes(lanes, what: str = "lanes") -> int:
    if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
        raise TypeError(f"{what} must be a positive integer, got {lanes!r}")
    return lanes


class StallPipe(Pipe):
    """A global-stall stream pipeline: ``valid`` bits travel with the data registers; every
    register advances when the output is not stalled (``en = ~(o.valid & ~o.ready)``).

    Usage: ``sp = StallPipe(m, [i_a, i_b], gate)`` joins the input streams (a beat enters when
    all are valid and ``gate`` is high), build the datapath with ``sp.reg``/helpers, then
    ``sp.finish(o, latency)`` connects the valid chain and the output handshake.
    """

    def __init__(self, m: Module, inputs, gate=1):
        self.stall = Signal()
        super().__init__(m, ~self.stall)
        self.inputs = list(inputs)
        all_valid = gate
        for s in self.inputs:
            all_valid = all_valid & s.valid
        self.valid_in = Signal()
        m.d.comb += self.valid_in.eq(all_valid)
        for k, s in enumerate(self.inputs):
            others = gate
            for j, t in enumerate(self.inputs):
                if j != k:
                    others = others & t.valid
            m.d.comb += s.ready.eq(self.en & others)
        self.fire = Signal()
        m.d.comb += self.fire.eq(self.valid_in & self.en)

    def finish(self, o, latency: int):
        """Connect the valid chain (``latency`` registers) and the stall to output ``o``."""
        v = self.valid_in
        for k in range(latency):
            r = Signal(name=f"valid_{k + 1}")
            with self.m.If(self.en):
                self.m.d.sync += r.eq(v)
            v = r
        self.m.d.comb += [o.valid.eq(v), self.stall.eq(o.valid & ~o.ready)]
        return v


def row_scale_pipe(m: Module, i_scale, i) -> tuple[Signal, StallPipe]:
    """Latch one FP32 scale per row from ``i_scale`` and gate the row stream ``i`` on it.

    The scale is taken before a row's first beat and released after its ``last`` beat, so the
    scale stream runs one row ahead at most. Returns (scale register, the row's StallPipe).
    """
    scale = Signal(32)
    have = Signal()
    m.d.comb += i_scale.ready.eq(~have)
    with m.If(i_scale.valid & ~have):
        m.d.sync += [scale.eq(i_scale.payload), have.eq(1)]
    sp = StallPipe(m, [i], gate=have)
    with m.If(sp.fire & i.payload.last):
        m.d.sync += have.eq(0)
    return scale, sp
