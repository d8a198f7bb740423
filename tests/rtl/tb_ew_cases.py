"""Vector generators and golden expectations shared by the element-wise tests (Amaranth-sim
unit tests in tests/test_hw_ew_*.py and the cocotb testbench tests/rtl/tb_ew.py).

Everything returns raw integers (stream-format bits, FP32 bits, int8, accumulators) as NumPy
arrays, with the golden hw function's result computed from the same bits. ``fmt`` is a
``StreamFormat`` (None: the contract's STREAM_FORMAT); bits are ``fmt.to_bits`` encodings
(sign at bit ``fmt.bits - 1``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from tellme.sim.golden import hw_numerics as golden
from tellme.spec.numerics import FP16, stream_format

F16_MAX_BITS = 0x7BFF


def fmt_of(fmt):
    return stream_format(fmt)


def enc(x, fmt=None) -> np.ndarray:
    """Stream bits (int64; uint16 for FP16) of RN_fmt(x)."""
    fmt = fmt_of(fmt)
    b = fmt.to_bits(fmt.round(np.asarray(x, np.float64)))
    return b.astype(np.uint16) if fmt.man == 10 else b


def dec(bits, fmt=None) -> np.ndarray:
    """Values (fmt.dtype) of stream bits."""
    return fmt_of(fmt).from_bits(np.asarray(bits, np.int64))


def _out(bits, fmt) -> np.ndarray:
    return bits.astype(np.uint16) if fmt.man == 10 else bits.astype(np.int64)


def neg_zero(fmt=None) -> int:
    return 1 << (fmt_of(fmt).bits - 1)


def max_bits(fmt=None) -> int:
    """Magnitude code of the largest finite value (FP16 0x7BFF)."""
    fmt = fmt_of(fmt)
    return (0x1E << fmt.man) | ((1 << fmt.man) - 1)


def fp16_bits(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float16).view(np.uint16)


def random_bits(rng, n, kind="mixed", fmt=None) -> np.ndarray:
    """Stream bit patterns: ``normal`` (N(0, sigma), random sigma), ``full`` (any finite
    pattern), ``mixed`` (both plus zeros, -0, subnormals, +-max). FP16 draws are those of
    :func:`random_fp16`."""
    fmt = fmt_of(fmt)
    M = fmt.man
    mx = fmt.max
    if kind == "normal":
        sigma = 10.0 ** rng.uniform(-3, 2)
        return enc(np.clip(rng.normal(0, sigma, n), -mx, mx), fmt)
    full = rng.integers(0, 1 << fmt.bits, n).astype(np.int64)
    emask = 0x1F << M
    full[(full & emask) == emask] &= ~emask               # Inf/NaN code -> a subnormal
    full = _out(full, fmt)
    if kind == "full":
        return full
    out = enc(np.clip(rng.normal(0, 10.0 ** rng.uniform(-3, 2), n), -mx, mx), fmt)
    pick = rng.random(n)
    out = np.where(pick < 0.3, full, out)
    nz = neg_zero(fmt)
    specials = np.array([0, nz, 1, nz | 1, (1 << M) - 1, 1 << M, max_bits(fmt),
                         nz | max_bits(fmt), int(enc(1.0, fmt)), int(enc(-1.0, fmt))],
                        dtype=np.int64)
    sp = pick > 0.9
    out[sp] = rng.choice(specials, sp.sum())
    return _out(out, fmt)


def random_fp16(rng, n, kind="mixed") -> np.ndarray:
    """:func:`random_bits` at FP16 (uint16)."""
    return random_bits(rng, n, kind, FP16)


def f16(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint16).view(np.float16)


def f32_bits(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def ties(rng, n, fmt=None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (x, y) of stream bits whose exact sum lies halfway between two neighbours of the
    format's grid (both nearest-even directions), within the normal range: x has exponent e,
    y = +-2**(e - man - 1) (half an LSB of x)."""
    fmt = fmt_of(fmt)
    M = fmt.man
    e = rng.integers(2, 29, n)                             # x's shift
    frac = rng.integers(0, 1 << M, n)
    sx = rng.integers(0, 2, n)
    x = (sx << (fmt.bits - 1)) | ((e + 1) << M) | frac
    half = np.ldexp(1.0, (e - fmt.frac - 1).astype(np.int64))    # x's LSB is 2**(e - frac)
    sy = rng.integers(0, 2, n)
    y = enc(np.where(sy == 1, -half, half), fmt)
    return _out(x, fmt), _out(np.asarray(y, np.int64), fmt)


# --------------------------------------------------------------------------- per block

def norm_rows(rng, n: int, count: int, fmt=None) -> list[np.ndarray]:
    """Directed + random rows for RMSNorm: random, zeros, -0, one huge outlier, all equal,
    full-range patterns, tiny (subnormal) values."""
    fmt = fmt_of(fmt)
    rows = [random_bits(rng, n, "normal", fmt), _out(np.zeros(n, np.int64), fmt),
            _out(np.full(n, neg_zero(fmt), np.int64), fmt)]
    r = enc(rng.normal(0, 0.01, n), fmt)
    r[rng.integers(n)] = max_bits(fmt)
    rows.append(r)
    rows.append(_out(np.full(n, int(enc(-2.5, fmt)), np.int64), fmt))
    rows.append(random_bits(rng, n, "full", fmt))
    rows.append(_out(rng.integers(0, 1 << fmt.man, n) | (rng.integers(0, 2, n)
                                                         << (fmt.bits - 1)), fmt))
    while len(rows) < count:
        rows.append(random_bits(rng, n, rng.choice(["normal", "mixed"]), fmt))
    return rows[:count]


def norm_expected(rows, g_bits, eps, fmt=None):
    """(h bits [rows, n], amax bits [rows]) of golden rmsnorm_absmax."""
    fmt = fmt_of(fmt)
    x = dec(np.stack(rows), fmt)
    h, amax = golden.rmsnorm_absmax(x, dec(g_bits, fmt), np.float32(eps), fmt=fmt)
    return _out(fmt.to_bits(h), fmt), _out(fmt.to_bits(amax), fmt)


def amax_cases(rng, count: int, fmt=None) -> np.ndarray:
    """amax bits (>= 0): the eps threshold, subnormals, extremes, random."""
    fmt = fmt_of(fmt)
    M = fmt.man
    eg = math.ceil(Fraction(float(golden.QUANT_EPS)) * 2 ** fmt.frac)
    d = np.array([0, 1, eg - 1, eg, eg + 1, (1 << M) - 1, 1 << M, int(enc(1.0, fmt)),
                  max_bits(fmt), int(enc(127.0, fmt)), 1], np.int64)
    return _out(np.concatenate([d, rng.integers(0, 0x1F << M, max(0, count - len(d)))])[:count],
                fmt)


def scales_expected(amax_bits, ws, fmt=None):
    a = dec(amax_bits, fmt)
    return (f32_bits(golden.quant_scale(a, fmt=fmt_of(fmt))),
            f32_bits(golden.dequant_scale(a, np.float32(ws), fmt=fmt_of(fmt))))


def quant_expected(h_rows, amax_bits, fmt=None):
    """(q int8 [rows, n], s_q bits [rows])."""
    q, s = golden.quantize(dec(np.stack(h_rows), fmt), dec(amax_bits, fmt), fmt=fmt_of(fmt))
    return q, f32_bits(s)


def row_amax(h_bits, fmt=None) -> np.ndarray:
    """max|h| of each row, as stream bits."""
    fmt = fmt_of(fmt)
    v = np.abs(dec(np.stack(h_bits), fmt).astype(np.float64)).max(axis=-1)
    return enc(v, fmt)


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


def dequant_expected(acc, amax_bits, ws, fmt=None):
    fmt = fmt_of(fmt)
    a = dec(amax_bits, fmt)
    y = golden.dequantize(acc, a, np.float32(ws), fmt=fmt)
    return _out(fmt.to_bits(y), fmt), f32_bits(golden.dequant_scale(a, np.float32(ws), fmt=fmt))


def residual_expected(x_bits, y_bits, fmt=None):
    fmt = fmt_of(fmt)
    return _out(fmt.to_bits(golden.residual_add(dec(x_bits, fmt), dec(y_bits, fmt), fmt=fmt)),
                fmt)


def gated_expected(g_bits, u_bits, act: str, fmt=None):
    """Golden gated_act (IEEE signs: an exact-zero product carries the product's sign)."""
    fmt = fmt_of(fmt)
    g, u = dec(g_bits, fmt), dec(u_bits, fmt)
    return _out(fmt.to_bits(golden.gated_act(g, u, act, fmt=fmt)), fmt)


def silu_expected(g_bits, fmt=None):
    fmt = fmt_of(fmt)
    return _out(fmt.to_bits(golden.silu(dec(g_bits, fmt), fmt=fmt)), fmt)


def rope_expected(x_bits, cos_bits, sin_bits, fmt=None):
    """x_bits [tokens, heads, hd], cos/sin [tokens, hd/2] -> adjacent-pairing rope."""
    fmt = fmt_of(fmt)
    y = golden.rope(dec(x_bits, fmt), dec(cos_bits, fmt), dec(sin_bits, fmt), "adjacent",
                    fmt=fmt)
    return _out(fmt.to_bits(y), fmt)


def rope_table_bits(positions, head_dim: int, theta: float, fmt=None):
    """(cos, sin) bits [len(positions), head_dim/2] of golden rope_table."""
    fmt = fmt_of(fmt)
    c, s = golden.rope_table(np.asarray(positions), head_dim, theta, fmt=fmt)
    return _out(fmt.to_bits(c), fmt), _out(fmt.to_bits(s), fmt)


def dequant_tie_rows(rng, count: int, n: int, acc_width: int, fmt=None):
    """(acc [count, n], amax bits [count], ws) with s_tok = 2**-(F + 8) exactly (amax = 127,
    ws = 2**-(F + 8)): y = acc * 2**-(F+8) is subnormal with LSB 2**-F, so it rounds at the
    format's subnormal point; acc = 0x80 mod 0x100 gives exact ties (both directions)."""
    fmt = fmt_of(fmt)
    lim = 1 << (acc_width - 1)
    acc = rng.integers(-lim, lim, (count, n))
    tie = rng.random((count, n)) < 0.5
    acc = np.where(tie, (acc & ~0xFF) | 0x80, acc)
    amax = _out(np.full(count, int(enc(127.0, fmt)), np.int64), fmt)
    return acc, amax, np.float32(2.0 ** -(fmt.frac + 8))
