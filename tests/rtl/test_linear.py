"""LinearUnit (hw/linear.py): cocotb + Verilator, streamer -> ping-pong buffer -> TLMM engine."""

from __future__ import annotations

import pytest

from tellme.hw.presets import preset


def _run(name: str, data_width: int, seed: int = 1, testcase=None, max_burst: int = 8):
    from tellme.hw.linear import LinearUnit
    from tellme.sim.runner import run_cocotb

    p = preset(name)
    params = dict(preset=p.name, table=p.table, t=p.t, q=p.q, v=p.v, kb_max=p.kb_max,
                  nbt_max=p.nbt_max, tok_max=p.tok_max, half_depth=p.half_depth,
                  data_width=data_width, max_burst=max_burst, max_outstanding=4, addr_width=32)
    run_cocotb(lambda: LinearUnit(p, data_width=data_width, max_burst=max_burst,
                                  max_outstanding=4, addr_width=32),
               name=f"linear_{name}", params=params, test_module="tests.rtl.tb_linear",
               testcase=testcase, extra_env={"SEED": str(seed)})


@pytest.mark.rtl
def test_linear_sim():
    _run("sim", data_width=128)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_linear_sim_seeds(seed):
    _run("sim", data_width=128, seed=seed, testcase="test_linear_axiram")


@pytest.mark.rtl
@pytest.mark.slow
def test_bench_kv260_reduced():
    """kv260 LinearUnit (T=28, Q=16, 512-bit AXI, DDR model) on a 1/4-size layer: overlap
    efficiency >= 90% for decode and prefill; the engine's expected_cycles within 5% of the
    RTL when compute-bound. (~7 min cold build; the full-size run is `tellme hw bench`.)"""
    import io

    from tellme.sim.bench import run_bench

    rep = run_bench(target="kv260", tokens=(1, 16), reduce=4, out=io.StringIO())
    for run in rep["runs"]:
        assert run["efficiency"] >= 0.90, run
        if run["compute"] >= run["bandwidth"]:
            assert abs(run["measured"] - run["compute"]) <= 0.05 * run["compute"], run
    assert rep["runs"][0]["bandwidth"] > rep["runs"][0]["compute"]     # decode: DDR-bound
    assert rep["runs"][1]["compute"] > rep["runs"][1]["bandwidth"]     # prefill: compute-bound
