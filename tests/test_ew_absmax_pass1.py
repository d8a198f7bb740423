"""The row's absmax is known at the end of RMSNorm pass 1 (issue 11): RN is monotone
(ties-to-even and saturation included), so max|RN(x*g*r)| = RN(max|x*g| * r) with the exact
products x*g, which pass 1 can track before r exists. Checked against the golden
``rmsnorm_absmax`` in both stream formats (the RTL still takes amax from pass 2: see
docs/hw/elementwise.md)."""

from __future__ import annotations

import numpy as np
import pytest

from tellme.sim.golden.hw_numerics import rms_scale, rmsnorm_absmax
from tellme.spec.numerics import FP16, FP24, round_product
from tests.rtl.tb_ew_cases import dec, enc, norm_rows, random_bits


@pytest.mark.parametrize("fmt", [FP16, FP24], ids=["fp16", "fp24"])
def test_absmax_from_pass1_products(fmt):
    rng = np.random.default_rng(11)
    n = 64
    rows = norm_rows(rng, n, 7, fmt) + [random_bits(rng, n, k, fmt)
                                        for k in ("normal", "mixed", "full") for _ in range(60)]
    x = dec(np.stack(rows), fmt)
    # equal |x*g| in two lanes (x and g repeated, one sign flipped)
    x[-10:, 1] = -x[-10:, 0]
    for g_bits in (random_bits(rng, n, "normal", fmt), enc(rng.uniform(-1.5, 1.5, n), fmt)):
        g = dec(g_bits, fmt)
        g[1] = g[0]
        for eps in (np.float32(1e-5), np.float32(1e-6)):
            _, amax = rmsnorm_absmax(x, g, eps, fmt=fmt)
            r = rms_scale(x, eps, fmt=fmt)
            xg = np.abs(x.astype(np.float64) * g.astype(np.float64))      # exact: <= 38 bits
            pass1 = round_product(fmt, xg.max(axis=-1), r.astype(np.float64))
            np.testing.assert_array_equal(fmt.to_bits(np.abs(pass1)), fmt.to_bits(amax))
