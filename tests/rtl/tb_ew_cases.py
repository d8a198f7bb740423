"""Vector generators and golden expectations shared by the element-wise tests (Amaranth-sim
unit tests in tests/test_hw_ew_*.py and the cocotb testbench tests/rtl/tb_ew.py).

Everything returns raw integers (FP16/FP32 bits, int8, accumulators) as NumPy arrays, with the
golden hw function's result computed from the same bits.
"""

from __future__ import annotations

import numpy as np

from tellme.sim.golden import hw as golden

F16_MAX_BITS = 0x7BFF


def fp16_bits(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float16).view(np.uint16)


def random_fp16(rng, n, kind="mixed") -> np.ndarray:
    """FP16 bit patterns: ``normal`` (N(0, sigma), random sigma), ``full`` (any finite
    pattern), ``mixed`` (both plus zeros, -0, subnormals, +-65504)."""
    if kind == "normal":
        sigma = 10.0 ** rng.uniform(-3, 2)
        return fp16_bits(np.clip(rng.normal(0, sigma, n), -65504, 65504))
    full = rng.integers(0, 0x10000, n).astype(np.uint16)
    full[(full & 0x7C00) == 0x7C00] &= 0x83FF          # Inf/NaN -> another pattern
    if kind == "full":
        return full
    out = fp16_bits(np.clip(rng.normal(0, 10.0 ** rng.uniform(-3, 2), n), -65504, 65504))
    pick = rng.random(n)
    out = np.where(pick < 0.3, full, out)
    specials = np.array([0, 0x8000, 1, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00],
                        dtype=np.uint16)
    sp = pick > 0.9
    out[sp] = rng.choice(specials, sp.sum())
    return out.astype(np.uint16)


def f16(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(np.float16)


def f32_bits(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).view(np.uint32)


# --------------------------------------------------------------------------- per block

def norm_rows(rng, n: int, count: int) -> list[np.ndarray]:
    """Directed + random rows for RMSNorm: random, zeros, -0, one huge outlier, all equal,
    full-range patterns, tiny (subnormal) values."""
    rows = [random_fp16(rng, n, "normal"), np.zeros(n, np.uint16), np.full(n, 0x8000, np.uint16)]
    r = fp16_bits(rng.normal(0, 0.01, n))
    r[rng.integers(n)] = 0x7BFF
    rows.append(r)
    rows.append(np.full(n, fp16_bits(-2.5), np.uint16))
    rows.append(random_fp16(rng, n, "full"))
    rows.append(rng.integers(0, 0x400, n).astype(np.uint16) | (rng.integers(0, 2, n) << 15)
                .astype(np.uint16))
    while len(rows) < count:
        rows.append(random_fp16(rng, n, rng.choice(["normal", "mixed"])))
    return rows[:count]


def norm_expected(rows, g_bits, eps):
    """(h bits [rows, n], amax bits [rows]) of golden rmsnorm_absmax."""
    x = f16(np.stack(rows))
    h, amax = golden.rmsnorm_absmax(x, f16(g_bits), np.float32(eps))
    return h.view(np.uint16), amax.view(np.uint16)


def amax_cases(rng, count: int) -> np.ndarray:
    """amax FP16 bits (>= 0): the eps threshold, subnormals, extremes, random."""
    d = np.array([0, 1, 167, 168, 169, 0x3FF, 0x400, 0x3C00, 0x7BFF, 0x57F0, 0x1], np.uint16)
    return np.concatenate([d, rng.integers(0, 0x7C00, max(0, count - len(d)))
                           .astype(np.uint16)])[:count]


def scales_expected(amax_bits, ws):
    a = f16(amax_bits)
    return (f32_bits(golden.quant_scale(a)), f32_bits(golden.dequant_scale(a, np.float32(ws))))


def quant_expected(h_rows, amax_bits):
    """(q int8 [rows, n], s_q bits [rows])."""
    q, s = golden.quantize(f16(np.stack(h_rows)), f16(amax_bits))
    return q, f32_bits(s)


def pack_act_beats(q_row: np.ndarray, out_lanes: int) -> np.ndarray:
    """A quantised row as the TLMM's activation beats [ceil(n/out_lanes), out_lanes]."""
    n = len(q_row)
    nb = -(-n // out_lanes)
    out = np.zeros(nb * out_lanes, np.int64)
    out[:n] = q_row
    return out.reshape(nb, out_lanes)


def acc_rows(rng, count: int, n: int, acc_width: int) -> np.ndarray:
    lim = 1 << (acc_width - 1)
    a = rng.integers(-lim, lim, (count, n))
    a[0] = 0
    a[1, ::2] = lim - 1
    a[1, 1::2] = -lim
    return a


def dequant_expected(acc, amax_bits, ws):
    y = golden.dequantize(acc, f16(amax_bits), np.float32(ws))
    return y.view(np.uint16), f32_bits(golden.dequant_scale(f16(amax_bits), np.float32(ws)))


def residual_expected(x_bits, y_bits):
    return golden.residual_add(f16(x_bits), f16(y_bits)).view(np.uint16)


def gated_expected(g_bits, u_bits, act: str):
    return golden.gated_act(f16(g_bits), f16(u_bits), act).view(np.uint16)


def rope_expected(x_bits, cos_bits, sin_bits):
    """x_bits [tokens, heads, hd], cos/sin [tokens, hd/2] -> adjacent-pairing rope."""
    return golden.rope(f16(x_bits), f16(cos_bits), f16(sin_bits), "adjacent").view(np.uint16)
