"""tellme.quant.format: the weight file (round trips, element packings, every error path)."""

import itertools
import json
import os
import struct
import zlib

import numpy as np
import pytest

from tellme.quant import format as fmt
from tellme.quant.format import (
    ALIGN,
    MAGIC,
    WeightFileError,
    pack_bf16,
    pack_f16,
    read_weight_file,
    unpack_bf16,
    unpack_f16,
    write_weight_file,
)
from tellme.quant.random_models import random_model
from tellme.spec.codes import layout_codes, pack_codes
from tellme.spec.config import LINEAR_NAMES
from tellme.spec.tiling import TILINGS, Tiling

from .support.quant_helpers import assert_models_equal, small_config

CASES = {
    # name: (config overrides, tiling)
    "tied-gqa-aligned": (dict(), Tiling(4, 4)),           # K=24 = 2*T*3, N multiple of Q
    "untied-mha": (dict(tie_word_embeddings=False, num_kv_heads=4), Tiling(4, 4)),
    # hidden 20, ff 34, q_size 20, kv 10: K not a multiple of T*3, N not a multiple of Q
    "ragged": (dict(hidden_size=20, intermediate_size=34, num_heads=2, num_kv_heads=1,
                    head_dim=10, vocab_size=37), Tiling(5, 3)),
    "ragged-untied-board": (dict(hidden_size=30, intermediate_size=50, num_heads=3,
                                 num_kv_heads=1, head_dim=10, tie_word_embeddings=False,
                                 num_layers=1), TILINGS["kv260"]),
}


@pytest.mark.parametrize("float_dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_exact(tmp_path, case, float_dtype):
    over, tiling = CASES[case]
    model = random_model(small_config(**over), seed=3, float_dtype=float_dtype,
                         meta={"test": True, "seed": 3})
    path = write_weight_file(model, tmp_path / "m.tlw", tiling, meta={"note": "x"})
    wf = read_weight_file(path)
    assert wf.tiling == tiling and wf.config == model.config and wf.version == 1
    back = wf.to_model()
    assert_models_equal(model, back)
    assert back.meta == {**model.meta, "note": "x"}
    # float sections are stored in the narrowest dtype that holds the values exactly
    want = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}[float_dtype]
    assert wf.info("embed").dtype == want
    assert wf.info("scales").dtype == "float32"
    # codes in the file are exactly layout_codes / pack_codes of the weights
    for i, layer in enumerate(model.layers):
        for n in LINEAR_NAMES:
            codes = layout_codes(layer.linears[n].w, tiling.t, tiling.q)
            np.testing.assert_array_equal(wf.linear_codes(i, n), codes)
            np.testing.assert_array_equal(wf.linear_packed(i, n), pack_codes(codes))
            assert wf.linear_codes(i, n).shape == wf.info(f"layers.{i}.{n}.codes").shape


def test_sections_aligned_and_memory_mapped(tmp_path):
    model = random_model(small_config(tie_word_embeddings=False), float_dtype="bfloat16")
    wf = read_weight_file(write_weight_file(model, tmp_path / "m.tlw", Tiling(4, 4)))
    size = os.path.getsize(wf.path)
    assert size % ALIGN == 0
    ends = []
    for s in wf.sections.values():
        assert s.offset % ALIGN == 0, s
        ends.append((s.offset, s.offset + s.nbytes))
        arr = wf.section(s.name)
        assert isinstance(arr.base, np.memmap) or isinstance(arr, np.memmap), s.name
        assert not arr.flags.writeable
    ends.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends)), "sections overlap"
    # embedding lookups widen only the rows asked for
    ids = np.array([[3, 0], [49, 3]])
    np.testing.assert_array_equal(wf.rows("embed", ids), model.embed[ids])
    with pytest.raises(IndexError, match="out of range"):
        wf.rows("embed", [50])
    with pytest.raises(WeightFileError, match="2-D float section"):
        wf.rows("final_norm", [0])
    # bf16 sections are bit patterns; tensor() widens them
    np.testing.assert_array_equal(wf.section("embed"), pack_bf16(model.embed))
    np.testing.assert_array_equal(wf.tensor("lm_head"), model.lm_head)


def test_write_is_deterministic_and_atomic(tmp_path, monkeypatch):
    model = random_model(small_config())
    a = write_weight_file(model, tmp_path / "a.tlw", Tiling(4, 4))
    b = write_weight_file(model, tmp_path / "b.tlw", Tiling(4, 4))
    assert a.read_bytes() == b.read_bytes()
    # a failure half-way leaves the previous file untouched and no temp file behind
    before = a.read_bytes()
    calls = {"n": 0}
    real = fmt.pack_linear

    def failing(w, tiling):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk on fire")
        return real(w, tiling)

    monkeypatch.setattr(fmt, "pack_linear", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_weight_file(random_model(small_config(), seed=9), a, Tiling(4, 4))
    assert a.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tlw", "b.tlw"]


def test_meta_must_be_json(tmp_path):
    model = random_model(small_config())
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        write_weight_file(model, tmp_path / "m.tlw", Tiling(4, 4), meta={"bad": object()})
    assert not list(tmp_path.iterdir())


# -- element packings ---------------------------------------------------------------------------

def test_bf16_widening_all_patterns():
    ml_dtypes = pytest.importorskip("ml_dtypes")     # test-side oracle (NumPy 2 only)

    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    ours = unpack_bf16(bits)
    ref = bits.view(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))
    assert unpack_bf16(np.array([0x3F80, 0xC000, 0x7F80, 0x0001], np.uint16)).tolist()[:3] == \
        [1.0, -2.0, float("inf")]
    np.testing.assert_array_equal(pack_bf16(ours), bits)          # round trip, NaNs included
    with pytest.raises(ValueError, match="bfloat16"):
        pack_bf16(np.array([1.0 + 2.0 ** -10], np.float32))


def test_f16_round_trip():
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    h = bits.view(np.float16)
    finite = np.isfinite(h)
    w = unpack_f16(h[finite])
    np.testing.assert_array_equal(pack_f16(w).view(np.uint16), bits[finite])
    with pytest.raises(ValueError, match="float16"):
        pack_f16(np.array([1e-30], np.float32))
    assert fmt.choose_float_storage(np.array([1.0, 0.5], np.float32), "float16") == "float16"
    assert fmt.choose_float_storage(np.array([1.0, 0.1], np.float32)) == "float32"


@pytest.mark.parametrize("dtype", fmt.FLOAT_DTYPES)
def test_float_pack_unpack(dtype):
    x = np.array([0.0, -0.0, 1.0, -2.5, 0.375, 448.0, 2.0 ** -14], np.float32)
    stored = fmt.pack_float(x, dtype)
    assert stored.dtype == {"float32": np.float32, "float16": np.float16,
                            "bfloat16": np.uint16}[dtype]
    np.testing.assert_array_equal(fmt.unpack_float(stored, dtype).view(np.uint32),
                                  x.view(np.uint32))       # -0.0 survives too
    if dtype != "float32":                                 # exact in both 16-bit formats
        assert fmt.choose_float_storage(x, dtype) == dtype
    with pytest.raises(ValueError, match="unknown float storage"):
        fmt.pack_float(x, "float8")


def test_chunked_float_scan(monkeypatch, tmp_path):
    monkeypatch.setattr(fmt, "_CHUNK", 7)        # chunk edges inside rows and sections
    model = random_model(small_config(), seed=5, float_dtype="float16")
    model.embed[-1, -1] = np.float32(0.1)        # one value past the last chunk edge: float32
    wf = read_weight_file(write_weight_file(model, tmp_path / "m.tlw", Tiling(4, 4)))
    assert wf.info("embed").dtype == "float32" and wf.info("final_norm").dtype == "float16"
    assert_models_equal(model, wf.to_model())


def test_linear_pack_unpack():
    rng = np.random.default_rng(0)
    for n, k, t in [(7, 11, Tiling(4, 4)), (16, 84, Tiling(28, 16)), (1, 1, Tiling(2, 3))]:
        w = rng.integers(-1, 2, (n, k)).astype(np.int8)
        packed, shape = fmt.pack_linear(w, t)
        assert packed.nbytes == fmt.code_nbytes(shape)
        np.testing.assert_array_equal(fmt.unpack_linear(packed, shape, n, k), w)


def test_preamble_and_header_round_trip():
    raw = fmt.pack_preamble(1000, 0xDEADBEEF, 1088, 123456)
    assert len(raw) == 64 and raw[:8] == MAGIC
    pre = fmt.unpack_preamble(raw)
    assert pre == {"magic": MAGIC, "version": 1, "preamble_size": 64, "header_offset": 64,
                   "header_nbytes": 1000, "header_crc32": 0xDEADBEEF, "data_offset": 1088,
                   "file_nbytes": 123456}
    hdr = {"b": [1, 2], "a": {"x": np.float32(0.5)}}
    assert fmt.unpack_header(fmt.pack_header(hdr) + b"   ") == {"a": {"x": 0.5}, "b": [1, 2]}


# -- errors -------------------------------------------------------------------------------------

@pytest.fixture()
def good(tmp_path):
    model = random_model(small_config(), float_dtype="bfloat16")
    return write_weight_file(model, tmp_path / "good.tlw", Tiling(4, 4))


def _patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    pre = fmt.unpack_preamble(raw[:64])
    hdr = json.loads(raw[64:64 + pre["header_nbytes"]])
    edit(hdr)
    new = json.dumps(hdr, sort_keys=True, separators=(",", ":")).encode()
    assert len(new) <= pre["data_offset"] - 64
    out = fmt.pack_preamble(len(new), zlib.crc32(new), pre["data_offset"], pre["file_nbytes"])
    path.write_bytes(out + new + b" " * (pre["data_offset"] - 64 - len(new))
                     + raw[pre["data_offset"]:])


def test_wrong_magic(good):
    _patch(good, 0, b"GGUF\0\0\0\0")
    with pytest.raises(WeightFileError, match=f"{good}.*not a tellme weight file"):
        read_weight_file(good)


def test_wrong_version(good):
    _patch(good, 8, struct.pack("<I", 2))
    with pytest.raises(WeightFileError, match=f"{good}.*format version 2 is not supported"):
        read_weight_file(good)


def test_truncated(good):
    data = good.read_bytes()
    good.write_bytes(data[:-100])
    with pytest.raises(WeightFileError, match=f"{good}.*truncated"):
        read_weight_file(good, verify=False)
    good.write_bytes(data[:40])
    with pytest.raises(WeightFileError, match="truncated"):
        read_weight_file(good)


def test_truncated_names_section(good):
    # a consistent preamble but the last section cut short: the message names the section
    raw = good.read_bytes()
    cut = len(raw) - 64
    pre = fmt.unpack_preamble(raw[:64])
    good.write_bytes(fmt.pack_preamble(pre["header_nbytes"], pre["header_crc32"],
                                       pre["data_offset"], cut) + raw[64:cut])
    with pytest.raises(WeightFileError, match=f"{good}, section 'embed': truncated"):
        read_weight_file(good)


def test_section_checksum_mismatch(good):
    wf = read_weight_file(good)
    s = wf.info("layers.1.up_proj.codes")
    del wf
    raw = bytearray(good.read_bytes())
    raw[s.offset + 3] ^= 0x10
    good.write_bytes(bytes(raw))
    with pytest.raises(WeightFileError,
                       match=f"{good}, section 'layers.1.up_proj.codes': checksum mismatch"):
        read_weight_file(good)
    read_weight_file(good, verify=False)         # structure is still fine without verify


def test_nonzero_padding(good):
    raw = bytearray(good.read_bytes())
    raw[-1] = 7                              # the last section's alignment padding
    good.write_bytes(bytes(raw))
    with pytest.raises(WeightFileError, match="section 'embed': alignment padding"):
        read_weight_file(good)


def test_header_checksum_mismatch(good):
    _patch(good, 70, b"#")
    with pytest.raises(WeightFileError, match=f"{good}, section 'header': checksum mismatch"):
        read_weight_file(good)


def test_wrong_code_table(good):
    def edit(h):
        h["encoding"]["patterns"][1], h["encoding"]["patterns"][2] = \
            h["encoding"]["patterns"][2], h["encoding"]["patterns"][1]
    _rewrite_header(good, edit)
    with pytest.raises(WeightFileError, match="encoding field 'patterns'"):
        read_weight_file(good)


def test_missing_section(good):
    def edit(h):
        h["sections"] = [s for s in h["sections"] if s["name"] != "layers.0.post_norm"]
    _rewrite_header(good, edit)
    with pytest.raises(WeightFileError, match=f"{good}, section 'layers.0.post_norm': missing"):
        read_weight_file(good)


def test_shape_inconsistent_with_config(good):
    def edit(h):
        h["config"]["intermediate_size"] = 41
    _rewrite_header(good, edit)
    with pytest.raises(WeightFileError, match=r"section 'layers\.0\.ffn_sub_norm': shape"):
        read_weight_file(good)


def test_missing_file(tmp_path):
    with pytest.raises(WeightFileError, match=r"nope\.tlw: cannot read"):
        read_weight_file(tmp_path / "nope.tlw")


@pytest.mark.parametrize("case", list(CASES))
def test_sizes_match_written_files(tmp_path, case):
    from tellme.studies.sizes import data_bytes

    over, tiling = CASES[case]
    model = random_model(small_config(**over), seed=4, float_dtype="bfloat16")
    wf = read_weight_file(write_weight_file(model, tmp_path / "m.tlw", tiling))
    data = os.path.getsize(wf.path) - wf.sections["scales"].offset
    assert data == sum(data_bytes(model.config, tiling, float_bytes=2).values())
