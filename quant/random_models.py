"""Random in-memory BitNet models for tests, studies and numerics sweeps (NumPy only,
deterministic): the one generator both the studies (``tellme study accuracy --random``,
``tellme study golden-speed``) and the tests use."""

from __future__ import annotations

import numpy as np

from tellme.quant.model import Layer, TernaryLinear, TernaryModel
from tellme.spec.config import LINEAR_NAMES, ModelConfig


def tiny_config(**over) -> ModelConfig:
    """A small GQA config (override any field)."""
    base = dict(vocab_size=256, hidden_size=64, intermediate_size=160, num_layers=2,
                num_heads=4, num_kv_heads=2, head_dim=16, activation="relu2",
                rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                max_context=128)
    base.update(over)
    return ModelConfig(**base)


def round_to(x, dtype: str) -> np.ndarray:
    """Round float values to ``dtype`` ("float32", "float16", "bfloat16") and return them as
    float32 (values a checkpoint or weight file in that dtype holds exactly)."""
    if dtype == "bfloat16":       # round to nearest even on the bit pattern (finite values)
        u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
        one, sh = np.uint64(1), np.uint64(16)
        u = (u + np.uint64(0x7FFF) + ((u >> sh) & one)) & np.uint64(0xFFFF0000)
        return u.astype(np.uint32).view(np.float32)
    return np.asarray(x, np.float32).astype(dtype).astype(np.float32)


def _ternary(rng, shape, std, float_dtype):
    """Latent N(0, std) weights quantised like BitNet: W_q = clamp(round(W / mean|W|), -1, 1),
    scale = mean|W| (per tensor; rounded to ``float_dtype``)."""
    lat = rng.normal(0.0, std, size=shape).astype(np.float32)
    scale = np.float32(max(np.abs(lat).mean(dtype=np.float64), 1e-5))
    w = np.clip(np.rint(lat / scale), -1, 1).astype(np.int8)
    return TernaryLinear(w, round_to(scale, float_dtype)[()])


def random_model(config: ModelConfig | None = None, seed: int = 0, std: float = 0.3,
                 embed_std: float = 1.0, head_std: float | None = None,
                 norm_range: tuple[float, float] = (0.5, 1.5),
                 rope_pairing: str = "half", float_dtype: str = "float32",
                 meta: dict | None = None) -> TernaryModel:
    """A random model with realistic magnitudes.

    ``std``: latent std of the ternary linears (sets weight_scale); ``embed_std``: embedding
    std; ``head_std``: std of an untied LM head (default embed_std), make it large for a model
    with peaky logits; norm weights are U(norm_range). ``float_dtype``: every float (embedding,
    head, norms, weight scales) is rounded to this dtype (held as float32), e.g. "bfloat16"
    for a model a bf16 checkpoint holds exactly; the draws do not depend on it.
    """
    c = config or tiny_config()
    rng = np.random.default_rng(seed)
    shapes = c.linear_shapes()
    norm_width = {"input_norm": c.hidden_size, "attn_sub_norm": c.q_size,
                  "post_norm": c.hidden_size, "ffn_sub_norm": c.intermediate_size}

    def fl(x):
        return round_to(x, float_dtype)

    layers = []
    for _ in range(c.num_layers):
        linears = {n: _ternary(rng, shapes[n], std, float_dtype) for n in LINEAR_NAMES}
        norms = {n: fl(rng.uniform(*norm_range, size=w)) for n, w in norm_width.items()}
        layers.append(Layer(linears, norms))
    embed = fl(rng.normal(0.0, embed_std, size=(c.vocab_size, c.hidden_size)))
    head = None
    if not c.tie_word_embeddings:
        hs = embed_std if head_std is None else head_std
        head = fl(rng.normal(0.0, hs, size=(c.vocab_size, c.hidden_size)))
    final = fl(rng.uniform(*norm_range, size=c.hidden_size))
    return TernaryModel(c, embed, layers, final, head, rope_pairing=rope_pairing,
                        meta=dict(meta or {})).validate()


def permute_qk_adjacent(model: TernaryModel) -> TernaryModel:
    """The same model with q/k rows permuted per head from split-half to adjacent-pair order
    (row i -> 2i, row i + hd/2 -> 2i + 1), rope_pairing='adjacent'. Logits are unchanged."""
    c = model.config
    hd = c.head_dim
    perm_head = np.empty(hd, dtype=np.int64)
    perm_head[0::2] = np.arange(hd // 2)
    perm_head[1::2] = np.arange(hd // 2) + hd // 2

    def perm(lin: TernaryLinear, heads: int) -> TernaryLinear:
        idx = (np.arange(heads)[:, None] * hd + perm_head[None, :]).reshape(-1)
        return TernaryLinear(lin.w[idx].copy(), lin.scale)

    layers = []
    for layer in model.layers:
        lin = dict(layer.linears)
        lin["q_proj"] = perm(lin["q_proj"], c.num_heads)
        lin["k_proj"] = perm(lin["k_proj"], c.num_kv_heads)
        layers.append(Layer(lin, dict(layer.norms)))
    return TernaryModel(c, model.embed, layers, model.final_norm, model.lm_head,
                        rope_pairing="adjacent", meta=dict(model.meta))
