"""Per-block golden functions vs hand-checked cases, in both numerics (hw: exact bits)."""

import math

import numpy as np
import pytest

from tellme.sim.golden import hf, hw_numerics as hw_module
from tellme.spec.numerics import FP16

# these cases pin the FP16 build of the contract (FP24: tests/test_golden_fp24.py)
hw = hw_module.bound(FP16)

F16 = np.float16


def f16(*v):
    return np.array(v, dtype=F16)


# --- quantize ---------------------------------------------------------------------------------

@pytest.mark.parametrize("ops", [hw, hf], ids=["hw", "float"])
def test_quantize_round_half_even_ties(ops):
    # amax 127 -> s_x = 1 exactly, so q = RNE(h)
    h = f16(0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 126.5, -127, 127)
    dt = F16 if ops is hw else np.float32
    q, s = ops.quantize(h.astype(dt)[None], np.array([127], dtype=dt))
    assert float(s[0]) == 1.0
    assert q[0].tolist() == [0, 2, 2, 0, -2, -2, 4, 126, -127, 127]
    assert q.dtype == np.int8


@pytest.mark.parametrize("ops", [hw, hf], ids=["hw", "float"])
def test_quantize_corner_rows(ops):
    dt = F16 if ops is hw else np.float32
    rows = np.array([[0, 0, 0, 0],                 # all-zero row: amax 0 -> clamp 1e-5
                     [-0.0, 0.0, -0.0, 0.0],       # negative zero
                     [3, 3, 3, 3],                 # all equal -> all 127
                     [-5, -5, -5, -5],
                     [1000, 1, -1, 0.5],           # huge outlier: others round to 0
                     [-60000, 60000, 0.25, -65504]], dtype=dt)
    amax = np.abs(rows).max(axis=-1)
    q, s = ops.quantize(rows, amax)
    assert q.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [127] * 4, [-127] * 4,
                          [127, 0, 0, 0], [-116, 116, 0, -127]]
    assert float(s[0]) == pytest.approx(127 / 1e-5, rel=1e-7)
    assert q.min() >= -128 and q.max() <= 127


def test_quant_scale_is_correctly_rounded():
    a = f16(1.0, 3.0, 0.1, 65504, 2.0 ** -24)
    s = hw.quant_scale(a)
    for ai, si in zip(a.astype(np.float64), s, strict=True):
        want = 127 / max(ai, float(np.float32(1e-5)))
        # exactly the nearest float32: error at most half an ulp
        assert abs(float(si) - want) <= np.spacing(np.float32(want)) / 2
    assert float(s[1]) == float(np.float32(127 / 3))


# --- dequantize -------------------------------------------------------------------------------

def test_dequantize_hand_cases():
    # amax 127, weight_scale 1 -> s_tok = 1 exactly: y = RN16(acc)
    acc = np.array([[0, 1, -1, 2049, 2051, 100000, -100000]])
    y = hw.dequantize(acc, f16(127), np.float32(1.0))
    assert y.dtype == F16
    assert y[0].tolist() == [0, 1, -1, 2048, 2052, 65504, -65504]   # ties to even, saturate
    y = hw.dequantize(np.array([[254]]), f16(1.0), np.float32(0.5))  # 254 * 1 * 0.5 / 127
    assert y[0, 0] == 1.0
    yf = hf.dequantize(np.array([[254]]), np.float32([1.0]), np.float32(0.5))
    assert yf[0, 0] == pytest.approx(1.0, rel=1e-6)


def test_dequant_scale_correctly_rounded():
    a = f16(0.7, 3.0, 1000.0)
    ws = np.float32(0.2371)
    s = hw.dequant_scale(a, ws)
    for ai, si in zip(a.astype(np.float64), s, strict=True):
        want = ai * float(ws) / 127
        assert abs(float(si) - want) <= np.spacing(np.float32(want)) / 2 * (1 + 1e-9)


# --- rmsnorm_absmax ---------------------------------------------------------------------------

def test_rmsnorm_hand_cases_hw():
    eps = 1e-5
    x = np.full((1, 8), 2.0, F16)
    h, amax = hw.rmsnorm_absmax(x, np.ones(8, np.float32), eps)
    r = 1 / math.sqrt(4 + float(np.float32(eps)))         # 0.49999937...
    assert float(hw.rms_scale(x, eps)[0]) == float(np.float32(r))
    assert h.dtype == F16 and np.all(h == F16(2 * np.float32(r)))
    assert amax[0] == h.max()
    z = np.zeros((2, 4), F16)
    z[1] = -0.0
    h, amax = hw.rmsnorm_absmax(z, np.ones(4, np.float32), eps)
    assert np.all(h == 0) and np.all(amax == 0)
    assert np.all(np.signbit(h[1]))                        # -0 * g * r stays -0
    assert float(hw.rms_scale(z, eps)[0]) == float(np.float32(1 / math.sqrt(np.float32(eps))))
    # 3-4 row, g = (1, 2): r = 1/sqrt(12.5 + eps)
    x = f16(3, 4)[None]
    h, amax = hw.rmsnorm_absmax(x, np.array([1, 2], np.float32), eps)
    r = np.float32(1 / math.sqrt(12.5 + float(np.float32(eps))))
    assert h[0].tolist() == [float(F16(3 * float(r))), float(F16(8 * float(r)))]
    assert amax[0] == h[0, 1]


def test_rmsnorm_huge_outlier_and_extremes_hw_vs_float():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (3, 256)).astype(F16)
    x[0, 7] = 65504
    x[1, :] = 2.0 ** -24                                   # all subnormal
    x[2, ::2] = -x[2, 1::2]
    g = rng.uniform(0.5, 1.5, 256).astype(np.float32)
    h, amax = hw.rmsnorm_absmax(x, g, 1e-5)
    hf_, _amf = hf.rmsnorm_absmax(x.astype(np.float32), g.astype(F16).astype(np.float32), 1e-5)
    assert np.all(np.isfinite(h.astype(np.float32)))
    # FP16 output rounding only (the FP32 scalar and the exact sum add ~1e-7)
    assert np.allclose(h.astype(np.float32), hf_, rtol=2 ** -11, atol=1e-7)
    assert np.array_equal(amax, np.abs(h).max(axis=-1))


# --- RoPE -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pairing", ["half", "adjacent"])
def test_rope_position_zero_is_identity_and_quarter_turn(pairing):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (1, 2, 8)).astype(F16)
    c, s = hw.rope_table(np.array([0]), 8, 10000.0)
    assert np.all(c == 1) and np.all(s == 0)
    assert np.array_equal(hw.rope(x, c, s, pairing), x)
    c90 = np.zeros((1, 4), F16)
    s90 = np.ones((1, 4), F16)
    y = hw.rope(x, c90, s90, pairing)
    if pairing == "half":
        assert np.array_equal(y[..., :4], -x[..., 4:]) and np.array_equal(y[..., 4:], x[..., :4])
    else:
        assert np.array_equal(y[..., 0::2], -x[..., 1::2])
        assert np.array_equal(y[..., 1::2], x[..., 0::2])


def test_rope_pairings_agree_after_permutation_and_match_float():
    rng = np.random.default_rng(2)
    hd = 16
    x = rng.normal(0, 4, (5, 3, hd)).astype(F16)
    pos = np.arange(100, 105)
    c, s = hw.rope_table(pos, hd, 500000.0)
    perm = np.empty(hd, int)
    perm[0::2], perm[1::2] = np.arange(hd // 2), np.arange(hd // 2) + hd // 2
    y_half = hw.rope(x, c, s, "half")
    y_adj = hw.rope(x[..., perm], c, s, "adjacent")
    assert np.array_equal(y_adj, y_half[..., perm])
    cf, sf = hf.rope_table(pos, hd, 500000.0)
    yf = hf.rope(x.astype(np.float32), cf, sf, "half")
    assert np.allclose(y_half.astype(np.float32), yf, rtol=0, atol=4 * 2 ** -11 * 4 * 4)


def test_rope_rounding_is_fp32_then_fp16():
    # a*c - b*s with products exact in FP32 and one FP32 rounding, then RN16
    x = f16(1.0, 2.0 ** -12)[None, None]
    c, s = f16(1.0)[None], f16(-1.0)[None]
    y = hw.rope(x, c, s, "half")
    assert y[0, 0].tolist() == [float(F16(1 + 2 ** -12)), float(F16(2 ** -12 - 1))]


# --- residual add, gating --------------------------------------------------------------------

def test_residual_add_hand_cases():
    a = f16(1.0, 65504, -65504, -0.0, 1.0, 2.0 ** -24)
    b = f16(2.0 ** -11, 65504, -1000, -0.0, 3 * 2.0 ** -11, 2.0 ** -24)
    y = hw.residual_add(a, b)
    assert y.tolist() == [1.0, 65504, -65504, 0.0, 1.0 + 2.0 ** -9, 2.0 ** -23]
    assert np.signbit(y[3])                                # -0 + -0 = -0
    assert y[0] == 1.0                                     # 1 + 2**-11 is a tie -> even (1)


def test_gated_act_relu2_and_silu_hand_cases():
    g = f16(-3, 0, 3, 300, 20, -20)
    u = f16(5, 5, 2, 1000, 0.5, 7)
    y = hw.gated_act(g, u, "relu2")
    assert y.tolist() == [0, 0, 18, 65504, 200, 0]
    ys = hw.gated_act(g, u, "silu")
    assert ys[4] == 10 and ys[5] == 0 and ys[1] == 0
    yf = hf.gated_act(g.astype(np.float32), u.astype(np.float32), "silu")
    assert abs(float(ys[2]) - yf[2]) < 2.5e-4 * 2 + 2 ** -11 * 6
    with pytest.raises(ValueError, match="activation"):
        hw.gated_act(g, u, "gelu")


# --- attention --------------------------------------------------------------------------------

def test_softmax_weights_hand_cases():
    t = np.array([[0, -(1 << 16), -(2 << 16), -(40 << 16), 5]])
    p = hw.softmax_weights(t)
    e0 = int(hw.exp2_neg_frac(np.array([5]))[0])
    assert p[0].tolist() == [e0, e0 >> 1, e0 >> 2, 0, 2 ** 23][:4] + [2 ** 23]


def test_attention_single_key_returns_v_exactly():
    rng = np.random.default_rng(3)
    q = rng.normal(0, 2, (4, 16)).astype(F16)
    k = rng.normal(0, 2, (1, 2, 16)).astype(F16)
    v = rng.normal(0, 2, (1, 2, 16)).astype(F16)
    o = hw.attention_decode(q, k, v)
    assert np.array_equal(o, np.repeat(v[0], 2, axis=0))   # GQA: heads 0,1 -> kv 0


def test_attention_two_equal_keys_averages():
    q = np.ones((1, 8), F16)
    k = np.ones((2, 1, 8), F16)
    v = np.stack([np.full((1, 8), 1.0), np.full((1, 8), 2.0 ** -3)]).astype(F16)
    o = hw.attention_decode(q, k, v)
    assert np.all(o == F16((1 + 2 ** -3) / 2))


def test_qk_scores_exact_and_rounded():
    q = f16(1.5, -2.0, 2.0 ** -12)
    k = f16(3.0, 0.25, 2.0 ** -12)
    s = hw.qk_scores(q, k)
    # 4.5 - 0.5 + 2**-24 -> the last term rounds to 0 at LSB 2**-20
    assert int(s) == 4 * 2 ** 20
    assert hw.score_scale(64) == round(math.log2(math.e) / 8 * 2 ** 18)


@pytest.mark.parametrize("heads,kvh", [(4, 4), (4, 2), (4, 1)])
def test_attention_hw_matches_float_and_gqa_mapping(heads, kvh):
    rng = np.random.default_rng(heads * 10 + kvh)
    n, hd = 23, 16
    q = rng.normal(0, 1.5, (n, heads, hd)).astype(F16)
    k = rng.normal(0, 1.5, (n, kvh, hd)).astype(F16)
    v = rng.normal(0, 1, (n, kvh, hd)).astype(F16)
    oh = hw.attention_prefill(q, k, v, 0)
    of = hf.attention_prefill(q.astype(np.float32), k.astype(np.float32),
                              v.astype(np.float32), 0)
    # FP16 output rounding + exp2 (1.5e-5) + score LSBs: well inside 2e-3 absolute for |v|~1
    assert np.abs(oh.astype(np.float32) - of).max() < 2e-3
    # decode of the last row equals prefill's last row, bit for bit
    od = hw.attention_decode(q[-1], k, v)
    assert np.array_equal(od, oh[-1])
    # head h uses kv head h // (heads // kvh)
    for h in range(heads):
        kv = h // (heads // kvh)
        one = hw.attention_prefill(q[:, h:h + 1], k[:, kv:kv + 1], v[:, kv:kv + 1], 0)
        assert np.array_equal(one[:, 0], oh[:, h])


def test_attention_prefill_is_causal():
    rng = np.random.default_rng(5)
    q = rng.normal(0, 1, (6, 2, 8)).astype(F16)
    k = rng.normal(0, 1, (6, 2, 8)).astype(F16)
    v = rng.normal(0, 1, (6, 2, 8)).astype(F16)
    o1 = hw.attention_prefill(q, k, v, 0)
    k2, v2 = k.copy(), v.copy()
    k2[4:], v2[4:] = 9, 9                                  # future keys must not matter
    o2 = hw.attention_prefill(q[:4], k2, v2, 0)
    assert np.array_equal(o1[:4], o2)


# --- LM head ---------------------------------------------------------------------------------

def test_lm_head_hand_cases():
    h = f16(1, 2, 2.0 ** -10)[None]
    w = np.array([[3, 4, 0], [0, 0, 2.0 ** -10], [-1, 0.5, 0]], np.float32)
    y = hw.lm_head(h, w)
    assert y.dtype == np.float32
    assert y[0].tolist() == [11.0, 0.0, 0.0]               # 2**-20 rounds away at LSB 2**-16
    rng = np.random.default_rng(4)
    h = rng.normal(0, 2, (3, 64)).astype(F16)
    w = rng.normal(0, 1, (50, 64)).astype(np.float32)
    yh = hw.lm_head(h, w, chunk=1000)                      # several row blocks
    yf = hf.lm_head(h.astype(np.float32), w.astype(F16).astype(np.float32))
    assert np.abs(yh - yf).max() < 64 * 2 ** -17 + 1e-4
