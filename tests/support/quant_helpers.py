"""Test helpers for the quant area: a small model config (random models come from
tellme.quant.random_models), small HF-style checkpoints written with the real ``safetensors``
package (NumPy API; bf16 through ml_dtypes, test-side only), model comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tellme.quant.model import TernaryModel
from tellme.quant.random_models import tiny_config
from tellme.quant.readers import LINEAR_PATHS, NORM_PATHS, pack_hf_ternary
from tellme.spec.config import LINEAR_NAMES, NORM_NAMES, ModelConfig


def small_config(**kw) -> ModelConfig:
    """A smaller config than ``tiny_config`` (ragged head_dim 6), with BOS/EOS ids."""
    return tiny_config(**{**dict(vocab_size=50, hidden_size=24, intermediate_size=40,
                                 head_dim=6, max_context=64, bos_token_id=1, eos_token_id=2),
                          **kw})


def _st_array(x: np.ndarray, dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes

        return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16)
    return np.asarray(x).astype(dtype)


def hf_config(cfg: ModelConfig, family: str, spelling="v4", dtype="bfloat16",
              quant: dict | None = None) -> dict:
    c = {
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
        "hidden_act": cfg.activation, "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_context,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
    }
    if cfg.head_dim * cfg.num_heads != cfg.hidden_size:
        c["head_dim"] = cfg.head_dim
    if family == "bitnet":
        c.update(model_type="bitnet", architectures=["BitNetForCausalLM"])
    else:
        c.update(model_type="llama", architectures=["BitnetForCausalLM"], weight_bits=1,
                 input_bits=8)
    if spelling == "v4":
        c.update(rope_theta=cfg.rope_theta, torch_dtype=dtype, transformers_version="4.57.6")
    else:
        c.update(rope_parameters={"rope_theta": cfg.rope_theta, "rope_type": "default"},
                 dtype=dtype, transformers_version="5.24.0")
    if quant is not None:
        c["quantization_config"] = {"quant_method": "bitnet", **quant}
    return c


def write_checkpoint(folder, tensors: dict[str, np.ndarray], config: dict, shards=1) -> Path:
    """Write ``tensors`` (NumPy arrays, bf16 as ml_dtypes) + config.json in HF layout."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    names = list(tensors)
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder
    parts = np.array_split(np.arange(len(names)), shards)
    weight_map = {}
    for j, idx in enumerate(parts):
        fn = f"model-{j + 1:05d}-of-{shards:05d}.safetensors"
        save_file({names[i]: tensors[names[i]] for i in idx}, str(folder / fn),
                  metadata={"format": "pt"})
        weight_map.update({names[i]: fn for i in idx})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2))
    return folder


def packed_checkpoint_tensors(model: TernaryModel, dtype="bfloat16", scale_dtype="bfloat16",
                              linear_class="autobitlinear") -> dict:
    """Tensors of a Microsoft-style packed checkpoint holding ``model`` (whose floats must be
    exact in ``dtype``). For ``bitlinear`` the stored weight_scale is 1/scale."""
    t = {"model.embed_tokens.weight": _st_array(model.embed, dtype),
         "model.norm.weight": _st_array(model.final_norm, dtype)}
    if model.lm_head is not None:
        t["lm_head.weight"] = _st_array(model.lm_head, dtype)
    for i, layer in enumerate(model.layers):
        pre = f"model.layers.{i}"
        for n in LINEAR_NAMES:
            lin = layer.linears[n]
            t[f"{pre}.{LINEAR_PATHS[n]}.weight"] = pack_hf_ternary(lin.w)
            s = lin.scale if linear_class == "autobitlinear" else np.float32(1) / lin.scale
            t[f"{pre}.{LINEAR_PATHS[n]}.weight_scale"] = _st_array(np.array([s]), scale_dtype)
        for n in NORM_NAMES:
            t[f"{pre}.{NORM_PATHS['bitnet'][n]}.weight"] = _st_array(layer.norms[n], dtype)
    return t


def master_checkpoint_tensors(cfg: ModelConfig, family: str, dtype: str, seed=0) -> dict:
    """Tensors of a master-weight checkpoint (2B4T-bf16 or 1bitLLM) with random values."""
    rng = np.random.default_rng(seed)
    d = cfg.hidden_size
    widths = {"input_norm": d, "attn_sub_norm": cfg.q_size, "post_norm": d,
              "ffn_sub_norm": cfg.intermediate_size}
    t = {"model.embed_tokens.weight": _st_array(rng.standard_normal((cfg.vocab_size, d)), dtype),
         "model.norm.weight": _st_array(rng.uniform(0.2, 2, d), dtype)}
    if not cfg.tie_word_embeddings:
        t["lm_head.weight"] = _st_array(rng.standard_normal((cfg.vocab_size, d)), dtype)
    for i in range(cfg.num_layers):
        pre = f"model.layers.{i}"
        for n, shape in cfg.linear_shapes().items():
            w = rng.standard_normal(shape) * rng.uniform(0.02, 2.0)
            t[f"{pre}.{LINEAR_PATHS[n]}.weight"] = _st_array(w, dtype)
        for n in NORM_NAMES:
            t[f"{pre}.{NORM_PATHS[family][n]}.weight"] = _st_array(
                rng.uniform(0.2, 2, widths[n]), dtype)
    return t


def assert_models_equal(a: TernaryModel, b: TernaryModel, meta=False):
    assert a.config == b.config
    assert a.rope_pairing == b.rope_pairing
    np.testing.assert_array_equal(a.embed.view(np.uint32), b.embed.view(np.uint32))
    np.testing.assert_array_equal(a.final_norm.view(np.uint32), b.final_norm.view(np.uint32))
    assert (a.lm_head is None) == (b.lm_head is None)
    if a.lm_head is not None:
        np.testing.assert_array_equal(a.lm_head.view(np.uint32), b.lm_head.view(np.uint32))
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers, strict=True):
        for n in LINEAR_NAMES:
            np.testing.assert_array_equal(la.linears[n].w, lb.linears[n].w)
            assert la.linears[n].w.dtype == lb.linears[n].w.dtype == np.int8
            assert np.float32(la.linears[n].scale).view(np.uint32) == \
                np.float32(lb.linears[n].scale).view(np.uint32), n
        for n in NORM_NAMES:
            np.testing.assert_array_equal(la.norms[n].view(np.uint32), lb.norms[n].view(np.uint32))
    if meta:
        assert a.meta == b.meta
