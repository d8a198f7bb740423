"""Launch the KV-cache reader testbenches (tests/rtl/tb_attn_kv_dma.py, tb_attn_kv_int8.py) on
Verilator.

Default tier, 128-bit AXI: KVCacheDMA (reader + writer on one AXI4 port) for the engine's
``sim`` preset (beat 4, tile 8, head_dim <= 16) at FP16, KVCacheDMA at FP24 with beat 8
(192-bit engine beats: one and a half AXI beats each), and the int8 reader ``KVInt8Reader``
with FP24 scales at the integer engine's sim beat 4 (four engine beats per AXI beat) and at
beat 32 (two AXI beats per engine beat). ``slow``: the sim preset at FP24 (96-bit engine
beats), 256-bit builds with longer bursts (FP16, FP24), the int8 reader with FP16 scales, at
the kv260 beat 128 (128 and 256-bit AXI) and on 512-bit AXI, and the FP reader wired to the
attention engine (FP16, FP24), and the int8 reader wired to the integer engine.
"""

import numpy as np
import pytest

from tellme.hw.attention.kv_dma import (
    KVCacheDMA,
    KVInt8Reader,
    KVReader,
    KVWriter,
    int8_call_traffic,
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


# the integer engine's sim beat (4 engine beats per AXI beat) and a beat of 2 AXI beats
INT8 = dict(beat=4, depth=8, max_head_dim=16, ctx_bits=12, data_width=128, addr_width=40,
            max_burst=16, max_outstanding=4, fmt="fp24")
INT8_B32 = dict(INT8, beat=32, depth=64, max_head_dim=40)
INT8_KV260 = dict(INT8, beat=128, depth=256, max_head_dim=128)


def _run_int8(params, seed=4):
    hw = dict(params, fmt=FORMATS[params["fmt"]])
    run_cocotb(lambda: KVInt8Reader(**hw), name="kv_int8", params=params,
               test_module="tests.rtl.tb_attn_kv_int8", extra_env={"SEED": str(seed)})


@pytest.mark.rtl
@pytest.mark.parametrize("params", [
    pytest.param(INT8, id="b4"), pytest.param(INT8_B32, id="b32"),
    pytest.param(dict(INT8, fmt="fp16"), marks=pytest.mark.slow, id="fp16"),
    pytest.param(INT8_KV260, marks=pytest.mark.slow, id="kv260"),
    pytest.param(dict(INT8_KV260, data_width=256, max_burst=8), marks=pytest.mark.slow,
                 id="kv260-256"),
    pytest.param(dict(INT8_B32, data_width=512, fmt="fp16"), marks=pytest.mark.slow,
                 id="b32-512"),
    pytest.param(dict(INT8, data_width=256), marks=pytest.mark.slow, id="b4-256")])
def test_kv_reader_int8(params):
    """int8 KV for the integer engine: K rows with both scales, V blocks channel-major."""
    _run_int8(params)


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
    # the int8 reader fetches the padded K rows, the K blocks' scale headers, whole V blocks
    c = int8_call_traffic(100, head_dim=96, beat=64, depth=1024, data_width=128,
                          max_burst=16, fmt=FP24)
    assert c["bytes"] == 2 * 512 + 100 * 128 + 2 * 96 * 64 and c["payload"] == 100 * 2 * 99
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
    with pytest.raises(ValueError, match="must be a power of two"):
        KVInt8Reader(beat=3, max_head_dim=16)
    with pytest.raises(ValueError, match="depth 4 must be a power of two >= beat"):
        KVInt8Reader(beat=8, depth=4)
    with pytest.raises(ValueError, match="built for beat 64"):
        reader_command(KVLayout(1, 1, 16, 8, dtype="int8"), 0, 0, 4, 4)
    with pytest.raises(TypeError, match="StreamFormat of whole bytes"):
        KVReader(fmt="fp24")
    with pytest.raises(ValueError, match="not a multiple of the engine beat"):
        reader_command(KVLayout(1, 1, 12, 8), 0, 0, 4, 8)
    with pytest.raises(ValueError, match="KVWriter data_width must be 128 or 256"):
        KVWriter(data_width=512, fmt=FP24)
    with pytest.raises(ValueError, match="outside the KV cache"):
        writer_commands(KVLayout(1, 1, 16, 8), 0, 7, 2, 4)


def reader_engine_top(eng, rd):
    """Test top: ``rd.o`` -> ``eng.i_kv`` (ports e_cmd, q, o of the engine; rd_cmd and
    m_axi_ar*/r* of the reader)."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class _Top(wiring.Component):
        def __init__(self):
            self.eng, self.rd = eng, rd
            sig = {"e_cmd": In(eng.i_cmd.signature.flip()), "q": In(eng.i_q.signature.flip()),
                   "o": Out(eng.o.signature), "rd_cmd": In(rd.i_cmd.signature.flip())}
            for name, mem in rd.signature.members.items():
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


def reader_engine(engine: dict, reader: dict, fmt):
    """KVReader -> AttentionEngine, both in the stream format ``fmt``."""
    import inspect

    from tellme.hw.attention.engine import AttentionEngine

    if "fmt" in inspect.signature(AttentionEngine).parameters:
        eng = AttentionEngine(**engine, fmt=fmt)
    elif fmt == FP16:               # an engine from before the format parameter
        eng = AttentionEngine(**engine)
    else:
        raise TypeError(f"AttentionEngine takes no stream format: no {fmt!r} build")
    return reader_engine_top(eng, KVReader(**reader, fmt=fmt))


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["fp16", "fp24"])
def test_reader_engine_e2e(fmt):
    eng = dict(head_dim=16, lanes=8, beat=4, depth=8, ctx_bits=12)
    rd = {k: v for k, v in SMALL.items() if k != "fmt"}
    params = dict(engine=eng, reader=rd, fmt=fmt)
    run_cocotb(lambda: reader_engine(eng, rd, FORMATS[fmt]), name="kv_e2e", params=params,
               test_module="tests.rtl.tb_attn_kv_e2e", extra_env={"SEED": "1"})


def reader_int_engine(engine: dict, reader: dict, fmt):
    """KVInt8Reader -> IntAttentionEngine, both in the stream format ``fmt``."""
    from tellme.hw.attention.int_engine import IntAttentionEngine

    return reader_engine_top(IntAttentionEngine(**engine, fmt=fmt),
                             KVInt8Reader(**reader, fmt=fmt))


@pytest.mark.rtl
@pytest.mark.slow
def test_reader_int_engine_e2e():
    """KVInt8Reader -> IntAttentionEngine (sim presets, FP24): decode and prefill over an int8
    cache in the layout equal the integer contract bit for bit."""
    from tellme.hw.attention.presets import INT_PRESETS

    eng = dict(INT_PRESETS["sim"])
    rd = dict(INT8, beat=eng["beat"], depth=eng["depth"], max_head_dim=eng["head_dim"],
              ctx_bits=eng["ctx_bits"])
    rd.pop("fmt")
    params = dict(engine=eng, reader=rd, fmt="fp24")
    run_cocotb(lambda: reader_int_engine(eng, rd, FORMATS["fp24"]), name="kv_int8_e2e",
               params=params, test_module="tests.rtl.tb_attn_kv_int8_e2e",
               extra_env={"SEED": "1"})
