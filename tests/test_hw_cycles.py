"""Hand-checked cases of the TLMM cycle model (the RTL test checks the model against Verilator)."""

import pytest

from tellme.sim.cycles import command_timing, expected_cycles, expected_job_cycles, steady_kb_cycles


def test_one_block_one_table():
    # accept act at 1, entries written at edges 2..28, sweep issues at 29, output at 32
    assert expected_cycles(table="full", kb=1, nbt=1, n_tokens=1) == 1 + 27 + 1 + 3
    assert expected_cycles(table="half", kb=1, nbt=1, n_tokens=1) == 1 + 14 + 1 + 3


def test_steady_state_is_max_of_sweep_and_build():
    for table, e in (("full", 27), ("half", 14)):
        for nbt in (1, 5, e, e + 1, e + 2, e + 3, 96):
            a = command_timing(table=table, kb=40, nbt=nbt, n_tokens=1).issue_done
            b = command_timing(table=table, kb=42, nbt=nbt, n_tokens=1).issue_done
            assert (b - a) / 2 == steady_kb_cycles(table=table, nbt=nbt)
        assert steady_kb_cycles(table=table, nbt=e + 2) == e + 2      # builds fully hidden
        assert steady_kb_cycles(table=table, nbt=1) == e + 1          # build-bound


def test_gemm_chains_tokens_and_jobs_chain_commands():
    one = expected_cycles(table="full", kb=19, nbt=96, n_tokens=1)
    many = expected_cycles(table="full", kb=19, nbt=96, n_tokens=8)
    assert many - one == 7 * 19 * 96                  # sweep-bound: 1 cycle per column block
    two = expected_job_cycles(table="full", kb=3, tiles=[4, 4], n_tokens=1)
    t = command_timing(table="full", kb=3, nbt=4, n_tokens=1)
    assert two == t.issue_done + 1 + t.last_output


def test_bad_arguments():
    with pytest.raises(ValueError, match="kb must be >= 1"):
        expected_cycles(table="full", kb=0, nbt=1, n_tokens=1)
    with pytest.raises(ValueError, match="unknown table kind"):
        expected_cycles(table="third", kb=1, nbt=1, n_tokens=1)
