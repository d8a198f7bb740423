"""NumPy models of the aligned adders in hw/elementwise (residual.py: FP16 + FP16 with 3 guard
bits; rope.py: RN32 of a sum of two exact FP16 products with 5 guard bits) checked against the
golden functions on random cases biased to cancellation. They pin the algorithm (the RTL tests
check the RTL against the golden functions directly)."""

import numpy as np

from tellme.spec.numerics import to_fp16

N = 200_000


def _fields(u):
    e = u >> 10
    m = u & 0x3FF
    return np.where(e > 0, m | 0x400, m), np.where(e > 0, e - 1, 0)


def _align(full, d, width):
    """(full >> d) with the shifted-out bits ORed into the LSB (d clamped to width)."""
    dc = np.minimum(d, width)
    return (full >> dc) | ((full & ((1 << dc) - 1)) != 0)


def _finite(rng, n):
    return rng.integers(0, 0x7C00, n).astype(np.int64)


def test_fp16_add_guard3():
    rng = np.random.default_rng(0)
    a, b = _finite(rng, N), _finite(rng, N)
    near = rng.random(N) < 0.5
    b[near] = np.clip(a[near] + rng.integers(-3000, 3000, near.sum()), 0, 0x7BFF)
    sa, sb = rng.integers(0, 2, N), rng.integers(0, 2, N)
    swap = b > a
    (sig_b, sh_b), (sig_s, sh_s) = _fields(np.where(swap, b, a)), _fields(np.where(swap, a, b))
    s_big = np.where(swap, sb, sa)
    same = sa == sb
    al = _align(sig_s << 3, sh_b - sh_s, 14)
    z = np.where(same, (sig_b << 3) + al, (sig_b << 3) - al)
    got = to_fp16(np.where(s_big == 1, -1.0, 1.0) * np.ldexp(z.astype(np.float64), sh_b - 27))
    x = np.where(sa == 1, -1.0, 1.0) * a.astype(np.uint16).view(np.float16).astype(np.float64)
    y = np.where(sb == 1, -1.0, 1.0) * b.astype(np.uint16).view(np.float16).astype(np.float64)
    want = to_fp16(x + y)
    nonzero = want != 0                                  # signs of zero: handled separately
    np.testing.assert_array_equal(got.view(np.uint16)[nonzero], want.view(np.uint16)[nonzero])


def test_product_sum_rn32_guard5():
    rng = np.random.default_rng(1)
    a, c, b, s = (_finite(rng, N) for _ in range(4))
    sel = rng.random(N) < 0.5                            # a*c - b*s close to cancelling
    b[sel] = a[sel]
    s[sel] = np.clip(c[sel] + rng.integers(-4, 4, sel.sum()), 0, 0x7BFF)
    sg = [rng.integers(0, 2, N) for _ in range(4)]

    def f32(u, sign):
        return (np.where(sign == 1, -1.0, 1.0) * u.astype(np.uint16).view(np.float16)) \
            .astype(np.float32)

    want = to_fp16(f32(a, sg[0]) * f32(c, sg[1]) - f32(b, sg[2]) * f32(s, sg[3]))

    def prod(u, v):
        (su, eu), (sv, ev) = _fields(u), _fields(v)
        p, e = su * sv, eu + ev
        bl = np.where(p > 0, np.frexp(p.astype(np.float64))[1], 0)
        sh = np.where(p > 0, 22 - bl, 0)
        return p, p << sh, e - sh
    p1, n1, e1 = prod(a, c)
    p2, n2, e2 = prod(b, s)
    s1, s2 = sg[0] ^ sg[1], sg[2] ^ sg[3] ^ 1
    k1 = np.where(p1 > 0, (e1 + 64) * (1 << 22) + n1, 0)
    k2 = np.where(p2 > 0, (e2 + 64) * (1 << 22) + n2, 0)
    swap = k2 > k1
    nb, eb, sb_ = np.where(swap, n2, n1), np.where(swap, e2, e1), np.where(swap, s2, s1)
    ns, es, ss_ = np.where(swap, n1, n2), np.where(swap, e1, e2), np.where(swap, s1, s2)
    d = np.where(np.where(swap, p1, p2) == 0, 28, eb - es)
    al = _align(ns << 5, d, 28)
    z = np.where(sb_ == ss_, (nb << 5) + al, (nb << 5) - al)
    r32 = np.ldexp(z.astype(np.float64), eb - 53).astype(np.float32)
    got = to_fp16(np.where(sb_ == 1, -1.0, 1.0) * r32.astype(np.float64))
    nonzero = want != 0
    np.testing.assert_array_equal(got.view(np.uint16)[nonzero], want.view(np.uint16)[nonzero])
