"""Sequencer programs (spec/program.py), the DDR memory map (spec/memory_map.py) and the golden
sequencer (sim/golden/program_exec.py).

The main claim: a program built from the weight file's header and the memory map, executed
record by record over a byte-level DDR image with the golden hw block functions, reproduces
``GoldenModel(numerics="hw")`` bit for bit (the PL LM head's logits, ``head="pl-raw"``; final
hidden rows; the int8 KV cache:
codes and scales equal ``kv_quant_int8`` of the golden model's stream-format cache rows) for a
prefill and several decode steps, on the demo model and on random models of both families. So
the program carries everything the hardware needs. Then: a KV_WRITE record's bytes are the int8
layout the hardware writer stores, the encoding round-trips, every malformed program is
refused with its error code, and the memory map's rules and errors.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
from pathlib import Path

import numpy as np
import pytest

from tellme.quant.format import read_weight_file, write_weight_file
from tellme.quant.random_models import random_model, tiny_config
from tellme.sim.golden.attention_hw import kv_quant_int8
from tellme.sim.golden.model import GoldenModel
from tellme.sim.golden.program_exec import Ddr, DdrError, Sequencer, Session
from tellme.spec import program as P
from tellme.spec.kv_layout import KVLayout
from tellme.spec.lm_head import fits
from tellme.spec.memory_map import PAGE, ROW_ALIGN, MemoryMapError, memory_map
from tellme.spec.models import model_config
from tellme.spec.numerics import FP16, STREAM_FORMATS
from tellme.spec.targets import TARGETS
from tellme.spec.tiling import TILINGS

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "host/models/demo/model.tlm"


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.uint32 if x.dtype == np.float32 else np.uint16)


def _same(got: np.ndarray, want: np.ndarray, what: str):
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape)
    diff = np.flatnonzero(_bits(got) != _bits(want))
    assert diff.size == 0, f"{what}: {diff.size} of {got.size} values differ"


def _run_and_compare(path: Path, target: str, calls, fmt=None, max_context=48):
    """``calls``: lists of token ids, run in order (the first and any list longer than one
    are prefill chunks, single ids after the first call are decode steps)."""
    model = read_weight_file(path).to_model()
    lm = TARGETS[target].lm_head                        # else the PL head cannot take it
    pl = fits(model.config.hidden_size, lm["lanes"], lm["max_d"])
    s = Session(path, target, max_context=max_context, out_rows=8, fmt=fmt,
                output="logits" if pl else "hidden")
    gm = GoldenModel(model, numerics="hw", fmt=fmt, head="pl-raw")   # the device's logits
    gm.trace = {}
    cache = gm.new_cache(max_context)
    for j, ids in enumerate(calls):
        start = cache.length
        want = gm.forward(ids, cache)
        got = s.call(ids, start)
        if pl:
            _same(got, want, f"call {j} logits")
        else:
            f = s.mmap.fmt
            assert np.array_equal(f.to_bits(got), f.to_bits(gm.trace["h_final"])), \
                f"call {j} final hidden rows"
    n, f = cache.length, s.mmap.fmt
    for layer in range(s.config.num_layers):
        for kind, rows in (("K", cache.keys(layer, n)), ("V", cache.values(layer, n))):
            codes, scales = s.kv(layer, kind, n)
            want_codes, want_scales = kv_quant_int8(rows, fmt=f)
            assert np.array_equal(codes, want_codes), f"layer {layer} {kind} codes"
            assert np.array_equal(f.to_bits(scales), f.to_bits(want_scales)), \
                f"layer {layer} {kind} scales"
    return s


def test_demo_prefill_then_decode_is_bit_exact():
    s = _run_and_compare(DEMO, "kv260", [[5, 17, 300, 9, 1000, 42], [7], [8], [4095]])
    assert s.stats.ops["ATTENTION"] == 4 * 4 and s.stats.ops["LM_HEAD"] == 4


@pytest.fixture(scope="module")
def family_files(tmp_path_factory):
    """2B4T-style (GQA 4/2, ReLU^2, untied head, bf16 floats, dims not multiples of 84) at
    the sim tiling; 1bitLLM-style (MHA 3/3, SiLU, head_dim 24, fp16 floats, adjacent RoPE
    pairs) at the kv260 tiling."""
    d = tmp_path_factory.mktemp("models")
    b4t = tiny_config(vocab_size=300, hidden_size=60, intermediate_size=88, num_heads=4,
                      num_kv_heads=2, head_dim=16, activation="relu2",
                      tie_word_embeddings=False, max_context=64)
    one = tiny_config(vocab_size=200, hidden_size=72, intermediate_size=200, num_heads=3,
                      num_kv_heads=3, head_dim=24, activation="silu", max_context=64)
    files = {}
    for name, cfg, tiling, dt, pairing, seed in (
            ("2b4t", b4t, "sim", "bfloat16", "half", 5),
            ("1bitllm", one, "kv260", "float16", "adjacent", 6)):
        m = random_model(cfg, seed=seed, float_dtype=dt, rope_pairing=pairing,
                         head_std=3.0 if not cfg.tie_word_embeddings else None)
        files[name] = write_weight_file(m, d / f"{name}.tlm", TILINGS[tiling])
    return files


@pytest.mark.parametrize("family,target,fmt", [("2b4t", "sim", None),
                                               ("1bitllm", "kv260", None),
                                               ("1bitllm", "kv260", "fp16")])
def test_random_families_are_bit_exact(family_files, family, target, fmt):
    """A prefill in two chunks (the second at start > 0), then three decode steps."""
    rng = np.random.default_rng(1)
    vocab = read_weight_file(family_files[family]).config.vocab_size
    ids = [int(v) for v in rng.integers(0, vocab, 10)]
    calls = [ids[:4], ids[4:7], [ids[7]], [ids[8]], [ids[9]]]
    _run_and_compare(family_files[family], target, calls,
                     fmt=STREAM_FORMATS[fmt] if fmt else None)


def test_hidden_output_of_the_last_row(family_files):
    """output="hidden", last_only: the final-norm row of the last position (what the host's
    LM head and sampler would read)."""
    path = family_files["2b4t"]
    s = Session(path, "sim", max_context=32, output="hidden", out_rows=1)
    gm = GoldenModel(read_weight_file(path).to_model(), numerics="hw")
    gm.trace = {}
    cache = gm.new_cache(32)
    gm.forward([3, 1, 4, 1, 5], cache, last_only=True)
    got = s.call([3, 1, 4, 1, 5], 0, last_only=True)
    fmt = STREAM_FORMATS[s.mmap.fmt.name]
    assert np.array_equal(fmt.to_bits(got), fmt.to_bits(gm.trace["h_final"]))
    prog = s.program(5, 0, last_only=True)
    assert [r.op for r in prog.records[-2:]] == ["NORM", "END"]


# --------------------------------------------------------------------------- encoding

@pytest.fixture(scope="module")
def demo():
    s = Session(DEMO, "kv260", max_context=64, out_rows=4)
    return s, s.program(4, 0)


def test_encoding_round_trips(demo):
    s, prog = demo
    blob = P.encode_program(prog)
    assert len(blob) == 64 * (1 + len(prog.records)) and blob[:4] == P.MAGIC
    back = P.decode_program(blob, s.mmap, "kv260")
    assert P.encode_program(back) == blob
    assert [(r.op, r.layer, r.args) for r in back.records] == \
        [(r.op, r.layer, r.args) for r in prog.records]
    assert dataclasses.replace(back, records=[]) == dataclasses.replace(prog, records=[])
    c = s.config
    assert len(prog.records) == P.RECORDS_PER_LAYER * c.num_layers + 5     # EMBED, final
    assert [r.op for r in prog.records[-4:]] == ["NORM", "QUANT", "LM_HEAD", "END"]  # (+ head)
    head = prog.records[-2]
    assert head["head"] == s.mmap.region("head").addr and head["kpad"] == 336
    lin = next(r for r in prog.records if r.op == "LINEAR")
    assert lin.layer == 0 and lin["nb"] == -(-c.q_size // 16) and lin["kb"] == -(-c.hidden_size
                                                                                // 84)
    assert lin["scale"] == float(read_weight_file(DEMO).linear_scale(0, "q_proj"))
    for op in P.OPS.values():              # addresses at 8-byte offsets inside the record
        assert all(off % 8 == 0 for _, typ, off in op.layout if typ == "addr")


def test_v3_header_and_kv_records(demo):
    """Format 3 (2 + the int8 LM_HEAD): the header names the int8 KV cache and its beat;
    KV_WRITE and ATTENTION point at head 0's K and V regions with the regions' strides; their
    accesses span whole blocks of the int8 geometry."""
    s, prog = demo
    blob = P.encode_program(prog)
    h = P.decode_header(blob)
    kv = s.mmap.kv
    assert struct.unpack_from("<I", blob, 4)[0] == P.PROGRAM_VERSION == 3
    assert (h["kv_dtype"], h["kv_beat"]) == ("int8", 128) and kv.int8 and kv.beat == 128
    assert [n for n, _, _ in P.OPS["KV_WRITE"].fields] == [
        "rows", "k_src", "v_src", "k_dst", "v_dst", "k_stride", "v_stride", "start",
        "kv_heads", "head_dim"]
    assert [n for n, _, _ in P.OPS["ATTENTION"].fields] == [
        "rows", "q", "k", "v", "dst", "k_stride", "v_stride", "start", "heads", "kv_heads",
        "head_dim", "mode", "score_c"]
    back = P.decode_program(blob, s.mmap, "kv260")
    for op in ("KV_WRITE", "ATTENTION"):
        r = next(r for r in back.records if r.op == op and r.layer == 1)
        k, v = ("k_dst", "v_dst") if op == "KV_WRITE" else ("k", "v")
        assert (r[k], r[v]) == (kv.region_addr(1, "K", 0), kv.region_addr(1, "V", 0))
        assert (r["k_stride"], r["v_stride"]) == (kv.kind_head_bytes("K"),
                                                  kv.kind_head_bytes("V"))
        spans = {name: n for name, _, n, _ in P.accesses(r, back)}
        last = kv.kind_head_bytes("K") * (kv.num_kv_heads - 1)
        assert spans[k] == last + kv.k_block_bytes           # 4 keys: block 0 only
        assert spans[v] == kv.kind_head_bytes("V") * (kv.num_kv_heads - 1) + kv.v_block_bytes
        assert kv.region_addr(1, "K", 1) + kv.k_block_bytes == r[k] + spans[k]


def _header_patch(blob: bytes, name: str, value) -> bytes:
    off, code = 0, None
    for n, c, _ in P.HEADER_FIELDS:
        if n == name:
            code = c
            break
        off += struct.calcsize("<" + c)
    return _reseal(blob[:off] + struct.pack("<" + code, value)
                   + blob[off + struct.calcsize("<" + code):])


def test_kv_cache_limits(demo):
    """A stream-format KV cache (a v1 program's) or another block size than the build's
    integer engine is LIMIT; a kv_beat that is not a power of two is BAD_HEADER; the integer
    engine's GQA lanes and the quantiser's beat bound the model."""
    s, prog = demo
    blob = P.encode_program(prog)
    fp24 = _header_patch(blob, "kv_dtype", P.KV_DTYPES.index("fp24"))
    assert P.decode_program(fp24, s.mmap).kv_dtype == "fp24"       # well-formed, but
    with pytest.raises(P.ProgramError, match=r"LIMIT: header: KV dtype fp24.*int8"):
        P.decode_program(fp24, s.mmap, "kv260")
    with pytest.raises(P.ProgramError, match=r"LIMIT: header: kv_beat 32 != .* 128 keys"):
        P.decode_program(_header_patch(blob, "kv_beat", 32), s.mmap, "kv260")
    with pytest.raises(P.ProgramError, match=r"BAD_HEADER.*kv_beat 48 is not a power of two"):
        P.decode_program(_header_patch(blob, "kv_beat", 48))
    att = next(i for i, r in enumerate(prog.records) if r.op == "ATTENTION")
    heads = {n: off for n, _, off in P.OPS["ATTENTION"].layout}["heads"]
    with pytest.raises(P.ProgramError, match=r"LIMIT: record \d+: ATTENTION: GQA group 5 > 4"):
        P.decode_program(_record_patch(blob, att, heads, "<H", 10), target="kv260")
    with pytest.raises(MemoryMapError, match="head_dim 20 is not a multiple of the KV "
                                             "quantiser's beat 8"):
        memory_map(tiny_config(head_dim=20), "kv260", 64)
    with pytest.raises(MemoryMapError, match="GQA group 8 > the integer attention engine's 4"):
        memory_map(tiny_config(num_heads=8, num_kv_heads=1), "kv260", 64)


@pytest.mark.parametrize("fmt", ["fp24", "fp16"])
def test_kv_write_stores_the_writers_int8_layout(fmt):
    """KV_WRITE over a DDR of random bytes: after keys 0..5 and then keys 6..10 (a call that
    crosses blocks), every byte of keys 0..10 (the padded K row, the scale pair with its zero
    padding, the V code of each channel) is that of ``encode_k_region`` /
    ``encode_v_region`` of ``kv_quant_int8`` of the rows, the second call changed no byte but
    its keys', and ATTENTION's reader gets the codes and scales back."""
    f = STREAM_FORMATS[fmt]
    rng = np.random.default_rng(7)
    kvh, hd, beat, keys = 2, 20, 8, 11                    # K rows padded 20 -> 24 bytes
    lay = KVLayout(1, kvh, hd, 24, dtype="int8", beat=beat, fmt=f, base=0x1000)
    src = lay.base + lay.total_bytes
    stride = ROW_ALIGN * -(-kvh * hd * f.bits // 8 // ROW_ALIGN)
    ddr = Ddr(0, src + 2 * keys * stride)
    ddr.mem[:] = rng.integers(0, 256, ddr.mem.size, dtype=np.uint8)
    rows = {kind: f.round(rng.normal(0, 2, (keys, kvh, hd)) * rng.choice([1e-3, 1, 30],
                                                                       (keys, kvh, 1)))
            for kind in "KV"}
    rows["K"][3, 1] = 0                                      # an all-zero row: scale 0
    seq = Sequencer(ddr)

    def write(start, n):
        for j, kind in enumerate("KV"):
            seq.fmt = f
            seq.put_stream(src + j * keys * stride, rows[kind][start:start + n])
        args = dict(rows=n, k_src=src, v_src=src + keys * stride,
                    k_dst=lay.region_addr(0, "K", 0), v_dst=lay.region_addr(0, "V", 0),
                    k_stride=lay.kind_head_bytes("K"), v_stride=lay.kind_head_bytes("V"),
                    start=start, kv_heads=kvh, head_dim=hd)
        seq.run(P.Program("prefill", start, n, fmt, "int8", beat, "hidden", TILINGS["sim"],
                          1, [P.Record("KV_WRITE", 0, args), P.Record("END")]))
        return args

    write(0, 6)
    before = ddr.mem.copy()
    args = write(6, 5)
    kq, ks = kv_quant_int8(rows["K"], fmt=f)
    vq, vs = kv_quant_int8(rows["V"], fmt=f)
    assert ks[3, 1] == 0 and not kq[3, 1].any()
    new = np.zeros(ddr.mem.size, bool)                       # bytes of keys 6..10, and
    new[src:] = True                                         # the source rows
    for h in range(kvh):
        k0, v0 = lay.region_addr(0, "K", h), lay.region_addr(0, "V", h)
        kimg = np.frombuffer(lay.encode_k_region(kq[:, h], f.to_bits(ks[:, h]),
                                                 f.to_bits(vs[:, h])), np.uint8)
        vimg = np.frombuffer(lay.encode_v_region(vq[:, h]), np.uint8)
        for p in range(keys):
            at = [np.arange(lay.row_addr(0, "K", h, p), lay.row_addr(0, "K", h, p)
                            + lay.k_row_bytes),
                  np.arange(lay.scale_addr(0, "K", h, p), lay.scale_addr(0, "K", h, p)
                            + lay.pair_bytes)]
            for a in at:
                assert np.array_equal(ddr.mem[a], kimg[a - k0]), (h, p)
            va = np.array([lay.v_addr(0, h, p, c) for c in range(hd)])
            assert np.array_equal(ddr.mem[va], vimg[va - v0]), (h, p)
            if p >= 6:
                for a in at + [va]:
                    new[a] = True
    assert np.array_equal(ddr.mem[~new], before[~new]), "KV_WRITE changed bytes of other keys"
    got = seq.cache(dict(args, k=args["k_dst"], v=args["v_dst"]), keys, beat)
    for g, w in zip(got, (kq, ks, vq, vs), strict=True):
        assert np.array_equal(g, w) if g.dtype == np.int8 else \
            np.array_equal(f.to_bits(g), f.to_bits(w))


def _reseal(blob: bytes) -> bytes:
    """Recompute the CRC of a tampered program (so the later checks are reached)."""
    import zlib

    head = blob[:16] + b"\0" * 4 + blob[20:64]
    crc = zlib.crc32(blob[64:], zlib.crc32(head))
    return blob[:16] + struct.pack("<I", crc) + blob[20:]


def _record_patch(blob: bytes, i: int, offset: int, fmt: str, value) -> bytes:
    at = 64 + 64 * i + offset
    return _reseal(blob[:at] + struct.pack(fmt, value) + blob[at + struct.calcsize(fmt):])


def test_malformed_programs_are_refused_with_their_codes(demo):
    s, prog = demo
    blob = P.encode_program(prog)
    n = len(prog.records)
    lin = next(i for i, r in enumerate(prog.records) if r.op == "LINEAR")
    w_off = {name: off for name, _, off in P.OPS["LINEAR"].layout}["weights"]
    dst_off = {name: off for name, _, off in P.OPS["LINEAR"].layout}["dst"]
    act_off = {name: off for name, _, off in P.OPS["GATED_ACT"].layout}["act"]
    gated = next(i for i, r in enumerate(prog.records) if r.op == "GATED_ACT")
    cases = {
        "BAD_MAGIC": b"XXXX" + blob[4:],
        "BAD_VERSION": _reseal(blob[:4] + struct.pack("<I", 1) + blob[8:]),
        "BAD_HEADER": _reseal(blob[:40] + b"\1" + blob[41:]),
        "BAD_CHECKSUM": blob[:100] + bytes([blob[100] ^ 1]) + blob[101:],
        "TRUNCATED": blob[:-64],
        "BAD_OPCODE": _record_patch(blob, 3, 0, "<B", 0x7E),
        "COUNT": _reseal(blob[:12] + struct.pack("<I", n - 1) + blob[16:-64]),
        "BAD_FIELD": _record_patch(blob, gated, act_off, "<B", 2),
        "ADDRESS": _record_patch(blob, lin, w_off, "<Q", s.mmap.base + s.mmap.total_bytes),
    }
    for name, bad in cases.items():
        with pytest.raises(P.ProgramError, match=name) as e:
            P.decode_program(bad, s.mmap, "kv260")
        assert e.value.code == P.ERROR_CODES[name] and e.value.name == name
    # a write into the read-only weights region
    w_addr = s.mmap.region("weights").addr
    with pytest.raises(P.ProgramError, match="read-only region weights"):
        P.decode_program(_record_patch(blob, lin, dst_off, "<Q", w_addr), s.mmap)
    # END too early (count matches, but END is record 0)
    early = _reseal(blob[:64] + blob[-64:] + blob[128:])
    with pytest.raises(P.ProgramError, match="COUNT: record 0"):
        P.decode_program(early)
    # the build's limits: the sim target has another tiling and far smaller buffers
    with pytest.raises(P.ProgramError, match="LIMIT: header: tiling"):
        P.decode_program(blob, target="sim")
    # derived sizes that disagree with the dimensions
    nb_off = {name: off for name, _, off in P.OPS["LINEAR"].layout}["nb"]
    with pytest.raises(P.ProgramError, match=r"BAD_FIELD.*nb/kb"):
        P.decode_program(_record_patch(blob, lin, nb_off, "<H", 99))
    # decode attention of several rows
    att = next(i for i, r in enumerate(prog.records) if r.op == "ATTENTION")
    mode = {name: off for name, _, off in P.OPS["ATTENTION"].layout}["mode"]
    with pytest.raises(P.ProgramError, match="decode attention of 4 rows"):
        P.decode_program(_record_patch(blob, att, mode, "<B", 1))


def test_run_time_faults(demo):
    s, prog = demo
    seq = Sequencer(Ddr(s.mmap.base, 4096))                 # a DDR far too small
    with pytest.raises(DdrError, match="outside DDR"):
        seq.run(prog)
    with pytest.raises(P.ProgramError, match=r"BAD_FIELD.*token id 4096 >= vocab 4096"):
        s.call([1, 4096], 0)


def test_builder_refuses_bad_calls(demo, family_files):
    s, _ = demo
    kw = dict(weights=s.info, score_c=s.score_c)
    with pytest.raises(ValueError, match="a decode step runs one token"):
        P.build_program(s.config, s.mmap, "decode", 3, 2, **kw)
    with pytest.raises(ValueError, match="outside the context"):
        P.build_program(s.config, s.mmap, "decode", 64, 1, **kw)
    with pytest.raises(ValueError, match="output rows"):
        P.build_program(s.config, s.mmap, "prefill", 0, 8, **kw)
    other = Session(family_files["2b4t"], "sim", max_context=16, output="hidden")
    with pytest.raises(ValueError, match=r"laid out for Tiling\(t=4, q=4\)"):
        P.build_program(other.config, memory_map(other.config, "kv260", 16, output="hidden"),
                        "prefill", 0, 1,
                        weights=other.info, score_c=other.score_c)
    with pytest.raises(ValueError, match="different models"):
        P.build_program(other.config, s.mmap, "prefill", 0, 1, **kw)


def test_sequencer_doc_holds_the_op_table():
    page = (REPO / "docs/hw/sequencer.md").read_text(encoding="utf-8")
    assert P.ops_markdown() in page, "regenerate the tables with spec.program.ops_markdown()"
    assert f"version {P.PROGRAM_VERSION}" in page


# --------------------------------------------------------------------------- memory map

def test_memory_map_alignment_and_placement():
    wf = read_weight_file(DEMO)
    mm = memory_map(wf.config, "kv260", 256, weights_nbytes=DEMO.stat().st_size,
                    base=0x8_0000_0000)
    regions = list(mm.regions.values())
    for a, b in itertools.pairwise(regions):
        assert a.end == b.addr
    for r in regions:
        assert r.addr % PAGE == 0 and r.size % PAGE == 0
    for b in mm.buffers.values():
        assert b.addr % PAGE == 0 and mm.region("act").contains(b.addr, b.size)
        assert b.packed or b.stride % ROW_ALIGN == 0
    for sec in wf.sections.values():          # sections keep the file's 64-byte alignment
        assert (mm.region("weights").addr + sec.offset) % 64 == 0
    assert mm.kv.base == mm.region("kv").addr and mm.kv.total_bytes <= mm.region("kv").size
    assert mm.regions["weights"].size >= DEMO.stat().st_size
    assert mm.total_bytes == sum(r.size for r in regions)
    assert mm.rope_row(255) + wf.config.head_dim * 3 <= mm.region("rope").end
    assert mm.program_addr(1) - mm.program_addr(0) == mm.program_slot_bytes
    assert not mm.region("weights").writable and mm.region("kv").writable


def test_memory_map_errors():
    c2b = model_config("bitnet-b1.58-2B-4T")
    with pytest.raises(MemoryMapError, match=r"device budget is 1,000.0 MiB \(kv260\).*cma"):
        memory_map(c2b, "kv260", 2048)
    assert memory_map(c2b, "kv260", 2048, budget=None).total_bytes > 1000 << 20
    with pytest.raises(MemoryMapError, match="intermediate_size 8640 > the element-wise row"):
        memory_map(model_config("bitnet_b1_58-3B"), "kv260", 2048, budget=None)
    large = model_config("bitnet_b1_58-large")
    with pytest.raises(MemoryMapError, match="40-bit address space"):
        memory_map(large, "kv260", 2048, base=(1 << 40) - PAGE, budget=None)
    with pytest.raises(MemoryMapError, match="not a 4 KiB-aligned"):
        memory_map(large, "kv260", 256, base=64)
    with pytest.raises(MemoryMapError, match="max context 4096 outside"):
        memory_map(large, "kv260", 4096)
    with pytest.raises(MemoryMapError, match="16 tokens per call > the TLMM's 15"):
        memory_map(tiny_config(hidden_size=48, intermediate_size=96), "sim", 64, max_tokens=16)
    mm = memory_map(large, "kv260", 1024, fmt=FP16)
    assert (mm.kv.dtype, mm.kv.fmt, mm.kv.pair_bytes) == ("int8", FP16, 4)   # FP16 scales
    assert mm.buffer("out").cols == large.vocab_size


def test_new_spec_modules_and_the_golden_sequencer_are_numpy_only():
    from tests.test_imports import imported_after, third_party

    for mod in ("tellme.spec.memory_map", "tellme.spec.program", "tellme.spec.registers",
                "tellme.sim.golden.program_exec"):
        assert third_party(imported_after(f"import {mod}")) == set(), mod
