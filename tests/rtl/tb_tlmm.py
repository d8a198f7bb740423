"""cocotb testbench of TLMMCore (TLMM engine + ping-pong weight buffer) on generated Verilog.

Launched by tests/rtl/test_tlmm.py through tellme.sim.runner.run_cocotb; the preset name and
table kind come in the params (TELLME_PARAMS). Every result is compared exactly with the golden
model (tellme.sim.golden.tlmm via tellme.sim.tlmm_plan).
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge

from tellme.hw.presets import HwPreset
from tellme.hw.tlmm import cmd_layout, out_layout
from tellme.hw.weight_buffer import fill_layout
from tellme.sim.cycles import expected_cycles, expected_job_cycles
from tellme.sim.drivers import (
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
from tellme.spec.tlmm import acc_bits

STREAMS_IN = ("i_w", "i_cmd", "i_act")
PRESET_FIELDS = ("t", "q", "v", "kb_max", "nbt_max", "tok_max", "half_depth", "ram_style",
                 "table")


class TB:
    """Clock, reset, one source per input stream, a sink on ``o`` and monitors on all four."""

    def __init__(self, dut, *, idle: float = 0.0, backpressure: float = 0.0, seed: int = 0):
        params = cocotb_params()
        self.p = HwPreset(name=params["preset"], **{k: params[k] for k in PRESET_FIELDS})
        p = self.p
        self.dut = dut
        self.acc_width = acc_bits(p.kb_max * 3 * p.t)
        self.fill_f = layout_fields(fill_layout(p.t, p.v))
        self.cmd_f = layout_fields(cmd_layout(kb_max=p.kb_max, nbt_max=p.nbt_max,
                                              tok_max=p.tok_max))
        self.out_f = layout_fields(out_layout(q=p.q, acc_width=self.acc_width))
        self.idle, self.backpressure, self.seed = idle, backpressure, seed

    async def start(self):
        await start_clock_and_reset(self.dut)
        self.src = {name: StreamSource(self.dut, name, idle_prob=self.idle,
                                       seed=self.seed * 7 + i)
                    for i, name in enumerate(STREAMS_IN)}
        self.sink = StreamSink(self.dut, "o", backpressure_prob=self.backpressure,
                               seed=self.seed * 7 + 5)
        self.monitors = [StreamMonitor(self.dut, name) for name in STREAMS_IN + ("o",)]

    def configure(self, *, idle: float, backpressure: float, seed: int):
        """Change the stall pattern between jobs (the drivers keep running)."""
        for i, src in enumerate(self.src.values()):
            src.idle_prob = idle
            src.rng.seed(seed * 7 + i)
        self.sink.backpressure_prob = backpressure
        self.sink.rng.seed(seed * 7 + 5)

    def send_fill(self, job):
        p = self.p
        self.src["i_w"].send(pack_struct(self.fill_f, vectors=pack_array(vs, 5 * p.t), last=last)
                             for tile in job.tiles for vs, last in tile.fill)

    def send_compute(self, job):
        self.src["i_cmd"].send(pack_struct(self.cmd_f, **tile.cmd) for tile in job.tiles)
        self.src["i_act"].send(pack_array(a, 8) for tile in job.tiles for a in tile.acts)

    async def collect(self, job):
        """Wait for the job's output beats; check ``last``; return the result matrix."""
        start = len(self.sink.beats)
        total = sum(len(tile.expect) for tile in job.tiles)
        raw = (await self.sink.wait_for(start + total, timeout_cycles=200_000))[start:]
        per_tile, pos = [], 0
        for ti, tile in enumerate(job.tiles):
            beats = []
            for bi, (_, exp_last) in enumerate(tile.expect):
                f = unpack_struct(self.out_f, raw[pos])
                assert f["last"] == exp_last, (f"tile {ti} beat {bi}: last={f['last']}, "
                                               f"expected {exp_last}")
                beats.append(unpack_array(f["acc"], self.acc_width, self.p.q, signed=True))
                pos += 1
            per_tile.append(beats)
        for mon in self.monitors:
            mon.check()
        assert not int(self.dut.overflow.value), "weight buffer overflow flag set"
        return job.assemble(per_tile)

    async def run_job(self, job):
        self.send_fill(job)
        self.send_compute(job)
        return await self.collect(job)


def _job(p, w, x, tile_nb):
    return make_job(w, x, t=p.t, q=p.q, v=p.v, tile_nb=tile_nb)


def _check(y, job, what):
    if not np.array_equal(y, job.y):
        bad = np.argwhere(y != job.y)
        i, j = bad[0]
        raise AssertionError(f"{what}: {len(bad)} mismatches, first at token {i} column {j}: "
                             f"got {y[i, j]}, expected {job.y[i, j]}")


@cocotb.test()
async def test_directed(dut):
    """All +1 / -1 / 0 weights, int8 extremes, ragged K and N, one token and many tokens."""
    tb = TB(dut)
    await tb.start()
    p = tb.p
    kmax = p.kb_max * 3 * p.t
    rng = np.random.default_rng(1)
    cases = [
        ("ones", 8, 24, 2, 2),
        ("minus", 8, 24, 2, 2),
        ("zeros", 8, 24, 1, 2),
        ("extremes", 9, kmax, 3, 2),          # K at the accumulator's design maximum
        ("random", 1, 1, 1, 1),               # one output, one input, one token
        ("random", 13, 29, 1, 3),             # ragged K and N, GEMV
        ("random", 10, 35, p.tok_max, 2),     # many tokens (GEMM), several tiles
    ]
    for kind, n, k, m, tile_nb in cases:
        w, x = random_case(rng, n, k, m, kind)
        job = _job(p, w, x, tile_nb)
        _check(await tb.run_job(job), job, f"{kind} N={n} K={k} M={m}")


@cocotb.test()
async def test_random_stalls(dut):
    """Random idle on every input x random backpressure on the output, several seeds."""
    seed = int(os.environ.get("SEED", "1"))
    tb = TB(dut)
    await tb.start()
    p = tb.p
    for i, (idle, bp) in enumerate([(0.0, 0.5), (0.5, 0.0), (0.3, 0.3), (0.7, 0.7)]):
        tb.configure(idle=idle, backpressure=bp, seed=seed + i)
        rng = np.random.default_rng(seed * 100 + i)
        n = int(rng.integers(1, p.q * p.nbt_max + 1))
        k = int(rng.integers(1, 3 * p.t * p.kb_max + 1))
        m = int(rng.integers(1, 5))
        kb = -(-k // (3 * p.t))
        tile_nb = int(rng.integers(1, min(p.nbt_max, p.half_depth // kb) + 1))
        w, x = random_case(rng, n, k, m)
        job = _job(p, w, x, tile_nb)
        _check(await tb.run_job(job), job, f"idle={idle} bp={bp} N={n} K={k} M={m}")


@cocotb.test()
async def test_cycles(dut):
    """Stall-free cycle counts equal sim/cycles.py: GEMV and GEMM, table-bound and sweep-bound."""
    tb = TB(dut)
    await tb.start()
    p = tb.p
    rng = np.random.default_rng(3)
    for kb, nbt, m, tiles in [(2, 1, 1, 1), (3, 8, 1, 1), (4, 8, 3, 1), (5, 3, 2, 2)]:
        w, x = random_case(rng, nbt * tiles * p.q, kb * 3 * p.t, m)
        job = _job(p, w, x, nbt)
        tb.send_fill(job)
        while not tb.src["i_w"].idle:             # tiles resident before the first command
            await RisingEdge(dut.clk)
        for _ in range(3):
            await RisingEdge(dut.clk)
        n_cmd = len(tb.src["i_cmd"].transfer_cycles)
        n_out = len(tb.sink.transfer_cycles)
        tb.send_compute(job)
        _check(await tb.collect(job), job, f"cycles kb={kb} nbt={nbt} m={m}")
        measured = tb.sink.transfer_cycles[-1] - tb.src["i_cmd"].transfer_cycles[n_cmd]
        assert len(tb.sink.transfer_cycles) - n_out == m * nbt * tiles
        if tiles == 1:
            want = expected_cycles(table=p.table, kb=kb, nbt=nbt, n_tokens=m)
        else:
            want = expected_job_cycles(table=p.table, kb=kb, tiles=[nbt] * tiles, n_tokens=m)
        assert measured == want, (f"kb={kb} nbt={nbt} m={m} tiles={tiles}: measured {measured} "
                                  f"cycles, model {want}")


@cocotb.test()
async def test_monitor_catches_violations(dut):
    """The protocol monitor fires on a dropped valid and on a changed payload (checker check)."""
    tb = TB(dut)
    await start_clock_and_reset(dut)
    mon = StreamMonitor(dut, "i_cmd", raise_on_error=False)
    dut.i_act__valid.value = 0
    dut.i_w__valid.value = 0
    dut.o__ready.value = 1
    cmd = pack_struct(tb.cmd_f, n_tokens=1, kb=1, nbt=1)
    await FallingEdge(dut.clk)
    dut.i_cmd__payload.value = cmd
    dut.i_cmd__valid.value = 1                   # accepted at once (engine idle)
    await FallingEdge(dut.clk)
    assert int(dut.i_cmd__ready.value) == 0      # the engine now waits for activations
    await FallingEdge(dut.clk)                   # offered while not ready ...
    dut.i_cmd__valid.value = 0                   # ... and withdrawn: violation 1
    await FallingEdge(dut.clk)
    dut.i_cmd__valid.value = 1
    await FallingEdge(dut.clk)
    dut.i_cmd__payload.value = cmd ^ 1           # changed while pending: violation 2
    for _ in range(2):
        await FallingEdge(dut.clk)
    assert mon.transfers == 1, mon.transfers
    assert len(mon.errors) == 2, mon.errors
    assert "valid dropped" in mon.errors[0] and "payload changed" in mon.errors[1], mon.errors
