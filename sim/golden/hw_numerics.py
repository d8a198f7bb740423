"""hw numerics: the executable specification of the accelerator's arithmetic (bit for bit).

One function per hardware block; the RTL of each block is compared with its function here
exactly. Formats, roundings and error bounds are the contract in docs/numerics.md; in short:

* streams between blocks (residual, normalised activations, q/k/v, KV cache, attention
  output, FFN product) are in the stream format ``numerics.STREAM_FORMAT``: FP24 (sign, FP16's
  5-bit exponent, 18 fraction bits; RNE, gradual underflow, saturating at +-65535.875). Every
  function takes ``fmt=`` (``numerics.FP16`` gives the FP16 build); :func:`bound` binds one;
* every reduction is an exact integer sum (order-free): sum of squares, absmax, QK^T, softmax
  denominator, S.V, LM head;
* per-token scalars (rsqrt, 127/max, dequant scale, 1/sum) are correctly rounded FP32 from
  exact rationals (a sequential scalar unit in hardware; Python ints here);
* element-wise multiplies form the exact product and round once;
* functions: exp2 by 64-entry table + linear interpolation, SiLU by 512-segment PWL.

All arrays carry explicit dtypes; tokens are rows (leading axes), features the last axis.
Every function is standalone: it takes the raw stream / int inputs of its block and returns the
raw outputs, so an RTL testbench can drive it directly (stream arrays: float16 for FP16, float32
holding on-grid values for FP24; ``fmt.to_bits``/``from_bits`` convert to port bits).
"""

from __future__ import annotations

import functools
import inspect
from fractions import Fraction

import numpy as np

from tellme.spec.attention import (
    LM_FRAC,
    MAX_KEYS,
    QK_FRAC,
    SCORE_SAT,
    score_scale,
)
from tellme.spec.numerics import (
    FP16_MAX,
    FP32_GRID,
    QUANT_EPS,
    StreamFormat,
    exp2_neg_frac,
    fp16_fields,
    fraction_of,
    int_to_fp32,
    round_product,
    round_ratio_fp32,
    round_sum2,
    rsqrt_fp32,
    silu_fx,
    stream_format,
    sum_squares,
    to_fp16,
)

from .tlmm import ternary_matmul

NUMERICS = "hw"


def _stream(x, what="input", fmt: StreamFormat | None = None) -> np.ndarray:
    """``x`` checked to be a stream of format ``fmt`` (None: the contract's STREAM_FORMAT)."""
    return stream_format(fmt).check(x, what)


# ---------------------------------------------------------------------------------------------
# Embedding (host) and RMSNorm + absmax (RMS-MAX unit)


def embed(table: np.ndarray, ids: np.ndarray, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """Embedding rows in the stream format: RN of the stored value (exact if the file holds
    FP16)."""
    return stream_format(fmt).round(np.asarray(table)[np.asarray(ids)])


def float_to_stream(raw: np.ndarray, dtype: str, *, fmt: StreamFormat | None = None
                    ) -> np.ndarray:
    """Stream-format bits (int64) of weight-file floats: ``raw`` the storage words (uint32 for
    "float32", uint16 for "float16" / "bfloat16"), each RN_fmt of its exact value (the values
    EMBED and NORM take from the file; hw/convert.py ``FloatToStream``). NaN is refused."""
    from tellme.quant.format import unpack_float

    f = stream_format(fmt)
    view = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2"}[dtype]
    x = unpack_float(np.asarray(raw).astype(np.uint32 if dtype == "float32" else np.uint16)
                     .view(view), dtype)
    if np.isnan(x).any():
        raise ValueError("NaN has no stream-format value")
    return f.to_bits(f.round(x))


def rms_scale(x16: np.ndarray, eps, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """Per-row r = RN32(1 / sqrt(sum(x^2) / n + eps)), float32 [rows].

    sum(x^2) is exact (:func:`~.numerics.sum_squares`, units 2**(-2 * fmt.frac)); eps is the
    float32 value of rms_norm_eps.
    """
    fmt = stream_format(fmt)
    x16 = _stream(x16, fmt=fmt)
    n = x16.shape[-1]
    eps_fr = fraction_of(np.float32(eps))
    sums = sum_squares(fmt, x16)
    out = np.empty(len(sums), dtype=np.float32)
    for i, s in enumerate(sums):
        v = Fraction(s, n << (2 * fmt.frac)) + eps_fr   # mean square + eps, exact
        out[i] = rsqrt_fp32(v.numerator, v.denominator)
    return out.reshape(x16.shape[:-1])


def rmsnorm_absmax(x16: np.ndarray, g, eps, *,
                   fmt: StreamFormat | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RMS-MAX unit: h = RN(x * g * r) per element, amax = max|h| per row.

    x16: [..., n] input stream; g: norm weight [n] (rounded to the stream format once); eps:
    rms_norm_eps. r from :func:`rms_scale`. The product x*g*r has <= 2*sig_bits + 24 bits
    (46 for FP16, 62 for FP24) and is rounded exactly once.
    Returns (h [..., n], amax [...]) in the stream format; amax is an exact comparison of |h|.
    """
    fmt = stream_format(fmt)
    x16 = _stream(x16, fmt=fmt)
    g16 = fmt.round(g)
    r = rms_scale(x16, eps, fmt=fmt)
    xg = x16.astype(np.float64) * g16.astype(np.float64)          # exact: 2 * sig_bits
    h = round_product(fmt, xg, r[..., None].astype(np.float64))
    return h, np.abs(h).max(axis=-1)


# ---------------------------------------------------------------------------------------------
# Quantise / TLMM / dequantise (the linear pipeline)


def quant_scale(amax16: np.ndarray, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """s_x = RN32(127 / max(amax, 1e-5)) per row, float32 (HF ActQuant's scale, correctly
    rounded)."""
    amax16 = _stream(amax16, "amax", fmt)
    out = np.empty(amax16.size, dtype=np.float32)
    eps = fraction_of(QUANT_EPS)
    for i, a in enumerate(amax16.reshape(-1)):
        m = max(fraction_of(a), eps)
        out[i] = round_ratio_fp32(127 * m.denominator, m.numerator)
    return out.reshape(amax16.shape)


def quantize(h16: np.ndarray, amax16: np.ndarray, *,
             fmt: StreamFormat | None = None) -> tuple[np.ndarray, np.ndarray]:
    """int8 q = clamp(RNE(h * s_x), -128, 127), with s_x = :func:`quant_scale` (amax).

    The product h*s_x (sig_bits x 24 <= 43 bits) is exact in float64; np.rint rounds half to
    even. Returns (q int8 [..., n], s_x float32 [...]).
    """
    h16 = _stream(h16, fmt=fmt)
    s = quant_scale(amax16, fmt=fmt)
    q = np.rint(h16.astype(np.float64) * s[..., None].astype(np.float64))
    return np.clip(q, -128, 127).astype(np.int8), s


def dequant_scale(amax16: np.ndarray, weight_scale, *,
                  fmt: StreamFormat | None = None) -> np.ndarray:
    """s_tok = RN32(max(amax, 1e-5) * weight_scale / 127) per row, float32."""
    amax16 = _stream(amax16, "amax", fmt)
    ws = fraction_of(np.float32(weight_scale))
    eps = fraction_of(QUANT_EPS)
    out = np.empty(amax16.size, dtype=np.float32)
    for i, a in enumerate(amax16.reshape(-1)):
        v = max(fraction_of(a), eps) * ws / 127
        out[i] = round_ratio_fp32(v.numerator, v.denominator)
    return out.reshape(amax16.shape)


def dequantize(acc: np.ndarray, amax16: np.ndarray, weight_scale, *,
               fmt: StreamFormat | None = None) -> np.ndarray:
    """y = RN(acc * s_tok): int accumulator [..., N] (|acc| < 2**29) to the stream format.

    s_tok = :func:`dequant_scale`; acc*s_tok (<= 29+24 bits) is exact in float64: one rounding.
    """
    fmt = stream_format(fmt)
    acc = np.asarray(acc, dtype=np.int64)
    if acc.size and np.abs(acc).max() >= 2 ** 29:
        raise OverflowError("TLMM accumulator exceeds 29 bits")
    s = dequant_scale(amax16, weight_scale, fmt=fmt)
    return fmt.round(acc.astype(np.float64) * s[..., None].astype(np.float64))


def linear(h16: np.ndarray, amax16: np.ndarray, w, weight_scale, *,
           fmt: StreamFormat | None = None) -> np.ndarray:
    """quantize -> TLMM (exact integer x_q . W^T) -> dequantize. w: ternary [N, K] (int8, or
    float32 holding -1/0/+1)."""
    q, _ = quantize(h16, amax16, fmt=fmt)
    acc = ternary_matmul(q.reshape(-1, q.shape[-1]), w).reshape(*q.shape[:-1], -1)
    return dequantize(acc, amax16, weight_scale, fmt=fmt)


# ---------------------------------------------------------------------------------------------
# RoPE, residual, gating


def inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """HF default RoPE inverse frequencies, float32 [head_dim/2]: theta**(-2i/head_dim).

    Computed in float64 and rounded once (HF computes them in float32 with torch.pow; the two
    can differ by 1 ulp, which is far below the table rounding).
    """
    i = np.arange(0, head_dim, 2, dtype=np.float64)
    return (1.0 / (np.float64(theta) ** (i / head_dim))).astype(np.float32)


def rope_table(positions: np.ndarray, head_dim: int, theta: float, *,
               fmt: StreamFormat | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Host-generated RoPE table: (cos, sin) [len(positions), head_dim/2] in the stream format.

    angle = pos * inv_freq (inv_freq float32, product exact in float64), cos/sin in float64,
    one rounding to the stream format. The same bytes go to the device; the golden model only
    reads them.
    """
    fmt = stream_format(fmt)
    pos = np.asarray(positions, dtype=np.float64)
    ang = pos[:, None] * inv_freq(head_dim, theta).astype(np.float64)[None, :]
    return fmt.round(np.cos(ang)), fmt.round(np.sin(ang))


def rope(x16: np.ndarray, cos16: np.ndarray, sin16: np.ndarray,
         pairing: str = "half", *, fmt: StreamFormat | None = None) -> np.ndarray:
    """Rotate x [tokens, heads, head_dim] by the table rows [tokens, head_dim/2].

    For each pair (a, b) (``half``: a = x[i], b = x[i + hd/2]; ``adjacent``: a = x[2i],
    b = x[2i+1]) and frequency i: a' = RN(RN32(a*c - b*s)), b' = RN(RN32(b*c + a*s)): two
    exact products (2 * sig_bits), their exact sum rounded to FP32, then to the stream format.
    """
    fmt = stream_format(fmt)
    x16 = _stream(x16, fmt=fmt)
    c = _stream(cos16, "cos", fmt).astype(np.float64)[:, None, :]
    s = _stream(sin16, "sin", fmt).astype(np.float64)[:, None, :]
    x = x16.astype(np.float64)
    hd = x.shape[-1]
    if pairing == "half":
        a, b = x[..., : hd // 2], x[..., hd // 2:]
    elif pairing == "adjacent":
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        raise ValueError(f"rope pairing must be 'half' or 'adjacent', got {pairing!r}")
    ra = fmt.round(round_sum2(FP32_GRID, a * c, -(b * s)))   # exact products, RN32, RN
    rb = fmt.round(round_sum2(FP32_GRID, b * c, a * s))
    out = np.empty_like(x16)
    if pairing == "half":
        out[..., : hd // 2], out[..., hd // 2:] = ra, rb
    else:
        out[..., 0::2], out[..., 1::2] = ra, rb
    return out


def residual_add(x16: np.ndarray, y16: np.ndarray, *,
                 fmt: StreamFormat | None = None) -> np.ndarray:
    """RN(x + y): stream add (exact in float64, one rounding, saturating)."""
    fmt = stream_format(fmt)
    return fmt.round(_stream(x16, fmt=fmt).astype(np.float64)
                     + _stream(y16, fmt=fmt).astype(np.float64))


def silu(x16: np.ndarray, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """The SiLU unit's value rounded to the stream format (for inspection; the datapath keeps
    Q.22)."""
    fmt = stream_format(fmt)
    return fmt.round(silu_fx(_stream(x16, fmt=fmt), fmt).astype(np.float64) * 2.0 ** -22)


def gated_act(gate16: np.ndarray, up16: np.ndarray, activation: str, *,
              fmt: StreamFormat | None = None) -> np.ndarray:
    """FFN gating, one rounding: ``silu``: RN(silu_fx(g) * 2**-22 * up) (PWL SiLU, Q.22 times
    the stream value, exact); ``relu2``: RN(relu(g) * relu(g) * up) (exact 3 * sig_bits-bit
    product: 33 bits for FP16, 57 for FP24)."""
    fmt = stream_format(fmt)
    g = _stream(gate16, "gate", fmt).astype(np.float64)
    u = _stream(up16, "up", fmt).astype(np.float64)
    if activation == "silu":
        a = silu_fx(gate16, fmt).astype(np.float64) * 2.0 ** -22   # <= 39 bits, exact
        if fmt.man == 10:
            return fmt.round(a * u)
        return round_product(fmt, a, u)          # 39 + 19 bits: split u (<= 24 bits)
    if activation == "relu2":
        r = np.where(g > 0, g, 0.0)                      # relu: g if g > 0 else +0
        return round_product(fmt, r * r, u)
    raise ValueError(f"activation must be 'silu' or 'relu2', got {activation!r}")


# ---------------------------------------------------------------------------------------------
# Attention


def qk_scores(q16: np.ndarray, k16: np.ndarray, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """Raw scores s = sum_c RNE(q_c * k_c * 2**20), int64, saturated to +-(2**44 - 1).

    q16 [..., hd] and k16 [..., hd] broadcast against each other (products of stream values
    are exact: 2 * sig_bits <= 38 bits; rounding each to the fixed LSB 2**-20 is per term, so
    the integer sum is order-free). Terms < 2**52, hd <= 2048 keeps the sum < 2**63.
    """
    p = _stream(q16, "q", fmt).astype(np.float64) * _stream(k16, "k", fmt).astype(np.float64)
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


def sv_output(p: np.ndarray, v16: np.ndarray, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """o = RN(RN32(A) * RN32(1/L) / 2): normalised S.V for one (query, head).

    p: int64 [..., n] weights (UQ1.23); v16: [..., n, hd] in the stream format.
    A_c = sum_j RNE(p_j * v_jc * 2) (= p*v at LSB 2**-24; terms < 2**40, n <= 2**20);
    L = sum_j p_j (exact, >= 2**23 because the maximum key has p = 2**23);
    A is rounded to FP32 (:func:`int_to_fp32`), 1/L is correctly rounded FP32, their product
    (48 bits) is exact in float64, times 2**-1, one rounding to the stream format.
    """
    fmt = stream_format(fmt)
    p = np.asarray(p, dtype=np.int64)
    if p.shape[-1] > MAX_KEYS:
        raise ValueError(f"{p.shape[-1]} keys > {MAX_KEYS}")
    v = _stream(v16, "v", fmt).astype(np.float64)
    terms = np.rint(p[..., :, None].astype(np.float64) * v * 2.0).astype(np.int64)
    acc = terms.sum(axis=-2, dtype=np.int64)                    # [..., hd]
    L = p.sum(axis=-1, dtype=np.int64).reshape(-1)
    rl = np.array([round_ratio_fp32(1, int(x)) for x in L], dtype=np.float32)
    rl = rl.reshape(p.shape[:-1])
    a = int_to_fp32(acc)
    return fmt.round(a * rl[..., None].astype(np.float64) * 0.5)


def _attend(q16, k16, v16, c, fmt=None):
    """q16 [hd], k16/v16 [n, hd] -> o16 [hd] (one query, one head)."""
    t = log2_scores(qk_scores(q16[None, :], k16, fmt=fmt), c)
    return sv_output(softmax_weights(t), v16, fmt=fmt)


def attention_decode(q16: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray,
                     c: int | None = None, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """Decode attention for one token.

    q16: [heads, hd] (post-RoPE); k_cache, v_cache: [n, kv_heads, hd] holding every position
    up to and including this token, all in the stream format. GQA: query head h reads kv head
    h // (heads // kv_heads). Hardware: pass 1 streams K and keeps the n scores on chip
    (exact maximum), pass 2 streams V. Returns [heads, hd] in the stream format.
    """
    q16 = _stream(q16, "q", fmt)
    heads, hd = q16.shape
    kvh = k_cache.shape[1]
    grp = heads // kvh
    c = score_scale(hd) if c is None else c
    k = _stream(k_cache, "k", fmt)
    v = _stream(v_cache, "v", fmt)
    qg = q16.reshape(kvh, grp, hd)
    s = qk_scores(qg[:, :, None, :], k.transpose(1, 0, 2)[:, None, :, :], fmt=fmt)
    p = softmax_weights(log2_scores(s, c))
    o = sv_output(p, v.transpose(1, 0, 2)[:, None, :, :], fmt=fmt)          # [kvh, grp, hd]
    return o.reshape(heads, hd)


def attention_prefill(q16: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, start: int,
                      c: int | None = None, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """Causal attention for a block of tokens at positions start .. start+N-1.

    q16: [N, heads, hd]; k_cache/v_cache: [>= start+N, kv_heads, hd] (stream format).
    Query i attends keys 0 .. start+i with exactly the arithmetic of :func:`attention_decode`
    (same scores, exact per-row maximum, same S.V), so prefill and decode agree bit for bit
    whatever the key order of the hardware schedule. Returns [N, heads, hd].
    """
    q16 = _stream(q16, "q", fmt)
    n_q, _heads, _hd = q16.shape
    out = np.empty_like(q16)
    for i in range(n_q):
        n = start + i + 1
        out[i] = attention_decode(q16[i], k_cache[:n], v_cache[:n], c, fmt=fmt)
    return out


# ---------------------------------------------------------------------------------------------
# LM head


def lm_head(h16: np.ndarray, w, chunk: int = 1 << 22, *,
            fmt: StreamFormat | None = None) -> np.ndarray:
    """logits = RN32(sum_i RNE(h_i * w_i * 2**16)) * 2**-16, float32 [..., vocab].

    h16: [..., d] final-norm output in the stream format; w: [vocab, d] head weights, FP16 (a
    float32 array is rounded to FP16 row block by row block, RNE, saturating). Products are
    exact (sig_bits + 11 bits); rounding each to LSB 2**-16 makes the int64 sum order-free
    (terms < 2**48, d <= 2**14).
    """
    h16 = _stream(h16, "h", fmt)
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


class Bound:
    """This module's functions with the stream format ``fmt`` bound (``hw.bound(FP16).rope(...)``);
    functions without a ``fmt`` parameter pass through."""

    def __init__(self, fmt: StreamFormat):
        self.fmt = fmt

    def __getattr__(self, name):             # first use of a name only: then cached
        if name.startswith("_") or name not in globals():
            raise AttributeError(f"tellme.sim.golden.hw_numerics has no attribute {name!r}")
        f = globals()[name]
        if callable(f) and "fmt" in inspect.signature(f).parameters:
            f = functools.partial(f, fmt=self.fmt)
        setattr(self, name, f)
        return f


def bound(fmt: StreamFormat | None = None) -> Bound:
    return Bound(stream_format(fmt))


__all__ = [
    "Bound", "bound",
    "FP16_MAX", "attention_decode", "attention_prefill", "dequant_scale", "dequantize", "embed",
    "fp16_fields", "gated_act", "inv_freq", "linear", "lm_head", "log2_scores", "qk_scores",
    "quant_scale", "quantize", "residual_add", "rms_scale", "rmsnorm_absmax", "rope",
    "rope_table", "score_scale", "silu", "softmax_weights", "sv_output",
]
