"""AxiReadStriper (hw/axi_stripe.py): cocotb + Verilator against cocotbext-axi AxiRamRead
(one per physical port over a shared memory image), and the reference split."""

from __future__ import annotations

import pytest

from tellme.hw.axi_stripe import AxiReadStriper, chunk_beats, stripe_plan, stripe_stream

PARAMS = dict(ports=3, addr_width=40, data_width=512, port_width=128, max_outstanding=8,
              fifo_depth=32, max_burst=64)


def _run(seed: int, **hw):
    from tellme.sim.runner import run_cocotb

    params = PARAMS | hw
    run_cocotb(lambda: AxiReadStriper(**params), name="axi_stripe", params=params,
               test_module="tests.rtl.tb_axi_stripe", extra_env={"SEED": str(seed)})


@pytest.mark.rtl
def test_axi_striper():
    _run(1)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("hw", [dict(ports=2, max_outstanding=2, fifo_depth=32),
                                dict(ports=4, fifo_depth=16)], ids=["p2-o2", "p4"])
def test_axi_striper_sweep(hw):
    _run(2, **hw)


def test_chunk_beats():
    assert chunk_beats(16, 3) == [6, 5, 5]
    assert chunk_beats(16, 3, first=1) == [5, 6, 5]
    assert chunk_beats(2, 3, first=2) == [1, 0, 1]
    assert chunk_beats(1, 3) == [1, 0, 0]
    assert chunk_beats(9, 3, first=1) == [3, 3, 3]


def test_stripe_plan():
    assert stripe_plan(0x1000, 16, 3) == [(0, 0x1000, 24), (1, 0x1180, 20), (2, 0x12C0, 20)]
    assert stripe_plan(0x40, 2, 3, first=2) == [(0, 0x40, 4), (2, 0x80, 4)]
    with pytest.raises(ValueError, match="crosses 4 KiB"):
        stripe_plan(4096 - 64, 2, 3)
    with pytest.raises(ValueError, match="aligned"):
        stripe_plan(0x20, 1, 3)


def test_stripe_stream_balances_ports():
    plans = stripe_stream([(i * 1024, 16) for i in range(30)], 3)
    per_port = [sum(b for plan in plans for k, _, b in plan if k == p) for p in range(3)]
    assert per_port == [640, 640, 640]          # 30 * 16 beats * 4 / 3 each


def test_parameters_rejected():
    with pytest.raises(ValueError, match="fifo_depth"):
        AxiReadStriper(fifo_depth=8)
    with pytest.raises(ValueError, match="bad striper"):
        AxiReadStriper(data_width=512, port_width=96)
