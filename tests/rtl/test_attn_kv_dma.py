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


class ReaderEngine:
    """Test top: KVReader.o -> AttentionEngine.i_kv (ports e_cmd, q, o of the engine; rd_cmd and
    m_axi_ar*/r* of the reader)."""

    def __new__(cls, engine: dict, reader: dict):
        from amaranth.hdl import Module
        from amaranth.lib import wiring
        from amaranth.lib.wiring import In, Out

        from tellme.hw.attention.engine import AttentionEngine

        class _Top(wiring.Component):
            def __init__(self):
                self.eng = AttentionEngine(**engine)
                self.rd = KVReader(**reader)
                sig = {"e_cmd": In(self.eng.i_cmd.signature.flip()),
                       "q": In(self.eng.i_q.signature.flip()),
                       "o": Out(self.eng.o.signature),
                       "rd_cmd": In(self.rd.i_cmd.signature.flip())}
                for name, mem in self.rd.signature.members.items():
                    if name.startswith("m_axi_"):
                        sig[name] = mem
                super().__init__(sig)

            def elaborate(self, platform):
                m = Module()
                m.submodules.eng, m.submodules.rd = self.eng, self.rd
                wiring.connect(m, wiring.flipped(self.e_cmd), self.eng.i_cmd)
                wiring.connect(m, wiring.flipped(self.q), self.eng.i_q)
                wiring.connect(m, self.eng.o, wiring.flipped(self.o))
                wiring.connect(m, wiring.flipped(self.rd_cmd), self.rd.i_cmd)
                wiring.connect(m, self.rd.o, self.eng.i_kv)
                for name, mem in self.rd.signature.members.items():
                    if name.startswith("m_axi_"):
                        if mem.flow == Out:
                            m.d.comb += getattr(self, name).eq(getattr(self.rd, name))
                        else:
                            m.d.comb += getattr(self.rd, name).eq(getattr(self, name))
                return m

        return _Top()


@pytest.mark.rtl
@pytest.mark.slow
def test_reader_engine_e2e():
    eng = dict(head_dim=16, lanes=8, beat=4, depth=8, ctx_bits=12)
    rd = dict(SMALL, ctx_bits=12)
    params = dict(engine=eng, reader=rd)
    run_cocotb(lambda: ReaderEngine(eng, rd), name="kv_e2e", params=params,
               test_module="tests.rtl.tb_attn_kv_e2e", extra_env={"SEED": "1"})
