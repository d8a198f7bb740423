"""Launch the cocotb TLMM testbench (tests/rtl/tb_tlmm.py) on Verilator.

Default tier: the ``sim`` preset with TeLLMe's full table (one Verilator build). ``slow``: the
half table, more seeds, and a mid-size (T=12, Q=8) configuration.
"""

import dataclasses

import pytest

from tellme.hw.presets import HwPreset, make_tlmm_core, preset
from tellme.sim.runner import run_cocotb

# mid-size configuration for the slow tier (not a board preset)
MID = HwPreset(name="mid", t=12, q=8, v=4, kb_max=6, nbt_max=8, tok_max=7, half_depth=64,
               ram_style="ultra")


def _run(p: HwPreset, testcase=None, seed=1):
    params = dict(dataclasses.asdict(p), preset=p.name)
    del params["name"]
    run_cocotb(lambda: make_tlmm_core(p), name=f"tlmm_core_{p.name}_{p.table}", params=params,
               test_module="tests.rtl.tb_tlmm", testcase=testcase,
               extra_env={"SEED": str(seed)})


@pytest.mark.rtl
def test_tlmm_core_sim_full():
    _run(preset("sim"))


@pytest.mark.rtl
@pytest.mark.slow
def test_tlmm_core_sim_half():
    _run(preset("sim").with_table("half"))


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_tlmm_core_sim_seeds(seed):
    _run(preset("sim"), testcase="test_random_stalls", seed=seed)


@pytest.mark.rtl
@pytest.mark.slow
def test_tlmm_core_mid():
    _run(MID)


@pytest.mark.rtl
@pytest.mark.slow
def test_tlmm_core_kv260():
    """The board preset itself (T=28, Q=16, 448 table copies): a cold build takes minutes."""
    _run(preset("kv260"), testcase=["test_directed", "test_cycles"])
