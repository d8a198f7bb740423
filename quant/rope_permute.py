"""Re-pair RoPE for a streaming datapath: permute q/k projection rows so that the hardware's
adjacent pairing (x[2i], x[2i+1]) computes exactly what HF's rotate_half pairing
(x[i], x[i + hd/2]) computes on the original rows (TeLLMe v2 §3.3.3, eq. 6).

Within each head, new row 2i is old row i and new row 2i+1 is old row i + hd/2. RoPE then
rotates the same (value, frequency) pairs, and q.k is a sum over the head dimension that the
common permutation of q and k leaves unchanged, so the attention output (v and o_proj are not
touched) and every later tensor are the same: bit for bit in hw numerics (exact integer score
sums), up to float32 summation order in float numerics.
"""

from __future__ import annotations

import copy

import numpy as np


def half_to_adjacent(head_dim: int) -> np.ndarray:
    """Index map ``perm`` [head_dim]: new[j] = old[perm[j]] (new 2i <- old i, 2i+1 <- i+hd/2)."""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even number, got {head_dim}")
    half = head_dim // 2
    perm = np.empty(head_dim, dtype=np.int64)
    perm[0::2] = np.arange(half)
    perm[1::2] = np.arange(half) + half
    return perm


def permute_rows(w: np.ndarray, heads: int, head_dim: int) -> np.ndarray:
    """Apply :func:`half_to_adjacent` to every head's block of rows of w [heads*hd, K]."""
    if w.shape[0] != heads * head_dim:
        raise ValueError(f"weight has {w.shape[0]} rows, expected heads*head_dim = "
                         f"{heads}*{head_dim}")
    perm = half_to_adjacent(head_dim)
    idx = (np.arange(heads)[:, None] * head_dim + perm[None, :]).reshape(-1)
    return w[idx]


def to_adjacent(model):
    """A copy of a ``half``-paired TernaryModel with q_proj/k_proj rows permuted and
    ``rope_pairing = "adjacent"`` (a model already adjacent is returned as a copy unchanged)."""
    from tellme.quant.model import TernaryLinear

    out = copy.deepcopy(model)
    if model.rope_pairing == "adjacent":
        return out
    if model.rope_pairing != "half":
        raise ValueError(f"rope_pairing must be 'half' or 'adjacent', got "
                         f"{model.rope_pairing!r}")
    c = model.config
    for i, layer in enumerate(out.layers):
        for name, heads in (("q_proj", c.num_heads), ("k_proj", c.num_kv_heads)):
            lin = layer.linears[name]
            try:
                w = permute_rows(lin.w, heads, c.head_dim)
            except ValueError as e:
                raise ValueError(f"layer {i} {name}: {e}") from None
            layer.linears[name] = TernaryLinear(w, lin.scale)
    out.rope_pairing = "adjacent"
    return out
