"""The one-pass (online-softmax) attention form against the two-pass contract:
``tellme study online-softmax`` (docs/hw/attention.md, "Why the engine is not one-pass").

:func:`attention_online` (FP16 streams) keeps an integer running maximum in the log2 domain and
rescales by shifts (numerics-options §4.1). It is *not* the contract: the contract
(:func:`tellme.sim.golden.hw_numerics.softmax_weights`) forms every weight against the exact row
maximum, which a one-pass engine cannot know; this study measures how far a one-pass schedule
would be from it (tests/test_attn_golden.py checks the figures).

    tellme study online-softmax [--trials 200] [--seed 0] [--head-dim 16]
"""

from __future__ import annotations

import argparse

import numpy as np

from tellme.sim.golden.hw_numerics import attention_decode, log2_scores, qk_scores, score_scale
from tellme.spec.numerics import FP16, exp2_neg_frac, int_to_fp32, round_ratio_fp32, to_fp16


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tellme study online-softmax", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200, help="random rows (n in [2, 300))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head-dim", type=int, default=16)
    args = ap.parse_args(argv)
    r = online_vs_contract(args.trials, args.seed, args.head_dim)
    print(f"one-pass vs contract over {args.trials} random rows (head_dim {args.head_dim}, "
          f"FP16 streams): {r['differ']} of {r['outputs']} outputs differ (worst "
          f"{r['worst_rel']:.2g} of the row's largest output); {r['order_dependent']} change "
          f"between forward and reversed key order")
    return 0
