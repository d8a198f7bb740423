"""Model configuration shared by the readers, the weight file, the golden model and the hardware.

Pure Python (no NumPy): it is serialised into the weight-file header as JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ACTIVATIONS = ("silu", "relu2")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a BitNet b1.58 decoder (both families).

    ``activation`` is ``"silu"`` (1bitLLM: SiLU(gate)*up) or ``"relu2"`` (Microsoft 2B4T:
    relu(gate)**2*up). ``max_context`` is the longest sequence the model is used for
    (``max_position_embeddings`` of the checkpoint unless overridden).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    activation: str
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    max_context: int
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self):
        def positive(name):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {v!r}")

        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                     "num_heads", "num_kv_heads", "head_dim", "max_context"):
            positive(name)
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"ModelConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"rms_norm_eps must be > 0, got {self.rms_norm_eps!r}")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta!r}")

    @property
    def q_size(self) -> int:
        """Width of the query projection output (num_heads * head_dim)."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of each of the key and value projection outputs."""
        return self.num_kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """[out_features, in_features] of the seven ternary linears of one layer."""
        d, f = self.hidden_size, self.intermediate_size
        return {
            "q_proj": (self.q_size, d),
            "k_proj": (self.kv_size, d),
            "v_proj": (self.kv_size, d),
            "o_proj": (d, self.q_size),
            "gate_proj": (f, d),
            "up_proj": (f, d),
            "down_proj": (d, f),
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        missing = {f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING} - set(d)
        if missing:
            raise ValueError(f"missing ModelConfig fields: {sorted(missing)}")
        return cls(**d)


LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NORM_NAMES = ("input_norm", "attn_sub_norm", "post_norm", "ffn_sub_norm")
