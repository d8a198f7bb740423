"""cocotb testbench: the quantising KV writer (``KVQuantWriter``) and the int8 KV reader
(``KVReader(int8=True)``) on one AXI4 port (cocotbext-axi AxiRam), the test top of
tests/rtl/test_kv_quant.py.

The RAM starts with random bytes. Prefill blocks and decode rows of random and corner-case
stream-format rows (tests/rtl/tb_kv_quant.special_rows) are written with
``quant_writer_commands``; afterwards the whole RAM must equal the expected image: the int8
layout (``KVLayout(dtype="int8")``) of golden ``kv_quant_int8`` at the written rows and scales,
every other byte unchanged. Run-time head_dims of 1, 2 and 4 beats, blocks longer than the
writer's scale chunk, random AW/W/B pauses and idle on the row stream. Then reader calls over
the written cache must stream ``reader_beats_int8`` of the stored codes and scales.
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from tellme.hw.attention.kv_dma import read_command_layout, reader_beats_int8, reader_command
from tellme.hw.attention.kv_quant import quant_write_layout, quant_writer_commands
from tellme.sim.drivers import (
    StreamMonitor,
    StreamSink,
    StreamSource,
    layout_fields,
    pack_array,
    pack_struct,
    pause_generator,
    start_clock_and_reset,
)
from tellme.sim.golden.attention_hw import kv_quant_int8
from tellme.sim.runner import cocotb_params
from tellme.spec.kv_layout import FORMATS, KVLayout, decode_elems, encode_elems

from .tb_kv_quant import special_rows

SEED = int(os.environ.get("SEED", "1"))
MEM = 1 << 17


class TB:
    def __init__(self, dut):
        self.dut = dut
        p = cocotb_params()
        self.wp, self.rp = p["wr"], p["rd"]
        self.fmt = FORMATS[p["fmt"]]
        self.W = self.wp["beat"]
        self.wcmd_f = layout_fields(quant_write_layout(self.wp["addr_width"],
                                                       self.wp["count_width"]))
        self.rcmd_f = layout_fields(read_command_layout(self.rp["addr_width"],
                                                        self.rp["ctx_bits"], int8=True))
        self.wr_dones = self.rd_dones = 0

    async def start(self, seed: int):
        d = self.dut
        logging.getLogger("cocotb.kv_quant_e2e.m_axi").setLevel(logging.WARNING)
        self.ram = AxiRam(AxiBus.from_prefix(d, "m_axi"), d.clk, d.rst, size=MEM)
        await start_clock_and_reset(d)
        self.wsrc = StreamSource(d, "wr_cmd", seed=seed)
        self.wdat = StreamSource(d, "wr", seed=seed + 1)
        self.rsrc = StreamSource(d, "rd_cmd", seed=seed + 2)
        self.sink = StreamSink(d, "o", seed=seed + 3)
        self.mon = [StreamMonitor(d, s) for s in ("wr_cmd", "wr", "rd_cmd", "o")]
        self.prng = random.Random(seed + 4)
        cocotb.start_soon(self._count())

    async def _count(self):
        d = self.dut
        while True:
            await RisingEdge(d.clk)
            self.wr_dones += int(d.wr_done.value)
            self.rd_dones += int(d.rd_done.value)

    def wstalls(self, p: float, idle: float):
        wr = self.ram.write_if
        for ch in (wr.aw_channel, wr.w_channel, wr.b_channel):
            ch.set_pause_generator(pause_generator(self.prng, p) if p else None)
            ch.pause = False
        self.wdat.idle_prob = idle

    async def wait(self, attr: str, target: int, what: str):
        cycles = 0
        while getattr(self, attr) < target:
            await RisingEdge(self.dut.clk)
            cycles += 1
            assert cycles < 300_000, f"{what}: no done after {cycles} cycles"
        return cycles


@cocotb.test()
async def test_write_then_read(dut):
    tb = TB(dut)
    await tb.start(SEED)
    rng = np.random.default_rng(SEED)
    fmt, W = tb.fmt, tb.W
    sb = fmt.bits // 8
    for bpr in (1, 2, tb.wp["max_head_dim"] // W):
        hd = bpr * W
        lay = KVLayout(num_layers=2, num_kv_heads=2, head_dim=hd, max_ctx=40, dtype="int8",
                       fmt=fmt, base=0x1000 + int(rng.integers(0, 64)))
        assert lay.base + lay.total_bytes + 64 <= MEM
        img = bytearray(rng.integers(0, 256, size=MEM, dtype=np.uint8).tobytes())
        tb.ram.write(0, bytes(img))
        pool = special_rows(rng, fmt, hd)
        writes = [(0, 0, 11), (0, 11, 1), (1, 39, 1), (1, 3, 5), (0, 12, 1)]
        for wi, (layer, start, count) in enumerate(writes):
            tb.wstalls(*[(0.0, 0.0), (0.3, 0.3), (0.5, 0.1)][wi % 3])
            cmds = quant_writer_commands(lay, layer, start, count, W)
            beats = []
            for c in cmds:
                rows = np.stack([pool[int(k)] for k in rng.integers(0, len(pool), size=count)])
                q, s = kv_quant_int8(fmt.from_bits(rows), fmt=fmt)
                img[c["addr"]:c["addr"] + count * hd] = lay.encode_rows(q)
                img[c["saddr"]:c["saddr"] + count * sb] = encode_elems(fmt.to_bits(s), sb)
                for r in rows:
                    beats += [pack_array(r[i:i + W], fmt.bits) for i in range(0, hd, W)]
            d0 = tb.wr_dones
            tb.wdat.send(beats)
            tb.wsrc.send([pack_struct(tb.wcmd_f, **c) for c in cmds])
            cyc = await tb.wait("wr_dones", d0 + len(cmds), f"write {wi}")
            assert tb.wdat.idle and not int(dut.error.value)
            dut._log.info("%s hd %d: layer %d rows %d..%d (%d beats) written in %d cycles",
                          fmt.name, hd, layer, start, start + count - 1, len(beats), cyc)
        tb.wstalls(0.0, 0.0)
        for _ in range(4):
            await RisingEdge(dut.clk)
        assert not int(dut.wr_busy.value)
        got = tb.ram.read(0, MEM)
        bad = [i for i in range(MEM) if got[i] != img[i]]
        assert not bad, f"hd {hd}: {len(bad)} bytes differ from the expected image, first at " \
                        f"{bad[0]:#x}"
        # the reader streams the stored rows back
        depth = tb.rp["depth"]
        for layer, h, n in ((0, 0, 13), (1, 1, 40), (0, 1, 1)):
            cmd = reader_command(lay, layer, h, n, W)
            kv = []
            for kind in ("K", "V"):
                a = lay.row_addr(layer, kind, h, 0)
                codes = np.frombuffer(bytes(img[a:a + n * hd]), dtype=np.int8).reshape(n, hd)
                a = lay.scale_addr(layer, kind, h, 0)
                kv += [codes, decode_elems(bytes(img[a:a + n * sb]), sb)]
            want = reader_beats_int8(*kv, n, depth, W, fmt)
            o0, d0 = len(tb.sink.beats), tb.rd_dones
            tb.rsrc.send([pack_struct(tb.rcmd_f, **cmd)])
            await tb.wait("rd_dones", d0 + 1, f"read {layer} {h} {n}")
            assert tb.sink.beats[o0:] == want, f"hd {hd}: reader beats differ ({cmd})"
    for m in tb.mon:
        m.check()
