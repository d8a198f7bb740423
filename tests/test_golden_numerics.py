"""hw numerics primitives vs exact (rational / float64) references, exhaustive over FP16 where
the input is one FP16 value (docs/numerics.md error bounds)."""

import math
from fractions import Fraction

import numpy as np
import pytest

from tellme.sim.golden import hw_numerics as hw_module
from tellme.spec import numerics as nm

hw = hw_module.bound(nm.FP16)      # the FP16 build of the contract (FP24: test_golden_fp24.py)

ALL_FP16 = np.arange(65536, dtype=np.uint16).view(np.float16)
FINITE_FP16 = ALL_FP16[np.isfinite(ALL_FP16)]


def rn_fraction(fr: Fraction, candidates) -> float:
    """Nearest of ``candidates`` (sorted floats bracketing fr) to fr, ties to even significand."""
    best = None
    for c in candidates:
        d = abs(Fraction(float(c)) - fr)
        if best is None or d < best[0]:
            best = (d, [c])
        elif d == best[0]:
            best[1].append(c)
    if len(best[1]) == 1:
        return float(best[1][0])
    evens = [c for c in best[1] if (np.float32(c).view(np.uint32) & 1) == 0]
    return float(evens[0])


def fp32_neighbours(x: float):
    f = np.float32(x)
    out = [f]
    lo = hi = f
    for _ in range(2):
        lo = np.nextafter(lo, np.float32(-np.inf))
        hi = np.nextafter(hi, np.float32(np.inf))
        out += [lo, hi]
    return sorted(out)


def test_float_environment_is_ieee():
    nm.check_float_environment()


# --- FP16 rounding (the to_fp16 helper relies on NumPy's float64 -> float16 cast) ------------

def test_to_fp16_rounds_every_midpoint_to_even_and_neighbours_correctly():
    pos = FINITE_FP16[(FINITE_FP16 >= 0) & ~np.signbit(FINITE_FP16)].astype(np.float64)
    pos = np.unique(pos)
    lo, hi = pos[:-1], pos[1:]
    mid = (lo + hi) / 2                               # exact in float64
    even_lo = (np.float16(lo).view(np.uint16) & 1) == 0
    want_mid = np.where(even_lo, lo, hi)
    for sign in (1.0, -1.0):
        assert np.array_equal(nm.to_fp16(sign * mid).astype(np.float64), sign * want_mid)
        up = np.nextafter(mid, np.inf)
        dn = np.nextafter(mid, -np.inf)
        assert np.array_equal(nm.to_fp16(sign * up).astype(np.float64), sign * hi)
        assert np.array_equal(nm.to_fp16(sign * dn).astype(np.float64), sign * lo)


def test_to_fp16_saturates_and_keeps_signed_zero_and_subnormals():
    x = np.array([65504.0, 65519.99, 65520.0, 1e9, -1e9, np.inf, -np.inf, -0.0, 2.0 ** -24,
                  2.0 ** -25, 2.0 ** -25 * 1.0000001, 3 * 2.0 ** -25])
    y = nm.to_fp16(x)
    assert y.tolist()[:7] == [65504.0, 65504.0, 65504.0, 65504.0, -65504.0, 65504.0, -65504.0]
    assert y[7] == 0 and np.signbit(y[7])
    assert y[8] == 2.0 ** -24            # smallest subnormal
    assert y[9] == 0                     # tie between 0 and 2**-24 -> even (0)
    assert y[10] == 2.0 ** -24
    assert y[11] == 2.0 ** -23           # 1.5 * 2**-24 -> tie -> even (2 * 2**-24)


def test_fp16_fields_reconstruct_every_finite_value():
    sign, sig, shift = nm.fp16_fields(FINITE_FP16)
    v = np.ldexp(sig.astype(np.float64), (shift - 24).astype(np.int64))
    v = np.where(sign == 1, -v, v)
    assert np.array_equal(v, FINITE_FP16.astype(np.float64))
    assert sig.max() < 2 ** 11 and shift.min() >= 0 and shift.max() <= 29
    with pytest.raises(ValueError, match="Inf/NaN"):
        nm.fp16_fields(np.array([np.inf], dtype=np.float16))


def test_sum_squares_exact():
    rng = np.random.default_rng(0)
    rows = [rng.choice(FINITE_FP16, size=97) for _ in range(20)]
    rows.append(np.full(4096, 65504.0, dtype=np.float16))          # max magnitude, long row
    rows.append(np.full(33, 2.0 ** -24, dtype=np.float16))         # smallest subnormals
    rows.append(np.array([-0.0, 0.0, -1.5], dtype=np.float16))
    for r in rows:
        got = nm.sum_squares_fp16(r[None, :])[0]
        want = sum(Fraction(float(v)) ** 2 for v in r) * 2 ** 48
        assert want.denominator == 1 and got == want.numerator


# --- correctly rounded scalars --------------------------------------------------------------

def test_round_ratio_fp32_random_and_ties():
    rng = np.random.default_rng(1)
    cases = [(int(a), int(b)) for a, b in rng.integers(1, 2 ** 62, size=(300, 2))]
    cases += [(127, 3), (1, 127), (127 * 2 ** 40, 7), (1, 3), (2 ** 30 + 1, 2 ** 30)]
    # exact ties: (2m+1) / 2**25 with m in [2**23, 2**24): halfway between two float32
    for m in (2 ** 23, 2 ** 23 + 1, 2 ** 24 - 2, 12345678):
        cases.append((2 * m + 1, 2 ** 25))
    for a, b in cases:
        fr = Fraction(a, b)
        want = rn_fraction(fr, fp32_neighbours(a / b))
        assert float(nm.round_ratio_fp32(a, b)) == want, (a, b)


def test_rsqrt_fp32_random_and_exact_cases():
    rng = np.random.default_rng(2)
    cases = [(int(a), int(b)) for a, b in rng.integers(1, 2 ** 60, size=(300, 2))]
    cases += [(4, 1), (1, 4), (2, 1), (1, 2 ** 40), (2 ** 40, 1)]
    for a, b in cases:
        fr_v = Fraction(a, b)                          # want RN(1/sqrt(v))
        y0 = 1.0 / math.sqrt(a / b)
        cands = fp32_neighbours(y0)
        # nearest by exact comparison of squares: |y - z| ordering via midpoints
        best = None
        for c in cands:
            # distance ordering: compare (y - z) using z^2 = 1/v exactly
            y = Fraction(float(c))
            lo_ok = True
            for other in cands:
                if other == c:
                    continue
                mid = (y + Fraction(float(other))) / 2
                # c is nearer than other iff z is on c's side of mid
                z_gt_mid = 1 / fr_v > mid * mid
                if (y > mid) != z_gt_mid and (1 / fr_v) != mid * mid:
                    lo_ok = False
            if lo_ok:
                best = c
        assert best is not None
        assert float(nm.rsqrt_fp32(a, b)) == float(best), (a, b)
    assert float(nm.rsqrt_fp32(4, 1)) == 0.5
    assert float(nm.rsqrt_fp32(1, 2 ** 40)) == 2.0 ** 20


def test_rsqrt_fp32_exact_tie_rounds_to_even():
    # z = q + 1/2 exactly (in units of the result ulp): v = 1/z^2 with z = (2q+1) * 2**-25
    for q in (2 ** 23, 2 ** 23 + 1, 2 ** 24 - 1, 9999999):
        z = Fraction(2 * q + 1, 2 ** 25)               # in [0.5, 1): ulp 2**-24
        v = 1 / (z * z)
        got = Fraction(float(nm.rsqrt_fp32(v.numerator, v.denominator)))
        even = q if q % 2 == 0 else q + 1
        assert got == Fraction(even, 2 ** 24), q


def test_int_to_fp32_vs_python_rounding():
    rng = np.random.default_rng(3)
    a = np.concatenate([rng.integers(-2 ** 61, 2 ** 61, size=2000),
                        rng.integers(-2 ** 30, 2 ** 30, size=2000),
                        np.array([0, 1, -1, 2 ** 24, 2 ** 24 + 1, 2 ** 24 + 2, 2 ** 24 + 3,
                                  -(2 ** 25 + 2), 2 ** 25 + 6, 2 ** 61 + 2 ** 37])])
    got = nm.int_to_fp32(a)
    for v, g in zip(a.tolist(), got.tolist(), strict=True):
        want = rn_fraction(Fraction(v), fp32_neighbours(float(v))) if v else 0.0
        assert g == want, v


# --- function units: exhaustive over their whole input range ---------------------------------

def test_exp2_table_regenerates():
    assert np.array_equal(nm.make_exp2_table(), nm.EXP2_TABLE)


def test_exp2_neg_frac_exhaustive_error_bound():
    f = np.arange(1 << 16)
    got = nm.exp2_neg_frac(f).astype(np.float64) / 2 ** 23
    ref = 2.0 ** (-f / 65536.0)
    rel = np.abs(got - ref) / ref
    assert rel.max() < 1.5e-5                          # docs/numerics.md: < 1.5e-5 relative
    assert nm.exp2_neg_frac(np.array([0]))[0] == 2 ** 23
    assert np.all(np.diff(got) <= 0)                   # monotone non-increasing


def silu64(x):
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-x))


def test_silu_exhaustive_error_bound():
    x = FINITE_FP16
    ref = silu64(x.astype(np.float64))
    fx = nm.silu_fx(x).astype(np.float64) / 2 ** 22
    assert np.abs(fx - ref).max() < 2.5e-4             # docs/numerics.md: PWL bound
    big = np.abs(x.astype(np.float64)) >= 16
    assert np.abs(fx - ref)[big].max() < 2e-6          # exact tails
    y16 = hw.silu(x).astype(np.float64)
    with np.errstate(over="ignore"):                  # spacing(65504) overflows: unused
        half_ulp = np.spacing(np.abs(y16).astype(np.float16)).astype(np.float64) / 2
    half_ulp = np.where(np.isfinite(half_ulp), half_ulp, 16.0)
    assert np.all(np.abs(y16 - ref) <= 2.5e-4 + half_ulp)


def test_silu_table_regenerates_and_hand_values():
    assert np.array_equal(nm.make_silu_table(), nm.SILU_TABLE)
    x = np.array([0.0, -0.0, 16.0, 20.0, 65504.0, -16.5, -65504.0, 1.0], dtype=np.float16)
    fx = nm.silu_fx(x)
    assert fx[:2].tolist() == [0, 0]
    assert fx[2:5].tolist() == [16 << 22, 20 << 22, 65504 << 22]
    assert fx[5:7].tolist() == [0, 0]
    assert fx[7] == nm.SILU_TABLE[17 * 16]             # node x = 1.0 hit exactly


def test_quantize_exhaustive_against_exact_rounding():
    """Every finite FP16 h with |h| <= amax, for a few amax: q = RNE(h * s_x) exactly."""
    for amax in (3.0, 0.1, 65504.0):
        a = Fraction(float(np.float16(amax)))
        h = FINITE_FP16[np.abs(FINITE_FP16.astype(np.float64)) <= float(a)]
        q, s = hw.quantize(h[None], np.array([amax], np.float16))
        sx = Fraction(float(s[0]))
        assert float(s[0]) == float(nm.round_ratio_fp32(127 * a.denominator, a.numerator))
        # exact reference on a sample of values plus every tie the grid contains
        prod = h.astype(np.float64) * float(s[0])          # exact (35 bits)
        ties = np.nonzero(prod - np.floor(prod) == 0.5)[0]
        idx = np.concatenate([ties, np.arange(0, h.size, 97)])
        for i in idx:
            v = Fraction(float(h[i])) * sx
            fl = v.numerator // v.denominator
            rem = v - fl
            want = fl + (1 if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2) else 0)
            assert q[0, i] == max(-128, min(127, want)), (amax, float(h[i]))


def test_dequantize_exact_against_rational():
    rng = np.random.default_rng(7)
    acc = rng.integers(-2 ** 20, 2 ** 20, size=(1, 4000))
    amax = np.array([2.71875], np.float16)
    ws = np.float32(0.0213)
    y = hw.dequantize(acc, amax, ws)
    st = Fraction(float(hw.dequant_scale(amax, ws)[0]))
    for a, yy in zip(acc[0, :500].tolist(), y[0, :500].tolist(), strict=True):
        exact = a * st
        cands = sorted({float(np.float16(float(exact))),
                        float(np.nextafter(np.float16(float(exact)), np.float16(np.inf))),
                        float(np.nextafter(np.float16(float(exact)), np.float16(-np.inf)))})
        best = min(cands, key=lambda c: (abs(Fraction(c) - exact),
                                         int(np.float16(c).view(np.uint16)) & 1))
        assert yy == best


def test_import_refuses_a_process_with_ftz_daz(tmp_path):
    """A real -ffast-math shared library (crtfastmath sets MXCSR FTZ/DAZ when loaded) makes
    `import tellme.sim.golden` fail loudly instead of computing other bits."""
    import shutil
    import subprocess
    import sys

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build a -ffast-math library")
    src = tmp_path / "ftz.c"
    src.write_text("int tellme_ftz_probe(void) { return 1; }\n")
    lib = tmp_path / "libftz.so"
    subprocess.run([cc, "-shared", "-fPIC", "-ffast-math", "-o", str(lib), str(src)],
                   check=True, capture_output=True)
    code = (f"import ctypes; ctypes.CDLL({str(lib)!r})\n"
            "import numpy as np\n"
            "if (np.array([np.finfo(np.float32).tiny]) * np.float32(0.5))[0] > 0:\n"
            "    print('NOFTZ')\n"
            "else:\n"
            "    import tellme.sim.golden\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if "NOFTZ" in r.stdout:
        pytest.skip("this toolchain's -ffast-math does not set FTZ at load")
    assert r.returncode != 0
    assert "FloatEnvironmentError" in r.stderr and "flush-to-zero" in r.stderr
