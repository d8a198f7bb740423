"""The accelerator top (hw/top.py): its ports against the shell contract (spec/shell.py, with
hw/vivado.py's port reader), and the real host driver on the Verilator build through the RTL
simulation device (tests/rtl/tb_top.py): identity, refusal of a kv260 file, a corrupted
program, an AXI error on the program fetch, and the "no execution unit" error of a valid
program, each followed by a working next run; and the bundled demo model's prefill and decode
on the ``sim-demo`` build (tests/rtl/tb_top_demo.py), bit-exact against the golden model."""

from __future__ import annotations

import pytest

from tellme.spec import shell


@pytest.fixture(scope="module")
def verilog():
    from tellme.hw.toolchain import elaborate_verilog
    from tellme.hw.top import make_top

    return elaborate_verilog(make_top("kv260"), shell.TOP_MODULE)


def test_top_ports_are_the_shell_contract(verilog):
    from tellme.hw.vivado import verilog_ports

    names = shell.check_top_ports(verilog_ports(verilog, shell.TOP_MODULE))
    assert names["m_axi_kv_araddr"] == "m_axi_kv_araddr" and "irq" in names


def test_vivado_flow_entry_stamps_and_writes_the_sources(tmp_path, verilog):
    """hw/vivado.py's path up to Vivado: ``stamp(load_top(target))`` (BUILD_HASH = hash of the
    Verilog with hash 0: the fixture's), then ``write_sources`` (port check, wrapper, Tcl)."""
    from tellme.hw import vivado
    from tellme.hw.regs import build_hash, stamp

    text, h = stamp(vivado.load_top("kv260"), shell.TOP_MODULE)
    assert h == build_hash(verilog) and h
    script = vivado.write_sources("kv260", text, h, tmp_path)
    assert script.exists() and (tmp_path / f"{shell.WRAPPER}.v").exists()


def test_no_execution_unit_answers_every_class_with_unsupported_op():
    """Amaranth sim of the responder: ready at once, error code one cycle after each command,
    never done."""
    from amaranth.sim import Simulator

    from tellme.hw.sequencer import CLASSES
    from tellme.hw.top import NoExecUnit
    from tellme.spec.program import ERROR_CODES

    dut = NoExecUnit()
    seen = {}

    async def bench(ctx):
        for cls in CLASSES:
            i = getattr(dut, f"i_{cls}")
            ctx.set(i.valid, 1)
            assert ctx.get(i.ready) == 1
            await ctx.tick()
            ctx.set(i.valid, 0)
            seen[cls] = (ctx.get(getattr(dut, f"{cls}_error")),
                         ctx.get(getattr(dut, f"{cls}_done")))
            await ctx.tick()
            assert ctx.get(getattr(dut, f"{cls}_error")) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == dict.fromkeys(CLASSES, (ERROR_CODES["UNSUPPORTED_OP"], 0))


@pytest.mark.rtl
def test_top_rtl_with_the_host_driver():
    from tellme.sim.rtl_device import run_top

    run_top("sim", "tests.rtl.tb_top")


@pytest.mark.rtl
def test_top_rtl_runs_the_demo_model():
    """The bundled demo model's prefill and decode through the ``sim-demo`` top (the kv260
    tiling, sized for the demo) with the host driver, bit-exact against the golden model
    (tests/rtl/tb_top_demo.py)."""
    from tellme.sim.rtl_device import run_top

    run_top("sim-demo", "tests.rtl.tb_top_demo")


@pytest.mark.rtl
@pytest.mark.slow
def test_top_random_families():
    """Random 2B4T-style and 1bitLLM-style models through the ``sim`` top, prefill in chunks
    and decode, bit-exact against the golden model (tests/rtl/tb_top_families.py)."""
    from tellme.sim.rtl_device import run_top

    run_top("sim", "tests.rtl.tb_top_families")
