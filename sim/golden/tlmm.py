"""Golden TLMM: table-lookup ternary matmul, the integer core of the accelerator.

The hardware builds, for every group of G=3 int8 activations, the 27-entry table of signed
partial sums (TeLLMe's code order, :mod:`tellme.spec.codes`) and accumulates the entries that
the 5-bit weight codes select. The result is exactly the integer dot product ``x @ W.T``; this
module computes it the table way so that the table semantics themselves are specified and
tested, and provides the accumulator-width rule.
"""

from __future__ import annotations

import numpy as np

from tellme.spec.codes import PATTERNS, G
from tellme.spec.tlmm import acc_bits  # noqa: F401  (the accumulator rule, re-exported)


def tlmm_tables(x: np.ndarray) -> np.ndarray:
    """int8 activations [M, 3J] -> tables int32 [M, J, 27] (entry c = PATTERNS[c] . group)."""
    x = np.asarray(x)
    if x.shape[-1] % G:
        raise ValueError(f"K={x.shape[-1]} is not a multiple of {G}; pad first")
    groups = x.reshape(*x.shape[:-1], -1, G).astype(np.int32)
    return groups @ PATTERNS.T.astype(np.int32)


def tlmm(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Table-lookup matmul.

    x: int8 [M, 3J] activations (K padded to a multiple of 3 with zeros).
    codes: uint8 [N, J] weight codes (row n, group j).
    Returns int64 [M, N]: ``sum_j table[m, j, codes[n, j]]``, identical to ``x @ W.T``.
    """
    x = np.asarray(x)
    codes = np.asarray(codes)
    if x.dtype != np.int8:
        raise TypeError(f"activations must be int8, got {x.dtype}")
    tables = tlmm_tables(x).astype(np.int64)          # [M, J, 27]
    m, j, _ = tables.shape
    if codes.shape[-1] != j:
        raise ValueError(f"codes have {codes.shape[-1]} groups, activations {j}")
    acc = np.zeros((m, codes.shape[0]), dtype=np.int64)
    for c in range(1, 27):                             # code 0 selects the zero entry
        sel = (codes == c).astype(np.int64)           # [N, J]
        if sel.any():
            acc += tables[:, :, c] @ sel.T
    return acc


def ternary_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Direct exact integer product int8 x [M, K] . ternary W [N, K]^T -> int64 [M, N].

    Uses float32 BLAS when every partial sum provably fits the 24-bit float32 significand
    (|x| <= 128 and |w| <= 1, so |sum| <= 128*K < 2**24 for K < 131072); exact otherwise.
    ``w`` may already be float32 holding -1/0/+1 (a cached conversion: no copy is made).
    """
    x = np.asarray(x)
    w = np.asarray(w)
    k = x.shape[-1]
    if 128 * k < 2 ** 24:
        wf = w if w.dtype == np.float32 else w.astype(np.float32)
        return (x.astype(np.float32) @ wf.T).astype(np.int64)
    return x.astype(np.int64) @ w.T.astype(np.int64)
