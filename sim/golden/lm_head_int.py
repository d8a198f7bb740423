"""The integer LM head (PL LM-head unit, hw/lm_head.py ``LmHead``): int8 head codes with
float32 row scales, int8 activation codes, exact integer dot products, two FP32 roundings.

Offline (``spec.lm_head.quantize_head``, re-exported here; the host runs it when it loads a
model): for the head W [vocab, d] (float32),
``m_j = max_i |W_ji|``, ``dscale_j = RN32(m_j / 16129)`` (16129 = 127 * 127),
``w8_ji = clip(RNE(W_ji * 127 / m_j), -127, 127)``; an all-zero row gets codes 0 and scale 0.

At run time (:func:`lm_head_int8`, bit for bit the unit's output): ``q`` the final-norm row's
activation codes (``hw_numerics.quantize``), ``A = max(amax, QUANT_EPS)`` (exact, as
``dequant_scale`` takes it), ``acc_j = sum_i q_i w8_ji`` (exact integer),
``s_j = RN32(A * dscale_j)``, ``logit_j = RN32(acc_j * s_j)``. RN32 is round-to-nearest-even to
a 24-bit significand with an unbounded exponent, then: a result below the smallest normal
float32 (2**-126) is flushed to +0, one at or above 2**128 saturates to +-FLT_MAX (neither
happens for a sane model: ``s_j`` ~ 1e-12 .. 1e2, ``|acc_j| < 2**28``); a zero ``acc_j`` or
``s_j`` gives +0.0. (:func:`rn32` is that rounding.)
"""

from __future__ import annotations

import numpy as np

from tellme.spec.lm_head import DSCALE_DEN, MAX_D, PL_TOP_K, quantize_head
from tellme.spec.numerics import QUANT_EPS, StreamFormat, stream_format

__all__ = ["DSCALE_DEN", "FLT_MAX", "lm_head_int8", "lm_head_int8_from_h", "quantize_head",
           "refine_top_k", "top_k",
           "rn32", "row_scales"]

FLT_MAX = float(np.finfo(np.float32).max)


def rn32(v) -> np.ndarray:
    """RN32 of exact float64 values ``v`` (24-bit significand, ties to even, unbounded
    exponent), flushed to +0 below 2**-126 and saturated to +-FLT_MAX at 2**128; zeros give
    +0. float32 array."""
    v = np.asarray(v, dtype=np.float64)
    a = np.abs(v)
    m, e = np.frexp(a)                               # a = m * 2**e, m in [0.5, 1): exact
    r = np.ldexp(np.rint(np.ldexp(m, 24)), e - 24)   # one RNE to 24 bits (2**24 after a carry)
    r = np.where(r >= 2.0 ** 128, FLT_MAX, r)
    r = np.where(r < 2.0 ** -126, 0.0, r)            # flush (and zero)
    return np.where((v < 0) & (r > 0), -r, r).astype(np.float32)


def _amax_rows(amax, rows: int, fmt: StreamFormat) -> np.ndarray:
    a = fmt.check(np.asarray(amax), "amax").reshape(-1)
    if a.size != rows:
        raise ValueError(f"amax has {a.size} values for {rows} rows")
    if np.any(a < 0):
        raise ValueError("amax must be >= 0")
    return np.maximum(a.astype(np.float64), float(QUANT_EPS))   # exact: both on float grids


def row_scales(amax, dscale, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """``s = RN32(A * dscale)`` float32 [rows, vocab] (``A`` of each row of ``amax``): A has
    <= 24 significant bits (a stream value or QUANT_EPS as float32), dscale 24, so the product
    is exact in float64 and :func:`rn32` rounds it once."""
    fmt = stream_format(fmt)
    a = np.asarray(amax)
    A = _amax_rows(a, max(1, a.size), fmt)
    d = np.asarray(dscale, dtype=np.float32).astype(np.float64)
    return rn32(A[:, None] * d[None, :])


def lm_head_int8(q, amax, w8, dscale, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """Logits float32 [rows, vocab] of activation codes ``q`` (int8 [rows, d] or [d]), row
    absmax ``amax`` (stream format ``fmt``, [rows] or scalar), head codes ``w8`` (int8
    [vocab, d]) and row scales ``dscale`` (float32 [vocab], 0 or normal).

    Exact: ``acc`` is an int64 matmul (``|acc| <= 128 * 127 * d < 2**28`` for d <= MAX_D);
    ``A * dscale`` (<= 24 x 24 bits) and ``acc * s`` (<= 28 x 24 bits) are exact in float64, and
    :func:`rn32` rounds each once.
    """
    fmt = stream_format(fmt)
    q = np.asarray(q)
    w8 = np.asarray(w8)
    if q.dtype != np.int8 or w8.dtype != np.int8:
        raise TypeError(f"q and w8 must be int8, got {q.dtype} and {w8.dtype}")
    if w8.ndim != 2:
        raise ValueError(f"w8 must be [vocab, d], got shape {w8.shape}")
    vocab, d = w8.shape
    if d > MAX_D:
        raise ValueError(f"d={d} > {MAX_D}: the products would not be exact")
    q = q.reshape(-1, q.shape[-1]) if q.ndim else q.reshape(1, -1)
    if q.shape[1] != d:
        raise ValueError(f"q has {q.shape[1]} columns, the head {d}")
    dscale = np.asarray(dscale)
    if dscale.dtype != np.float32 or dscale.shape != (vocab,):
        raise TypeError(f"dscale must be float32 [{vocab}], got {dscale.dtype} {dscale.shape}")
    ds = dscale.astype(np.float64)
    if not np.all((ds == 0) | ((ds >= 2.0 ** -126) & np.isfinite(ds))):
        raise ValueError("dscale must be 0 or a positive normal float32")
    A = _amax_rows(amax, q.shape[0], fmt)
    s = rn32(A[:, None] * ds[None, :])                              # [rows, vocab]
    acc = q.astype(np.int64) @ w8.astype(np.int64).T                # [rows, vocab], exact
    return rn32(acc.astype(np.float64) * s.astype(np.float64))


def lm_head_int8_from_h(h16, amax16, w8, dscale, fmt: StreamFormat | None = None
                        ) -> np.ndarray:
    """The final-norm row ``h16`` (stream format) with its absmax: ``hw_numerics.quantize``,
    then :func:`lm_head_int8`."""
    from .hw_numerics import quantize

    q, _ = quantize(h16, amax16, fmt=fmt)
    return lm_head_int8(q, amax16, w8, dscale, fmt=fmt)


def top_k(logits: np.ndarray, k: int = PL_TOP_K) -> np.ndarray:
    """Indices of the ``k`` largest of each row of ``logits`` [rows, vocab], largest first,
    equal values in index order (a stable sort of the negated logits): int64 [rows, k]."""
    lg = np.asarray(logits, dtype=np.float32)
    lg = lg.reshape(-1, lg.shape[-1])
    return np.argsort(-lg, axis=1, kind="stable")[:, :min(k, lg.shape[1])]


def refine_top_k(logits, h16, rows, *, k: int = PL_TOP_K,
                 fmt: StreamFormat | None = None) -> np.ndarray:
    """The PL LM head's logits as the host returns them: ``logits`` [rows, vocab] (the unit's,
    :func:`lm_head_int8`) with its ``k`` largest per row (:func:`top_k`) replaced by the host
    head's logits of those vocabulary rows (``hw_numerics.lm_head`` of the final-norm row
    ``h16`` [rows, d] and ``rows(indices)``, the head's float rows [k, d]). The int8 head
    finds the candidates at the DDR rate; the host's exact head (FP16 weights, exact
    products) decides among them: a few rows of work a token."""
    from .hw_numerics import lm_head

    out = np.array(logits, dtype=np.float32).reshape(-1, np.shape(logits)[-1])
    h = np.asarray(h16).reshape(out.shape[0], -1)
    for r, top in enumerate(top_k(out, k)):
        out[r, top] = lm_head(h[r:r + 1], np.asarray(rows(top), dtype=np.float32), fmt=fmt)[0]
    return out.reshape(np.shape(logits))
