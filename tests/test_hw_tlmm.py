"""Amaranth-simulator unit tests of the TLMM engine + weight buffer (no external tools).

The cocotb tests (tests/rtl/test_tlmm.py) cover the generated Verilog under random stalls; these
are quick checks of the table builder and of one small product with both table kinds.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from tellme.hw.presets import make_tlmm, make_tlmm_core, preset
from tellme.hw.tlmm import TLMM, act_layout, cmd_layout, out_layout
from tellme.hw.weight_buffer import fill_layout
from tellme.sim.payload import layout_fields, pack_array, pack_struct, unpack_array, unpack_struct
from tellme.sim.tlmm_plan import make_job, random_case
from tellme.spec.codes import PATTERNS


def run_core_amaranth(p, job, *, idle=0.0, backpressure=0.0, seed=0, max_cycles=20000):
    """Drive a TLMMCore in the Amaranth simulator; return the output beats per tile."""
    dut = make_tlmm_core(p)
    e = dut.engine
    fill_f = layout_fields(fill_layout(p.t, p.v))
    cmd_f = layout_fields(cmd_layout(kb_max=p.kb_max, nbt_max=p.nbt_max, tok_max=p.tok_max))
    out_f = layout_fields(out_layout(q=p.q, acc_width=e.acc_width))
    wbits = 5 * p.t
    rng = random.Random(seed)
    fills = [pack_struct(fill_f, vectors=pack_array(vs, wbits), last=last)
             for tile in job.tiles for vs, last in tile.fill]
    cmds = [pack_struct(cmd_f, **tile.cmd) for tile in job.tiles]
    acts = [pack_array(a, 8) for tile in job.tiles for a in tile.acts]
    total = sum(len(tile.expect) for tile in job.tiles)
    got = []

    def source(port, beats):
        async def bench(ctx):
            for beat in beats:
                while rng.random() < idle:
                    await ctx.tick()
                ctx.set(port.payload.as_value(), beat)
                ctx.set(port.valid, 1)
                await ctx.tick().until(port.ready)
                ctx.set(port.valid, 0)
        return bench

    async def sink(ctx):
        while len(got) < total:
            ready = not (rng.random() < backpressure)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload.as_value())
            if ready and valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source(dut.i_w, fills), background=True)
    sim.add_testbench(source(dut.i_cmd, cmds), background=True)
    sim.add_testbench(source(dut.i_act, acts), background=True)
    sim.add_testbench(sink)
    sim.run_until(max_cycles * 1e-8)
    assert len(got) == total, f"{len(got)} of {total} output beats after {max_cycles} cycles"
    per_tile, pos = [], 0
    for tile in job.tiles:
        beats = []
        for _exp_acc, exp_last in tile.expect:
            f = unpack_struct(out_f, got[pos])
            acc = unpack_array(f["acc"], e.acc_width, p.q, signed=True)
            assert f["last"] == exp_last, f"beat {pos}: last={f['last']}, expected {exp_last}"
            beats.append(acc)
            pos += 1
        per_tile.append(beats)
    return per_tile


@pytest.mark.parametrize("table", ["full", "half"])
def test_table_builder_matches_patterns(table):
    """Every stored entry equals PATTERNS[c] . (v1, v2, v3), read back through the lookups.

    Uses one 1x3 product per code: W row = PATTERNS[c], so the output is the table entry c.
    """
    p = preset("sim").with_table(table)
    rng = np.random.default_rng(5)
    w = np.zeros((27, 3), np.int8)
    w[:, :] = PATTERNS                  # output column c selects entry c of table 0
    x = rng.integers(-128, 128, size=(3, 3)).astype(np.int8)
    x[0] = [-128, -128, -128]
    x[1] = [127, -128, 127]
    job = make_job(w, x, t=p.t, q=p.q, v=p.v, tile_nb=4)
    y = job.assemble(run_core_amaranth(p, job))
    assert np.array_equal(y, x.astype(np.int64) @ PATTERNS.T.astype(np.int64))


@pytest.mark.parametrize("table", ["full", "half"])
def test_small_gemm_with_stalls(table):
    p = preset("sim").with_table(table)
    rng = np.random.default_rng(11)
    w, x = random_case(rng, 22, 29, 3)                 # ragged K (29) and N (22)
    job = make_job(w, x, t=p.t, q=p.q, v=p.v, tile_nb=2)
    y = job.assemble(run_core_amaranth(p, job, idle=0.3, backpressure=0.3, seed=3))
    assert np.array_equal(y, job.y)


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_parameter_errors():
    with pytest.raises(ValueError, match="table must be one of"):
        TLMM(t=4, q=4, kb_max=4, nbt_max=4, tok_max=4, depth=16, table="quarter")
    with pytest.raises(TypeError, match="t must be a positive integer"):
        TLMM(t=0, q=4, kb_max=4, nbt_max=4, tok_max=4, depth=16)


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_accumulator_width_is_exact_bound():
    e = make_tlmm(preset("kv260"))
    e._MustUse__silence = True          # only the parameters are checked, never elaborated
    # K = 96*84 = 8064: |sum| <= 128*8064 = 1,032,192 < 2**20 -> 20 magnitude bits + sign
    assert e.acc_width == 21
    assert act_layout(t=28).size == 84 * 8
