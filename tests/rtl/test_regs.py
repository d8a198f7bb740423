"""RegisterFile (hw/regs.py): cocotb + Verilator through an AXI4-Lite master with random
pauses on every channel (tests/rtl/tb_regs.py); one build with the kv260 capabilities and a
non-zero build hash."""

from __future__ import annotations

import pytest


@pytest.mark.rtl
def test_regs_kv260():
    from tellme.hw.regs import RegisterFile
    from tellme.sim.runner import run_cocotb
    from tellme.spec.registers import const_values

    params = dict(target="kv260", build_hash=0x5EED_1234)
    run_cocotb(lambda: RegisterFile(const_values("kv260", build_hash=0x5EED_1234)),
               name="regs", params=params, test_module="tests.rtl.tb_regs",
               extra_env={"SEED": "7"})
