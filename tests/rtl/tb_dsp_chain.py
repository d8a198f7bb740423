"""cocotb testbench for hw/dsp.py DotChain: a new random dot product every cycle (operand
extremes included); each sum must appear exactly ``latency`` cycles after its operands."""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.triggers import FallingEdge

from tellme.sim.drivers import start_clock_and_reset
from tellme.sim.runner import cocotb_params


def _pack(vals, bits):
    return sum((v & ((1 << bits) - 1)) << (k * bits) for k, v in enumerate(vals))


@cocotb.test()
async def test_stream(dut):
    p = cocotb_params()
    n, aw, bw, lat = p["n"], p["a_bits"], p["b_bits"], p["latency"]
    rng = random.Random(int(os.environ.get("SEED", "1")))
    amin, amax, bmin, bmax = -(1 << aw - 1), (1 << aw - 1) - 1, -(1 << bw - 1), (1 << bw - 1) - 1
    await start_clock_and_reset(dut)
    sent = []
    for cyc in range(400):
        if cyc < 4:                                   # extremes first: the widest sums
            a = [amin if cyc % 2 == 0 else amax] * n
            b = [bmin] * n if cyc < 2 else [bmax] * n
        else:
            a = [rng.choice((amin, amax, rng.randint(amin, amax))) for _ in range(n)]
            b = [rng.choice((bmin, bmax, rng.randint(bmin, bmax))) for _ in range(n)]
        dut.i_a.value = _pack(a, aw)
        dut.i_b.value = _pack(b, bw)
        sent.append(sum(x * y for x, y in zip(a, b, strict=True)))
        await FallingEdge(dut.clk)
        k = cyc - lat + 1                             # the sum on o after this edge
        if k >= 0:
            got = dut.o.value.to_signed()
            assert got == sent[k], f"cycle {cyc}: sum {k} = {got}, expected {sent[k]}"
    assert len(sent) - lat + 1 > 300
