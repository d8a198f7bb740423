"""In-memory ternary model: what the readers produce, the weight file stores and the golden
model runs. NumPy only.

Conventions (HF BitNet semantics, reference/bitnet.md §1.5):

* a linear holds ternary weights ``w`` int8 [out, in] in {-1, 0, 1} and a per-tensor float32
  ``scale`` = mean|W| (multiplicative, ``autobitlinear`` convention): y = (x_q @ w.T) / s_x * scale;
* q/k rows are in HF's split-half ("rotate_half") RoPE order unless ``rope_pairing`` says
  otherwise;
* norms, embeddings and the LM head are float32 (checkpoint values widened exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tellme.spec.codes import check_ternary
from tellme.spec.config import LINEAR_NAMES, NORM_NAMES, ModelConfig


@dataclass
class TernaryLinear:
    """Ternary weights int8 [out, in] and the per-tensor multiplicative scale mean|W|."""

    w: np.ndarray
    scale: np.float32

    def __post_init__(self):
        self.w = np.asarray(self.w)
        if self.w.dtype != np.int8 or self.w.ndim != 2:
            raise TypeError(f"TernaryLinear.w must be int8 [out, in], got {self.w.dtype} "
                            f"{self.w.shape}")
        self.scale = np.float32(self.scale)
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"TernaryLinear.scale must be finite and > 0, got {self.scale}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.w.shape


@dataclass
class Layer:
    """One decoder layer: seven ternary linears and four RMSNorm weight vectors."""

    linears: dict[str, TernaryLinear]
    norms: dict[str, np.ndarray]


@dataclass
class TernaryModel:
    config: ModelConfig
    embed: np.ndarray                       # float32 [vocab, hidden]
    layers: list[Layer]
    final_norm: np.ndarray                  # float32 [hidden]
    lm_head: np.ndarray | None = None       # float32 [vocab, hidden]; None when tied
    rope_pairing: str = "half"              # "half" (HF rotate_half) or "adjacent" (2i, 2i+1)
    meta: dict = field(default_factory=dict)

    @property
    def head(self) -> np.ndarray:
        """The LM-head matrix [vocab, hidden] (the embedding when tied)."""
        return self.embed if self.lm_head is None else self.lm_head

    def validate(self, check_values: bool = True) -> TernaryModel:
        """Check every shape and dtype against the config; raise ValueError naming the tensor."""
        c = self.config

        def expect(name, arr, shape, dtype=np.float32):
            if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
                got = getattr(arr, "shape", type(arr).__name__)
                raise ValueError(f"{name}: expected shape {tuple(shape)}, got {got}")
            if arr.dtype != dtype:
                raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")

        expect("embed", self.embed, (c.vocab_size, c.hidden_size))
        expect("final_norm", self.final_norm, (c.hidden_size,))
        if c.tie_word_embeddings != (self.lm_head is None):
            raise ValueError("lm_head must be None exactly when tie_word_embeddings is set")
        if self.lm_head is not None:
            expect("lm_head", self.lm_head, (c.vocab_size, c.hidden_size))
        if len(self.layers) != c.num_layers:
            raise ValueError(f"expected {c.num_layers} layers, got {len(self.layers)}")
        if self.rope_pairing not in ("half", "adjacent"):
            raise ValueError(f"rope_pairing must be 'half' or 'adjacent', got "
                             f"{self.rope_pairing!r}")
        shapes = c.linear_shapes()
        norm_width = {"input_norm": c.hidden_size, "attn_sub_norm": c.q_size,
                      "post_norm": c.hidden_size, "ffn_sub_norm": c.intermediate_size}
        for i, layer in enumerate(self.layers):
            if set(layer.linears) != set(LINEAR_NAMES):
                raise ValueError(f"layer {i}: linears {sorted(layer.linears)} != "
                                 f"{sorted(LINEAR_NAMES)}")
            if set(layer.norms) != set(NORM_NAMES):
                raise ValueError(f"layer {i}: norms {sorted(layer.norms)} != {sorted(NORM_NAMES)}")
            for name, lin in layer.linears.items():
                expect(f"layers.{i}.{name}.w", lin.w, shapes[name], np.int8)
                if check_values:
                    check_ternary(lin.w, f"layers.{i}.{name}")
            for name, vec in layer.norms.items():
                expect(f"layers.{i}.{name}", vec, (norm_width[name],))
        return self
