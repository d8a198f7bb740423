"""cocotb testbench for hw/row_reader.py: RowReader against cocotbext-axi's AxiRamRead.

Random commands (any byte address, 0..70 vectors, 2-, 3- and 4-byte elements) issued back to
back under random AR/R pauses and output backpressure; every vector must be the memory's bytes
at its place, split into elements; ``last`` on each command's final vector; the AXI bursts
exactly ``split_bursts`` of each command's beat range (``row_read_beats``).
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiRamRead, AxiReadBus

from tellme.hw.row_reader import row_read_beats
from tellme.hw.weight_stream import split_bursts
from tellme.sim.drivers import AxiReadMonitor, pause_generator, start_clock_and_reset
from tellme.sim.runner import cocotb_params


def expected(mem: bytes, addr: int, count: int, eb: int, lanes: int) -> list[tuple]:
    """(words, last) of one command: element i of vector j = bytes at addr + (j*L + i)*eb."""
    out = []
    for j in range(count):
        words = tuple(int.from_bytes(mem[addr + (j * lanes + i) * eb:
                                         addr + (j * lanes + i + 1) * eb], "little")
                      for i in range(lanes))
        out.append((words, j == count - 1))
    return out


@cocotb.test()
async def test_row_reader(dut):
    p = cocotb_params()
    lanes, dw, aw, cw = p["lanes"], p["data_width"], p["addr_width"], p["count_width"]
    logging.getLogger("cocotb.rr.m_axi").setLevel(logging.WARNING)
    size = 1 << 16
    ram = AxiRamRead(AxiReadBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=size)
    mon = AxiReadMonitor(dut, "m_axi", data_width=dw, max_burst=p["max_burst"],
                         max_outstanding=p["max_outstanding"])
    seed = int(os.environ.get("SEED", "1"))
    rng = random.Random(seed)
    mem = bytes(rng.getrandbits(8) for _ in range(size))
    ram.write(0, mem)
    got: list[tuple] = []
    ready_p = [1.0]

    async def sink():
        pending = None
        while True:
            await RisingEdge(dut.clk)
            if int(dut.o__valid.value):
                val = dut.o__payload.value.to_unsigned()
                assert pending is None or val == pending, "payload changed while stalled"
                if int(dut.o__ready.value):
                    got.append((tuple((val >> (32 * i)) & 0xFFFFFFFF for i in range(lanes)),
                                bool(val >> (32 * lanes))))
                    pending = None
                else:
                    pending = val
            else:
                assert pending is None, "valid dropped before the transfer"
            dut.o__ready.value = int(rng.random() < ready_p[0])

    dut.i_cmd__valid.value = 0
    dut.o__ready.value = 0
    await start_clock_and_reset(dut)
    cocotb.start_soon(sink())

    stalls = [(0.0, 0.0, 1.0), (0.3, 0.3, 0.6), (0.0, 0.5, 0.9), (0.5, 0.0, 0.3)]
    for rnd, (p_ar, p_r, p_ready) in enumerate(stalls):
        for ch, p_ch in ((ram.ar_channel, p_ar), (ram.r_channel, p_r)):
            ch.set_pause_generator(pause_generator(rng, p_ch) if p_ch else None)
            ch.pause = False                        # a removed generator leaves its last state
        ready_p[0] = p_ready
        cmds = []
        for _ in range(12):
            eb = rng.choice((2, 3, 4))
            count = rng.choice((0, 1, 2, rng.randrange(1, 70)))
            addr = rng.randrange(0, size - count * lanes * eb - 1)
            if rng.random() < 0.3:                  # a page crossing
                addr = min(size - count * lanes * eb - 1,
                           max(0, 4096 * rng.randrange(1, 15) - rng.randrange(1, 100)))
            cmds.append((addr, count, eb))
        got.clear()
        mon.bursts.clear()
        for addr, count, eb in cmds:
            dut.i_cmd__payload.value = addr | (count << aw) | (eb << (aw + cw))
            dut.i_cmd__valid.value = 1
            for _ in range(20_000):
                await RisingEdge(dut.clk)
                if int(dut.i_cmd__ready.value):
                    break
            else:
                raise AssertionError(f"round {rnd}: command not taken, {len(got)} vectors out; "
                                     f"cmds {cmds}, bursts {mon.bursts}")
        dut.i_cmd__valid.value = 0
        want = [v for a, n, e in cmds for v in expected(mem, a, n, e, lanes)]
        for _ in range(20_000):
            await RisingEdge(dut.clk)
            if len(got) >= len(want) and not int(dut.busy.value):
                break
        assert not int(dut.busy.value), f"round {rnd}: still busy, {len(got)}/{len(want)}"
        assert not int(dut.error.value)
        assert len(got) == len(want), f"round {rnd}: {len(got)} vectors, want {len(want)}"
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"round {rnd} vector {k}: {g} != {w}"
        nb = dw // 8
        plan = []
        for addr, count, eb in cmds:
            beats = row_read_beats(addr, count, eb, lanes, dw)
            if beats:
                plan += split_bursts(addr - addr % nb, beats, nbytes=nb,
                                     max_burst=p["max_burst"])
        assert mon.bursts == plan, f"round {rnd}: bursts {mon.bursts[:4]} != {plan[:4]}"
        dut._log.info("round %d: %d commands, %d vectors ok", rnd, len(cmds), len(want))
