"""hw/dsp.py: a DSP48E2 cascade in simulation (Verilator, with the behavioural model
hw/dsp48e2_sim.v) and in yosys (the slices counted as DSPs, no adder left in LUTs)."""

from __future__ import annotations

import pytest

from tellme.hw.dsp import DotChain, chain_latency


def _run(n: int, a_bits: int = 14, b_bits: int = 8):
    from tellme.sim.runner import run_cocotb

    params = dict(n=n, a_bits=a_bits, b_bits=b_bits, latency=1 + chain_latency(n))
    run_cocotb(lambda: DotChain(n, a_bits, b_bits), name="dsp_chain", params=params,
               test_module="tests.rtl.tb_dsp_chain", extra_env={"SEED": str(n)})


@pytest.mark.rtl
@pytest.mark.parametrize("n", [1, 8])
def test_dot_chain(n):
    _run(n)


@pytest.mark.rtl
def test_dot_chain_wide_operands():
    _run(4, a_bits=27, b_bits=18)


def test_chain_latency():
    assert chain_latency(1) == 3 and chain_latency(8) == 10


def test_operand_width_checked():
    from amaranth.hdl import Module, Signal

    with pytest.raises(ValueError, match="exceed the multiplier"):
        from tellme.hw.dsp import dot_chain

        dot_chain(Module(), [(Signal(28), Signal(8))], "x")


def test_chain_synthesises_to_slices(tmp_path):
    """yosys keeps the instantiated slices and adds no LUT adder: the point of the chain."""
    import subprocess

    from tellme.hw import report
    from tellme.hw.report import elaborate_rtlil
    from tellme.hw.toolchain import yosys_command

    (tmp_path / "c.il").write_text(elaborate_rtlil(DotChain(8), "c"))
    subprocess.run(yosys_command() + ["-q", "-p", "read_rtlil c.il; synth_xilinx -family xcup "
                                      "-top c -noiopad -noclkbuf; tee -q -o s.json stat -json"],
                   cwd=tmp_path, check=True)
    cells = report.parse_stat_json(tmp_path / "s.json", "c")
    assert cells.get("DSP48E2") == 8, cells
    assert not any(k.startswith(("LUT", "CARRY")) for k in cells), cells
