"""cocotb testbench: the quantising KV writer (``KVQuantWriter``) and the int8 KV reader
(``KVInt8Reader``) on one AXI4 port (cocotbext-axi AxiRam), the test top of
tests/rtl/test_kv_quant.py.

The RAM starts with random bytes. Prefill blocks and decode rows of random and corner-case
stream-format rows (tests/rtl/tb_kv_quant.special_rows) are written with
``quant_writer_commands``; afterwards the whole RAM must equal the expected image: the int8
layout (``KVLayout(dtype="int8")``: K rows padded with zeros, V codes channel-major in blocks
of the reader's beat, both scales in the K block's header) of golden ``kv_quant_int8`` at the
written keys, every other byte unchanged. Run-time head_dims of 1, 3, 3/4 and all of the
maximum input beats per row (K rows with and without padding), blocks crossing key-block and tile
boundaries, random AW/W/B pauses and idle on the row stream. Then reader calls over the
written prefix must stream ``reader_beats_int8`` of the image (the integer engine's beats).
Without stalls each write takes at least ``writer_transactions`` cycles (one write per
cycle) and at most that plus the quantiser's fill and the port's latency.
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
from tellme.hw.attention.kv_quant import (
    quant_write_layout,
    quant_writer_commands,
    writer_transactions,
)
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
from tellme.spec.kv_layout import FORMATS, KVLayout

from .tb_kv_quant import special_rows

SEED = int(os.environ.get("SEED", "1"))
MEM = 1 << 19


class TB:
    def __init__(self, dut):
        self.dut = dut
        p = cocotb_params()
        self.wp, self.rp = p["wr"], p["rd"]
        self.fmt = FORMATS[p["fmt"]]
        self.W, self.B = self.wp["beat"], self.wp["kv_beat"]
        self.wcmd_f = layout_fields(quant_write_layout(self.wp["addr_width"],
                                                       self.wp["count_width"], self.B))
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
            assert cycles < 500_000, f"{what}: no done after {cycles} cycles"
        return cycles


def expect(img: bytearray, lay: KVLayout, layer: int, h: int, kind: str, p: int, q, s):
    """Apply one stored row (codes ``q``, scale bits ``s`` of key ``p``) to the image."""
    sb = lay.scale_bytes
    sa = lay.scale_addr(layer, kind, h, p)
    if kind == "K":
        a = lay.row_addr(layer, "K", h, p)
        row = (np.asarray(q, np.int64) & 0xFF).astype(np.uint8).tobytes()
        img[a:a + lay.k_row_bytes] = row + bytes(lay.k_row_bytes - len(row))
        img[sa:sa + sb] = int(s).to_bytes(sb, "little")
    else:
        for c, x in enumerate(q):
            img[lay.v_addr(layer, h, p, c)] = int(x) & 0xFF
        img[sa:sa + lay.pair_bytes - sb] = int(s).to_bytes(lay.pair_bytes - sb, "little")


@cocotb.test()
async def test_write_then_read(dut):
    tb = TB(dut)
    await tb.start(SEED)
    rng = np.random.default_rng(SEED)
    fmt, W, B = tb.fmt, tb.W, tb.B
    mb = tb.wp["max_head_dim"] // W
    depth = tb.rp["depth"]
    for bpr in sorted({1, min(3, mb), max(1, 3 * mb // 4), mb}):
        hd = bpr * W
        lay = KVLayout(num_layers=2, num_kv_heads=2, head_dim=hd, max_ctx=2 * B + 8,
                       dtype="int8", fmt=fmt, beat=B, base=0x1000 + 64 * int(rng.integers(0, 64)))
        assert lay.base + lay.total_bytes + 64 <= MEM
        img = bytearray(rng.integers(0, 256, size=MEM, dtype=np.uint8).tobytes())
        tb.ram.write(0, bytes(img))
        pool = special_rows(rng, fmt, hd)
        M = lay.max_ctx
        writes = [(0, 0, B + 3), (0, B + 3, 1), (1, M - 1, 1), (1, B - 2, 5), (0, B + 4, 1)]
        for wi, (layer, start, count) in enumerate(writes):
            tb.wstalls(*[(0.0, 0.0), (0.3, 0.3), (0.5, 0.1)][wi % 3])
            cmds = quant_writer_commands(lay, layer, start, count, W)
            beats = []
            for ci, c in enumerate(cmds):
                kind, h = "KV"[c["kind"]], ci % lay.num_kv_heads
                rows = np.stack([pool[int(k)] for k in rng.integers(0, len(pool), size=count)])
                q, s = kv_quant_int8(fmt.from_bits(rows), fmt=fmt)
                for r in range(count):
                    expect(img, lay, layer, h, kind, start + r, q[r], fmt.to_bits(s[r]))
                for r in rows:
                    beats += [pack_array(r[i:i + W], fmt.bits) for i in range(0, hd, W)]
            d0 = tb.wr_dones
            tb.wdat.send(beats)
            tb.wsrc.send([pack_struct(tb.wcmd_f, **c) for c in cmds])
            cyc = await tb.wait("wr_dones", d0 + len(cmds), f"write {wi}")
            assert tb.wdat.idle and not int(dut.error.value)
            tr = sum(writer_transactions("KV"[c["kind"]], count, head_dim=hd, beat=W,
                                         kv_beat=B) for c in cmds)
            dut._log.info("%s hd %d: layer %d rows %d..%d (%d beats, %d writes) written in %d "
                          "cycles", fmt.name, hd, layer, start, start + count - 1, len(beats),
                          tr, cyc)
            assert cyc >= tr
        tb.wstalls(0.0, 0.0)
        for _ in range(4):
            await RisingEdge(dut.clk)
        assert not int(dut.wr_busy.value)
        got = np.frombuffer(tb.ram.read(0, MEM), np.uint8)
        bad = np.flatnonzero(got != np.frombuffer(bytes(img), np.uint8))
        assert not bad.size, f"hd {hd}: {bad.size} bytes differ from the expected image, " \
                             f"first at {bad[0]:#x}"
        # the reader streams the written prefix (keys 0 .. B+4 of layer 0) back
        for h, n in ((0, B + 5), (1, 1), (1, min(B + 5, depth + 1)), (0, B)):
            cmd = reader_command(lay, 0, h, n, B)
            kr = lay.region_addr(0, "K", h)
            vr = lay.region_addr(0, "V", h)
            kq, ks, vs = lay.decode_k_region(bytes(img[kr:kr + lay.kind_head_bytes("K")]))
            vq = lay.decode_v_region(bytes(img[vr:vr + lay.kind_head_bytes("V")]))
            want = reader_beats_int8(kq, ks, vq, vs, n, depth, B, fmt)
            o0, d0 = len(tb.sink.beats), tb.rd_dones
            tb.rsrc.send([pack_struct(tb.rcmd_f, **cmd)])
            await tb.wait("rd_dones", d0 + 1, f"read {h} {n}")
            assert tb.sink.beats[o0:] == want, f"hd {hd}: reader beats differ ({cmd})"
    for m in tb.mon:
        m.check()
