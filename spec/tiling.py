"""TLMM tilings: the (T, Q) geometry a weight file is laid out for. NumPy-free.

T = tables per cycle (T*3 int8 activations consumed per table build), Q = output columns per
cycle. The weight file stores codes in the buffer order of one tiling (spec/codes.py); the
hardware presets in ``tellme.hw`` use the same names and numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tiling:
    t: int
    q: int

    def __post_init__(self):
        for name in ("t", "q"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"Tiling.{name} must be a positive integer, got {v!r}")


# kv260/zcu104 start from TeLLMe's released point (T=28, Q=16: a 140-bit vector in a 2-URAM
# 144-bit word). "sim" is small enough for fast RTL tests. "sim-demo" (the RTL simulation
# build sized for the demo model) has the kv260 tiling, so a file converted for kv260 runs on
# it as is (tilings compare by value).
TILINGS = {
    "sim": Tiling(t=4, q=4),
    "kv260": Tiling(t=28, q=16),
    "zcu104": Tiling(t=28, q=16),
    "sim-demo": Tiling(t=28, q=16),
}


def tiling_for(name: str) -> Tiling:
    try:
        return TILINGS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(TILINGS)}") from None
