"""cocotb testbench of KVCacheDMA (hw/attention/kv_dma.py: KVReader + KVWriter on one AXI4
port) against cocotbext-axi's AxiRam.

The memory holds a KV cache laid out by tellme.spec.kv_layout.KVLayout from random K/V rows in
the build's element format (params["fmt"]: FP16 2 bytes, FP24 3 bytes per element);
each call's output beats must equal the rows of kv_schedule(n, depth) exactly (reader_beats), and
the AXI bursts must equal reader_plan (INCR, forward, never across a 4 KB page, at most
max_burst beats, in-flight limit). The writer stores prefill blocks and decode rows; the whole
memory image must then equal the layout's (nothing else touched), and the reader reads the new
rows back. Stress: random AR/R/AW/W/B pauses, random backpressure on ``o``, random idle on
the writer's input; layout bases at any byte, so rows and segments start anywhere in an AXI beat.
Launched by tests/rtl/test_attn_kv_dma.py.
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from tellme.hw.attention.kv_dma import (
    read_command_layout,
    reader_beats,
    reader_command,
    reader_plan,
    write_command_layout,
    writer_commands,
)
from tellme.sim.drivers import (
    AxiReadMonitor,
    StreamMonitor,
    StreamSink,
    StreamSource,
    layout_fields,
    pack_array,
    pack_struct,
    pause_generator,
    send_and_wait,
    start_clock_and_reset,
)
from tellme.sim.runner import cocotb_params
from tellme.spec.attention import kv_schedule
from tellme.spec.kv_layout import FORMATS, KVLayout

SEED = int(os.environ.get("SEED", "1"))
MEM = 1 << 20


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.p = cocotb_params()
        self.W, self.D, self.dw = self.p["beat"], self.p["depth"], self.p["data_width"]
        self.fmt = FORMATS[self.p["fmt"]]
        self.bits = self.fmt.bits
        # engine beats per cycle at most: one, or data_width bits when the beat is wider
        self.slow = max(1.0, self.W * self.bits / self.dw)
        self.cmd_f = layout_fields(read_command_layout(self.p["addr_width"], self.p["ctx_bits"]))
        self.wcmd_f = layout_fields(write_command_layout(self.p["addr_width"],
                                                         self.p["ctx_bits"] + 8))
        self.aw_lens: list[int] = []
        self.aw_bursts: list[tuple[int, int]] = []
        self.wr_dones = 0
        self.dones = 0

    async def start(self, bp: float, seed: int, idle: float = 0.0):
        d = self.dut
        logging.getLogger("cocotb.kv_dma.m_axi").setLevel(logging.WARNING)
        self.ram = AxiRam(AxiBus.from_prefix(d, "m_axi"), d.clk, d.rst, size=MEM)
        await start_clock_and_reset(d)
        self.src = StreamSource(d, "rd_cmd", seed=seed)
        self.sink = StreamSink(d, "o", backpressure_prob=bp, seed=seed + 1)
        self.wsrc = StreamSource(d, "wr_cmd", seed=seed + 3)
        self.wdat = StreamSource(d, "wr", idle_prob=idle, seed=seed + 4)
        self.mon = [StreamMonitor(d, s) for s in ("rd_cmd", "o", "wr_cmd", "wr")]
        self.prng = random.Random(seed + 2)
        self.axi_mon = AxiReadMonitor(d, "m_axi", data_width=self.dw,
                                      max_burst=self.p["max_burst"],
                                      max_outstanding=self.p["max_outstanding"])
        self.bursts = self.axi_mon.bursts
        cocotb.start_soon(self._count_dones())
        cocotb.start_soon(self._axi_write_monitor())

    def stalls(self, p_ar: float, p_r: float, bp: float):
        rd = self.ram.read_if
        rd.ar_channel.set_pause_generator(pause_generator(self.prng, p_ar) if p_ar else None)
        rd.r_channel.set_pause_generator(pause_generator(self.prng, p_r) if p_r else None)
        rd.ar_channel.pause = False
        rd.r_channel.pause = False
        self.sink.backpressure_prob = bp

    def wstalls(self, p: float):
        wr = self.ram.write_if
        for ch in (wr.aw_channel, wr.w_channel, wr.b_channel):
            ch.set_pause_generator(pause_generator(self.prng, p) if p else None)
            ch.pause = False

    async def _axi_write_monitor(self):
        """AW bursts (INCR, size, page, length) and W beats per burst ending with WLAST."""
        d = self.dut
        nbytes = self.dw // 8
        in_burst = 0
        while True:
            await RisingEdge(d.clk)
            self.wr_dones += int(d.wr_done.value)
            if int(d.m_axi_awvalid.value) and int(d.m_axi_awready.value):
                addr = d.m_axi_awaddr.value.to_unsigned()
                beats = d.m_axi_awlen.value.to_unsigned() + 1
                assert addr % nbytes == 0, f"unaligned write burst {addr:#x}"
                assert beats <= self.p["max_burst"], f"write burst of {beats} beats"
                assert addr // 4096 == (addr + beats * nbytes - 1) // 4096, \
                    f"write burst {addr:#x}+{beats} crosses a 4 KB page"
                assert d.m_axi_awsize.value.to_unsigned() == nbytes.bit_length() - 1
                assert d.m_axi_awburst.value.to_unsigned() == 1, "not an INCR burst"
                self.aw_lens.append(beats)
                self.aw_bursts.append((addr, beats))
            if int(d.m_axi_wvalid.value) and int(d.m_axi_wready.value):
                in_burst += 1
                if int(d.m_axi_wlast.value):
                    want = self.aw_lens.pop(0) if self.aw_lens else None
                    assert in_burst == want, f"W burst of {in_burst} beats, AW said {want}"
                    in_burst = 0

    async def _count_dones(self):
        while True:
            await RisingEdge(self.dut.clk)
            self.dones += int(self.dut.rd_done.value)

    async def call(self, cmd: dict, want: list[list[int]]) -> int:
        """Run one reader command; check beats and bursts; return cycles to the done pulse."""
        d = self.dut
        self.bursts.clear()
        start = len(self.sink.beats)
        cycles = await send_and_wait(d.clk, self.src, pack_struct(self.cmd_f, **cmd),
                                     lambda: self.dones, what=str(cmd))
        for _ in range(4):                      # nothing after done
            await RisingEdge(d.clk)
        assert not int(d.rd_busy.value) and not int(d.error.value)
        got = self.sink.beats[start:]
        exp = [pack_array(b, self.bits) for b in want]
        assert len(got) == len(exp), f"{len(got)} beats, want {len(exp)} ({cmd})"
        bad = [i for i, (g, e) in enumerate(zip(got, exp, strict=True)) if g != e]
        assert not bad, f"{len(bad)} of {len(exp)} beats differ, first {bad[0]}: " \
                        f"{got[bad[0]]:#x} != {exp[bad[0]]:#x} ({cmd})"
        plan = reader_plan(cmd, depth=self.D, beat=self.W, data_width=self.dw,
                           max_burst=self.p["max_burst"], fmt=self.fmt)
        assert self.bursts == plan, f"bursts {self.bursts[:4]}... != plan {plan[:4]}..."
        return cycles


def rand_rows(rng: np.random.Generator, lay: KVLayout, count: int) -> np.ndarray:
    """``count`` rows of random element bit patterns (every pattern of ``lay.fmt.bits``)."""
    return rng.integers(0, 1 << lay.fmt.bits, size=(count, lay.head_dim), dtype=np.int64)


def image(lay: KVLayout, rows: dict, img: bytearray):
    """Write ``rows`` [layer][kind][head] into ``img`` (the layout's bytes from its base)."""
    for (layer, kind, h), r in rows.items():
        a = lay.row_addr(layer, kind, h, 0) - lay.base
        img[a:a + lay.max_ctx * lay.row_bytes] = lay.encode_rows(r)


def cache(rng: np.random.Generator, lay: KVLayout):
    """Random K/V rows [layer][kind][head] -> (rows, memory image written by the layout)."""
    rows = {(layer, kind, h): rand_rows(rng, lay, lay.max_ctx) for layer in
            range(lay.num_layers) for kind in ("K", "V") for h in range(lay.num_kv_heads)}
    img = bytearray(lay.total_bytes)
    image(lay, rows, img)
    return rows, bytes(img)


@cocotb.test()
async def test_reader_layout(dut):
    """Calls over every tile boundary, run-time head_dim 4..max, page crossings, stalls."""
    tb = TB(dut)
    await tb.start(bp=0.0, seed=SEED)
    rng = np.random.default_rng(SEED)
    W, D = tb.W, tb.D
    hds = list(range(W, tb.p["max_head_dim"] + 1, W))
    stalls = [(0.0, 0.0, 0.0), (0.3, 0.3, 0.4), (0.0, 0.5, 0.2), (0.5, 0.0, 0.6)]
    ci = 0
    for hd in hds:
        # max_ctx rows of one head span several 4 KB pages at the larger head_dims; the
        # base is any byte, so segments start mid-beat
        lay = KVLayout(num_layers=2, num_kv_heads=2, head_dim=hd, max_ctx=5 * D * D - 3,
                       base=0x2000 + int(rng.integers(0, 128)), fmt=tb.fmt)
        rows, img = cache(rng, lay)
        assert lay.base + lay.total_bytes <= MEM
        tb.ram.write(lay.base, img)
        ns = sorted({1, D - 1, D, D + 1, 2 * D, 2 * D + 1, 3 * D + 3, lay.max_ctx,
                     int(rng.integers(1, lay.max_ctx + 1))})
        for n in ns:
            layer, h = int(rng.integers(0, 2)), int(rng.integers(0, 2))
            tb.stalls(*stalls[ci % len(stalls)])
            ci += 1
            cmd = reader_command(lay, layer, h, n, W)
            want = reader_beats(rows[layer, "K", h], rows[layer, "V", h], n, D, W)
            cyc = await tb.call(cmd, want)
            dut._log.info("hd %d n %d: %d beats, %d bursts, %d cycles", hd, n, len(want),
                          len(tb.bursts), cyc)
    tb.stalls(0.0, 0.0, 0.0)
    for m in tb.mon:
        m.check()


@cocotb.test()
async def test_reader_rate(dut):
    """No stalls: one beat per cycle (or data_width bits per cycle for wider beats) across
    segment changes (the next segment's bursts are requested while the previous one drains).
    Bound: beats x that rate + read latency + 3 per segment."""
    tb = TB(dut)
    await tb.start(bp=0.0, seed=SEED + 10)
    rng = np.random.default_rng(SEED + 10)
    W, D = tb.W, tb.D
    hd = tb.p["max_head_dim"]
    lay = KVLayout(num_layers=1, num_kv_heads=1, head_dim=hd, max_ctx=8 * D, fmt=tb.fmt)
    rows, img = cache(rng, lay)
    tb.ram.write(lay.base, img)
    n = 8 * D - 1
    cmd = reader_command(lay, 0, 0, n, W)
    want = reader_beats(rows[0, "K", 0], rows[0, "V", 0], n, D, W)
    cyc = await tb.call(cmd, want)
    segs = len(kv_schedule(n, D))
    bound = int(len(want) * tb.slow) + 20 + 3 * segs
    dut._log.info("rate: %d beats in %d segments: %d cycles (bound %d)", len(want), segs, cyc,
                  bound)
    assert cyc <= bound, f"{cyc} cycles > bound {bound}"


@cocotb.test()
async def test_writer(dut):
    """Prefill blocks and decode rows written at the layout's addresses; the memory image then
    equals the layout's image of the updated rows byte for byte; the reader reads them back."""
    tb = TB(dut)
    await tb.start(bp=0.3, seed=SEED + 20, idle=0.3)
    rng = np.random.default_rng(SEED + 20)
    W, D = tb.W, tb.D
    hd = tb.p["max_head_dim"]
    lay = KVLayout(num_layers=2, num_kv_heads=2, head_dim=hd, max_ctx=5 * D * D - 3,
                   base=0x3000 + int(rng.integers(1, 128)), fmt=tb.fmt)
    rows, img = cache(rng, lay)               # the old contents
    tb.ram.write(0, bytes(rng.integers(0, 256, size=lay.base + lay.total_bytes + 4096,
                                       dtype=np.uint8)))
    tb.ram.write(lay.base, img)
    before = tb.ram.read(0, lay.base + lay.total_bytes + 4096)
    pre = before[:lay.base]
    post = before[lay.base + lay.total_bytes:]
    # (layer, start, count): a prefill block, decode steps, a block at an odd row across pages
    writes = [(0, 0, 3 * D + 5), (0, 3 * D + 5, 1), (0, 3 * D + 6, 1), (1, 37, 150),
              (1, 187, 1), (1, lay.max_ctx - 2, 2), (0, 40, 64)]
    for wi, (layer, start, count) in enumerate(writes):
        rate = wi == len(writes) - 1            # the last one without stalls: rate check
        tb.wstalls(0.0 if rate else [0.0, 0.3, 0.5][wi % 3])
        tb.wdat.idle_prob = 0.0 if rate else 0.3
        cmds = writer_commands(lay, layer, start, count, W)
        beats = []
        for kind in ("K", "V"):
            for h in range(lay.num_kv_heads):
                new = rand_rows(rng, lay, count)
                rows[layer, kind, h][start:start + count] = new
                flat = [int(x) for x in new.reshape(-1)]
                beats += [pack_array(flat[i:i + W], tb.bits) for i in range(0, len(flat), W)]
        d0 = tb.wr_dones
        tb.wdat.send(beats)
        tb.wsrc.send([pack_struct(tb.wcmd_f, **c) for c in cmds])
        cycles = 0
        while tb.wr_dones < d0 + len(cmds):
            await RisingEdge(dut.clk)
            cycles += 1
            assert cycles < 200_000, f"write {wi}: {tb.wr_dones - d0} of {len(cmds)} done"
        assert tb.wdat.idle and not int(dut.error.value)
        dut._log.info("write layer %d rows %d..%d: %d beats, %d cycles", layer, start,
                      start + count - 1, len(beats), cycles)
        if rate:
            # one engine beat per cycle; per command the B response of its last burst
            # (commands are taken one at a time) costs a fixed handful of cycles
            bound = int(len(beats) * tb.slow) + 16 * len(cmds)
            assert cycles <= bound, f"write: {cycles} cycles > bound {bound}"
    tb.wstalls(0.0)
    for _ in range(4):
        await RisingEdge(dut.clk)
    assert not int(dut.wr_busy.value)
    want = bytearray(lay.total_bytes)
    image(lay, rows, want)
    # the padding between regions keeps its old bytes
    old = img
    got = tb.ram.read(lay.base, lay.total_bytes)
    for (layer, kind, h) in rows:
        a = lay.row_addr(layer, kind, h, lay.max_ctx - 1) + lay.row_bytes - lay.base
        e = lay.row_addr(layer, kind, h, 0) - lay.base + lay.head_bytes
        want[a:e] = old[a:e]
    bad = [i for i in range(len(want)) if got[i] != want[i]]
    assert not bad, f"{len(bad)} bytes differ from the layout image, first at " \
                    f"{lay.base + bad[0]:#x}"
    assert tb.ram.read(0, lay.base) == pre, "bytes below the KV cache changed"
    assert tb.ram.read(lay.base + lay.total_bytes, 4096) == post, "bytes past the cache changed"
    # round trip: the reader streams the rows just written
    n = 3 * D + 7
    tb.stalls(0.2, 0.2, 0.2)
    want_b = reader_beats(rows[0, "K", 1], rows[0, "V", 1], n, D, W)
    await tb.call(reader_command(lay, 0, 1, n, W), want_b)
    for m in tb.mon:
        m.check()
