"""Sequencer front end (hw/sequencer.py): cocotb + Verilator against cocotbext-axi's
AxiRamRead, and an Amaranth-sim check of the 128-bit CRC-32 step."""

from __future__ import annotations

import random
import zlib

import pytest

from tellme.hw.sequencer import CLASSES, Sequencer, command_layout, crc32_matrices
from tellme.spec.program import OPS

PARAMS = dict(addr_width=40, max_records=1024, max_burst=16, max_outstanding=4,
              kv_beat=128)                 # the demo programs' (kv260's integer engine)


@pytest.mark.rtl
def test_sequencer_rtl():
    from tellme.sim.runner import run_cocotb

    run_cocotb(lambda: Sequencer(**PARAMS), name="seq", params=PARAMS,
               test_module="tests.rtl.tb_sequencer")


def test_crc_matrices_match_zlib():
    ms, md = crc32_matrices()
    rng = random.Random(3)
    blob = bytes(rng.randrange(256) for _ in range(16 * 9))
    s = 0xFFFFFFFF
    for i in range(0, len(blob), 16):
        d = int.from_bytes(blob[i:i + 16], "little")
        s = sum(((bin(s & ms[j]).count("1") + bin(d & md[j]).count("1")) & 1) << j
                for j in range(32))
    assert s ^ 0xFFFFFFFF == zlib.crc32(blob)


def test_crc_step_in_amaranth_sim():
    """The hardware CRC step (hw.sequencer._crc_step) over random beats equals zlib."""
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    from tellme.hw.sequencer import _crc_step

    m = Module()
    state, beat, out = Signal(32), Signal(128), Signal(32)
    m.d.comb += out.eq(_crc_step(state, beat))
    rng = random.Random(5)
    blob = bytes(rng.randrange(256) for _ in range(16 * 6))
    result = {}

    async def bench(ctx):
        s = 0xFFFFFFFF
        for i in range(0, len(blob), 16):
            ctx.set(state, s)
            ctx.set(beat, int.from_bytes(blob[i:i + 16], "little"))
            await ctx.delay(1e-9)
            s = ctx.get(out)
        result["crc"] = s ^ 0xFFFFFFFF

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert result["crc"] == zlib.crc32(blob)


def test_command_layouts_follow_the_record_tables():
    for cls, ops in CLASSES.items():
        lay = command_layout(cls)
        args = max(sum(40 if t == "addr" else {"u32": 32, "u16": 16, "u8": 8, "f32": 32}[t]
                       for _, t, _ in OPS[op].layout) for op in ops)
        assert lay.size == 16 + 16 + 8 + args, cls
    with pytest.raises(ValueError, match="max_records"):
        Sequencer(max_records=1)
    with pytest.raises(ValueError, match="kv_beat must be a power of two"):
        Sequencer(kv_beat=48)
