"""Directed attention cases whose outputs (stream format: FP16, FP24) depend on the last bit
of the internal FP32 roundings (1/L, RN32(A)) and of the exp2 interpolation.

Random data rarely exposes such bits: the final rounding to the stream format hides a 1-ulp
FP32 change unless the exact result lies within ~2**-24 of a rounding midpoint (FP16: about 1
output in 8,000; FP24, 8 fewer dropped bits: about 1 in 30). This
module searches random rows with the golden arithmetic and keeps those where a 1-ulp change of
one of these intermediates changes an output, so an RTL test over them fails on any such
rounding slip (tests/rtl/tb_attn_engine.py::test_rounding_sensitive).
"""

from __future__ import annotations

import math

import numpy as np

from tellme.sim.golden import hw_numerics as hw
from tellme.spec.numerics import int_to_fp32, round_ratio_fp32, stream_format


def _finish(acc, L, rl_delta=0, a_delta=0, rl_trunc=False, a_trunc=False, fmt=None):
    """Golden finish (o = RN_fmt(RN32(A) * RN32(1/L) / 2)) or a variant: 1/L or A moved by
    ``*_delta`` ulps, or truncated instead of rounded (``*_trunc``)."""
    L = int(L)
    if rl_trunc:
        b = (L - 1).bit_length()
        rl = math.ldexp((1 << (b + 23)) // L, -(b + 23))
    else:
        rl = float(round_ratio_fp32(1, L))
    if rl_delta:
        rl = math.ldexp(math.frexp(rl)[0] * 2 ** 24 + rl_delta, math.frexp(rl)[1] - 24)
    if a_trunc:
        mag = np.abs(acc)
        sh = np.array([max(int(x).bit_length() - 24, 0) for x in mag], dtype=np.int64)
        a = np.where(acc < 0, -1.0, 1.0) * np.ldexp((mag >> sh).astype(np.float64), sh)
    else:
        a = int_to_fp32(acc)
    if a_delta:
        m, e = np.frexp(a)
        a = np.ldexp(np.round(m * 2.0 ** 24) + a_delta * np.sign(a), e - 24)
    return stream_format(fmt).round(a * rl * 0.5)


VARIANTS = ({"rl_trunc": True}, {"a_trunc": True}, {"rl_delta": -1}, {"rl_delta": 1},
            {"a_delta": -1}, {"a_delta": 1})


def _parts(q, k, v, c, fmt=None):
    t = hw.log2_scores(hw.qk_scores(q[None, :], k, fmt=fmt), c)
    p = hw.softmax_weights(t)
    acc = np.rint(p[:, None].astype(np.float64) * v.astype(np.float64) * 2.0).astype(
        np.int64).sum(axis=0)
    return p, acc, int(p.sum())


def sensitive_rows(count: int, head_dim: int, seed: int = 0, max_n: int = 12, fmt=None):
    """Up to ``count`` (q [hd], k [n, hd], v [n, hd]) rows in the stream format ``fmt`` (n in
    [2, max_n]) whose golden output changes when RN32(1/L) or RN32(A) is truncated or moved
    by one ulp; the rows are taken round-robin over :data:`VARIANTS` so that every variant is
    caught."""
    fmt = stream_format(fmt)
    r = fmt.round
    rng = np.random.default_rng(seed)
    c = hw.score_scale(head_dim)
    out = []
    for _ in range(400_000):
        if len(out) >= count:
            break
        want = VARIANTS[len(out) % len(VARIANTS)]
        n = int(rng.integers(2, max_n + 1))
        q = r(rng.standard_normal(head_dim) * 0.5)
        k = r(rng.standard_normal((n, head_dim)) * 0.5)
        v = r(rng.standard_normal((n, head_dim)))
        _p, acc, L = _parts(q, k, v, c, fmt)
        ref = _finish(acc, L, fmt=fmt)
        if not np.array_equal(fmt.to_bits(_finish(acc, L, fmt=fmt, **want)), fmt.to_bits(ref)):
            out.append((q, k, v))
    return out
