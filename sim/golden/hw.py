"""hw numerics: the executable specification of the accelerator's arithmetic (bit for bit).

One function per hardware block; the RTL of each block is compared with its function here
exactly. Formats, roundings and error bounds are the contract in docs/numerics.md; in short:

* streams between blocks (residual, normalised activations, q/k/v, KV cache, attention
  output, FFN product) are FP16 (binary16, RNE, gradual underflow, saturating at +-65504);
* every reduction is an exact integer sum (order-free): sum of squares, absmax, QK^T, softmax
  denominator, S.V, LM head;
* per-token scalars (rsqrt, 127/max, dequant scale, 1/sum) are correctly rounded FP32 from
  exact rationals (a sequential scalar unit in hardware; Python ints here);
* element-wise multiplies form the exact product and round once;
* functions: exp2 by 64-entry table + linear interpolation, SiLU by 512-segment PWL.

All arrays carry explicit dtypes; tokens are rows (leading axes), features the last axis.
Every function is standalone: it takes the raw FP16 / int inputs of its block and returns the
raw outputs, so an RTL testbench can drive it directly.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .numerics import (
    FP16_MAX, exp2_neg_frac, fp16_fields, fraction_of, int_to_fp32, round_ratio_fp32,
    rsqrt_fp32, silu_fx, sum_squares_fp16, to_fp16,
)
from .tlmm import ternary_matmul

NUMERICS = "hw"
QUANT_EPS = np.float32(1e-5)     # HF ActQuant clamp(min=1e-5), as float32
QK_FRAC = 20                     # QK^T products rounded to LSB 2**-20
SCORE_SCALE_FRAC = 18            # score scale constant C = RN(log2(e)/sqrt(hd) * 2**18)
SCORE_SAT = 2 ** 44 - 1          # raw score saturation (|q.k| < 2**24)
SV_FRAC = 24                     # S.V terms rounded to LSB 2**-24
LM_FRAC = 16                     # LM-head products rounded to LSB 2**-16
MAX_KEYS = 2 ** 20               # S.V accumulator bound (terms < 2**40)


def _f16(x, what="input") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float16:
        raise TypeError(f"{what} must be float16 (FP16 stream), got {x.dtype}")
    return x


# ---------------------------------------------------------------------------------------------
# Embedding (host) and RMSNorm + absmax (RMS-MAX unit)


def embed(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Embedding rows as FP16: RN16 of the stored value (exact if the file holds FP16)."""
    return to_fp16(np.asarray(table)[np.asarray(ids)])


def rms_scale(x16: np.ndarray, eps) -> np.ndarray:
    """Per-row r = RN32(1 / sqrt(sum(x^2) / n + eps)), float32 [rows].

    sum(x^2) is exact (:func:`sum_squares_fp16`); eps is the float32 value of rms_norm_eps.
    """
    x16 = _f16(x16)
    n = x16.shape[-1]
    eps_fr = fraction_of(np.float32(eps))
    sums = sum_squares_fp16(x16)
    out = np.empty(len(sums), dtype=np.float32)
    for i, s in enumerate(sums):
        v = Fraction(s, n << 48) + eps_fr               # mean square + eps, exact
        out[i] = rsqrt_fp32(v.numerator, v.denominator)
    return out.reshape(x16.shape[:-1])


def rmsnorm_absmax(x16: np.ndarray, g, eps) -> tuple[np.ndarray, np.ndarray]:
    """RMS-MAX unit: h = RN16(x * g * r) per element, amax = max|h| per row.

    x16: float16 [..., n] input stream; g: norm weight [n] (rounded to FP16 once: RN16);
    eps: rms_norm_eps. r from :func:`rms_scale`. The product x*g*r has <= 11+11+24 = 46
    significant bits, exact in float64, so h has exactly one rounding.
    Returns (h float16 [..., n], amax float16 [...]); amax is an exact comparison of |h|.
    """
    x16 = _f16(x16)
    g16 = to_fp16(g)
    r = rms_scale(x16, eps)
    h = to_fp16(x16.astype(np.float64) * g16.astype(np.float64) * r[..., None].astype(np.float64))
    return h, np.abs(h).max(axis=-1)


# ---------------------------------------------------------------------------------------------
# Quantise / TLMM / dequantise (the linear pipeline)


def quant_scale(amax16: np.ndarray) -> np.ndarray:
    """s_x = RN32(127 / max(amax, 1e-5)) per row, float32 (HF ActQuant's scale, correctly
    rounded)."""
    amax16 = _f16(amax16, "amax")
    out = np.empty(amax16.size, dtype=np.float32)
    eps = fraction_of(QUANT_EPS)
    for i, a in enumerate(amax16.reshape(-1)):
        m = max(fraction_of(a), eps)
        out[i] = round_ratio_fp32(127 * m.denominator, m.numerator)
    return out.reshape(amax16.shape)


def quantize(h16: np.ndarray, amax16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 q = clamp(RNE(h * s_x), -128, 127), with s_x = :func:`quant_scale` (amax).

    The product h*s_x (11 x 24 bits) is exact in float64; np.rint rounds half to even.
    Returns (q int8 [..., n], s_x float32 [...]).
    """
    h16 = _f16(h16)
    s = quant_scale(amax16)
    q = np.rint(h16.astype(np.float64) * s[..., None].astype(np.float64))
    return np.clip(q, -128, 127).astype(np.int8), s


def dequant_scale(amax16: np.ndarray, weight_scale) -> np.ndarray:
    """s_tok = RN32(max(amax, 1e-5) * weight_scale / 127) per row, float32."""
    amax16 = _f16(amax16, "amax")
    ws = fraction_of(np.float32(weight_scale))
    eps = fraction_of(QUANT_EPS)
    out = np.empty(amax16.size, dtype=np.float32)
    for i, a in enumerate(amax16.reshape(-1)):
        v = max(fraction_of(a), eps) * ws / 127
        out[i] = round_ratio_fp32(v.numerator, v.denominator)
    return out.reshape(amax16.shape)


def dequantize(acc: np.ndarray, amax16: np.ndarray, weight_scale) -> np.ndarray:
    """y = RN16(acc * s_tok): int accumulator [..., N] (|acc| < 2**29) to FP16.

    s_tok = :func:`dequant_scale`; acc*s_tok (<= 29+24 bits) is exact in float64: one rounding.
    """
    acc = np.asarray(acc, dtype=np.int64)
    if acc.size and np.abs(acc).max() >= 2 ** 29:
        raise OverflowError("TLMM accumulator exceeds 29 bits")
    s = dequant_scale(amax16, weight_scale)
    return to_fp16(acc.astype(np.float64) * s[..., None].astype(np.float64))


def linear(h16: np.ndarray, amax16: np.ndarray, w, weight_scale) -> np.ndarray:
    """quantize -> TLMM (exact integer x_q . W^T) -> dequantize. w: ternary [N, K] (int8, or
    float32 holding -1/0/+1)."""
    q, _ = quantize(h16, amax16)
    acc = ternary_matmul(q.reshape(-1, q.shape[-1]), w).reshape(*q.shape[:-1], -1)
    return dequantize(acc, amax16, weight_scale)


# ---------------------------------------------------------------------------------------------
# RoPE, residual, gating


def inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """HF default RoPE inverse frequencies, float32 [head_dim/2]: theta**(-2i/head_dim).

    Computed in float64 and rounded once (HF computes them in float32 with torch.pow; the two
    can differ by 1 ulp, which is far below the FP16 table rounding).
    """
    i = np.arange(0, head_dim, 2, dtype=np.float64)
    return (1.0 / (np.float64(theta) ** (i / head_dim))).astype(np.float32)


def rope_table(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Host-generated RoPE table: (cos, sin) float16 [len(positions), head_dim/2].

    angle = pos * inv_freq (inv_freq float32, product exact in float64), cos/sin in float64,
    one cast to FP16. The same bytes go to the device; the golden model only reads them.
    """
    pos = np.asarray(positions, dtype=np.float64)
    ang = pos[:, None] * inv_freq(head_dim, theta).astype(np.float64)[None, :]
    return to_fp16(np.cos(ang)), to_fp16(np.sin(ang))


def rope(x16: np.ndarray, cos16: np.ndarray, sin16: np.ndarray,
         pairing: str = "half") -> np.ndarray:
    """Rotate FP16 x [tokens, heads, head_dim] by the FP16 table rows [tokens, head_dim/2].

    For each pair (a, b) (``half``: a = x[i], b = x[i + hd/2]; ``adjacent``: a = x[2i],
    b = x[2i+1]) and frequency i: a' = RN16(RN32(a*c - b*s)), b' = RN16(RN32(b*c + a*s)):
    two exact FP32 products (11x11 bits), one FP32 add/sub, one rounding to FP16.
    """
    x16 = _f16(x16)
    c = _f16(cos16, "cos").astype(np.float32)[:, None, :]
    s = _f16(sin16, "sin").astype(np.float32)[:, None, :]
    x = x16.astype(np.float32)
    hd = x.shape[-1]
    if pairing == "half":
        a, b = x[..., : hd // 2], x[..., hd // 2:]
    elif pairing == "adjacent":
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        raise ValueError(f"rope pairing must be 'half' or 'adjacent', got {pairing!r}")
    ra = to_fp16(a * c - b * s)        # float32 ops: exact products, one rounded add
    rb = to_fp16(b * c + a * s)
    out = np.empty_like(x16)
    if pairing == "half":
        out[..., : hd // 2], out[..., hd // 2:] = ra, rb
    else:
        out[..., 0::2], out[..., 1::2] = ra, rb
    return out


def residual_add(x16: np.ndarray, y16: np.ndarray) -> np.ndarray:
    """RN16(x + y): FP16 add (exact in float64, one rounding, saturating)."""
    return to_fp16(_f16(x16).astype(np.float64) + _f16(y16).astype(np.float64))


def silu16(x16: np.ndarray) -> np.ndarray:
    """The SiLU unit's value rounded to FP16 (for inspection; the datapath keeps Q.22)."""
    return to_fp16(silu_fx(_f16(x16)).astype(np.float64) * 2.0 ** -22)


def gated_act(gate16: np.ndarray, up16: np.ndarray, activation: str) -> np.ndarray:
    """FFN gating, one rounding: ``silu``: RN16(silu_fx(g) * 2**-22 * up) (PWL SiLU, Q.22 times
    FP16, <= 39+11 bits exact); ``relu2``: RN16(relu(g) * relu(g) * up) (exact 33-bit product).
    """
    g = _f16(gate16, "gate").astype(np.float64)
    u = _f16(up16, "up").astype(np.float64)
    if activation == "silu":
        a = silu_fx(gate16).astype(np.float64) * 2.0 ** -22
        return to_fp16(a * u)
    if activation == "relu2":
        r = np.where(g > 0, g, 0.0)                      # relu: g if g > 0 else +0
        return to_fp16(r * r * u)
    raise ValueError(f"activation must be 'silu' or 'relu2', got {activation!r}")


# ---------------------------------------------------------------------------------------------
# Attention


def score_scale(head_dim: int) -> int:
    """C = RN(log2(e) / sqrt(head_dim) * 2**18): the host-set integer that turns raw scores into
    base-2 logits (softmax(x/sqrt(hd)) = 2**(x*log2(e)/sqrt(hd)) normalised)."""
    # log2(e) as a float64 literal (no libm); sqrt is correctly rounded (IEEE)
    return int(round(1.4426950408889634 / math.sqrt(head_dim) * 2 ** SCORE_SCALE_FRAC))


def qk_scores(q16: np.ndarray, k16: np.ndarray) -> np.ndarray:
    """Raw scores s = sum_c RNE(q_c * k_c * 2**20), int64, saturated to +-(2**44 - 1).

    q16 [..., hd] and k16 [..., hd] broadcast against each other (products of FP16 are exact
    22-bit values; rounding each to the fixed LSB 2**-20 is per term, so the integer sum is
    order-free). Terms < 2**52, hd <= 2048 keeps the sum < 2**63.
    """
    p = _f16(q16, "q").astype(np.float64) * _f16(k16, "k").astype(np.float64)
    t = np.rint(np.ldexp(p, QK_FRAC)).astype(np.int64)
    s = t.sum(axis=-1, dtype=np.int64)
    return np.clip(s, -SCORE_SAT, SCORE_SAT)


def log2_scores(s: np.ndarray, c: int) -> np.ndarray:
    """t = floor((s * C + 2**21) / 2**22): base-2 logits in Q.16 (int64)."""
    s = np.asarray(s, dtype=np.int64)
    return (s * np.int64(c) + (1 << 21)) >> 22


def softmax_weights(t: np.ndarray) -> np.ndarray:
    """p_j = 2**(-(m - t_j)) in UQ1.23 (int64) with m = max_j t_j over the last axis.

    d = m - t (Q.16, >= 0); k = d >> 16; f = d & 0xFFFF; p = exp2_neg_frac(f) >> k (0 if
    k >= 24). The maximum is exact (two-pass softmax), so the weights of a row do not depend
    on the order in which keys are processed.
    """
    t = np.asarray(t, dtype=np.int64)
    d = t.max(axis=-1, keepdims=True) - t
    k = d >> 16
    e = exp2_neg_frac(d & 0xFFFF)
    return np.where(k >= 24, 0, e >> np.minimum(k, 63))


def sv_output(p: np.ndarray, v16: np.ndarray) -> np.ndarray:
    """o = RN16(RN32(A) * RN32(1/L) / 2): normalised S.V for one (query, head).

    p: int64 [..., n] weights (UQ1.23); v16: float16 [..., n, hd].
    A_c = sum_j RNE(p_j * v_jc * 2) (= p*v at LSB 2**-24; terms < 2**40, n <= 2**20);
    L = sum_j p_j (exact, >= 2**23 because the maximum key has p = 2**23);
    A is rounded to FP32 (:func:`int_to_fp32`), 1/L is correctly rounded FP32, their product
    (48 bits) is exact in float64, times 2**-1, one rounding to FP16.
    """
    p = np.asarray(p, dtype=np.int64)
    if p.shape[-1] > MAX_KEYS:
        raise ValueError(f"{p.shape[-1]} keys > {MAX_KEYS}")
    v = _f16(v16, "v").astype(np.float64)
    terms = np.rint(p[..., :, None].astype(np.float64) * v * 2.0).astype(np.int64)
    acc = terms.sum(axis=-2, dtype=np.int64)                    # [..., hd]
    L = p.sum(axis=-1, dtype=np.int64).reshape(-1)
    rl = np.array([round_ratio_fp32(1, int(x)) for x in L], dtype=np.float32)
    rl = rl.reshape(p.shape[:-1])
    a = int_to_fp32(acc)
    return to_fp16(a * rl[..., None].astype(np.float64) * 0.5)


def _attend(q16, k16, v16, c):
    """q16 [hd], k16/v16 [n, hd] -> o16 [hd] (one query, one head)."""
    t = log2_scores(qk_scores(q16[None, :], k16), c)
    return sv_output(softmax_weights(t), v16)


def attention_decode(q16: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray,
                     c: int | None = None) -> np.ndarray:
    """Decode attention for one token.

    q16: float16 [heads, hd] (post-RoPE); k_cache, v_cache: float16 [n, kv_heads, hd] holding
    every position up to and including this token. GQA: query head h reads kv head
    h // (heads // kv_heads). Hardware: pass 1 streams K and keeps the n scores on chip
    (exact maximum), pass 2 streams V. Returns float16 [heads, hd].
    """
    q16 = _f16(q16, "q")
    heads, hd = q16.shape
    kvh = k_cache.shape[1]
    grp = heads // kvh
    c = score_scale(hd) if c is None else c
    k = _f16(k_cache, "k")
    v = _f16(v_cache, "v")
    qg = q16.reshape(kvh, grp, hd)
    s = qk_scores(qg[:, :, None, :], k.transpose(1, 0, 2)[:, None, :, :])   # [kvh, grp, n]
    p = softmax_weights(log2_scores(s, c))
    o = sv_output(p, v.transpose(1, 0, 2)[:, None, :, :])                   # [kvh, grp, hd]
    return o.reshape(heads, hd)


def attention_prefill(q16: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, start: int,
                      c: int | None = None) -> np.ndarray:
    """Causal attention for a block of tokens at positions start .. start+N-1.

    q16: float16 [N, heads, hd]; k_cache/v_cache: float16 [>= start+N, kv_heads, hd].
    Query i attends keys 0 .. start+i with exactly the arithmetic of :func:`attention_decode`
    (same scores, exact per-row maximum, same S.V), so prefill and decode agree bit for bit
    whatever the key order of the hardware schedule. Returns float16 [N, heads, hd].
    """
    q16 = _f16(q16, "q")
    n_q, heads, hd = q16.shape
    out = np.empty_like(q16)
    for i in range(n_q):
        n = start + i + 1
        out[i] = attention_decode(q16[i], k_cache[:n], v_cache[:n], c)
    return out


# ---------------------------------------------------------------------------------------------
# LM head


def lm_head(h16: np.ndarray, w, chunk: int = 1 << 22) -> np.ndarray:
    """logits = RN32(sum_i RNE(h_i * w_i * 2**16)) * 2**-16, float32 [..., vocab].

    h16: float16 [..., d] (final-norm output); w: [vocab, d] head weights, FP16 (a float32
    array is rounded to FP16 row block by row block, RNE, saturating). Products of FP16 are
    exact; rounding each to LSB 2**-16 makes the int64 sum order-free (terms < 2**48,
    d <= 2**14).
    """
    h16 = _f16(h16, "h")
    lead = h16.shape[:-1]
    h = h16.reshape(-1, h16.shape[-1]).astype(np.float64)
    w = np.asarray(w)
    vocab, d = w.shape
    out = np.empty((h.shape[0], vocab), dtype=np.float32)
    rows = max(1, chunk // max(1, h.shape[0] * d))
    for v0 in range(0, vocab, rows):
        wb = to_fp16(w[v0:v0 + rows]).astype(np.float64)
        prod = h[:, None, :] * wb[None, :, :]
        acc = np.rint(np.ldexp(prod, LM_FRAC)).astype(np.int64).sum(axis=-1, dtype=np.int64)
        out[:, v0:v0 + rows] = np.ldexp(int_to_fp32(acc), -LM_FRAC)
    return out.reshape(*lead, vocab)


__all__ = [
    "FP16_MAX", "attention_decode", "attention_prefill", "dequant_scale", "dequantize", "embed",
    "fp16_fields", "gated_act", "inv_freq", "linear", "lm_head", "log2_scores", "qk_scores",
    "quant_scale", "quantize", "residual_add", "rms_scale", "rmsnorm_absmax", "rope",
    "rope_table", "score_scale", "silu16", "softmax_weights", "sv_output",
]
