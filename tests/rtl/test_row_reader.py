"""RowReader (hw/row_reader.py): cocotb + Verilator against cocotbext-axi AxiRamRead."""

from __future__ import annotations

import pytest

from tellme.hw.row_reader import RowReader, row_read_beats


def _run(seed: int, **hw):
    from tellme.sim.runner import run_cocotb

    params = dict(lanes=2, data_width=128, addr_width=40, count_width=16, max_burst=16,
                  max_outstanding=2) | hw
    run_cocotb(lambda: RowReader(**params), name="rr", params=params,
               test_module="tests.rtl.tb_row_reader", extra_env={"SEED": str(seed)})


@pytest.mark.rtl
def test_row_reader_l2():
    _run(1)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("hw", [dict(lanes=4, max_burst=4, max_outstanding=3),
                                dict(lanes=1, max_burst=16, max_outstanding=1)],
                         ids=["l4-b4", "l1"])
def test_row_reader_sweep(hw):
    _run(2, **hw)


def test_row_read_beats():
    assert row_read_beats(0, 0, 3, 2) == 0
    assert row_read_beats(15, 0, 4, 2) == 0
    assert row_read_beats(0, 8, 3, 2) == 3           # 48 bytes
    assert row_read_beats(15, 1, 2, 2) == 2          # bytes 15..18
    assert row_read_beats(12, 1, 2, 2) == 1


def test_parameters_rejected():
    with pytest.raises(ValueError, match="lanes must be a power of two"):
        RowReader(lanes=3)
    with pytest.raises(ValueError, match="lanes must be a power of two <= 4"):
        RowReader(lanes=8)
    with pytest.raises(ValueError, match="data_width must be 128 or 256"):
        RowReader(data_width=64)
