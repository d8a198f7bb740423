"""Attention variants beside the hw contract (NumPy only), for the attention engine's design.

* :func:`kv_quant_int8` / :func:`kv_dequant_int8`: the optional int8 KV cache (one scale per
  token per KV head, in the stream format); the engine consumes the dequantised rows (stream
  format), so attention over an int8 cache is exactly
  ``attention_decode(q, kv_dequant_int8(..., fmt=f), ..., fmt=f)``.
* :func:`attention_online` (FP16 streams): a one-pass (online-softmax) form with an integer running maximum in
  the log2 domain and shift rescaling (numerics-options §4.1). It is *not* the contract: the
  contract (:func:`tellme.sim.golden.hw_numerics.softmax_weights`) forms every weight against the exact
  row maximum, which a one-pass engine cannot know; this function exists to measure how far a
  one-pass schedule would be from it (tests/test_attn_golden.py, docs/hw/attention.md).
"""

from __future__ import annotations

import numpy as np

from .hw_numerics import log2_scores, qk_scores, score_scale
from tellme.spec.numerics import (FP16, StreamFormat, exp2_neg_frac, int_to_fp32, round_ratio_fp32,
                       stream_format, to_fp16)

INT8_QMAX = 127


def kv_quant_int8(x16: np.ndarray, *, fmt: StreamFormat | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8: s = RN_fmt(max|x| / 127), q = clamp(RNE(x / s), -127, 127).

    x16: [..., head_dim] in the stream format ``fmt`` (None: STREAM_FORMAT; one row = one
    token of one KV head). Returns (q int8 [..., head_dim], s [...] in the stream format); an
    all-zero row (or one whose scale underflows) has s = 0 and q = 0. amax/127 and x/s are
    correctly rounded in float64 and (significands of at most 19 bits) can never sit on a
    rounding boundary of the format / of the integers by less than 2**-30 relative unless
    they are on it exactly, so each is a single rounding.
    """
    fmt = stream_format(fmt)
    x = np.asarray(x16)
    if x.dtype != fmt.dtype:
        raise TypeError(f"KV rows must be {fmt.dtype.name} ({fmt.name} stream), got {x.dtype}")
    x = fmt.check(x, "KV rows")
    xf = x.astype(np.float64)
    amax = np.abs(xf).max(axis=-1)
    s = fmt.round(amax / INT8_QMAX)
    sf = s.astype(np.float64)[..., None]
    safe = np.where(sf > 0, sf, 1.0)
    q = np.where(sf > 0, np.clip(np.rint(xf / safe), -INT8_QMAX, INT8_QMAX), 0)
    return q.astype(np.int8), s


def kv_dequant_int8(q: np.ndarray, s16: np.ndarray, *, fmt: StreamFormat | None = None
                    ) -> np.ndarray:
    """RN_fmt(q * s): the row the engine reads (int8 x stream-format product exact in float64,
    one rounding). ``s16``: the row scales in the stream format ``fmt``."""
    fmt = stream_format(fmt)
    s = fmt.check(np.asarray(s16, fmt.dtype) if fmt.man == 10 else np.asarray(s16),
                  "int8 KV scales")
    return fmt.round(np.asarray(q, dtype=np.float64) * s.astype(np.float64)[..., None])


def attention_online(q16: np.ndarray, k16: np.ndarray, v16: np.ndarray, c: int | None = None,
                     order=None) -> np.ndarray:
    """One query, one head, keys in ``order`` (default 0..n-1), one pass.

    Running maximum M = ceil(t / 2**16) * 2**16 (whole octaves); a key's weight is
    p = exp2_neg_frac((M - t) & 0xFFFF) >> ((M - t) >> 16) (0 beyond 24 octaves), so the
    fraction used does not depend on M and rescaling is a shift. When M rises by D octaves,
    L and every A_c shift right by D (floor): that truncation depends on the order of the keys,
    which is why this form cannot be order-free. Final normalisation as in ``sv_output``.
    """
    hd = q16.shape[-1]
    c = score_scale(hd) if c is None else c
    t = log2_scores(qk_scores(q16[None, :], k16, fmt=FP16), c)
    n = len(t)
    order = range(n) if order is None else order
    vf = v16.astype(np.float64)
    M = None
    L = 0
    A = np.zeros(hd, dtype=np.int64)
    for j in order:
        tj = int(t[j])
        mj = -((-tj) >> 16) << 16
        if M is None:
            M = mj
        elif mj > M:
            sh = (mj - M) >> 16
            A = A >> min(sh, 63)
            L >>= min(sh, 63)
            M = mj
        d = M - tj
        k = d >> 16
        p = 0 if k >= 24 else int(exp2_neg_frac(np.int64(d & 0xFFFF))) >> k
        L += p
        A = A + np.rint(p * vf[j] * 2.0).astype(np.int64)
    rl = np.float64(round_ratio_fp32(1, L))
    return to_fp16(int_to_fp32(A) * rl * 0.5)


def online_vs_contract(trials: int = 200, seed: int = 0, head_dim: int = 16) -> dict:
    """Compare :func:`attention_online` with the contract on random rows (n in [2, 300)):
    outputs that differ, outputs that change with key order (forward vs reversed), and the
    worst |difference| relative to the row's largest output."""
    from .hw_numerics import attention_decode

    rng = np.random.default_rng(seed)
    out = {"outputs": 0, "differ": 0, "order_dependent": 0, "worst_rel": 0.0}
    for _ in range(trials):
        n = int(rng.integers(2, 300))
        sc = rng.choice([0.3, 1.0, 3.0])
        q = (rng.standard_normal(head_dim) * sc).astype(np.float16)
        k = (rng.standard_normal((n, head_dim)) * sc).astype(np.float16)
        v = rng.standard_normal((n, head_dim)).astype(np.float16)
        g = attention_decode(q[None], k[:, None], v[:, None], fmt=FP16)[0]
        a = attention_online(q, k, v)
        b = attention_online(q, k, v, order=range(n - 1, -1, -1))
        out["outputs"] += head_dim
        out["differ"] += int((a.view(np.uint16) != g.view(np.uint16)).sum())
        out["order_dependent"] += int((a.view(np.uint16) != b.view(np.uint16)).sum())
        gf = g.astype(np.float64)
        out["worst_rel"] = max(out["worst_rel"], float(np.abs(a.astype(np.float64) - gf).max()
                                                       / np.abs(gf).max()))
    return out


if __name__ == "__main__":
    print(online_vs_contract())


def _int8_round_trip(x, fmt):
    return kv_dequant_int8(*kv_quant_int8(x, fmt=fmt), fmt=fmt)


class Int8KVOps:
    """The hw ops (stream format ``fmt``) with attention reading an int8 KV cache."""

    def __init__(self, base, fmt):
        self._b, self._fmt = base, fmt

    def __getattr__(self, name):
        return getattr(self._b, name)

    def attention_decode(self, q, kc, vc, c=None):
        f = self._fmt
        return self._b.attention_decode(q, _int8_round_trip(kc, f), _int8_round_trip(vc, f), c)

    def attention_prefill(self, q, kc, vc, start, c=None):
        f = self._fmt
        return self._b.attention_prefill(q, _int8_round_trip(kc, f), _int8_round_trip(vc, f),
                                         start, c)


def use_int8_kv(gm) -> None:
    """Make the hw-numerics GoldenModel ``gm`` read its KV cache as int8 (scales in its stream
    format)."""
    gm.ops = Int8KVOps(gm.ops, gm.fmt)
