"""TLMM table semantics (tlmm) vs the direct integer dot product and vs ternary_matmul."""

import numpy as np
import pytest

from tellme.sim.golden import acc_bits, ternary_matmul, tlmm
from tellme.spec.codes import encode_triples


def pad3(a):
    k = a.shape[-1]
    kp = -(-k // 3) * 3
    out = np.zeros(a.shape[:-1] + (kp,), dtype=a.dtype)
    out[..., :k] = a
    return out


def direct(x, w):
    return x.astype(np.int64) @ w.T.astype(np.int64)


def cases():
    rng = np.random.default_rng(0)
    yield "random", rng.integers(-128, 128, (5, 48), dtype=np.int8), \
        rng.integers(-1, 2, (7, 48)).astype(np.int8)
    yield "all+1", rng.integers(-128, 128, (3, 30), dtype=np.int8), np.ones((4, 30), np.int8)
    yield "all-1", rng.integers(-128, 128, (3, 30), dtype=np.int8), -np.ones((4, 30), np.int8)
    yield "all0", rng.integers(-128, 128, (3, 30), dtype=np.int8), np.zeros((4, 30), np.int8)
    ext = np.array([[-128] * 33, [127] * 33, [-128, 127] * 16 + [-128]], dtype=np.int8)
    yield "int8-extremes", ext, np.stack([np.ones(33), -np.ones(33),
                                          np.resize([1, -1, 0], 33)]).astype(np.int8)
    for k in (1, 2, 4, 5, 100):                        # K not a multiple of 3
        yield f"K={k}", rng.integers(-128, 128, (2, k), dtype=np.int8), \
            rng.integers(-1, 2, (3, k)).astype(np.int8)


@pytest.mark.parametrize("name,x,w", list(cases()), ids=[c[0] for c in cases()])
def test_tlmm_equals_direct_and_ternary_matmul(name, x, w):
    want = direct(x, w)
    xp, wp = pad3(x), pad3(w)                          # zero padding to a multiple of 3
    got = tlmm(xp, encode_triples(wp))
    assert got.dtype == np.int64 and np.array_equal(got, want)
    assert np.array_equal(ternary_matmul(x, w), want)
    assert np.array_equal(ternary_matmul(x, w.astype(np.float32)), want)


def test_worst_case_accumulator_fits_acc_bits():
    k = 6912
    x = np.full((1, k), -128, np.int8)
    w = np.ones((1, k), np.int8)
    acc = ternary_matmul(x, w)[0, 0]
    assert acc == -128 * k
    assert -(1 << (acc_bits(k) - 1)) <= acc < (1 << (acc_bits(k) - 1))


def test_tlmm_rejects_unpadded_and_wrong_dtype():
    with pytest.raises(ValueError, match="multiple of 3"):
        tlmm(np.zeros((1, 4), np.int8), np.zeros((1, 1), np.uint8))
    with pytest.raises(TypeError, match="int8"):
        tlmm(np.zeros((1, 3), np.int16), np.zeros((1, 1), np.uint8))
