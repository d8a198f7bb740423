"""Launch the attention-engine testbench (tests/rtl/tb_attn_engine.py) on Verilator.

Default tier: one build (head_dim 16, 8 lanes, 4 FP16 per beat, score tile 8, 12-bit
context), decode MHA/GQA across tile boundaries, prefill MHA/GQA, stalls, edge values.
``slow``: more seeds, and a second build (head_dim 32, 4 lanes, beat 8, tile 64) with contexts
past 1024 keys.
"""

import pytest

from tellme.hw.attention.engine import AttentionEngine
from tellme.sim.runner import run_cocotb

SMALL = dict(head_dim=16, lanes=8, beat=4, depth=8, ctx_bits=12)
WIDE = dict(head_dim=32, lanes=4, beat=8, depth=64, ctx_bits=13)


def _run(params, testcase=None, seed=1, extra=None):
    env = {"SEED": str(seed), **(extra or {})}
    run_cocotb(lambda: AttentionEngine(**params), name="attn_engine", params=params,
               test_module="tests.rtl.tb_attn_engine", testcase=testcase, extra_env=env)


@pytest.mark.rtl
def test_attn_engine_small():
    _run(SMALL)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_attn_engine_small_seeds(seed):
    _run(SMALL, seed=seed)


@pytest.mark.rtl
@pytest.mark.slow
def test_attn_engine_long_context():
    _run(WIDE, testcase="test_long_context", extra={"LONG_N": "1100,4100"})
