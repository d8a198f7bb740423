"""cocotb testbench of the int8 KVReader build (hw/attention/kv_dma.py, ``KVReader(int8=True)``)
against cocotbext-axi's AxiRamRead.

The memory holds an int8 KV cache laid out by tellme.spec.kv_layout.KVLayout (dtype "int8": code
rows, then one scale per row in the build's stream format, params["fmt"]) from random codes
(every byte) and random scale bit patterns; each call's output beats must equal
reader_beats_int8 exactly (the engine's int8 beat: codes in bits [0, 8*beat), the row's scale
above), the code bursts reader_plan and the scale bursts scale_plan (INCR, never across a 4 KB
page, in-flight limit). Stress: random AR/R pauses, random backpressure on ``o``.
Launched by tests/rtl/test_attn_kv_dma.py.
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiRamRead, AxiReadBus

from tellme.hw.attention.kv_dma import (
    read_command_layout,
    reader_beats_int8,
    reader_command,
    reader_plan,
    scale_plan,
)
from tellme.sim.drivers import (
    AxiReadMonitor,
    StreamMonitor,
    StreamSink,
    StreamSource,
    layout_fields,
    pack_struct,
    pause_generator,
    send_and_wait,
    start_clock_and_reset,
)
from tellme.sim.runner import cocotb_params
from tellme.spec.attention import kv_schedule
from tellme.spec.kv_layout import FORMATS, KVLayout, encode_elems

SEED = int(os.environ.get("SEED", "1"))


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.p = cocotb_params()
        self.W, self.D, self.dw = self.p["beat"], self.p["depth"], self.p["data_width"]
        self.fmt = FORMATS[self.p["fmt"]]
        self.cmd_f = layout_fields(read_command_layout(self.p["addr_width"], self.p["ctx_bits"],
                                                       int8=True))
        self.dones = 0

    async def start(self, seed: int):
        d = self.dut
        logging.getLogger("cocotb.kv_int8.m_axi").setLevel(logging.WARNING)
        self.ram = AxiRamRead(AxiReadBus.from_prefix(d, "m_axi"), d.clk, d.rst, size=1 << 20)
        await start_clock_and_reset(d)
        self.src = StreamSource(d, "i_cmd", seed=seed)
        self.sink = StreamSink(d, "o", backpressure_prob=0.0, seed=seed + 1)
        self.mon = [StreamMonitor(d, s) for s in ("i_cmd", "o")]
        self.prng = random.Random(seed + 2)
        # codes master + the scales master (2 bursts in flight)
        self.axi_mon = AxiReadMonitor(d, "m_axi", data_width=self.dw,
                                      max_burst=self.p["max_burst"],
                                      max_outstanding=self.p["max_outstanding"] + 2)
        cocotb.start_soon(self._count_dones())

    async def _count_dones(self):
        while True:
            await RisingEdge(self.dut.clk)
            self.dones += int(self.dut.done.value)

    def stalls(self, p_ar: float, p_r: float, bp: float):
        self.ram.ar_channel.set_pause_generator(pause_generator(self.prng, p_ar) if p_ar else None)
        self.ram.r_channel.set_pause_generator(pause_generator(self.prng, p_r) if p_r else None)
        self.ram.ar_channel.pause = False
        self.ram.r_channel.pause = False
        self.sink.backpressure_prob = bp

    def load(self, rng, lay: KVLayout):
        """Random codes and scales for every (layer, kind, head) -> dict, written to the RAM."""
        kv = {}
        for layer in range(lay.num_layers):
            for kind in ("K", "V"):
                for h in range(lay.num_kv_heads):
                    codes = rng.integers(-128, 128, size=(lay.max_ctx, lay.head_dim))
                    scales = rng.integers(0, 1 << self.fmt.bits, size=lay.max_ctx)
                    kv[layer, kind, h] = (codes, scales)
                    self.ram.write(lay.row_addr(layer, kind, h, 0), lay.encode_rows(codes))
                    self.ram.write(lay.scale_addr(layer, kind, h, 0),
                                   encode_elems(scales, lay.scale_bytes))
        return kv

    async def call(self, lay, kv, layer, h, n) -> int:
        d = self.dut
        cmd = reader_command(lay, layer, h, n, self.W)
        (ck, sk), (cv, sv) = kv[layer, "K", h], kv[layer, "V", h]
        want = reader_beats_int8(ck, sk, cv, sv, n, self.D, self.W, self.fmt)
        self.axi_mon.bursts.clear()
        start = len(self.sink.beats)
        cycles = await send_and_wait(d.clk, self.src, pack_struct(self.cmd_f, **cmd),
                                     lambda: self.dones, what=str(cmd))
        for _ in range(4):
            await RisingEdge(d.clk)
        assert not int(d.busy.value) and not int(d.error.value)
        got = self.sink.beats[start:]
        assert len(got) == len(want), f"{len(got)} beats, want {len(want)} ({cmd})"
        bad = [i for i, (g, e) in enumerate(zip(got, want, strict=True)) if g != e]
        assert not bad, f"{len(bad)} of {len(want)} beats differ, first {bad[0]}: " \
                        f"{got[bad[0]]:#x} != {want[bad[0]]:#x} ({cmd})"
        # scale bursts start at or after the AXI beat holding the first scale; the code rows
        # end well before it (each row region is padded to 4 KB)
        nbytes = self.dw // 8
        sbase = (lay.base + lay.rows_bytes) // nbytes * nbytes
        kw = dict(depth=self.D, data_width=self.dw, max_burst=self.p["max_burst"])
        codes_b = [b for b in self.axi_mon.bursts if b[0] < sbase]
        scale_b = [b for b in self.axi_mon.bursts if b[0] >= sbase]
        assert codes_b == reader_plan(cmd, beat=self.W, **kw), "code bursts differ from plan"
        assert scale_b == scale_plan(cmd, fmt=self.fmt, **kw), "scale bursts differ from plan"
        return cycles, len(want)


@cocotb.test()
async def test_int8_reader(dut):
    """Calls over every tile boundary, run-time head_dims, bases at any byte, stalls; then the
    rate without stalls."""
    tb = TB(dut)
    await tb.start(SEED)
    rng = np.random.default_rng(SEED)
    W, D = tb.W, tb.D
    stalls = [(0.0, 0.0, 0.0), (0.3, 0.3, 0.4), (0.0, 0.5, 0.2), (0.5, 0.0, 0.6)]
    ci = 0
    for hd in range(W, tb.p["max_head_dim"] + 1, W):
        lay = KVLayout(num_layers=2, num_kv_heads=2, head_dim=hd, max_ctx=5 * D * D - 3,
                       dtype="int8", fmt=tb.fmt, base=0x2000 + int(rng.integers(0, 128)))
        assert lay.base + lay.total_bytes <= 1 << 20
        kv = tb.load(rng, lay)
        for n in sorted({1, D - 1, D, D + 1, 2 * D + 1, 3 * D + 3, lay.max_ctx,
                         int(rng.integers(1, lay.max_ctx + 1))}):
            tb.stalls(*stalls[ci % len(stalls)])
            ci += 1
            layer, h = int(rng.integers(0, 2)), int(rng.integers(0, 2))
            cyc, beats = await tb.call(lay, kv, layer, h, n)
            dut._log.info("int8 %s hd %d n %d: %d beats, %d cycles", tb.fmt.name, hd, n, beats,
                          cyc)
    # rate: the scales' bursts share the port and the AR channel with the codes'
    tb.stalls(0.0, 0.0, 0.0)
    hd = tb.p["max_head_dim"]
    lay = KVLayout(num_layers=1, num_kv_heads=1, head_dim=hd, max_ctx=8 * D, dtype="int8",
                   fmt=tb.fmt)
    kv = tb.load(rng, lay)
    n = 8 * D - 1
    cyc, beats = await tb.call(lay, kv, 0, 0, n)
    segs = len(kv_schedule(n, D))
    bound = beats + 24 + 6 * segs
    dut._log.info("int8 rate: %d beats in %d segments: %d cycles (bound %d)", beats, segs, cyc,
                  bound)
    assert cyc <= bound, f"{cyc} cycles > bound {bound}"
    for m in tb.mon:
        m.check()
