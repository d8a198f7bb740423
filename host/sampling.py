"""Next-token selection from a logits vector: greedy, temperature, top-k, top-p. NumPy only.

Deterministic: greedy takes the lowest index among equal maxima (``argmax``); sampling draws one
uniform number per token from a caller-owned ``numpy.random.Generator``, so a fixed seed gives a
fixed continuation on every platform NumPy supports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """``temperature`` 0 means greedy. ``top_k`` 0 and ``top_p`` 1.0 disable those filters."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not (self.temperature >= 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top-k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator | None) -> int:
    """Pick the next token id from float logits [vocab]."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 1:
        raise ValueError(f"logits must be 1-D, got shape {logits.shape}")
    if params.greedy or params.top_k == 1:
        return int(np.argmax(logits))
    if rng is None:
        raise ValueError("sampling needs a numpy Generator")
    z = logits / params.temperature
    order = np.argsort(-z, kind="stable")           # descending; ties by index
    if params.top_k:
        order = order[:params.top_k]
    zs = z[order]
    p = np.exp(zs - zs[0])
    p /= p.sum()
    if params.top_p < 1.0:
        # Smallest prefix whose mass reaches top_p (always at least one token).
        keep = int(np.searchsorted(np.cumsum(p), params.top_p) + 1)
        order, p = order[:keep], p[:keep]
        p = p / p.sum()
    u = rng.random()
    i = int(np.searchsorted(np.cumsum(p), u, side="right"))
    return int(order[min(i, len(order) - 1)])
