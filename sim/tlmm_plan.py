"""Stimulus and expected results for the TLMM core (engine + ping-pong weight buffer).

Turns a ternary W [N, K] and int8 activations X [M, K] into the beats the hardware consumes
(weight-fill vectors in layout-v1 tile order, one command per tile, activations re-sent per
tile) and the output beats it must produce, using the golden model. Shared by the Amaranth
simulator tests and the cocotb testbenches. NumPy + golden only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tellme.sim.golden.tlmm import ternary_matmul, tlmm
from tellme.spec.codes import CODE_BITS, G, layout_codes


@dataclass
class TileJob:
    nb0: int                       # first column block of the tile
    nbt: int                       # column blocks in the tile
    fill: list[tuple[list[int], int]]   # (v vectors as ints, last) per fill beat
    cmd: dict[str, int]            # n_tokens, kb, nbt
    acts: list[list[int]]          # n_tokens*kb beats of 3T int8
    expect: list[tuple[list[int], int]]  # (Q accumulators, last) per output beat


@dataclass
class TLMMJob:
    t: int
    q: int
    v: int
    n_out: int
    k_in: int
    kb: int
    nb: int
    y: np.ndarray                  # int64 [M, n_out] expected result
    tiles: list[TileJob] = field(default_factory=list)

    def assemble(self, beats_per_tile: list[list[list[int]]]) -> np.ndarray:
        """Output beats (acc lanes only), per tile -> Y [M, n_out] (padded columns dropped)."""
        m = self.y.shape[0]
        out = np.zeros((m, self.nb * self.q), dtype=np.int64)
        for tile, beats in zip(self.tiles, beats_per_tile, strict=False):
            if len(beats) != m * tile.nbt:
                raise AssertionError(f"tile at nb {tile.nb0}: {len(beats)} beats, "
                                     f"expected {m * tile.nbt}")
            arr = np.asarray(beats, dtype=np.int64).reshape(m, tile.nbt * self.q)
            out[:, tile.nb0 * self.q:(tile.nb0 + tile.nbt) * self.q] = arr
        return out[:, :self.n_out]


def vector_ints(codes: np.ndarray) -> np.ndarray:
    """codes [..., T] -> one Python int per vector (code t at bits [5t, 5t+5))."""
    t = codes.shape[-1]
    flat = codes.reshape(-1, t).astype(object)
    out = np.zeros(flat.shape[0], dtype=object)
    for i in range(t):
        out = out + (flat[:, i] << (CODE_BITS * i))
    return out


def make_job(w: np.ndarray, x: np.ndarray, *, t: int, q: int, v: int, tile_nb: int) -> TLMMJob:
    """Build the beats of ``Y = X @ W.T`` for the TLMM core, ``tile_nb`` column blocks/tile."""
    w = np.asarray(w, dtype=np.int8)
    x = np.asarray(x, dtype=np.int8)
    n_out, k_in = w.shape
    if x.ndim != 2 or x.shape[1] != k_in:
        raise ValueError(f"activations {x.shape} do not match weights {w.shape}")
    codes = layout_codes(w, t, q)                 # [NB, KB, Q, T]
    nb, kb = codes.shape[:2]
    kp = kb * t * G
    xp = np.zeros((x.shape[0], kp), dtype=np.int8)
    xp[:, :k_in] = x
    # golden result two ways: table lookup on the padded codes, and the direct product
    codes_rows = codes.transpose(0, 2, 1, 3).reshape(nb * q, kb * t)   # [NP, KB*T]
    y_tab = tlmm(xp, codes_rows)                  # [M, NP]
    y = ternary_matmul(x, w)
    if not np.array_equal(y_tab[:, :n_out], y) or np.any(y_tab[:, n_out:]):
        raise AssertionError("golden tlmm and ternary_matmul disagree")
    job = TLMMJob(t=t, q=q, v=v, n_out=n_out, k_in=k_in, kb=kb, nb=nb, y=y)
    acts = [list(map(int, xp[mi, k * t * G:(k + 1) * t * G]))
            for mi in range(x.shape[0]) for k in range(kb)]
    for nb0 in range(0, nb, tile_nb):
        nbt = min(tile_nb, nb - nb0)
        vecs = vector_ints(codes[nb0:nb0 + nbt])  # [nbt*KB*Q] in [nb][kb][q] order
        beats = [(list(vecs[i:i + v]), int(i + v >= len(vecs))) for i in range(0, len(vecs), v)]
        expect = []
        for mi in range(x.shape[0]):
            for j in range(nbt):
                cols = y_tab[mi, (nb0 + j) * q:(nb0 + j + 1) * q]
                expect.append((list(map(int, cols)), int(j == nbt - 1)))
        job.tiles.append(TileJob(nb0=nb0, nbt=nbt, fill=beats,
                                 cmd=dict(n_tokens=x.shape[0], kb=kb, nbt=nbt),
                                 acts=acts, expect=expect))
    return job


def random_case(rng: np.random.Generator, n_out: int, k_in: int, m: int,
                kind: str = "random") -> tuple[np.ndarray, np.ndarray]:
    """Directed/random (W, X): kinds random, ones (all +1), minus (all -1), zeros, extremes."""
    if kind == "random":
        w = rng.integers(-1, 2, size=(n_out, k_in)).astype(np.int8)
        x = rng.integers(-128, 128, size=(m, k_in)).astype(np.int8)
    elif kind == "ones":
        w = np.ones((n_out, k_in), np.int8)
        x = rng.integers(-128, 128, size=(m, k_in)).astype(np.int8)
    elif kind == "minus":
        w = -np.ones((n_out, k_in), np.int8)
        x = rng.integers(-128, 128, size=(m, k_in)).astype(np.int8)
    elif kind == "zeros":
        w = np.zeros((n_out, k_in), np.int8)
        x = rng.integers(-128, 128, size=(m, k_in)).astype(np.int8)
    elif kind == "extremes":
        # largest-magnitude sums of both signs: every +1 row sees -128, every -1 row sees 127
        w = rng.choice(np.array([-1, 1], np.int8), size=(n_out, k_in))
        x = np.where(rng.integers(0, 2, size=(m, k_in)) == 0, -128, 127).astype(np.int8)
        x[0, :] = -128
        w[0, :] = 1
        if n_out > 1:
            w[1, :] = -1
    else:
        raise ValueError(f"unknown case kind {kind!r}")
    return w, x
