"""Launch the integer attention-engine testbench (tests/rtl/tb_attn_int.py) on Verilator.

Default tier: the ``sim``-sized build (head_dim 16, 8 lanes, beat 4, score tile 8, 12-bit
context) at FP24 (the contract's stream format): decode MHA/GQA across tile boundaries with
exact cycles, random idle/backpressure, prefill, edge values, run-time head_dim, the q
quantiser's windows; the same build with two outputs per ``o`` beat (``o_beat=2``: a lane's 8
cycles of outputs wait for the 29 cycles of 1/L). ``slow``: more seeds, the FP16 build, an
int8-q build (``q_bits=8``, the measured alternative), a beat-16 build with 64-key tiles (the
quantiser's K-segment margin is not zero, V segments have more blocks than weight banks and
stream longer than 3 blocks' preparation, |A| reaches 2**24, and head_dim 64 > the 29 cycles of
1/L, so the finishing unit emits lanes back to back; also with ``o_beat=2``, 32 cycles a lane),
a wider build (head_dim 32, 4 lanes, beat 8, tile 64) past 1024 keys, and a head_dim-128 build
(the kv260 preset's head_dim: the exact score S is 28 bits, wider than a DSP48E2's A port, so
S * mk takes S in two DSP pieces), and the boards' beat of 128 (``BOARD_BEAT``).
"""

import pytest

from tellme.hw.attention.int_engine import IntAttentionEngine
from tellme.sim.runner import run_cocotb
from tellme.spec.numerics import STREAM_FORMATS as FORMATS

SMALL = dict(head_dim=16, lanes=8, beat=4, depth=8, ctx_bits=12, q_beat=2)
MID = dict(head_dim=64, lanes=4, beat=16, depth=64, ctx_bits=9, q_beat=4)
WIDE = dict(head_dim=32, lanes=4, beat=8, depth=64, ctx_bits=13)
HD128 = dict(head_dim=128, lanes=4, beat=8, depth=16, ctx_bits=8, q_beat=8)
# the boards' beat: 16 DSP48E2 cascades of 8 slices a lane and a 4-level tree over them,
# K rows of one beat, 128-key V blocks, two outputs a cycle
BOARD_BEAT = dict(head_dim=128, lanes=4, beat=128, depth=256, ctx_bits=10, q_beat=8, o_beat=2)


def _run(params, fmt, testcase=None, seed=1, extra=None):
    env = {"SEED": str(seed), **(extra or {})}
    run_cocotb(lambda: IntAttentionEngine(**params, fmt=FORMATS[fmt]), name="attn_int",
               params=dict(params, fmt=fmt), test_module="tests.rtl.tb_attn_int",
               testcase=testcase, extra_env=env)


@pytest.mark.rtl
def test_attn_int_small():
    _run(SMALL, "fp24")


@pytest.mark.rtl
def test_attn_int_small_o2():
    _run(dict(SMALL, o_beat=2), "fp24")


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "seed"), [("fp24", 2), ("fp24", 3), ("fp16", 1)])
def test_attn_int_small_seeds(fmt, seed):
    _run(SMALL, fmt, seed=seed)


@pytest.mark.rtl
@pytest.mark.slow
def test_attn_int_q8():
    _run(dict(SMALL, q_bits=8), "fp24")


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("o_beat", [1, 2])
def test_attn_int_beat16(o_beat):
    _run(dict(MID, o_beat=o_beat), "fp24")


@pytest.mark.rtl
@pytest.mark.slow
def test_attn_int_hd128():
    _run(HD128, "fp24")


@pytest.mark.rtl
@pytest.mark.slow
def test_attn_int_board_beat():
    _run(BOARD_BEAT, "fp24")


@pytest.mark.rtl
@pytest.mark.slow
def test_attn_int_long_context():
    _run(WIDE, "fp24", testcase="test_long_context", extra={"LONG_N": "1100"})


def test_cycle_model_mirrors_rtl_depths():
    """The cycle model's pipeline constants are the RTL's (the normaliser's depth follows the
    shared rounders' and multiplier's latencies of hw/elementwise/stream_fp.py)."""
    from tellme.hw.attention import int_engine as ie
    from tellme.sim import cycles_attn_int as cm

    assert cm.TAIL == ie.N_LAT
    assert (cm.Q_READY, cm.Q_CHAIN) == (ie.QLAT + 1, ie.Q_CHAIN)
    assert (cm.W_READY, cm.W_CHAIN) == (ie.WLAT + 1, ie.W_CHAIN)
    assert (cm.K_TAIL, cm.G_LAT, cm.CHAIN) == (ie.K_TAIL, ie.G_LAT, ie.CHAIN)
    for beat in (2, 4, 8, 16, 32, 64, 128):
        assert cm.mac_latency(beat) == ie.mac_latency(beat)
        assert cm.drain(beat) == ie.mac_latency(beat) + ie.K_TAIL + 2
        for bpr in (1, 2, 3):
            assert cm.k_margin(beat, bpr) == -(-ie.k_gap(beat) // bpr)


def test_int_engine_rejects_bad_params():
    with pytest.raises(ValueError, match="multiple of beat"):
        IntAttentionEngine(depth=2, beat=4)
    with pytest.raises(ValueError, match="q_beat 4 must divide"):
        IntAttentionEngine(head_dim=18, beat=4)
    with pytest.raises(ValueError, match="keys"):
        IntAttentionEngine(ctx_bits=15)
    with pytest.raises(ValueError, match="q_bits"):
        IntAttentionEngine(q_bits=20)
    with pytest.raises(ValueError, match="o_beat 4 must be 1 or 2"):
        IntAttentionEngine(o_beat=4)
    with pytest.raises(ValueError, match="o_beat 2 must be 1 or 2 and divide head_dim 15"):
        IntAttentionEngine(head_dim=15, q_beat=1, o_beat=2)
