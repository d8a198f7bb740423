"""Launch the KV-cache reader testbench (tests/rtl/tb_attn_kv_dma.py) on Verilator.

Default tier, 128-bit AXI: KVCacheDMA (reader + writer on one AXI4 port) for the engine's
``sim`` preset (beat 4, tile 8, head_dim <= 16) at FP16, KVCacheDMA at FP24 with beat 8
(192-bit engine beats: one and a half AXI beats each), and the int8 KVReader with FP24 scales.
``slow``: the sim preset at FP24 (96-bit engine beats), 256-bit builds with longer bursts
(FP16, FP24), the int8 reader with FP16 scales, and the reader wired to the attention engine
(FP16, FP24, FP24 int8).
"""

import numpy as np
import pytest

from tellme.hw.attention.kv_dma import (
    KVCacheDMA,
    KVReader,
    KVWriter,
    reader_command,
    writer_commands,
)
from tellme.sim.runner import run_cocotb
from tellme.spec.kv_layout import FORMATS, KVLayout, decode_elems, decode_traffic, encode_elems
from tellme.spec.numerics import FP16, FP24

SMALL = dict(beat=4, depth=8, max_head_dim=16, ctx_bits=12, data_width=128, addr_width=40,
             max_burst=16, max_outstanding=4, fmt="fp16")
WIDE = dict(beat=8, depth=16, max_head_dim=32, ctx_bits=13, data_width=256, addr_width=40,
            max_burst=32, max_outstanding=2, fmt="fp16")
# 8 x 24 = 192-bit engine beats from 128-bit AXI beats
B8 = dict(beat=8, depth=8, max_head_dim=32, ctx_bits=12, data_width=128, addr_width=40,
          max_burst=16, max_outstanding=4, fmt="fp24")


def _run(params, seed=1):
    hw = dict(params, fmt=FORMATS[params["fmt"]])
    run_cocotb(lambda: KVCacheDMA(**hw), name="kv_dma", params=params,
               test_module="tests.rtl.tb_attn_kv_dma", extra_env={"SEED": str(seed)})


@pytest.mark.rtl
@pytest.mark.parametrize("fmt", ["fp16", pytest.param("fp24", marks=pytest.mark.slow)])
def test_kv_reader_small(fmt):
    _run(dict(SMALL, fmt=fmt))


@pytest.mark.rtl
def test_kv_dma_fp24_beat8():
    _run(B8, seed=3)


@pytest.mark.rtl
@pytest.mark.parametrize("fmt", ["fp24", pytest.param("fp16", marks=pytest.mark.slow)])
def test_kv_reader_int8(fmt):
    """int8 KV: codes + the row scale (stream format) in the engine's int8 beat."""
    params = dict({k: v for k, v in SMALL.items() if k != "fmt"}, fmt=fmt, int8=True)
    hw = dict(params, fmt=FORMATS[fmt])
    run_cocotb(lambda: KVReader(**hw), name="kv_int8", params=params,
               test_module="tests.rtl.tb_attn_kv_int8", extra_env={"SEED": "4"})


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["fp16", "fp24"])
def test_kv_reader_wide(fmt):
    _run(dict(WIDE, fmt=fmt), seed=2)


def test_fp24_layout():
    """FP24 rows: 3 bytes per element, little-endian, element c at byte 3c; int8 scales in the
    stream format."""
    lay = KVLayout(num_layers=2, num_kv_heads=5, head_dim=128, max_ctx=64, fmt=FP24)
    assert lay.dtype == "fp24" and lay.row_bytes == 384 and lay.row_bytes % 16 == 0
    assert lay.row_addr(0, "K", 0, 1) - lay.row_addr(0, "K", 0, 0) == 384
    x = FP24.round(np.array([1.0, -2.0 ** -24, 65535.75, 0.0]))
    u = FP24.to_bits(x)
    img = lay.encode_rows(u)
    assert len(img) == 12
    assert img[0:3] == int(u[0]).to_bytes(3, "little") and img[9:12] == b"\0\0\0"
    assert img[3:6] == int(u[1]).to_bytes(3, "little")
    assert np.array_equal(decode_elems(img, 3), u)
    assert encode_elems([0x1234], 2) == b"\x34\x12"
    with pytest.raises(ValueError, match="do not fit 2 bytes"):
        encode_elems([1 << 16], 2)
    assert KVLayout(1, 1, 16, 8, fmt=FP16).dtype == "fp16"
    i8 = KVLayout(1, 2, 64, 100, dtype="int8", fmt=FP24)
    assert i8.scale_bytes == 3 and i8.scale_addr(0, "V", 1, 99) + 3 <= i8.total_bytes
    assert KVLayout(1, 2, 64, 100, dtype="int8", fmt=FP16).scale_bytes == 2
    with pytest.raises(ValueError, match="does not match the stream format"):
        KVLayout(1, 1, 16, 8, dtype="fp16", fmt=FP24)
    with pytest.raises(ValueError, match="FP24 KV has no scales"):
        lay.scale_addr(0, "K", 0, 0)


def test_fp24_traffic_hand_checked():
    # 2B4T: 5 KV heads x 128, n = 128 <= tile: K and V once, 384 B rows; int8 + 3-byte scale
    t = decode_traffic(128, num_kv_heads=5, head_dim=128, dtype="fp24", depth=1024)
    assert t["read"] == 5 * 256 * 384 and t["write"] == 5 * 2 * 384
    t8 = decode_traffic(128, num_kv_heads=5, head_dim=128, dtype="int8", depth=1024, fmt=FP24)
    assert t8["read"] == 5 * 256 * (128 + 3)
    # the reader fetches exactly these bytes: 384-byte rows are whole 16-byte beats
    from tellme.hw.attention.kv_dma import call_traffic
    c = call_traffic(128, head_dim=128, beat=8, depth=1024, data_width=128, max_burst=16,
                     fmt=FP24)
    assert c["bytes"] == c["payload"] == 256 * 384 and c["bursts"] == 256 * 24 // 16


def test_reader_rejects():
    with pytest.raises(ValueError, match="data_width must be 128 or 256"):
        KVReader(data_width=512)
    with pytest.raises(ValueError, match="not a multiple of beat"):
        KVReader(beat=4, max_head_dim=18)
    with pytest.raises(ValueError, match="int8 rows: KVQuantWriter"):
        writer_commands(KVLayout(1, 1, 16, 8, dtype="int8"), 0, 0, 4, 4)
    with pytest.raises(ValueError, match="do not fit one engine beat"):
        KVReader(beat=1, max_head_dim=16, int8=True)
    with pytest.raises(TypeError, match="StreamFormat of whole bytes"):
        KVReader(fmt="fp24")
    with pytest.raises(ValueError, match="not a multiple of the engine beat"):
        reader_command(KVLayout(1, 1, 12, 8), 0, 0, 4, 8)
    with pytest.raises(ValueError, match="KVWriter data_width must be 128 or 256"):
        KVWriter(data_width=512, fmt=FP24)
    with pytest.raises(ValueError, match="outside the KV cache"):
        writer_commands(KVLayout(1, 1, 16, 8), 0, 7, 2, 4)


class ReaderEngine:
    """Test top: KVReader.o -> AttentionEngine.i_kv (ports e_cmd, q, o of the engine; rd_cmd and
    m_axi_ar*/r* of the reader); both in the stream format ``fmt``."""

    def __new__(cls, engine: dict, reader: dict, fmt):
        from amaranth.hdl import Module
        from amaranth.lib import wiring
        from amaranth.lib.wiring import In, Out

        from tellme.hw.attention.engine import AttentionEngine

        class _Top(wiring.Component):
            def __init__(self):
                import inspect
                if "fmt" in inspect.signature(AttentionEngine).parameters:
                    self.eng = AttentionEngine(**engine, fmt=fmt)
                elif fmt == FP16:               # an engine from before the format parameter
                    self.eng = AttentionEngine(**engine)
                else:
                    raise TypeError(f"AttentionEngine takes no stream format: no {fmt!r} build")
                self.rd = KVReader(**reader, fmt=fmt)
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
@pytest.mark.parametrize("fmt,int8", [("fp16", False), ("fp24", False), ("fp24", True)],
                         ids=["fp16", "fp24", "fp24-int8"])
def test_reader_engine_e2e(fmt, int8):
    eng = dict(head_dim=16, lanes=8, beat=4, depth=8, ctx_bits=12)
    rd = dict({k: v for k, v in SMALL.items() if k != "fmt"}, int8=int8)
    params = dict(engine=eng, reader=rd, fmt=fmt, int8=int8)
    run_cocotb(lambda: ReaderEngine(eng, rd, FORMATS[fmt]), name="kv_e2e", params=params,
               test_module="tests.rtl.tb_attn_kv_e2e", extra_env={"SEED": "1"})
