"""The public BitNet b1.58 checkpoints the accelerator is sized for (reference/bitnet.md §1.1,
§1.3): their configurations, by the names the CLI accepts (``--model``).

Sizing, planning, benchmarks and the traffic tables read model shapes from here; a weight file
carries its own :class:`~tellme.spec.config.ModelConfig`, so nothing here limits what runs.
"""

from __future__ import annotations

from .config import ModelConfig

MODELS = {
    "bitnet-b1.58-2B-4T": ModelConfig(
        vocab_size=128256, hidden_size=2560, intermediate_size=6912, num_layers=30, num_heads=20,
        num_kv_heads=5, head_dim=128, activation="relu2", rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=True, max_context=4096),
    "bitnet_b1_58-large": ModelConfig(
        vocab_size=32002, hidden_size=1536, intermediate_size=4096, num_layers=24, num_heads=16,
        num_kv_heads=16, head_dim=96, activation="silu", rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=True, max_context=2048),
    "bitnet_b1_58-3B": ModelConfig(
        vocab_size=32002, hidden_size=3200, intermediate_size=8640, num_layers=26, num_heads=32,
        num_kv_heads=32, head_dim=100, activation="silu", rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=True, max_context=2048),
}


def model_config(name: str) -> ModelConfig:
    """The configuration of a named public checkpoint; ValueError naming the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def layer_shapes(name: str) -> dict[str, tuple[int, int]]:
    """``{linear name: (out, in)}`` of one layer of a named checkpoint (all layers are equal)."""
    return model_config(name).linear_shapes()
