"""cocotb testbench for hw/linear.py: LinearUnit (streamer -> ping-pong buffer -> TLMM engine).

Weights live in a memory model as layout-v1 packed code streams (quant.codes); the unit fetches
them tile by tile over AXI4 while the engine computes; every output is compared exactly with the
golden ``ternary_matmul`` (via sim.tlmm_plan, which also checks golden tlmm against it).

Memory models: cocotbext-axi ``AxiRamRead`` with random AR/R pauses (protocol stress) and
``sim.ddr_model.DdrReadModel`` (latency + bandwidth cap: overlap check).
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
import numpy as np
from cocotbext.axi import AxiRamRead, AxiReadBus

from tellme.hw.linear import linear_cmd_layout
from tellme.hw.presets import preset
from tellme.hw.tlmm import out_layout
from tellme.sim.bench import tile_plan
from tellme.sim.cycles import expected_cycles
from tellme.sim.ddr_model import DdrReadModel, DdrTiming
from tellme.sim.drivers import (
    CycleCounter,
    StreamMonitor,
    StreamSink,
    StreamSource,
    layout_fields,
    pack_array,
    pack_struct,
    start_clock_and_reset,
    unpack_array,
    unpack_struct,
)
from tellme.sim.runner import cocotb_params
from tellme.sim.tlmm_plan import make_job, random_case
from tellme.spec.codes import layout_codes, pack_codes
from tellme.spec.tlmm import acc_bits


def tile_nb_for(p, n_out: int, k_in: int) -> int:
    """Largest tile (column blocks) that fits a buffer half: the benchmark's tile plan."""
    return tile_plan(p, [("w", n_out, k_in)])[0][3]


class Linear:
    """One linear placed in memory: weights, activations, golden job, DDR address."""

    def __init__(self, p, w, x, addr, tile_nb=None):
        codes = layout_codes(w, p.t, p.q)
        self.nb, self.kb = codes.shape[:2]
        self.tile_nb = tile_nb or tile_nb_for(p, *w.shape)
        self.job = make_job(w, x, t=p.t, q=p.q, v=p.v, tile_nb=self.tile_nb)
        self.stream = pack_codes(codes)
        self.addr = addr
        self.m = x.shape[0]


class TB:
    def __init__(self, dut):
        self.dut = dut
        params = cocotb_params()
        self.params = params
        self.p = preset(params["preset"])
        p = self.p
        self.acc_width = acc_bits(p.kb_max * 3 * p.t)
        self.cmd_f = layout_fields(linear_cmd_layout(p, params["addr_width"]))
        self.out_f = layout_fields(out_layout(q=p.q, acc_width=self.acc_width))
        logging.getLogger(f"cocotb.{dut._name}.m_axi").setLevel(logging.WARNING)

    async def start(self, *, idle=0.0, backpressure=0.0, seed=0):
        await start_clock_and_reset(self.dut)
        self.counter = CycleCounter(self.dut)
        self.src_cmd = StreamSource(self.dut, "i_cmd", seed=seed)
        self.src_act = StreamSource(self.dut, "i_act", idle_prob=idle, seed=seed + 1)
        self.sink = StreamSink(self.dut, "o", backpressure_prob=backpressure, seed=seed + 2)
        self.monitors = [StreamMonitor(self.dut, n) for n in ("i_cmd", "i_act", "o")]

    def submit(self, lin: Linear):
        self.src_cmd.send([pack_struct(self.cmd_f, addr=lin.addr, n_tokens=lin.m, kb=lin.kb,
                                       nb=lin.nb, tile_nb=lin.tile_nb)])
        self.src_act.send(pack_array(a, 8) for tile in lin.job.tiles for a in tile.acts)

    async def collect(self, lins: list[Linear]):
        start = len(self.sink.beats)
        total = sum(len(t.expect) for lin in lins for t in lin.job.tiles)
        raw = (await self.sink.wait_for(start + total, timeout_cycles=2_000_000))[start:]
        pos = 0
        for li, lin in enumerate(lins):
            per_tile = []
            for ti, tile in enumerate(lin.job.tiles):
                beats = []
                for _, exp_last in tile.expect:
                    f = unpack_struct(self.out_f, raw[pos])
                    assert f["last"] == exp_last, f"linear {li} tile {ti}: last flag"
                    beats.append(unpack_array(f["acc"], self.acc_width, self.p.q, signed=True))
                    pos += 1
                per_tile.append(beats)
            y = lin.job.assemble(per_tile)
            if not np.array_equal(y, lin.job.y):
                bad = np.argwhere(y != lin.job.y)
                i, j = bad[0]
                raise AssertionError(f"linear {li} ({lin.job.n_out}x{lin.job.k_in}, M={lin.m}):"
                                     f" {len(bad)} mismatches, first token {i} column {j}: "
                                     f"{y[i, j]} != {lin.job.y[i, j]}")
        for mon in self.monitors:
            mon.check()
        assert not int(self.dut.overflow.value), "weight buffer overflow"
        assert not int(self.dut.error.value), "AXI error response"


def _place(p, rng, shapes, base=0x3F0):
    """Random linears packed one after another in memory (odd gaps: unaligned starts)."""
    lins, addr = [], base
    for n, k, m in shapes:
        w, x = random_case(rng, n, k, m)
        lin = Linear(p, w, x, addr)
        lins.append(lin)
        addr += lin.stream.size + int(rng.integers(1, 100))
    return lins, addr


def _pause(rng, prob):
    while True:
        yield rng.random() < prob


@cocotb.test()
async def test_linear_axiram(dut):
    """Several linears queued back to back: ragged K/N, 1 and several tokens, several tiles,
    random AXI pauses, activation idles and output backpressure; exact results."""
    seed = int(os.environ.get("SEED", "1"))
    tb = TB(dut)
    p = tb.p
    rng = np.random.default_rng(seed)
    await tb.start(idle=0.3, backpressure=0.3, seed=seed)
    ram = AxiRamRead(AxiReadBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=1 << 20)
    prng = random.Random(seed)
    ram.ar_channel.set_pause_generator(_pause(prng, 0.3))
    ram.r_channel.set_pause_generator(_pause(prng, 0.4))
    kmax = p.kb_max * 3 * p.t
    shapes = [
        (37, 50, 1),                     # ragged, GEMV, several tiles
        (13, kmax - 5, 3),               # K near the design maximum: 1 column block per tile
        (p.q * p.nbt_max + 3, 29, 2),    # more columns than the largest tile
        (1, 1, 1),                       # one weight
        (24, 36, p.tok_max),             # many tokens
    ]
    lins, _ = _place(p, rng, shapes)
    for lin in lins:
        ram.write(lin.addr, lin.stream.tobytes())
        tb.submit(lin)
    await tb.collect(lins)
    dut._log.info("%d linears, %d tiles: exact", len(lins),
                  sum(len(lin.job.tiles) for lin in lins))


@cocotb.test()
async def test_linear_overlap(dut):
    """DDR timing model, no stalls: fill of tile n+1 overlaps compute of tile n.

    Measured cycles must be within 10% (plus the first fill's latency) of the ideal
    ``sum over tiles of max(fill, compute)`` schedule, and below the serial sum
    ``fill + compute`` that a load-then-compute design (TeLLMe) would take.
    """
    tb = TB(dut)
    p = tb.p
    rng = np.random.default_rng(11)
    timing = DdrTiming(clock_mhz=250, peak_gbps=float(tb.params.get("peak_gbps", 17.1)),
                       efficiency=0.85, latency=20)
    await tb.start()
    for m_tok in (1, 4):
        lins, end = _place(p, rng, [(p.q * p.nbt_max * 3, 3 * p.t * 3, m_tok)], base=0)
        mem = np.zeros(end + 4096, np.uint8)
        for lin in lins:
            mem[lin.addr:lin.addr + lin.stream.size] = lin.stream
        ddr = DdrReadModel(dut, mem, timing)
        t0 = tb.counter.cycle
        for lin in lins:
            tb.submit(lin)
        await tb.collect(lins)
        cycles = tb.counter.cycle - t0
        ddr._task.cancel()
        bpc = min(timing.bytes_per_cycle, tb.params["data_width"] / 8, p.v * 5 * p.t / 8)
        lin = lins[0]
        fill = [t.nbt * lin.kb * p.q * 5 * p.t / 8 / bpc for t in lin.job.tiles]
        comp = [expected_cycles(table=p.table, kb=lin.kb, nbt=t.nbt, n_tokens=lin.m)
                for t in lin.job.tiles]
        ideal = (fill[0] + sum(max(f, c) for f, c in zip(fill[1:], comp[:-1], strict=True))
                 + comp[-1])
        serial = sum(fill) + sum(comp)
        dut._log.info("M=%d: %d tiles, measured %d cycles, ideal overlap %.0f, serial %.0f",
                      m_tok, len(fill), cycles, ideal, serial)
        assert cycles <= 1.10 * ideal + timing.latency + 20, (cycles, ideal)
        assert cycles < serial, (cycles, serial)
