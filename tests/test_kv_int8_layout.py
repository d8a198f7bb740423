"""The int8 KV layout (spec/kv_layout.py) and the int8 reader's references (hw/attention/
kv_dma.py: ``int8_blocks``, ``reader_plan``, ``reader_beats_int8``), without a simulator.

* geometry by hand (kv260: beat 64, head_dim 128 and 96; the sim beat 4) and the alignment
  rules: every K block, K row section and V block on 64 bytes, K rows and V channels on
  ``beat`` bytes, nothing overlapping, everything inside the layout;
* the region encoders put every code and scale at the address the address functions give,
  and the decoders invert them;
* a byte-level model of the reader (the ranges of ``int8_blocks`` cut into engine beats at
  the fixed ratio, scales from the K block's header) gives ``reader_beats_int8`` exactly;
* ``reader_beats_int8`` is the beat stream the integer engine's testbench feeds
  (``TB.beats`` of tests/rtl/tb_attn_int.py), up to the bits that testbench fills with junk
  (K codes past head_dim, V key slots past the cache, V scale bits).
"""

import numpy as np
import pytest

from tellme.hw.attention.kv_dma import (
    int8_blocks,
    int8_call_traffic,
    reader_beats_int8,
    reader_command,
    reader_plan,
)
from tellme.spec.attention import kv_schedule
from tellme.spec.kv_layout import KVLayout
from tellme.spec.numerics import FP16, FP24


def test_geometry_by_hand():
    big = KVLayout(30, 5, 128, 4096, dtype="int8", fmt=FP24, beat=64)     # 2B4T at kv260
    assert (big.bpr, big.pair_bytes, big.k_header_bytes, big.k_row_bytes) == (2, 8, 512, 128)
    assert (big.k_block_bytes, big.v_block_bytes, big.blocks) == (512 + 64 * 128, 8192, 64)
    assert big.kind_head_bytes("K") == 64 * 8704 and big.kind_head_bytes("V") == 64 * 8192
    large = KVLayout(24, 16, 96, 2048, dtype="int8", fmt=FP24, beat=64)
    assert (large.bpr, large.k_row_bytes, large.k_block_bytes, large.v_block_bytes) == \
        (2, 128, 8704, 6144)
    sim = KVLayout(1, 1, 6, 9, dtype="int8", fmt=FP24, beat=4)
    assert (sim.k_header_bytes, sim.k_row_bytes, sim.k_block_bytes, sim.v_block_bytes) == \
        (64, 8, 128, 64)
    f16 = KVLayout(1, 1, 16, 9, dtype="int8", fmt=FP16, beat=4)
    assert (f16.pair_bytes, f16.k_header_bytes, f16.scale_addr(0, "V", 0, 5)) == \
        (4, 64, f16.k_block_bytes + 4 + 2)
    with pytest.raises(ValueError, match="channel-major"):
        sim.row_addr(0, "V", 0, 0)
    with pytest.raises(ValueError, match="power of two"):
        KVLayout(1, 1, 8, 8, dtype="int8", beat=48)
    with pytest.raises(ValueError, match="64-byte boundaries"):
        KVLayout(1, 1, 8, 8, dtype="int8", base=0x1010)
    with pytest.raises(ValueError, match="kind_head_bytes"):
        _ = sim.head_bytes
    with pytest.raises(ValueError, match="FP16 KV has no scales"):
        KVLayout(1, 1, 8, 8, fmt=FP16).scale_addr(0, "K", 0, 0)


@pytest.mark.parametrize("hd,beat,fmt", [(6, 4, FP24), (16, 4, FP16), (96, 64, FP24),
                                         (40, 32, FP16), (3, 8, FP24)])
def test_addresses_aligned_and_disjoint(hd, beat, fmt):
    lay = KVLayout(2, 2, hd, 3 * beat - 1, dtype="int8", fmt=fmt, beat=beat, base=0x40)
    sb, used = lay.scale_bytes, {}

    def take(a, nbytes, what):
        assert lay.base <= a and a + nbytes <= lay.base + lay.total_bytes, what
        for x in range(a, a + nbytes):
            assert x not in used, f"{what} overlaps {used[x]}"
            used[x] = what

    for layer in range(2):
        for h in range(2):
            for kind in "KV":
                assert lay.region_addr(layer, kind, h) % 64 == 0
                for b in range(lay.blocks):
                    assert lay.block_addr(layer, kind, h, b) % 64 == 0
            for p in range(lay.max_ctx):
                ra = lay.row_addr(layer, "K", h, p)
                assert ra % beat == 0
                if p % beat == 0:
                    assert ra % 64 == 0 and ra - lay.k_header_bytes == \
                        lay.block_addr(layer, "K", h, p // beat)
                take(ra, lay.k_row_bytes, ("K", layer, h, p))
                ks, vs = (lay.scale_addr(layer, k, h, p) for k in "KV")
                assert vs == ks + sb and ks % lay.pair_bytes == 0
                take(ks, lay.pair_bytes, ("S", layer, h, p))
                for c in range(hd):
                    a = lay.v_addr(layer, h, p, c)
                    assert (a - p % beat) % beat == 0
                    take(a, 1, ("V", layer, h, p, c))


def _random_head(rng, lay, m):
    kq = rng.integers(-128, 128, (m, lay.head_dim))
    vq = rng.integers(-128, 128, (m, lay.head_dim))
    ks, vs = (rng.integers(0, 1 << lay.fmt.bits, m) for _ in range(2))
    return kq, ks, vq, vs


@pytest.mark.parametrize("fmt", [FP16, FP24], ids=["fp16", "fp24"])
def test_region_images(fmt):
    rng = np.random.default_rng(5)
    lay = KVLayout(2, 3, 6, 11, dtype="int8", fmt=fmt, beat=4, base=0x1000)
    kq, ks, vq, vs = _random_head(rng, lay, 10)
    kimg = lay.encode_k_region(kq, ks, vs)
    vimg = lay.encode_v_region(vq)
    assert len(kimg) == lay.kind_head_bytes("K") and len(vimg) == lay.kind_head_bytes("V")
    k0, v0 = lay.region_addr(1, "K", 2), lay.region_addr(1, "V", 2)
    sb = lay.scale_bytes
    for p in range(10):
        a = lay.row_addr(1, "K", 2, p) - k0
        assert list(np.frombuffer(kimg[a:a + 6], np.int8)) == list(kq[p])
        assert kimg[a + 6:a + lay.k_row_bytes] == bytes(2)              # zero padding
        a = lay.scale_addr(1, "K", 2, p) - k0
        assert kimg[a:a + sb] == int(ks[p]).to_bytes(sb, "little")
        a = lay.scale_addr(1, "V", 2, p) - k0
        assert kimg[a:a + sb] == int(vs[p]).to_bytes(sb, "little")
        for c in range(6):
            assert vimg[lay.v_addr(1, 2, p, c) - v0] == vq[p, c] & 0xFF
    # written bytes: codes, scales, nothing else
    nz = sum(1 for x in kimg if x) + sum(1 for x in vimg if x)
    assert nz <= 10 * (6 + 6 + 2 * sb)
    dk, dks, dvs = lay.decode_k_region(kimg)
    assert np.array_equal(dk[:10], kq) and not dk[10:].any()
    assert np.array_equal(dks[:10], ks) and np.array_equal(dvs[:10], vs)
    assert np.array_equal(lay.decode_v_region(vimg)[:10], vq)


def _reader_model(img: bytes, base: int, cmd: dict, depth: int, beat: int, dw: int, fmt):
    """What KVInt8Reader emits, from the bytes of the ranges it fetches: each range cut into
    AXI beats, then engine beats at the fixed ratio; K scales from the block's header."""
    nb, eb = dw // 8, fmt.bits
    lay = KVLayout(1, 1, cmd["hd"], 1, dtype="int8", fmt=fmt, beat=beat)
    out = []
    for kind, addr, beats, keys in int8_blocks(cmd, depth=depth, beat=beat, data_width=dw,
                                               fmt=fmt):
        assert addr % 64 == 0
        raw = img[addr - base:addr - base + beats * nb]
        assert len(raw) == beats * nb
        if kind == "K":
            hdr, raw = raw[:lay.k_header_bytes], raw[lay.k_header_bytes:]
            for j in range(keys):
                e = hdr[j * lay.pair_bytes:j * lay.pair_bytes + 2 * eb // 8]
                sc = int.from_bytes(e, "little") << (8 * beat)
                for i in range(lay.bpr):
                    o = (j * lay.bpr + i) * beat
                    out.append(int.from_bytes(raw[o:o + beat], "little") | sc)
        else:
            out += [int.from_bytes(raw[c * beat:c * beat + beat], "little")
                    for c in range(cmd["hd"])]
    return out


@pytest.mark.parametrize("hd,beat,depth,dw,fmt", [
    (6, 4, 8, 128, FP24), (16, 4, 8, 128, FP16), (5, 4, 8, 256, FP24),
    (40, 32, 64, 128, FP24), (96, 64, 128, 128, FP24), (128, 64, 128, 256, FP16)])
def test_reader_model_gives_reference(hd, beat, depth, dw, fmt):
    rng = np.random.default_rng(hd + beat)
    m = 3 * depth + beat // 2 + 1
    lay = KVLayout(2, 2, hd, m, dtype="int8", fmt=fmt, beat=beat, base=0x3000)
    img = bytearray(lay.total_bytes)
    heads = {}
    for layer in range(2):
        for h in range(2):
            kq, ks, vq, vs = heads[layer, h] = _random_head(rng, lay, m)
            for kind, b in (("K", lay.encode_k_region(kq, ks, vs)),
                            ("V", lay.encode_v_region(vq))):
                a = lay.region_addr(layer, kind, h) - lay.base
                img[a:a + len(b)] = b
    for n in sorted({1, beat - 1, beat, beat + 1, depth, depth + 1, 2 * depth + beat // 2, m}):
        if n < 1:
            continue
        layer, h = n % 2, (n // 2) % 2
        cmd = reader_command(lay, layer, h, n, beat)
        want = reader_beats_int8(*heads[layer, h], n, depth, beat, fmt)
        assert _reader_model(bytes(img), lay.base, cmd, depth, beat, dw, fmt) == want, n
        # the bursts cover exactly the ranges, INCR inside 4 KiB pages
        plan = reader_plan(cmd, depth=depth, beat=beat, data_width=dw, max_burst=16, fmt=fmt)
        blocks = int8_blocks(cmd, depth=depth, beat=beat, data_width=dw, fmt=fmt)
        assert sum(b for _, b in plan) == sum(b for _, _, b, _ in blocks)
        assert all(a % 4096 + b * dw // 8 <= 4096 and b <= 16 for a, b in plan)
        bpr = -(-hd // beat)
        n_out = sum(r * bpr if k == "K" else -(-(f + r) // beat) * hd - f // beat * hd
                    for k, f, r in kv_schedule(n, depth))
        assert len(want) == n_out


def test_reference_is_what_the_engine_testbench_feeds():
    """TB.beats of tests/rtl/tb_attn_int.py (the integer engine's testbench) for a call over a
    cache; equal to reader_beats_int8 wherever that testbench does not put junk."""
    pytest.importorskip("cocotb")
    from tellme.hw.attention.int_engine import cmd_layout
    from tellme.sim.payload import layout_fields
    from tests.rtl.tb_attn_int import TB

    fmt, beat, depth = FP24, 4, 8
    tb = TB.__new__(TB)
    tb.p = dict(beat=beat, depth=depth, lanes=8, ctx_bits=12, q_beat=2)
    tb.fmt = fmt
    tb.cmd_f = layout_fields(cmd_layout(8, 12))
    tb.junk = np.random.default_rng(3)
    rng = np.random.default_rng(4)
    eb = fmt.bits
    for hd, n in ((6, 1), (6, 7), (16, 8), (6, 9), (16, 27), (10, 17)):
        kq = rng.integers(-128, 128, (n, hd)).astype(np.int8)
        vq = rng.integers(-128, 128, (n, hd)).astype(np.int8)
        ks = fmt.round(rng.uniform(0.01, 2, n))
        vs = fmt.round(rng.uniform(0.01, 2, n))
        q = fmt.round(rng.standard_normal((2, hd)))
        _, _, tbk = tb.beats(q, [n - 1, n - 1], kq, ks, vq, vs, 1000)
        want = reader_beats_int8(kq, fmt.to_bits(ks), vq, fmt.to_bits(vs), n, depth, beat, fmt)
        assert len(tbk) == len(want)
        bpr = -(-hd // beat)
        i = 0
        for kind, first, rows in kv_schedule(n, depth):
            if kind == "K":               # codes past hd in a row's last beat are junk there
                for _ in range(rows):
                    for c in range(bpr):
                        live = min(beat, hd - c * beat)
                        mask = ((1 << (8 * live)) - 1) | (((1 << (2 * eb)) - 1) << (8 * beat))
                        assert (want[i] ^ tbk[i]) & mask == 0, (hd, n, i)
                        i += 1
                continue
            for b in range(first // beat, -(-(first + rows) // beat)):   # junk: keys >= n
                mask = sum(0xFF << (8 * j) for j in range(beat) if b * beat + j < n)
                for _ in range(hd):
                    assert (want[i] ^ tbk[i]) & mask == 0, (hd, n, i)
                    i += 1
        assert i == len(want)


def test_call_traffic_kv260():
    """2B4T decode at n = 1024 (one tile), kv260 reader: bytes fetched vs the payload."""
    t = int8_call_traffic(1024, head_dim=128, beat=64, depth=1024, data_width=128,
                          max_burst=16, fmt=FP24)
    # K: 16 blocks of header 512 + 64 rows x 128; V: 16 blocks of 128 x 64
    assert t["bytes"] == 16 * (512 + 8192) + 16 * 8192
    assert t["payload"] == 1024 * (128 + 3) * 2
    assert t["beats_out"] == 1024 * 2 + 16 * 128 and t["blocks"] == 32
