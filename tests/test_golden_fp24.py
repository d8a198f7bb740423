"""The FP24 stream format (1-5-18) and the hw functions at FP24, against exact rationals.

Every reference here is computed with Python Fractions (exact) and rounded by
:func:`rn_exact`, a from-the-definition rounding: nearest, ties to even, FP16's exponent range
with gradual underflow, saturation at the largest finite value.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from tellme.sim.golden import hw_numerics as hw
from tellme.spec.numerics import (
    FP16,
    FP24,
    FP32_GRID,
    StreamFormat,
    round_product,
    round_sum2,
    silu_fx,
    sum_squares,
)


def rn_exact(v: Fraction, man: int = 18) -> float:
    """RN of an exact rational to 1-5-man (saturating)."""
    if v == 0:
        return 0.0
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    if Fraction(2) ** (e + 1) <= a:
        e += 1
    q = Fraction(2) ** (max(e, -14) - man)
    k = a / q
    fl = k.numerator // k.denominator
    rem = k - fl
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2):
        fl += 1
    r = min(fl * q, Fraction((2 ** (man + 1) - 1) * 2 ** (15 - man)))
    return float(r if v > 0 else -r)


def grid_values(rng, n, fmt=FP24):
    """Stream values over the whole range: normals of every exponent, subnormals, extremes."""
    mags = rng.standard_normal(n) * np.ldexp(1.0, rng.integers(-36, 17, n))
    extra = [0.0, -0.0, 2.0 ** -32, -(2.0 ** -32), 3 * 2.0 ** -32, 2.0 ** -14, fmt.max,
             -fmt.max, 1.0, -1.0]
    return fmt.round(np.concatenate([mags, extra]))


def test_fp24_constants():
    assert (FP24.bits, FP24.sig_bits, FP24.frac, FP24.dtype) == (24, 19, 32, np.float32)
    assert FP24.max == 65535.875
    assert FP24 != FP16 and StreamFormat(18) == FP24
    with pytest.raises(ValueError, match=r"10\.\.23"):
        StreamFormat(9)


def test_fp24_round_against_exact_rounding_incl_ties_and_saturation():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(3000) * np.ldexp(1.0, rng.integers(-40, 18, 3000))
    # exact midpoints between neighbours and their neighbours, in normals and subnormals
    base = FP24.round(rng.standard_normal(500) * np.ldexp(1.0, rng.integers(-20, 15, 500)))
    ulp = np.ldexp(1.0, np.maximum(np.frexp(np.abs(base.astype(float)))[1] - 1, -14) - 18)
    mids = base.astype(float) + ulp / 2
    sub = np.arange(-20, 20) * 2.0 ** -33                       # subnormal midpoints
    big = np.array([65535.875, 65535.9, 65536.0, 1e6, -1e6, 65535.9375])
    x = np.concatenate([x, mids, sub, big])
    got = FP24.round(x)
    want = np.array([rn_exact(Fraction(float(v))) for v in x], dtype=np.float64)
    assert np.array_equal(got.astype(np.float64), want)


def test_fp24_bits_roundtrip_and_fields():
    x = grid_values(np.random.default_rng(2), 4000)
    u = FP24.to_bits(x)
    assert u.min() >= 0 and u.max() < 2 ** 24
    assert np.array_equal(FP24.from_bits(u), x)
    s, sig, sh = FP24.fields(x)
    v = np.ldexp(sig.astype(float), sh - 32) * np.where(s == 1, -1, 1)
    assert np.array_equal(v, x.astype(float))
    assert np.array_equal(np.signbit(FP24.from_bits(u)), np.signbit(x))
    assert FP24.to_bits(np.float32(1.0)) == 15 << 18
    assert FP24.to_bits(np.float32(2.0 ** -32)) == 1
    with pytest.raises(TypeError, match="grid"):
        FP24.check(np.float32([1.0 + 2.0 ** -20]))
    with pytest.raises(TypeError, match="float32"):
        FP24.check(np.float16([1.0]))


def test_round_sum2_and_round_product_are_single_roundings():
    rng = np.random.default_rng(3)
    a = grid_values(rng, 2000).astype(float)
    b = grid_values(rng, 2000).astype(float)
    c = rng.standard_normal(2010).astype(np.float32).astype(float)
    ab = a * b                                                      # exact, 38 bits
    got = round_product(FP24, ab, c)
    want = [rn_exact(Fraction(x) * Fraction(y)) for x, y in zip(ab, c, strict=True)]
    assert np.array_equal(got.astype(float), want)
    # sums with a tiny second term that decides a midpoint
    x = FP24.round(rng.standard_normal(500)).astype(float)
    ulp = np.ldexp(1.0, np.frexp(np.abs(x))[1] - 1 - 18)
    mids = x + ulp / 2
    tiny = np.where(rng.random(500) < 0.5, 1, -1) * 2.0 ** -60
    got = round_sum2(FP24, mids, tiny)
    want = [rn_exact(Fraction(p) + Fraction(q)) for p, q in zip(mids, tiny, strict=True)]
    assert np.array_equal(got.astype(float), want)
    g32 = round_sum2(FP32_GRID, mids, tiny)
    w32 = [float(np.float32(rn_exact(Fraction(p) + Fraction(q), 23)))
           for p, q in zip(mids, tiny, strict=True)]
    assert np.array_equal(g32.astype(float), w32)


def test_sum_squares_exact_fp24():
    x = grid_values(np.random.default_rng(4), 254).reshape(2, 132)
    got = sum_squares(FP24, x)
    for r, row in enumerate(x):
        want = sum(Fraction(float(v)) ** 2 for v in row) * 2 ** 64
        assert want.denominator == 1 and got[r] == want.numerator


def test_rmsnorm_fp24_against_rationals():
    rng = np.random.default_rng(5)
    x = FP24.round(rng.standard_normal((3, 64)) * 3)
    g = rng.standard_normal(64).astype(np.float32)
    h, amax = hw.rmsnorm_absmax(x, g, 1e-5, fmt=FP24)
    r = hw.rms_scale(x, 1e-5, fmt=FP24)
    g24 = FP24.round(g)
    for i in range(3):
        ms = sum(Fraction(float(v)) ** 2 for v in x[i]) / 64 + Fraction(float(np.float32(1e-5)))
        assert abs(float(r[i]) - 1 / math.sqrt(ms)) <= 2.0 ** -23 * float(r[i])
        want = [rn_exact(Fraction(float(a)) * Fraction(float(b)) * Fraction(float(r[i])))
                for a, b in zip(x[i], g24, strict=True)]
        assert np.array_equal(h[i].astype(float), want)
        assert amax[i] == np.abs(h[i]).max()
    assert h.dtype == np.float32


def test_gated_act_and_rope_fp24_against_rationals():
    rng = np.random.default_rng(6)
    g = FP24.round(rng.standard_normal(300) * 4)
    u = FP24.round(rng.standard_normal(300) * 4)
    y = hw.gated_act(g, u, "relu2", fmt=FP24)
    want = [rn_exact(Fraction(float(max(a, 0))) ** 2 * Fraction(float(b)))
            for a, b in zip(g, u, strict=True)]
    assert np.array_equal(y.astype(float), want)
    ys = hw.gated_act(g, u, "silu", fmt=FP24)
    fx = silu_fx(g, FP24)
    want = [rn_exact(Fraction(int(a), 2 ** 22) * Fraction(float(b)))
            for a, b in zip(fx, u, strict=True)]
    assert np.array_equal(ys.astype(float), want)
    # rope: RN(RN32(a c - b s))
    x = FP24.round(rng.standard_normal((2, 1, 8)))
    cos, sin = hw.rope_table(np.arange(5, 7), 8, 10000.0, fmt=FP24)
    out = hw.rope(x, cos, sin, "adjacent", fmt=FP24)
    for t in range(2):
        for i in range(4):
            a, b = Fraction(float(x[t, 0, 2 * i])), Fraction(float(x[t, 0, 2 * i + 1]))
            c, s = Fraction(float(cos[t, i])), Fraction(float(sin[t, i]))
            ra = rn_exact(Fraction(rn_exact(a * c - b * s, 23)) if a * c != b * s else 0)
            rb = rn_exact(Fraction(rn_exact(b * c + a * s, 23)))
            assert (float(out[t, 0, 2 * i]), float(out[t, 0, 2 * i + 1])) == (ra, rb)


def test_silu_fx_fp24_agrees_with_fp16_on_fp16_values():
    x16 = np.arange(-20.0, 20.0, 0.125).astype(np.float16)
    assert np.array_equal(silu_fx(x16, FP16), silu_fx(x16.astype(np.float32), FP24))


def test_fp24_functions_reject_fp16_arrays():
    with pytest.raises(TypeError, match="fp24"):
        hw.residual_add(np.float16([1.0]), np.float16([1.0]), fmt=FP24)


@pytest.mark.parametrize("act", ["relu2", "silu"])
def test_fp24_model_prefill_plus_decode_equals_full(act):
    from tellme.quant.random_models import random_model, tiny_config
    from tellme.sim.golden.model import GoldenModel

    m = random_model(tiny_config(activation=act, max_context=16), seed=5)
    gm = GoldenModel(m, "hw", fmt=FP24)
    toks = np.arange(9) % m.config.vocab_size
    full = gm.forward(toks, gm.new_cache(16))
    cache = gm.new_cache(16)
    a = gm.forward(toks[:5], cache)
    b = [gm.forward(toks[i:i + 1], cache) for i in range(5, 9)]
    assert cache.kv_format == "fp24" and cache.k[0].dtype == np.float32
    assert np.array_equal(np.concatenate([a, *b]), full)


def _near_midpoint_products(n: int, above: bool):
    """(a, b): a <= 41 bits, b 24 bits, a*b = (2R+1) * 2**40 +- 1 with a 19-bit R: one unit
    off an FP24 midpoint, 60 bits wide, so float64 rounds the product onto the midpoint and a
    double rounding would go the wrong way (R chosen so that ties-to-even does)."""
    out = []
    B = (1 << 23) + 1
    while len(out) < n:
        B += 2
        inv = pow(1 << 40, -1, B)                        # (2R+1) * 2**40 == +-1 (mod B)
        m = (B - inv) % B if above else inv
        if not (1 << 19) <= m < (1 << 20) or m % 2 == 0:
            continue
        R = m >> 1
        if (R % 2 == 1) != (not above):                  # the tie would go the wrong way
            continue
        A = (m * (1 << 40) + (1 if above else -1)) // B
        assert m * (1 << 40) + (1 if above else -1) == A * B and A < 2 ** 41
        out.append((float(A) * 2.0 ** -37, float(B) * 2.0 ** -23))      # a*b in [0.5, 1)
    return out


@pytest.mark.parametrize("above", [False, True])
def test_round_product_near_midpoints_is_not_double_rounded(above):
    pairs = _near_midpoint_products(20, above)
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    got = round_product(FP24, a, b).astype(float)
    want = [rn_exact(Fraction(x) * Fraction(y)) for x, y in pairs]
    assert np.array_equal(got, want)
    assert not np.array_equal(FP24.round(a * b).astype(float), want)   # the trap is real


@pytest.mark.parametrize("fmt", [FP16, FP24], ids=["fp16", "fp24"])
def test_zero_products_keep_the_ieee_sign(fmt):
    g = fmt.round([0.0, -0.0, -3.0, 2.0, -20.0, -20.0])
    u = fmt.round([-1.0, 1.0, -2.0, -0.0, -1.0, 1.0])
    sign = np.signbit(hw.gated_act(g, u, "relu2", fmt=fmt))
    assert sign.tolist() == [True, False, True, True, True, False]
    sign = np.signbit(hw.gated_act(g[4:], u[4:], "silu", fmt=fmt))   # silu_fx(-20) = 0
    assert sign.tolist() == [True, False]
    assert np.signbit(round_product(fmt, np.array([0.0]), np.array([-(1 + 2.0 ** -20)])))[0]
