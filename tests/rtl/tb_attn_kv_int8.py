"""cocotb testbench of the int8 KV reader (hw/attention/kv_dma.py, ``KVInt8Reader``) against
cocotbext-axi's AxiRamRead.

The memory holds int8 KV caches laid out by tellme.spec.kv_layout.KVLayout (dtype "int8",
the build's beat and scale format params["fmt"]: K blocks with their scale headers, V blocks
channel-major) from random codes (every byte) and random scale bit patterns; every call's
output beats must equal ``reader_beats_int8`` of the same arrays exactly (the integer
engine's ``i_kv`` beats: K rows with the K and V scale, V blocks channel-major, scale bits 0)
and its bursts ``reader_plan`` (INCR, never across a 4 KB page, in-flight limit). Run-time
head_dims from 1 to the build's maximum (padded K rows), contexts across every block and
tile boundary (partial last blocks), layouts at several 64-byte bases; random AR/R pauses and
backpressure on ``o``. Rate: without stalls a call takes exactly ``int8_reader_cycles`` + the
AXI RAM model's latency (8 cycles). Launched by tests/rtl/test_attn_kv_dma.py.
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
    int8_reader_cycles,
    read_command_layout,
    reader_beats_int8,
    reader_command,
    reader_plan,
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
from tellme.spec.kv_layout import FORMATS, KVLayout

SEED = int(os.environ.get("SEED", "1"))
MEM = 1 << 21
LATENCY = 8           # AxiRamRead's: command to the first R beat, last beat to done


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
        self.ram = AxiRamRead(AxiReadBus.from_prefix(d, "m_axi"), d.clk, d.rst, size=MEM)
        await start_clock_and_reset(d)
        self.src = StreamSource(d, "i_cmd", seed=seed)
        self.sink = StreamSink(d, "o", backpressure_prob=0.0, seed=seed + 1)
        self.mon = [StreamMonitor(d, s) for s in ("i_cmd", "o")]
        self.prng = random.Random(seed + 2)
        self.axi_mon = AxiReadMonitor(d, "m_axi", data_width=self.dw,
                                      max_burst=self.p["max_burst"],
                                      max_outstanding=self.p["max_outstanding"])
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
        """Random codes and scales for every (layer, KV head), written to the RAM through the
        layout's encoders -> {(layer, head): (kq, ks, vq, vs)}."""
        kv = {}
        for layer in range(lay.num_layers):
            for h in range(lay.num_kv_heads):
                kq, vq = (rng.integers(-128, 128, size=(lay.max_ctx, lay.head_dim))
                          for _ in range(2))
                ks, vs = (rng.integers(0, 1 << self.fmt.bits, size=lay.max_ctx)
                          for _ in range(2))
                kv[layer, h] = (kq, ks, vq, vs)
                self.ram.write(lay.region_addr(layer, "K", h), lay.encode_k_region(kq, ks, vs))
                self.ram.write(lay.region_addr(layer, "V", h), lay.encode_v_region(vq))
        return kv

    async def call(self, lay, kv, layer, h, n) -> tuple[int, int]:
        d = self.dut
        cmd = reader_command(lay, layer, h, n, self.W)
        want = reader_beats_int8(*kv[layer, h], n, self.D, self.W, self.fmt)
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
        plan = reader_plan(cmd, depth=self.D, beat=self.W, data_width=self.dw,
                           max_burst=self.p["max_burst"], fmt=self.fmt)
        assert self.axi_mon.bursts == plan, "bursts differ from reader_plan"
        return cycles, len(want)


@cocotb.test()
async def test_int8_reader(dut):
    """Calls over every block and tile boundary, run-time head_dims, several bases, stalls;
    then the rate without stalls."""
    tb = TB(dut)
    await tb.start(SEED)
    rng = np.random.default_rng(SEED)
    W, D = tb.W, tb.D
    stalls = [(0.0, 0.0, 0.0), (0.3, 0.3, 0.4), (0.0, 0.5, 0.2), (0.5, 0.0, 0.6)]
    ci = 0
    hmax = tb.p["max_head_dim"]
    for hd in sorted({1, max(1, W // 2 + 1), W + 2, hmax}):
        if hd > hmax:
            continue
        lay = KVLayout(num_layers=2, num_kv_heads=2, head_dim=hd, max_ctx=3 * D + W // 2 + 1,
                       dtype="int8", fmt=tb.fmt, beat=W,
                       base=0x2000 + 64 * int(rng.integers(0, 64)))
        assert lay.base + lay.total_bytes <= MEM
        kv = tb.load(rng, lay)
        for n in sorted({1, W - 1, W, W + 1, D - 1, D, D + 1, 2 * D + W // 2, 3 * D,
                         lay.max_ctx, int(rng.integers(1, lay.max_ctx + 1))} - {0}):
            tb.stalls(*stalls[ci % len(stalls)])
            ci += 1
            layer, h = int(rng.integers(0, 2)), int(rng.integers(0, 2))
            cyc, beats = await tb.call(lay, kv, layer, h, n)
            dut._log.info("int8 %s hd %d n %d: %d beats, %d cycles", tb.fmt.name, hd, n, beats,
                          cyc)
    # rate: one AXI beat (or engine beat) per cycle, a cycle per block, the latency once
    tb.stalls(0.0, 0.0, 0.0)
    for hd in sorted({hmax, max(1, hmax - W // 2)}):
        lay = KVLayout(num_layers=1, num_kv_heads=1, head_dim=hd, max_ctx=3 * D, dtype="int8",
                       fmt=tb.fmt, beat=W)
        kv = tb.load(rng, lay)
        n = 3 * D - 1
        cyc, beats = await tb.call(lay, kv, 0, 0, n)
        model = int8_reader_cycles(n, head_dim=hd, beat=W, depth=D, data_width=tb.dw,
                                   fmt=tb.fmt)
        dut._log.info("int8 rate hd %d n %d: %d beats in %d cycles (model %d + latency)",
                      hd, n, beats, cyc, model)
        assert cyc == model + LATENCY, f"{cyc} cycles, model {model} + {LATENCY}"
    for m in tb.mon:
        m.check()
