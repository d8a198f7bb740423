"""tellme.quant.readers on small real safetensors checkpoints in the three styles."""

import json
from pathlib import Path

import numpy as np
import pytest

from tellme.quant.random_models import random_model
from tellme.quant.readers import (
    CheckpointError,
    absmean_quantize,
    pack_hf_ternary,
    read_checkpoint,
    unpack_hf_ternary,
)

from .support.quant_helpers import (
    assert_models_equal,
    hf_config,
    master_checkpoint_tensors,
    packed_checkpoint_tensors,
    small_config,
    write_checkpoint,
)

FIXTURES = Path(__file__).parent / "fixtures" / "hf"
OFFLINE = {"linear_class": "autobitlinear", "quantization_mode": "offline"}
ONLINE = {"linear_class": "autobitlinear", "quantization_mode": "online"}


# -- HF block-row packing -------------------------------------------------------------------------

def test_hf_pack_layout_by_hand():
    # out=8 -> R=2: packed row r holds logical rows r, R+r, 2R+r, 3R+r in bits 1:0, 3:2, 5:4, 7:6
    w = np.array([[-1], [0], [1], [1], [0], [-1], [1], [0]], np.int8)
    c = [int(x) + 1 for x in w[:, 0]]                 # 0 1 2 2 1 0 2 1
    packed = pack_hf_ternary(w)
    assert packed.shape == (2, 1)
    assert packed[0, 0] == c[0] | c[2] << 2 | c[4] << 4 | c[6] << 6
    assert packed[1, 0] == c[1] | c[3] << 2 | c[5] << 4 | c[7] << 6
    np.testing.assert_array_equal(unpack_hf_ternary(packed), w)


def test_hf_unpack_matches_transformers_docstring_example():
    # the worked example in transformers/integrations/bitnet.py unpack_weights (first six rows
    # printed there; rows 6-7 follow from the same rule)
    packed = np.array([[0b10100001, 0b00011000], [0b10010000, 0b00001010]], np.uint8)
    want = [[0, -1], [-1, 1], [-1, 1], [-1, 1], [1, 0], [0, -1], [1, -1], [1, -1]]
    np.testing.assert_array_equal(unpack_hf_ternary(packed), want)
    np.testing.assert_array_equal(pack_hf_ternary(np.array(want, np.int8)), packed)


def test_hf_pack_round_trip_and_invalid_code():
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, (40, 13)).astype(np.int8)
    np.testing.assert_array_equal(unpack_hf_ternary(pack_hf_ternary(w)), w)
    bad = pack_hf_ternary(w)
    bad[3, 2] |= 0b11 << 4
    with pytest.raises(ValueError, match="invalid 2-bit code 3"):
        unpack_hf_ternary(bad)


# -- packed 2B4T style ----------------------------------------------------------------------------

@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("spelling", ["v4", "v5"])
@pytest.mark.parametrize("tied", [True, False])
def test_packed_autobitlinear(tmp_path, shards, spelling, tied):
    cfg = small_config(tie_word_embeddings=tied)
    model = random_model(cfg, seed=1, float_dtype="bfloat16")
    write_checkpoint(tmp_path, packed_checkpoint_tensors(model),
                     hf_config(cfg, "bitnet", spelling, quant=OFFLINE), shards=shards)
    got = read_checkpoint(tmp_path)
    assert_models_equal(model, got)
    assert got.meta["style"] == "bitnet-packed"
    assert got.meta["checkpoint_dtype"] == "bfloat16"
    assert "weight_quant_rel_l2" not in got.meta


def test_packed_bitlinear_reciprocal_scale(tmp_path):
    cfg = small_config()
    model = random_model(cfg, seed=2)
    tensors = packed_checkpoint_tensors(model, dtype="float32", scale_dtype="float32",
                                        linear_class="bitlinear")
    write_checkpoint(tmp_path, tensors, hf_config(
        cfg, "bitnet", quant={"linear_class": "bitlinear", "quantization_mode": "offline"}))
    got = read_checkpoint(tmp_path)
    for i, layer in enumerate(got.layers):
        for n, lin in layer.linears.items():
            np.testing.assert_array_equal(lin.w, model.layers[i].linears[n].w)
            stored = tensors[f"model.layers.{i}.{_path(n)}.weight_scale"][0]
            assert lin.scale == np.float32(1.0 / np.float64(stored))
            # within half an ulp of the original mean|W|-style scale
            assert abs(lin.scale - model.layers[i].linears[n].scale) <= \
                np.spacing(model.layers[i].linears[n].scale)


def _path(n):
    from tellme.quant.readers import LINEAR_PATHS

    return LINEAR_PATHS[n]


def test_packed_without_quantization_config_is_inferred(tmp_path):
    cfg = small_config()
    model = random_model(cfg, seed=4, float_dtype="bfloat16")
    write_checkpoint(tmp_path, packed_checkpoint_tensors(model), hf_config(cfg, "bitnet"))
    got = read_checkpoint(tmp_path)
    assert_models_equal(model, got)
    assert "assumed autobitlinear offline" in got.meta["quantization_config"]


# -- master weights (2B4T-bf16, 1bitLLM fp16) -------------------------------------------------

def _torch_weight_quant(w32):
    """HF transformers' WeightQuant.forward, verbatim arithmetic, in torch fp32."""
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(np.ascontiguousarray(w32, dtype=np.float32))
    s = 1.0 / t.abs().mean().clamp_(min=1e-5)
    q = (t * s).round().clamp(-1, 1)
    return q.numpy().astype(np.int8), (q / s).numpy(), np.float32(s.item())


@pytest.mark.parametrize("style", ["bitnet-master", "1bitllm"])
@pytest.mark.parametrize("spelling", ["v4", "v5"])
def test_master_weights_quantised_like_hf(tmp_path, style, spelling):
    import ml_dtypes

    family = "bitnet" if style == "bitnet-master" else "llama"
    dtype = "bfloat16" if family == "bitnet" else "float16"
    cfg = small_config(activation="relu2" if family == "bitnet" else "silu",
                       num_kv_heads=2 if family == "bitnet" else 4,
                       tie_word_embeddings=family == "bitnet")
    tensors = master_checkpoint_tensors(cfg, family, dtype, seed=5)
    write_checkpoint(tmp_path, tensors, hf_config(
        cfg, family, spelling, dtype=dtype, quant=ONLINE if family == "bitnet" else None),
        shards=2 if spelling == "v5" else 1)
    got = read_checkpoint(tmp_path)
    assert got.config == cfg
    assert got.meta["style"] == style and got.meta["checkpoint_dtype"] == dtype
    exact_scales = 0
    for i, layer in enumerate(got.layers):
        for n, lin in layer.linears.items():
            w = np.asarray(tensors[f"model.layers.{i}.{_path(n)}.weight"]).astype(np.float32)
            q, deq, s = _torch_weight_quant(w)
            np.testing.assert_array_equal(lin.w, q)
            if np.float32(1) / lin.scale == s or lin.scale == np.float32(np.float32(1) / s):
                exact_scales += 1
                # the stored scale reproduces HF's dequantised weights exactly
                np.testing.assert_array_equal(lin.w * lin.scale, deq)
            else:   # torch's float32 cascade mean landed an ulp away (see absmean_quantize)
                assert abs(float(lin.scale) * float(s) - 1) < 4e-7
            err = got.meta["weight_quant_rel_l2"][f"layers.{i}.{n}"]
            assert err == pytest.approx(np.linalg.norm(lin.w * np.float64(lin.scale) - w)
                                        / np.linalg.norm(w.astype(np.float64)))
            assert 0.2 < err < 0.7          # Gaussian weights: ternary absmean error ~0.5
    assert exact_scales >= len(got.layers) * 7 // 2
    # norms and embedding are the checkpoint's 16-bit values widened exactly
    emb = tensors["model.embed_tokens.weight"]
    np.testing.assert_array_equal(got.embed, np.asarray(emb).astype(np.float32))
    sub = "self_attn.attn_sub_norm" if family == "bitnet" else "self_attn.inner_attn_ln"
    np.testing.assert_array_equal(got.layers[1].norms["attn_sub_norm"],
                                  tensors[f"model.layers.1.{sub}.weight"].astype(np.float32))
    if family == "bitnet":
        assert emb.dtype == ml_dtypes.bfloat16


def test_absmean_quantize_rules():
    # ties round half to even; the 1e-5 clamp; the scale is 1/s computed in float32
    w = np.array([0.5, -0.5, 1.5, 2.0, 0.0, -3.0], np.float32)   # mean|W| = 7.5/6 = 1.25
    wq, scale = absmean_quantize(w * np.float32(1.25))             # w*s = the values above
    np.testing.assert_array_equal(wq, [0, 0, 1, 1, 0, -1])
    assert scale == np.float32(1) / (np.float32(1) / np.float32(1.5625))
    wq, scale = absmean_quantize(np.full(4, 1e-7, np.float32))
    np.testing.assert_array_equal(wq, 0)
    assert scale == np.float32(1) / (np.float32(1) / np.float32(1e-5))


def test_v4_and_v5_spellings_agree(tmp_path):
    cfg = small_config()
    model = random_model(cfg, seed=6, float_dtype="bfloat16")
    t = packed_checkpoint_tensors(model)
    a = write_checkpoint(tmp_path / "a", t, hf_config(cfg, "bitnet", "v4", quant=OFFLINE))
    b = write_checkpoint(tmp_path / "b", t, hf_config(cfg, "bitnet", "v5", quant=OFFLINE))
    assert_models_equal(read_checkpoint(a), read_checkpoint(b))


def test_config_fields_map(tmp_path):
    cfg = small_config(max_context=77, rope_theta=123.0, activation="silu", rms_norm_eps=1e-6)
    model = random_model(cfg, seed=7, float_dtype="bfloat16")
    c = hf_config(cfg, "bitnet", "v5", quant=OFFLINE)
    c["eos_token_id"] = [2, 9]
    write_checkpoint(tmp_path, packed_checkpoint_tensors(model), c)
    got = read_checkpoint(tmp_path).config
    assert (got.max_context, got.rope_theta, got.activation, got.rms_norm_eps,
            got.eos_token_id) == (77, 123.0, "silu", 1e-6, 2)


def test_tied_checkpoint_with_redundant_lm_head(tmp_path):
    cfg = small_config()
    model = random_model(cfg, seed=8, float_dtype="bfloat16")
    t = packed_checkpoint_tensors(model)
    t["lm_head.weight"] = t["model.embed_tokens.weight"]
    write_checkpoint(tmp_path, t, hf_config(cfg, "bitnet", quant=OFFLINE))
    assert read_checkpoint(tmp_path).lm_head is None


def test_reader_is_numpy_only():
    from .test_imports import imported_after, third_party

    assert third_party(imported_after("import tellme.quant.readers, tellme.quant.loader")) \
        == set()


# -- errors ---------------------------------------------------------------------------------------

@pytest.fixture()
def packed(tmp_path):
    cfg = small_config()
    model = random_model(cfg, seed=10, float_dtype="bfloat16")
    return cfg, packed_checkpoint_tensors(model), hf_config(cfg, "bitnet", quant=OFFLINE)


def _expect(folder, pattern):
    with pytest.raises(CheckpointError, match=pattern):
        read_checkpoint(folder)


def test_error_unknown_architecture(tmp_path, packed):
    _cfg, t, c = packed
    write_checkpoint(tmp_path / "a", t, {**c, "model_type": "gpt2"})
    _expect(tmp_path / "a", r"a/config.json: unsupported model_type 'gpt2'")
    write_checkpoint(tmp_path / "b", t, {**c, "model_type": "llama",
                                         "architectures": ["LlamaForCausalLM"]})
    _expect(tmp_path / "b", r"b/config.json: model_type 'llama' .*not a BitNet")


def test_error_missing_tensor(tmp_path, packed):
    _cfg, t, c = packed
    del t["model.layers.1.mlp.ffn_sub_norm.weight"]
    write_checkpoint(tmp_path, t, c)
    _expect(tmp_path, r"tensor 'model.layers.1.mlp.ffn_sub_norm.weight' is missing "
                      r"\(looked in model.safetensors\)")


def test_error_missing_lm_head_when_untied(tmp_path, packed):
    _cfg, t, c = packed
    write_checkpoint(tmp_path, t, {**c, "tie_word_embeddings": False})
    _expect(tmp_path, r"tensor 'lm_head.weight' is missing")


def test_error_wrong_shape(tmp_path, packed):
    _cfg, t, c = packed
    t["model.layers.0.self_attn.k_proj.weight"] = t["model.layers.0.self_attn.q_proj.weight"]
    write_checkpoint(tmp_path, t, c)
    _expect(tmp_path, r"model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' has "
                      r"shape \[6, 24\], expected \[3, 24\]")


def test_error_wrong_dtype(tmp_path, packed):
    _cfg, t, c = packed
    name = "model.layers.0.mlp.up_proj.weight"
    t[name] = t[name].astype(np.int8)
    write_checkpoint(tmp_path / "a", t, c)
    _expect(tmp_path / "a", rf"model.safetensors: tensor '{name}' has dtype I8, expected U8")
    # master-weight mode given packed weights
    write_checkpoint(tmp_path / "b", packed[1], {**c, "quantization_config": {
        "quant_method": "bitnet", **ONLINE}})
    _expect(tmp_path / "b", r"tensor 'model.layers.0.self_attn.q_proj.weight' has dtype U8, "
                            r"expected F32 or F16 or BF16")


def test_error_bad_scale(tmp_path, packed):
    _cfg, t, c = packed
    name = "model.layers.1.self_attn.o_proj.weight_scale"
    t[name] = np.array([-1.0], np.float32)
    write_checkpoint(tmp_path, t, c)
    _expect(tmp_path, rf"tensor '{name}' = -1.0 is not a positive finite scale")


def test_error_invalid_packed_code(tmp_path, packed):
    _cfg, t, c = packed
    name = "model.layers.1.mlp.down_proj.weight"
    t[name] = t[name].copy()
    t[name][0, 0] = 0xFF
    write_checkpoint(tmp_path, t, c)
    _expect(tmp_path, rf"model.safetensors: tensor '{name}': invalid 2-bit code 3")


def test_error_truncated_safetensors(tmp_path, packed):
    _cfg, t, c = packed
    write_checkpoint(tmp_path, t, c)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:-10])
    _expect(tmp_path, r"model.safetensors: truncated safetensors file: tensor '.*' ends at byte")
    f.write_bytes(data[:5])
    _expect(tmp_path, r"model.safetensors: truncated safetensors file")
    f.write_bytes(data[:200])
    _expect(tmp_path, r"model.safetensors: truncated or not a safetensors file")


def test_error_missing_config(tmp_path, packed):
    write_checkpoint(tmp_path, packed[1], packed[2])
    (tmp_path / "config.json").unlink()
    _expect(tmp_path, r"config.json: missing config.json")


def test_error_no_weights(tmp_path, packed):
    (tmp_path / "config.json").write_text(json.dumps(packed[2]))
    _expect(tmp_path, r"no model.safetensors or model.safetensors.index.json")


def test_error_missing_shard(tmp_path, packed):
    write_checkpoint(tmp_path, packed[1], packed[2], shards=3)
    (tmp_path / "model-00002-of-00003.safetensors").unlink()
    _expect(tmp_path, r"model.safetensors.index.json: shard 'model-00002-of-00003.safetensors' "
                      r"\(holding '.*' and others\) is missing")


def test_error_index_names_tensor_not_in_shard(tmp_path, packed):
    write_checkpoint(tmp_path, packed[1], packed[2], shards=2)
    idx = tmp_path / "model.safetensors.index.json"
    j = json.loads(idx.read_text())
    j["weight_map"]["model.layers.9.extra.weight"] = "model-00001-of-00002.safetensors"
    idx.write_text(json.dumps(j))
    _expect(tmp_path, r"model-00001-of-00002.safetensors: tensor 'model.layers.9.extra.weight' "
                      r"listed in model.safetensors.index.json is not in the shard")


@pytest.mark.parametrize("edit,pattern", [
    ({"hidden_act": "gelu"}, r"hidden_act 'gelu' is not supported"),
    ({"rope_parameters": {"rope_theta": 1e4, "rope_type": "llama3"}},
     r"rope_type 'llama3' is not supported"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, r"rope_scaling .* not supported"),
    ({"quantization_config": {"quant_method": "gptq"}}, r"quant_method 'gptq' is not 'bitnet'"),
    ({"quantization_config": {"quant_method": "bitnet", "linear_class": "foo"}},
     r"linear_class 'foo' is not supported"),
    ({"hidden_size": None}, r"config.json: field 'hidden_size' must be an integer, got None"),
    ({"rms_norm_eps": None}, r"config.json: field 'rms_norm_eps' must be a number, got None"),
    ({"rope_theta": "big"}, r"config.json: field 'rope_theta' must be a number, got 'big'"),
    ({"num_key_value_heads": 3}, r"config.json: num_heads \(4\) must be a multiple"),
])
def test_error_config_fields(tmp_path, packed, edit, pattern):
    _cfg, t, c = packed
    write_checkpoint(tmp_path, t, {**c, **edit})
    _expect(tmp_path, pattern)


def test_omitted_field_means_class_default(tmp_path, packed):
    # HF writes config.json as a diff against the config class: an omitted hidden_size is
    # BitNetConfig's 2560, which then does not match the tensors
    _cfg, t, c = packed
    write_checkpoint(tmp_path, t, {k: v for k, v in c.items() if k != "hidden_size"})
    _expect(tmp_path, r"tensor 'model.embed_tokens.weight' has shape \[50, 24\], expected "
                      r"\[50, 2560\]")
    c2 = {k: v for k, v in c.items() if k not in ("hidden_act", "num_key_value_heads")}
    c2["num_attention_heads"] = 5 * 4
    c2["head_dim"] = 6
    # num_key_value_heads omitted -> 5 (BitNetConfig), hidden_act omitted -> relu2
    from tellme.quant.readers import parse_config

    fam, mc, notes = parse_config(c2)
    assert (fam, mc.num_kv_heads, mc.activation) == ("bitnet", 5, "relu2")
    assert set(notes["defaults_used"]) == {"hidden_act", "num_key_value_heads"}


def test_error_not_a_folder(tmp_path):
    _expect(tmp_path / "nothing", r"nothing: not a checkpoint folder")


# -- HF-oracle fixtures (generated with transformers by tests/fixtures/hf tooling) --------------

def _fixture_folders():
    if not FIXTURES.is_dir():
        return []
    # hidden folders are the generator's work in progress
    return sorted(p.parent for p in FIXTURES.rglob("config.json")
                  if not any(part.startswith(".") for part in p.relative_to(FIXTURES).parts)
                  and ((p.parent / "model.safetensors").exists()
                       or (p.parent / "model.safetensors.index.json").exists()))


@pytest.mark.skipif(not _fixture_folders(), reason="no HF fixtures under tests/fixtures/hf yet")
@pytest.mark.parametrize("folder", _fixture_folders(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_reads_every_hf_fixture(folder, tmp_path):
    from tellme.quant.format import read_weight_file, write_weight_file
    from tellme.spec.tiling import TILINGS

    model = read_checkpoint(folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert model.config.num_layers == cfg["num_hidden_layers"]
    assert model.config.hidden_size == cfg["hidden_size"]
    assert model.config.tie_word_embeddings == (model.lm_head is None)
    for layer in model.layers:
        for lin in layer.linears.values():
            assert set(np.unique(lin.w)) <= {-1, 0, 1}
    fx = folder / "fixture.json"
    spec = json.loads(fx.read_text()).get("spec") if fx.exists() else None
    if spec:        # the generator's description of the checkpoint (tests/oracle/make_fixtures.py)
        c = model.config
        assert (c.vocab_size, c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads,
                c.num_kv_heads, c.activation, c.tie_word_embeddings, c.rope_theta,
                c.max_context) == (spec["vocab"], spec["hidden"], spec["intermediate"],
                                   spec["layers"], spec["heads"], spec["kv_heads"], spec["act"],
                                   spec["tied"], spec["rope_theta"],
                                   spec["max_position_embeddings"])
        style = ("1bitllm" if spec.get("family") == "1bitllm" else
                 "bitnet-packed" if spec["mode"] == "offline" else "bitnet-master")
        assert model.meta["style"] == style
        assert model.meta["checkpoint_dtype"] == spec["storage"]
    # and through the weight file, exactly
    path = write_weight_file(model, tmp_path / "f.tlw", TILINGS["sim"])
    assert_models_equal(model, read_weight_file(path).to_model())
