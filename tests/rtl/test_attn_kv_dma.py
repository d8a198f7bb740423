"""Launch the KV-cache reader testbench (tests/rtl/tb_attn_kv_dma.py) on Verilator.

Default tier: one build of KVCacheDMA (reader + writer on one AXI4 port) matching the
engine's ``sim`` preset (beat 4, tile 8, head_dim <= 16)
on a 128-bit AXI port. ``slow``: a 256-bit build with longer bursts.
"""

import pytest

from tellme.hw.attention.kv_dma import KVCacheDMA, KVReader, KVWriter, reader_command, \
    writer_commands
from tellme.sim.kv_layout import KVLayout
from tellme.sim.runner import run_cocotb

SMALL = dict(beat=4, depth=8, max_head_dim=16, ctx_bits=12, data_width=128, addr_width=40,
             max_burst=16, max_outstanding=4)
WIDE = dict(beat=8, depth=16, max_head_dim=32, ctx_bits=13, data_width=256, addr_width=40,
            max_burst=32, max_outstanding=2)


def _run(params, seed=1):
    run_cocotb(lambda: KVCacheDMA(**params), name="kv_dma", params=params,
               test_module="tests.rtl.tb_attn_kv_dma", extra_env={"SEED": str(seed)})


@pytest.mark.rtl
def test_kv_reader_small():
    _run(SMALL)


@pytest.mark.rtl
@pytest.mark.slow
def test_kv_reader_wide():
    _run(WIDE, seed=2)


def test_reader_rejects():
    with pytest.raises(ValueError, match="data_width must be 128 or 256"):
        KVReader(data_width=512)
    with pytest.raises(ValueError, match="not a multiple of beat"):
        KVReader(beat=4, max_head_dim=18)
    with pytest.raises(ValueError, match="reads FP16 KV only"):
        reader_command(KVLayout(1, 1, 16, 8, dtype="int8"), 0, 0, 4, 4)
    with pytest.raises(ValueError, match="not a multiple of the engine beat"):
        reader_command(KVLayout(1, 1, 12, 8), 0, 0, 4, 8)
    with pytest.raises(ValueError, match="must divide data_width"):
        KVWriter(beat=16, data_width=128)
    with pytest.raises(ValueError, match="outside the KV cache"):
        writer_commands(KVLayout(1, 1, 16, 8), 0, 7, 2, 4)
