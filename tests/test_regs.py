"""The register map (spec/registers.py): its rules, the generated page docs/hw/registers.md,
`tellme hw regs`, and two cycle-exact behaviours of the generated RegisterFile (hw/regs.py) in
the Amaranth simulator: a W1C set wins over a clear in the same cycle, and a 64-bit counter
carries into HI, which a LO read latches. The AXI-Lite behaviour under random pauses is
tests/rtl/test_regs.py."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from tellme.spec import registers as R
from tellme.spec.targets import TARGET_NAMES

DOC = Path(__file__).resolve().parent.parent / "docs/hw/registers.md"


def test_registers_doc_is_current():
    """Regenerate with `tellme hw regs --markdown > docs/hw/registers.md`."""
    assert DOC.read_text(encoding="utf-8") == R.markdown()


def test_cli_prints_the_doc_and_json():
    from tellme.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["hw", "regs", "--markdown"]) == 0
    assert out.getvalue() == R.markdown()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["hw", "regs", "--json", "--target", "sim", "--build-hash", "0x10"]) == 0
    j = json.loads(out.getvalue())
    regs = {r["name"]: r for r in j["registers"]}
    assert regs["CTRL"]["offset"] == R.REGS["CTRL"].offset
    assert regs["BUILD_HASH"]["value"] == 0x10
    assert regs["CAP_TLMM"]["value"] == R.encode("CAP_TLMM", T=4, Q=4, KB_MAX=8, NBT_MAX=8)


def test_map_rules_and_field_codec():
    offs = [r.offset + 4 * w for r in R.REGISTERS for w in range(r.words)]
    assert len(offs) == len(set(offs)) and max(offs) < 1 << R.ADDR_WIDTH
    for t in TARGET_NAMES:
        words = R.const_words(t, build_hash=0xFFFF_FFFF)
        assert words["ID"] == R.ID_MAGIC and words["BUILD_HASH"] == 0xFFFF_FFFF
        assert R.decode("CAP_TLMM", words["CAP_TLMM"])["T"] == 28 if t != "sim" else 4
    w = R.encode("STATUS", BUSY=1, RECORD=0xBEEF)
    assert w == 1 | 0xBEEF << 16 and R.decode("STATUS", w)["RECORD"] == 0xBEEF
    with pytest.raises(ValueError, match="does not fit 16 bits"):
        R.encode("STATUS", RECORD=1 << 16)
    with pytest.raises(KeyError, match="no field"):
        R.encode("STATUS", NOPE=1)
    assert R.REGS["TIMEOUT"].reset == 1 << 24


class _Bus:
    """Cycle-exact AXI4-Lite driver for the Amaranth simulator (ready is 1 when idle)."""

    def __init__(self, ctx, dut):
        self.ctx, self.d = ctx, dut

    async def write(self, addr, data, during_commit=None):
        c, d = self.ctx, self.d
        c.set(d.s_axil_awaddr, addr)
        c.set(d.s_axil_wdata, data)
        c.set(d.s_axil_wstrb, 0xF)
        c.set(d.s_axil_awvalid, 1)
        c.set(d.s_axil_wvalid, 1)
        c.set(d.s_axil_bready, 1)
        await c.tick()                          # AW and W accepted
        c.set(d.s_axil_awvalid, 0)
        c.set(d.s_axil_wvalid, 0)
        for name, v in (during_commit or {}).items():
            c.set(getattr(d, name), v)          # same cycle as the register update
        await c.tick()                          # the write commits, B rises
        for name in during_commit or {}:
            c.set(getattr(d, name), 0)
        assert c.get(d.s_axil_bvalid)
        await c.tick()

    async def read(self, addr):
        c, d = self.ctx, self.d
        c.set(d.s_axil_araddr, addr)
        c.set(d.s_axil_arvalid, 1)
        c.set(d.s_axil_rready, 1)
        await c.tick()
        c.set(d.s_axil_arvalid, 0)
        assert c.get(d.s_axil_rvalid)
        v = c.get(d.s_axil_rdata)
        await c.tick()
        return v


def _simulate(bench):
    from amaranth.sim import Simulator

    from tellme.hw.regs import RegisterFile

    dut = RegisterFile(R.const_values("sim"))
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def tb(ctx):
        await bench(ctx, dut, _Bus(ctx, dut))

    sim.add_testbench(tb)
    sim.run()


def test_w1c_set_wins_over_clear_in_the_same_cycle():
    flags = R.REGS["ERR_FLAGS"]

    async def bench(ctx, dut, bus):
        ctx.set(dut.err_flags_timeout_set, 1)
        await ctx.tick()
        ctx.set(dut.err_flags_timeout_set, 0)
        await bus.write(flags.offset, 0xFFFF_FFFF, {"err_flags_timeout_set": 1})
        assert ctx.get(dut.err_flags_timeout) == 1
        await bus.write(flags.offset, 0xFFFF_FFFF)
        assert ctx.get(dut.err_flags_timeout) == 0
        assert await bus.read(flags.offset) == 0

    _simulate(bench)


def test_counter64_carry_and_hi_latch():
    lo = R.REGS["CYCLES"].offset

    async def bench(ctx, dut, bus):
        cnt = dut.counters["CYCLES"]
        ctx.set(cnt, (1 << 32) - 1)
        await ctx.tick()
        assert (await bus.read(lo), await bus.read(lo + 4)) == (0xFFFF_FFFF, 0)
        ctx.set(dut.cycles_inc, 1)
        await ctx.tick()
        ctx.set(dut.cycles_inc, 0)
        assert (await bus.read(lo), await bus.read(lo + 4)) == (0, 1)
        assert await bus.read(lo) == 0                 # latches HI = 1
        ctx.set(cnt, 5 << 32)
        await ctx.tick()
        assert await bus.read(lo + 4) == 1             # still the latched HI
        assert (await bus.read(lo), await bus.read(lo + 4)) == (0, 5)
        ctx.set(dut.counters_clear, 1)
        await ctx.tick()
        ctx.set(dut.counters_clear, 0)
        assert (await bus.read(lo), await bus.read(lo + 4)) == (0, 0)

    _simulate(bench)


def test_register_file_checks_its_constants():
    from tellme.hw.regs import build_hash, check_consts

    consts = R.const_values("kv260")
    with pytest.raises(ValueError, match="does not fit 8 bits"):
        check_consts({**consts, ("CAP_TLMM", "T"): 256})
    consts.pop(("ID", "MAGIC"))
    with pytest.raises(ValueError, match="constant fields missing or unknown"):
        check_consts(consts)
    assert build_hash("module x; endmodule\n") == build_hash("module x; endmodule\n")


def test_stamp_names_the_design():
    """BUILD_HASH = hash of the Verilog generated with hash 0; the stamped design differs."""
    from tellme.hw.regs import RegisterFile, build_hash, stamp
    from tellme.hw.toolchain import elaborate_verilog

    def make(h):
        return RegisterFile(R.const_values("sim", build_hash=h))

    text, h = stamp(make, "regs")
    assert h == build_hash(elaborate_verilog(make(0), "regs")) and h != 0
    assert text != elaborate_verilog(make(0), "regs")
