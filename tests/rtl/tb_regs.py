"""cocotb testbench of hw/regs.py (RegisterFile) through cocotbext-axi's AxiLiteMaster.

Every test runs with random pauses on all five AXI-Lite channels (valid idles on AW/W/AR,
ready backpressure on B/R), a protocol monitor on the slave's B and R channels (valid held
until accepted, data stable), and a timeout on every access (no access may hang). Expected
values come from tellme.spec.registers only. Launched by tests/rtl/test_regs.py.
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from tellme.sim.drivers import pause_generator, start_clock_and_reset
from tellme.sim.runner import cocotb_params
from tellme.spec.registers import REGISTERS, REGS, const_words, decode, encode, port_name

SEED = int(os.environ.get("SEED", "1"))
RW = [r for r in REGISTERS if r.access == "RW"]
UNMAPPED = [0x05C, 0x060, 0x07C, 0x0C0, 0x100, 0x7F0, 0xFFC]


def _inputs():
    """Names of the register file's input ports besides the bus."""
    names = ["counters_clear"]
    for r in REGISTERS:
        if r.counter:
            names.append(f"{r.name.lower()}_inc")
            continue
        for f in r.fields:
            if r.access == "RO" and not f.const:
                names.append(port_name(r, f))
            elif r.access == "W1C":
                names.append(port_name(r, f) + "_set")
    return names


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.p = cocotb_params()
        self.rng = random.Random(SEED)
        self.pulses = {"cmd_start": 0, "cmd_soft_reset": 0}

    async def start(self, pause: float = 0.3):
        d = self.dut
        for name in _inputs():
            getattr(d, name).value = 0
        logging.getLogger("cocotb.regs.s_axil").setLevel(logging.WARNING)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(d, "s_axil"), d.clk, d.rst)
        await start_clock_and_reset(d)
        wr, rd = self.axil.write_if, self.axil.read_if
        for ch in (wr.aw_channel, wr.w_channel, wr.b_channel, rd.ar_channel, rd.r_channel):
            ch.set_pause_generator(pause_generator(self.rng, pause))
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        """Count W1S pulses; check that B/R hold valid and data until accepted."""
        d = self.dut
        held = {"b": None, "r": None}
        while True:
            await RisingEdge(d.clk)
            await ReadOnly()
            for name in self.pulses:
                self.pulses[name] += int(getattr(d, name).value)
            for ch, ready, data in (("b", "bready", "bresp"), ("r", "rready", "rdata")):
                valid = int(getattr(d, f"s_axil_{ch}valid").value)
                val = int(getattr(d, f"s_axil_{data}").value)
                if held[ch] is not None:
                    assert valid, f"{ch}valid dropped before {ready}"
                    assert val == held[ch], f"s_axil_{data} changed before {ready}"
                held[ch] = val if valid and not int(getattr(d, f"s_axil_{ready}").value) \
                    else None

    async def read(self, addr: int) -> int:
        resp = await with_timeout(self.axil.read(addr, 4), 2000, "ns")
        assert resp.resp == AxiResp.OKAY, f"read {addr:#x}: {resp.resp}"
        return int.from_bytes(resp.data, "little")

    async def write(self, addr: int, value: int, nbytes: int = 4):
        resp = await with_timeout(self.axil.write(addr, value.to_bytes(nbytes, "little")),
                                  2000, "ns")
        assert resp.resp == AxiResp.OKAY, f"write {addr:#x}: {resp.resp}"

    async def reg(self, name: str) -> int:
        return await self.read(REGS[name].offset)

    async def drive(self, name: str, value: int, cycles: int = 1):
        """Hold input ``name`` at ``value`` for ``cycles`` rising edges, then 0."""
        await FallingEdge(self.dut.clk)
        getattr(self.dut, name).value = value
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        getattr(self.dut, name).value = 0


@cocotb.test()
async def test_constants_and_resets(dut):
    """ID, versions, build hash and capabilities equal the spec's words; every other register
    reads its reset value; writes to constant registers change nothing."""
    tb = TB(dut)
    await tb.start()
    want = const_words(tb.p["target"], tb.p["build_hash"])
    for r in REGISTERS:
        for w in range(r.words):
            got = await tb.read(r.offset + 4 * w)
            exp = want.get(r.name, r.reset if w == 0 else 0)
            assert got == exp, f"{r.name}+{4 * w}: {got:#x} != {exp:#x}"
    assert want["ID"] == encode("ID", MAGIC=0x544C4D45)
    for name in want:
        await tb.write(REGS[name].offset, 0xFFFF_FFFF)
        assert await tb.reg(name) == want[name]
    assert int(dut.timeout_cycles.value) == REGS["TIMEOUT"].reset


@cocotb.test()
async def test_rw_random_with_strobes(dut):
    """Random full-word and byte/half-word writes to every RW register against a model; the
    output ports follow the stored values."""
    tb = TB(dut)
    await tb.start()
    model = {r.name: r.reset for r in RW}
    for _ in range(120):
        r = tb.rng.choice(RW)
        if tb.rng.random() < 0.6:
            nbytes, lane = 4, 0
        else:
            nbytes = tb.rng.choice([1, 2])
            lane = tb.rng.randrange(0, 4, nbytes)
        v = tb.rng.getrandbits(8 * nbytes)
        await tb.write(r.offset + lane, v, nbytes)
        m = ((1 << 8 * nbytes) - 1) << 8 * lane
        valid = sum(f.mask for f in r.fields)
        model[r.name] = (model[r.name] & ~m | (v << 8 * lane)) & valid
        if tb.rng.random() < 0.3:
            r2 = tb.rng.choice(RW)
            assert await tb.reg(r2.name) == model[r2.name], r2.name
    await ReadOnly()
    for r in RW:
        for f in r.fields:
            port = int(getattr(dut, port_name(r, f)).value)
            assert port == decode(r, model[r.name])[f.name], f"{r.name}.{f.name} port"
    for r in RW:
        await RisingEdge(dut.clk)
        assert await tb.reg(r.name) == model[r.name], r.name


@cocotb.test()
async def test_w1s_pulses_and_w1c(dut):
    """CMD bits give one one-cycle pulse per written 1 and read 0; W1C bits are set by their
    inputs, cleared by writing 1 (not 0), and a set held during the clear wins."""
    tb = TB(dut)
    await tb.start()
    await tb.write(REGS["CMD"].offset, encode("CMD", START=1))
    await tb.write(REGS["CMD"].offset, encode("CMD", START=1, SOFT_RESET=1))
    await tb.write(REGS["CMD"].offset, 0)
    for _ in range(3):
        await RisingEdge(dut.clk)
    assert tb.pulses == {"cmd_start": 2, "cmd_soft_reset": 1}, tb.pulses
    assert await tb.reg("CMD") == 0
    for reg in ("ERR_FLAGS", "IRQ_STATUS"):
        r = REGS[reg]
        for f in r.fields:
            p = port_name(r, f)
            await tb.drive(p + "_set", 1)
            assert decode(r, await tb.reg(reg))[f.name] == 1, f"{reg}.{f.name} not set"
            assert int(getattr(dut, p).value) == 1
            await tb.write(r.offset, 0)                       # writing 0 clears nothing
            assert decode(r, await tb.reg(reg))[f.name] == 1
            await tb.write(r.offset, f.mask)
            assert decode(r, await tb.reg(reg))[f.name] == 0, f"{reg}.{f.name} not cleared"
        assert await tb.reg(reg) == 0
    await FallingEdge(dut.clk)
    dut.err_flags_timeout_set.value = 1                        # set wins over the clear
    await tb.write(REGS["ERR_FLAGS"].offset, 0xFFFF_FFFF)
    assert decode("ERR_FLAGS", await tb.reg("ERR_FLAGS"))["TIMEOUT"] == 1
    await FallingEdge(dut.clk)
    dut.err_flags_timeout_set.value = 0
    await tb.write(REGS["ERR_FLAGS"].offset, 0xFFFF_FFFF)
    assert await tb.reg("ERR_FLAGS") == 0


@cocotb.test()
async def test_ro_inputs_and_counters(dut):
    """RO registers read their input ports; counters add their inputs, clear on
    counters_clear, and CYCLES reads as LO then HI."""
    tb = TB(dut)
    await tb.start()
    for reg in ("STATUS", "ERR_INFO", "ERR_ADDR_LO", "ERR_ADDR_HI"):
        r = REGS[reg]
        vals = {f.name: tb.rng.getrandbits(f.width) for f in r.fields}
        await FallingEdge(dut.clk)
        for f in r.fields:
            getattr(dut, port_name(r, f)).value = vals[f.name]
        assert await tb.reg(reg) == encode(r, **vals), reg
    counters = [r for r in REGISTERS if r.counter]
    incs = {r.name: tb.rng.randrange(1, 1 << r.inc_bits) for r in counters}
    await FallingEdge(dut.clk)
    for r in counters:
        getattr(dut, f"{r.name.lower()}_inc").value = incs[r.name]
    for _ in range(37):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    for r in counters:
        getattr(dut, f"{r.name.lower()}_inc").value = 0
    for r in counters:
        assert await tb.reg(r.name) == 37 * incs[r.name], r.name
    assert await tb.read(REGS["CYCLES"].offset + 4) == 0
    await tb.drive("counters_clear", 1)
    for r in counters:
        assert await tb.reg(r.name) == 0, r.name
    # counting while the LO/HI pair is read: LO grows, HI stays consistent (0 here)
    await FallingEdge(dut.clk)
    dut.cycles_inc.value = 1
    lo1 = await tb.reg("CYCLES")
    lo2 = await tb.reg("CYCLES")
    assert 0 < lo1 < lo2
    assert await tb.read(REGS["CYCLES"].offset + 4) == 0
    dut.cycles_inc.value = 0


@cocotb.test()
async def test_unmapped_offsets_answer(dut):
    """Unmapped offsets read 0 and ignore writes with OKAY (no hang), and set
    ERR_FLAGS.BAD_REG; mapped registers are untouched."""
    tb = TB(dut)
    await tb.start()
    await tb.write(REGS["PROG_ADDR_LO"].offset, 0x1234_5640)
    for addr in UNMAPPED:
        assert await tb.read(addr) == 0, f"{addr:#x}"
        assert decode("ERR_FLAGS", await tb.reg("ERR_FLAGS"))["BAD_REG"] == 1
        await tb.write(REGS["ERR_FLAGS"].offset, encode("ERR_FLAGS", BAD_REG=1))
        assert await tb.reg("ERR_FLAGS") == 0
        await tb.write(addr, 0xFFFF_FFFF)
        assert decode("ERR_FLAGS", await tb.reg("ERR_FLAGS"))["BAD_REG"] == 1
        await tb.write(REGS["ERR_FLAGS"].offset, 0xFFFF_FFFF)
    assert await tb.reg("PROG_ADDR_LO") == 0x1234_5640
    for r in RW:
        if r.name != "PROG_ADDR_LO":
            assert await tb.reg(r.name) == r.reset, r.name


@cocotb.test()
async def test_concurrent_traffic(dut):
    """Writes and reads issued together from several coroutines (AW/W/AR interleaved by the
    pauses) all complete with the right data."""
    tb = TB(dut)
    await tb.start(pause=0.5)
    regs = ["PROG_ADDR_LO", "PROG_ADDR_HI", "WIN_BASE_LO", "WIN_BASE_HI", "WIN_SIZE_LO"]
    vals = {name: tb.rng.getrandbits(32) for name in regs}
    tasks = [cocotb.start_soon(tb.write(REGS[n].offset, v)) for n, v in vals.items()]
    reads = [cocotb.start_soon(tb.reg("ID")) for _ in range(6)]
    for t in tasks:
        await t
    want = const_words(tb.p["target"], tb.p["build_hash"])["ID"]
    for t in reads:
        assert await t == want
    got = [cocotb.start_soon(tb.reg(n)) for n in regs]
    for n, t in zip(regs, got, strict=True):
        assert await t == vals[n], n
