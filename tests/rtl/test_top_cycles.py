"""The whole-step cycle model (sim/cycles_top.py) against the RTL top (hw/top.py, the ``sim``
build in Verilator): every record kind and whole calls within 5 % of the CYCLES register
(tests/rtl/tb_top_cycles.py); and the model's own checks that need no simulator."""

from __future__ import annotations

import pytest


@pytest.mark.rtl
def test_cycle_model_against_the_rtl_top():
    from tellme.sim.rtl_device import run_top

    # the same build as tests/rtl/test_top.py (run_top: one Verilator build per design)
    results = run_top("sim", "tests.rtl.tb_top_cycles")
    table = results.parent / "cycles_table.txt"
    print(f"\n{table.read_text()}")


def test_cycle_model_extrapolates_to_kv260():
    """A decode step and a prefill of a published model on the kv260 target: finite,
    ordered (a longer context costs more, a longer prompt costs more), the linears
    weight-stream bound in decode."""
    from tellme.sim.cycles_top import board_memory, call_cycles
    from tellme.spec.models import MODELS

    cfg = MODELS["bitnet_b1_58-large"]
    d128 = call_cycles(cfg, "kv260", "decode", 127, 1)
    d1k = call_cycles(cfg, "kv260", "decode", 1023, 1)
    p64 = call_cycles(cfg, "kv260", "prefill", 0, 64)
    assert 0 < d128["total"] < d1k["total"] < p64["total"]
    assert d128["by_op"]["LINEAR"] > 0.5 * d128["total"]
    assert board_memory("kv260").read_latency > 2


def test_sim_memory_end_only_program():
    """The sequencer's part: an END-only program takes 29 cycles on the sim top (measured)."""
    from tellme.sim.cycles_top import SIM_MEMORY, base_cycles

    assert base_cycles(1, SIM_MEMORY) == 29
    assert base_cycles(3, SIM_MEMORY) == 29 + 8
