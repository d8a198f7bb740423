"""WeightStreamer (hw/weight_stream.py): cocotb + Verilator against cocotbext-axi AxiRamRead."""

from __future__ import annotations

import pytest

from tellme.hw.weight_stream import WeightStreamer, stream_plan


def _run(params: dict, seeds: str):
    from tellme.sim.runner import run_cocotb

    hw = {k: v for k, v in params.items() if k != "q"}
    run_cocotb(lambda: WeightStreamer(**hw), name="ws", params=params,
               test_module="tests.rtl.tb_weight_stream", extra_env={"SEEDS": seeds})


def _params(t, lanes, data_width, q, max_burst=16, max_outstanding=4):
    return dict(t=t, lanes=lanes, data_width=data_width, q=q,
                max_burst=max_burst, max_outstanding=max_outstanding, addr_width=40,
                count_width=24)


# Default tier: two Verilator builds. sim tiling (T=4: 20-bit vectors) on 256-bit beats, and
# TeLLMe's T=28 (140-bit vectors, wider than a 128-bit beat) two per word on 128-bit beats.
@pytest.mark.rtl
@pytest.mark.parametrize("params", [
    _params(4, 1, 256, q=4, max_burst=8),
    _params(28, 2, 128, q=16, max_burst=16, max_outstanding=2),
], ids=["t4-l1-d256", "t28-l2-d128"])
def test_weight_stream(params):
    _run(params, seeds="1,2")


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("params", [
    _params(4, 4, 128, q=4, max_burst=256, max_outstanding=1),
    _params(28, 1, 256, q=16, max_burst=64),
    _params(28, 4, 512, q=16, max_burst=16, max_outstanding=8),
    _params(7, 2, 128, q=8, max_burst=3),
], ids=["t4-l4-d128-b256", "t28-l1-d256", "t28-l4-d512", "t7-l2-d128-b3"])
def test_weight_stream_sweep(params):
    _run(params, seeds="3,4,5")


def test_parameters_rejected():
    with pytest.raises(ValueError, match="data_width must be 128, 256 or 512"):
        WeightStreamer(t=4, data_width=64)
    with pytest.raises(ValueError, match="max_burst must be at most 256"):
        WeightStreamer(t=4, max_burst=257)
    with pytest.raises(ValueError, match="lanes must be a power of two"):
        WeightStreamer(t=4, lanes=3)
    with pytest.raises(TypeError, match="t must be a positive integer"):
        WeightStreamer(t=0)
    with pytest.raises(ValueError, match="fifo_depth must be an integer >= max_burst"):
        WeightStreamer(t=4, max_burst=16, fifo_depth=8)


def test_stream_plan_pages():
    # 128-bit beats from 0xFF0: one beat up to the page end, then bursts capped at 16 beats
    plan = stream_plan(addr=0xFF0, first=0, count=200, t=4, lanes=1,
                       data_width=128, max_burst=16)
    assert plan[0] == (0xFF0, 1)
    assert plan[1] == (0x1000, 16)
    assert plan[2] == (0x1100, 15)
    for a, b in plan:
        assert a // 4096 == (a + 16 * b - 1) // 4096
