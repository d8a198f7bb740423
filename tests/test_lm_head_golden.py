"""Golden integer LM head (sim/golden/lm_head_int.py) and its DDR layout (spec/lm_head.py).

``quantize_head`` against its definition (row max, RN32 scale by ``round_ratio_fp32``, codes in
[-127, 127] with the row max at +-127, exact ties to even); ``lm_head_int8`` against an
independent computation in Python Fractions (every product and rounding from exact rationals,
RN32 by ``round_ratio_fp32``); the flush / saturation edges; ``pack_head`` / ``unpack_head``
round trips and their layout; the cycle model's shape; argument errors.
"""

from fractions import Fraction

import numpy as np
import pytest

from tellme.sim.cycles_lm_head import row_cycles
from tellme.sim.golden.hw_numerics import quantize
from tellme.sim.golden.lm_head_int import (
    FLT_MAX,
    lm_head_int8,
    lm_head_int8_from_h,
    quantize_head,
    rn32,
)
from tellme.spec.lm_head import (
    HEAD_ROWS,
    check_d,
    head_block_bytes,
    head_bytes,
    pack_head,
    unpack_head,
)
from tellme.spec.numerics import FP16, FP24, QUANT_EPS, round_ratio_fp32


def _head(rng, vocab, d):
    w = (rng.standard_normal((vocab, d)) * rng.uniform(0.01, 3.0, (vocab, 1))).astype(np.float32)
    w[0] = 0.0
    return w


# ---- quantize_head ------------------------------------------------------------------------

def test_quantize_head_definition():
    rng = np.random.default_rng(1)
    w = _head(rng, 40, 24)
    w[1, 3] = -7.0                                     # a negative row max
    w8, ds = quantize_head(w)
    assert w8.dtype == np.int8 and ds.dtype == np.float32 and w8.shape == w.shape
    assert not w8[0].any() and ds[0] == 0
    for j in range(1, 40):
        mj = np.abs(w[j]).max()
        fr = Fraction(float(mj)) / 16129
        assert ds[j] == round_ratio_fp32(fr.numerator, fr.denominator)
        assert np.abs(w8[j]).max() == 127                      # the row max maps to +-127
        assert w8[j, np.argmax(np.abs(w[j]))] == np.sign(w[j, np.argmax(np.abs(w[j]))]) * 127
        exact = [Fraction(float(x)) * 127 / Fraction(float(mj)) for x in w[j]]
        want = [max(-127, min(127, round(x))) for x in exact]   # round(): ties to even
        assert w8[j].tolist() == want, j
    assert w8[1, 3] == -127


def test_quantize_head_ties_to_even():
    # row max 127: codes = W exactly; W = k + 1/2 are exact ties
    w = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]], dtype=np.float32)
    w8, ds = quantize_head(w)
    assert w8[0].tolist() == [127, 0, 2, 2, 0, -2, -2, 126]
    assert ds[0] == np.float32(127 / 16129)


def test_quantize_head_errors():
    with pytest.raises(ValueError, match="row 1: dscale"):
        quantize_head(np.array([[1.0], [1e-36]], dtype=np.float32))     # / 16129: subnormal
    with pytest.raises(ValueError, match="NaN or Inf"):
        quantize_head(np.array([[1.0, np.inf]], dtype=np.float32))
    with pytest.raises(ValueError, match="2-D"):
        quantize_head(np.ones(4, dtype=np.float32))


# ---- lm_head_int8 against exact rationals ---------------------------------------------------

def _rn32_fraction(v: Fraction) -> float:
    """RN32 of an exact rational in the normal range, by round_ratio_fp32."""
    if v == 0:
        return 0.0
    r = float(round_ratio_fp32(abs(v).numerator, abs(v).denominator))
    return -r if v < 0 else r


def _reference(q, amax, w8, ds):
    A = max(Fraction(float(amax)), Fraction(float(QUANT_EPS)))
    out = []
    for j in range(w8.shape[0]):
        acc = sum(int(a) * int(b) for a, b in zip(q, w8[j], strict=True))
        s = _rn32_fraction(A * Fraction(float(ds[j])))
        out.append(_rn32_fraction(acc * Fraction(s)) if acc and s else 0.0)
    return np.array(out, dtype=np.float32)


@pytest.mark.parametrize("fmt", [FP24, FP16], ids=["fp24", "fp16"])
def test_lm_head_int8_equals_fractions(fmt):
    rng = np.random.default_rng(2)
    d, vocab = 48, 70
    w8, ds = quantize_head(_head(rng, vocab, d))
    q = rng.integers(-128, 128, size=(4, d)).astype(np.int8)
    q[0, :2] = [-128, 127]
    q[3] = 0
    amax = fmt.round(np.array([3.25, 1e-7, 0.0, 900.0]))          # two rows below eps
    got = lm_head_int8(q, amax, w8, ds, fmt=fmt)
    assert got.shape == (4, vocab) and got.dtype == np.float32
    for r in range(4):
        want = _reference(q[r], amax[r], w8, ds)
        assert np.array_equal(got[r].view(np.uint32), want.view(np.uint32)), r
    assert not got[3].any() and not got[:, 0].any()                # zero q, zero head row
    assert np.all(got[got == 0].view(np.uint32) == 0)              # zeros are +0


def test_lm_head_int8_ties():
    """Scales (1 + 2**-k) 2**e: s exact with amax 4, acc * s often an exact tie."""
    rng = np.random.default_rng(3)
    d, vocab = 64, 64
    w8 = rng.integers(-127, 128, size=(vocab, d)).astype(np.int8)
    k = rng.integers(7, 11, size=vocab)
    ds = np.ldexp(1.0 + np.ldexp(1.0, -k), rng.integers(-12, -4, size=vocab)).astype(np.float32)
    q = rng.integers(-128, 128, size=(1, d)).astype(np.int8)
    amax = FP24.round(np.array([4.0]))
    got = lm_head_int8(q, amax, w8, ds)[0]
    acc = (q.astype(np.int64) @ w8.astype(np.int64).T)[0]
    exact = acc * (ds.astype(np.float64) * 4.0)
    frac = np.ldexp(np.frexp(np.abs(exact))[0], 24)
    assert np.sum(frac - np.floor(frac) == 0.5) >= 5              # ties do occur
    want = _reference(q[0], amax[0], w8, ds)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_rn32_flush_and_saturation():
    v = np.array([0.0, -0.0, 2.0 ** -126, 2.0 ** -127, -(2.0 ** -126) * (1 - 2.0 ** -25),
                  2.0 ** 128, (2.0 - 2.0 ** -23) * 2.0 ** 127, -(2.0 - 2.0 ** -24) * 2.0 ** 127,
                  1.0 + 2.0 ** -24, 1.0 + 3 * 2.0 ** -24])
    r = rn32(v)
    assert r.view(np.uint32).tolist()[:4] == [0, 0, 0x00800000, 0]
    assert r[4] == -(2.0 ** -126)                  # rounds up to the smallest normal
    assert r[5] == FLT_MAX and r[6] == FLT_MAX and r[7] == -FLT_MAX   # r[7] rounds to 2**128
    assert r[8] == 1.0 and r[9] == np.float32(1.0 + 2.0 ** -22)       # ties to even
    # in the unit: s flushes below 2**-126, saturates at 2**128, and so do the logits
    w8 = np.full((3, 8), 127, dtype=np.int8)
    ds = np.array([2.0 ** -126, 1.5 * 2.0 ** 120, 2.0 ** 100], dtype=np.float32)
    q = np.full((2, 8), 127, dtype=np.int8)
    amax = FP24.round(np.array([0.0, FP24.max]))
    y = lm_head_int8(q, amax, w8, ds)
    assert y[0, 0] == 0 and y[0, 1] > 0 and y[0, 2] > 0            # A = eps: s flushed
    assert y[1, 1] == FLT_MAX and y[1, 2] == FLT_MAX


def test_from_h_is_quantize_then_head():
    rng = np.random.default_rng(4)
    h = FP24.round(rng.standard_normal((3, 32)) * 2)
    amax = np.abs(h).max(axis=1)
    w8, ds = quantize_head(_head(rng, 10, 32))
    q, _ = quantize(h, amax)
    assert np.array_equal(lm_head_int8_from_h(h, amax, w8, ds), lm_head_int8(q, amax, w8, ds))


def test_lm_head_int8_errors():
    w8 = np.zeros((4, 8), np.int8)
    ds = np.zeros(4, np.float32)
    q = np.zeros((1, 8), np.int8)
    amax = FP24.round(np.array([1.0]))
    with pytest.raises(TypeError, match="int8"):
        lm_head_int8(q.astype(np.int16), amax, w8, ds)
    with pytest.raises(ValueError, match="q has 16 columns"):
        lm_head_int8(np.zeros((1, 16), np.int8), amax, w8, ds)
    with pytest.raises(TypeError, match="dscale must be float32"):
        lm_head_int8(q, amax, w8, ds.astype(np.float64))
    with pytest.raises(ValueError, match="0 or a positive normal"):
        lm_head_int8(q, amax, w8, np.full(4, 1e-40, np.float32))
    with pytest.raises(ValueError, match="amax has 2 values for 1 rows"):
        lm_head_int8(q, FP24.round(np.array([1.0, 2.0])), w8, ds)
    with pytest.raises(TypeError, match="grid"):
        lm_head_int8(q, np.array([1.0 + 2.0 ** -20], np.float32), w8, ds)


# ---- layout ---------------------------------------------------------------------------------

def test_pack_unpack_round_trip_and_layout():
    rng = np.random.default_rng(5)
    for vocab, d in ((70, 16), (64, 8), (1, 24), (129, 32)):
        w8, ds = quantize_head(_head(rng, vocab, d))
        buf = pack_head(w8, ds)
        assert buf.dtype == np.uint8 and buf.size == head_bytes(vocab, d)
        assert head_bytes(vocab, d) == -(-vocab // 64) * (256 + 64 * d) == \
            -(-vocab // 64) * head_block_bytes(d)
        w2, d2 = unpack_head(buf, vocab, d)
        assert np.array_equal(w2, w8) and np.array_equal(d2.view(np.uint32), ds.view(np.uint32))
        # block b: scales then column-major codes
        blk = head_block_bytes(d)
        for b in range(-(-vocab // 64)):
            base = b * blk
            for r in (0, 5, 63):
                j = b * HEAD_ROWS + r
                sc = buf[base + 4 * r:base + 4 * r + 4].view("<f4")[0]
                assert sc == (ds[j] if j < vocab else 0)
                for c in (0, d - 1):
                    code = buf[base + 256 + 64 * c + r].view(np.int8)
                    assert code == (w8[j, c] if j < vocab else 0)


def test_layout_errors():
    for d in (0, 12, 20, 16392):
        with pytest.raises(ValueError, match="multiple of 8"):
            check_d(d)
    with pytest.raises(ValueError, match="multiple of 8"):
        head_block_bytes(100)
    with pytest.raises(ValueError, match="vocab must be a positive"):
        head_bytes(0, 16)
    w8, ds = np.zeros((3, 16), np.int8), np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="int8"):
        pack_head(w8.astype(np.int16), ds)
    with pytest.raises(TypeError, match="dscale must be float32"):
        pack_head(w8, np.zeros(4, np.float32))
    buf = pack_head(w8, ds)
    with pytest.raises(ValueError, match="is 1280 bytes, got 1279"):
        unpack_head(buf[:-1], 3, 16)
    bad = buf.copy()
    bad[256 + 64 * 2 + 10] = 1                    # row 10 of a 3-row head is padding
    with pytest.raises(ValueError, match="pad rows"):
        unpack_head(bad, 3, 16)


# ---- cycle model ----------------------------------------------------------------------------

def test_cycle_model_is_weight_bound_for_real_rows():
    """2B4T's head (d 2560, 64 lanes): one weight beat per cycle after the q load; the
    post-processor only adds the last block's tail."""
    vocab, d, lanes = 130, 2560, 64
    r = row_cycles(vocab, d, lanes)
    beats = head_bytes(vocab, d) // lanes
    assert r["w"][1] - r["w"][0] == (256 + 64 * d) // lanes
    assert r["cycles"] - (d // 8 + 1) - beats < 30
    # tiny d at 64 lanes: post-processor-bound (two sweeps per block)
    s = row_cycles(640, 8, 64)
    assert s["w"][2] - s["w"][1] > (256 + 64 * 8) // 64
