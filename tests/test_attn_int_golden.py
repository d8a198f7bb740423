"""Golden side of the integer attention contract (sim/golden/attention_int.py): a scalar
Python-int mirror of every step, prefill == decode, key-order independence, closeness to the FP
contract over the same int8 cache, edge cases, the GoldenModel switch, and the cycle model."""

import numpy as np
import pytest

from tellme.quant.random_models import random_model, tiny_config
from tellme.sim.cycles_attn_int import call_cycles, calls_cycles, layer_cycles
from tellme.sim.golden import attention_int as ai, hw_numerics as hw
from tellme.sim.golden.attention_hw import kv_dequant_int8, kv_quant_int8
from tellme.sim.golden.model import GoldenModel
from tellme.spec.attention import decode_calls, kv_schedule, score_scale
from tellme.spec.attention_int import Q_MAX, Q_TOP, T_SAT, W_SHIFT
from tellme.spec.numerics import EXP2_TABLE, FP16, FP24, round_ratio_fp32

FMTS = pytest.mark.parametrize("fmt", [FP16, FP24], ids=["fp16", "fp24"])


def _parts(x, fmt):
    s, sig, sh = fmt.fields(np.asarray(x, fmt.dtype).reshape(1))
    return int(s[0]), int(sig[0]), int(sh[0]) - fmt.frac


def _rnd(x: int, s: int) -> int:
    """floor(x / 2**s + 1/2) for any integer s (Python ints: exact)."""
    return (x + (1 << (s - 1))) >> s if s >= 1 else x << -s


def _exp2(f: int) -> int:
    i, r = f >> 10, f & 1023
    t0, t1 = int(EXP2_TABLE[i]), int(EXP2_TABLE[i + 1])
    return t0 - (((t0 - t1) * r + 512) >> 10)


def _rn32(a: int) -> float:
    m = abs(a)
    if m == 0:
        return 0.0
    sh = max(m.bit_length() - 24, 0)
    q, rem = m >> sh, m & ((1 << sh) - 1)
    half = 1 << (sh - 1) if sh else 0
    q += sh > 0 and (rem > half or (rem == half and q & 1))
    return float(-q if a < 0 else q) * 2.0 ** sh


def mirror(q, kq, ks, vq, vs, c, fmt):
    """One query row and head over n keys, the contract step by step in Python ints."""
    hd = len(q)
    qp = [_parts(x, fmt) for x in q]
    xs = [(-1) ** s * sig * c for s, sig, _ in qp]
    vals = [abs(x) * 2.0 ** e for x, (_, _, e) in zip(xs, qp, strict=True)]
    j = int(np.argmax(vals))
    mmax, emax = abs(xs[j]), qp[j][2]
    g = mmax.bit_length() - 1 + emax - Q_TOP if mmax else 0
    qi = [max(-Q_MAX, min(Q_MAX, _rnd(x, g - e))) for x, (_, _, e) in zip(xs, qp, strict=True)]
    t = []
    for r in range(len(kq)):
        S = sum(qi[ch] * int(kq[r][ch]) for ch in range(hd))
        _, mk, ek = _parts(ks[r], fmt)
        t.append(max(-T_SAT, min(T_SAT, _rnd(S * mk, 2 - g - ek))))
    m = max(t)
    p = []
    for tj in t:
        d = m - tj
        p.append(0 if d >> 16 >= 24 else _exp2(d & 0xFFFF) >> (d >> 16))
    vp = [_parts(x, fmt) for x in vs]
    Y = max(e for _, _, e in vp)
    w = [_rnd(pj * mv, W_SHIFT + Y - ev) for pj, (_, mv, ev) in zip(p, vp, strict=True)]
    A = [sum(w[r] * int(vq[r][ch]) for r in range(len(w))) for ch in range(hd)]
    rl = float(round_ratio_fp32(1, sum(p)))
    return fmt.round(np.array([_rn32(a) * rl * 2.0 ** (Y + W_SHIFT) for a in A]))


def _cache(rng, fmt, n, kvh, hd, scale=2.0):
    k = fmt.round(rng.standard_normal((n, kvh, hd)) * scale)
    v = fmt.round(rng.standard_normal((n, kvh, hd)) * rng.choice([0.01, 1, 50], (n, kvh, 1)))
    return (*kv_quant_int8(k, fmt=fmt), *kv_quant_int8(v, fmt=fmt))


@FMTS
def test_matches_scalar_mirror(fmt):
    rng = np.random.default_rng(1)
    hd, n = 16, 23
    for trial in range(6):
        qs = [2.0, 30.0, 1e-3, 0.0, 2.0 ** -fmt.frac, 60000.0][trial]
        q = fmt.round(rng.standard_normal((1, hd)) * qs)
        kq, ks, vq, vs = _cache(rng, fmt, n, 1, hd)
        ks[::5] = 0                                          # zero rows
        kq[::5] = 0
        c = score_scale(hd)
        got = ai.attention_decode(q, kq, ks, vq, vs, c, fmt=fmt)[0]
        want = mirror(q[0], kq[:, 0], ks[:, 0], vq[:, 0], vs[:, 0], c, fmt)
        assert np.array_equal(fmt.to_bits(got), fmt.to_bits(want)), trial


def test_q_quantiser_range():
    rng = np.random.default_rng(2)
    q = FP24.round(rng.standard_normal((50, 64)) * rng.uniform(1e-4, 1e3, (50, 1)))
    qi, _ = ai.quantize_q(q, score_scale(64), fmt=FP24)
    top = np.abs(qi).max(-1)
    assert top.min() >= 2 ** Q_TOP and top.max() <= Q_MAX


@FMTS
@pytest.mark.parametrize("kvh", [4, 1])
def test_prefill_equals_decode_and_order_free(kvh, fmt):
    rng = np.random.default_rng(kvh)
    n, heads, hd, n_q = 19, 4, 16, 6
    kv = _cache(rng, fmt, n, kvh, hd)
    q = fmt.round(rng.standard_normal((n_q, heads, hd)) * 2)
    start = n - n_q
    pre = ai.attention_prefill(q, *kv, start, fmt=fmt)
    for i in range(n_q):
        m = start + i + 1
        dec = ai.attention_decode(q[i], *(a[:m] for a in kv), fmt=fmt)
        assert np.array_equal(fmt.to_bits(pre[i]), fmt.to_bits(dec))
    perm = rng.permutation(n)
    a = ai.attention_decode(q[0], *kv, fmt=fmt)
    b = ai.attention_decode(q[0], *(x[perm] for x in kv), fmt=fmt)
    assert np.array_equal(fmt.to_bits(a), fmt.to_bits(b))


def test_close_to_fp_contract_over_the_same_cache():
    """Against the FP contract reading the dequantised int8 cache, the integer path differs
    only by the 14-bit q and the 12-bit folded weights (each key's weight rounded to 2**-13 of
    the largest): < 4e-3 of the output scale over 40 keys (1.6e-3 measured)."""
    rng = np.random.default_rng(5)
    for _ in range(5):
        kq, ks, vq, vs = _cache(rng, FP24, 40, 2, 64)
        q = FP24.round(rng.standard_normal((4, 64)) * 2)
        got = ai.attention_decode(q, kq, ks, vq, vs, fmt=FP24)
        ref = hw.attention_decode(q, kv_dequant_int8(kq, ks, fmt=FP24),
                                  kv_dequant_int8(vq, vs, fmt=FP24), fmt=FP24)
        assert np.abs(got - ref).max() <= 4e-3 * np.abs(ref).max()


def test_rejects_bad_inputs():
    kv = _cache(np.random.default_rng(0), FP24, 3, 1, 8)
    with pytest.raises(TypeError, match="int8"):
        ai.attention_decode(np.zeros((1, 8), np.float32), kv[0].astype(np.int16), *kv[1:])
    with pytest.raises(ValueError, match="rnd_shift"):
        ai.rnd_shift(5, 0)


def test_golden_model_switch():
    """GoldenModel(..., "hw"): the integer contract by default, attention="fp" the FP form;
    prefill + decode == prefill, logits close to the FP form's."""
    model = random_model(tiny_config(), seed=3)
    ids = np.arange(11) * 7 % 256
    base = GoldenModel(model, "hw", attention="fp")
    assert "IntAttnOps" not in type(base.ops).__name__
    gm = GoldenModel(model, "hw")
    assert type(gm.ops).__name__ == "IntAttnOps" and gm.attention == "int"
    full = gm.forward(ids, gm.new_cache(32))
    c2 = gm.new_cache(32)
    rows = [gm.forward(ids[:6], c2)] + [gm.forward(np.array([t]), c2) for t in ids[6:]]
    assert np.array_equal(np.concatenate(rows), full)
    ref = base.forward(ids, base.new_cache(32))
    assert np.abs(full - ref).max() < 0.05 * np.abs(ref).max()
    with pytest.raises(ValueError, match="attention"):
        GoldenModel(model, "hw", attention="bogus")
    with pytest.raises(ValueError, match="numerics='hw'"):
        GoldenModel(model, "float", attention="int")


def test_cycle_model_hand_count():
    # n = 5, 2 lanes, head_dim 8, beat 4 (bpr 2), tile 8, q 4 elements per beat: command,
    # q load, the max|q| stages (2), q scales, the g pipeline (4), hand-off to the quantiser,
    # 2 words back to back, 9 cycles until the call may be taken (the take is the last), K
    # segment (5 rows x 2 beats) + drain (one 4-slice DSP cascade, 6 stages, + 8), V segment
    # (2 blocks: the first waits for its 4 weights + 9 cycles, then 8 channels each) + drain,
    # hand-off, 1/L of lane 0 (29), its 8 outputs while lane 1's 1/L runs (29 from lane 0's
    # start), lane 1's 8 outputs, tail (11: the normaliser stages)
    assert kv_schedule(5, 8) == [("K", 0, 5), ("V", 0, 5)]
    want = (1 + 2 * 2 + 2 + 2 + 4 + 1 + 2 * 4 + 9 + (5 * 2 + 14) + (4 + 9 + 2 * 8 + 14)
            + 1 + 29 + 29 + 8 + 11)
    assert call_cycles(5, 2, head_dim=8, beat=4, depth=8) == want
    # a second such call: its q load and quantiser run under the first call's K segment (no
    # K margin at beat 4), so its stream starts at the first hand-off; its own hand-off comes
    # its stream later (the finishing unit is free by then), then the same finish
    assert calls_cycles([(5, 2), (5, 2)], head_dim=8, beat=4, depth=8) == (
        want + 1 + (5 * 2 + 14) + (4 + 9 + 2 * 8 + 14))
    # back to back, the finish of a call overlaps the next call's front
    calls = [(c.n, len(c.lim)) for c in decode_calls(9, 4, 2, 4)]
    alone = [call_cycles(n, nq, head_dim=16, beat=4, depth=8) for n, nq in calls]
    both = calls_cycles(calls, head_dim=16, beat=4, depth=8)
    assert max(alone) < both < sum(alone)
    kw = dict(pos=9, heads=4, kv_heads=2, head_dim=16, lanes=4, beat=4, depth=8)
    assert layer_cycles("decode", **kw) == both
    assert layer_cycles("decode", engines=2, **kw) == alone[0]
