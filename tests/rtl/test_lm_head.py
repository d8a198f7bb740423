"""The LM-head unit (hw/lm_head.py ``LmHead``) in cocotb + Verilator (tests/rtl/tb_lm_head.py).

Default tier: 16 lanes, rows up to d = 48 (every d from 8 in steps of 8), FP24 amax: bit-exact
vs golden ``lm_head_int8`` under random idle / backpressure on every stream, the cycle model
exact without stalls. ``slow``: the board build's 64 lanes (max_d 256) and the FP16 build.
"""

import gc
import warnings

import pytest

from tellme.hw.lm_head import LmHead, make_lm_head
from tellme.sim.runner import run_cocotb
from tellme.spec.numerics import FP16, FP24, STREAM_FORMATS

SIM = dict(lanes=16, max_d=48, fmt="fp24")


def _run(params, seed=1):
    hw = dict(params, fmt=STREAM_FORMATS[params["fmt"]])
    run_cocotb(lambda: LmHead(**hw), name="lm_head", params=params,
               test_module="tests.rtl.tb_lm_head", extra_env={"SEED": str(seed)})


@pytest.mark.rtl
def test_lm_head():
    _run(SIM)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("params", [dict(lanes=64, max_d=256, fmt="fp24"),
                                    dict(lanes=16, max_d=48, fmt="fp16"),
                                    dict(lanes=4, max_d=16, fmt="fp24")],
                         ids=["lanes64", "fp16", "lanes4"])
def test_lm_head_slow(params):
    _run(params, seed=3)


def test_rejects():
    with pytest.raises(ValueError, match="lanes must be a power of two"):
        LmHead(lanes=24)
    with pytest.raises(ValueError, match="lanes must be a power of two"):
        LmHead(lanes=128)
    with pytest.raises(ValueError, match="max_d must be a multiple of 8"):
        LmHead(max_d=20)
    with pytest.raises(TypeError, match="StreamFormat"):
        LmHead(fmt="fp24")


def test_registry_block():
    """``lm_head`` is a registry block (``tellme hw report --block lm_head``): the top's unit
    (16 lanes, one 128-bit port), rows up to 4096 columns, in the LM-head line of the budget;
    ``lm_head_ddr`` the 64-lane unit of the DDR rate, not counted."""
    from tellme.hw import budget
    from tellme.hw.blocks import make_block, registry

    assert "lm_head" in registry()
    assert budget.line_of("lm_head", budget.budget("kv260")).key == "lm_head"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # built, not elaborated
        u = make_block("lm_head", "kv260")
        assert isinstance(u, LmHead) and (u.lanes, u.max_d, u.fmt) == (16, 4096, FP24)
        assert make_block("lm_head_ddr", "kv260").lanes == 64
        assert budget.line_of("lm_head_ddr", budget.budget("kv260")) is None
        assert make_lm_head("zcu104", FP16).fmt == FP16
        del u
        gc.collect()
