"""Shared cocotb testbench base of the attention engines (tests/rtl/tb_attn_engine.py,
tests/rtl/tb_attn_int.py): the build's stream format, the command fields, stream drivers on
i_cmd / i_q / i_kv and o, and the bit-exact comparison."""

from __future__ import annotations

import numpy as np

from tellme.sim.drivers import (
    StreamMonitor,
    StreamSink,
    StreamSource,
    layout_fields,
    start_clock_and_reset,
)
from tellme.sim.runner import cocotb_params
from tellme.spec.numerics import STREAM_FORMATS, stream_format


class EngineTB:
    """``cmd_layout(lanes, ctx_bits)``: the engine's command layout."""

    def __init__(self, dut, cmd_layout):
        self.p = cocotb_params()
        name = self.p.get("fmt")
        self.fmt = stream_format(None if name is None else STREAM_FORMATS[name])
        self.dut = dut
        self.cmd_f = layout_fields(cmd_layout(self.p["lanes"], self.p["ctx_bits"]))

    async def start(self, idle=0.0, bp=0.0, seed=0):
        await start_clock_and_reset(self.dut)
        self.src = {s: StreamSource(self.dut, s, idle_prob=idle, seed=seed * 5 + i)
                    for i, s in enumerate(("i_cmd", "i_q", "i_kv"))}
        self.sink = StreamSink(self.dut, "o", backpressure_prob=bp, seed=seed * 5 + 4)
        self.mon = [StreamMonitor(self.dut, s) for s in ("i_cmd", "i_q", "i_kv", "o")]

    def bits(self, x) -> list[int]:
        return [int(b) for b in self.fmt.to_bits(x).reshape(-1)]

    def assert_same(self, got, want, what):
        g, w = self.fmt.to_bits(got), self.fmt.to_bits(want)
        bad = np.argwhere(g != w)
        assert not len(bad), (f"{what} ({self.fmt.name}): {len(bad)} of {g.size} outputs "
                              f"differ; first at {tuple(bad[0])}: rtl {g[tuple(bad[0])]:#x} "
                              f"golden {w[tuple(bad[0])]:#x}")
