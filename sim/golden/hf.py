"""float numerics: fp32 with HF transformers' BitNet semantics (reference/bitnet.md §1.5).

Same block names and signatures as :mod:`tellme.sim.golden.hw_numerics`, so the model switches modes
by switching module. Everything is float32 (NumPy float32 ops, float32 BLAS for the float
matmuls); the ternary matmul is exact integer arithmetic (:func:`ternary_matmul`). Results agree
with HF in fp32 up to float rounding (operation order differs from torch's).
"""

from __future__ import annotations

import numpy as np

from tellme.spec.numerics import QUANT_EPS

from .tlmm import ternary_matmul

NUMERICS = "float"
F32 = np.float32


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=F32)


def embed(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return _f32(np.asarray(table)[np.asarray(ids)])


def rmsnorm_absmax(x: np.ndarray, g, eps) -> tuple[np.ndarray, np.ndarray]:
    """HF RMSNorm in fp32: g * (x * rsqrt(mean(x^2) + eps)); also max|h| per row (ActQuant's
    absmax of the next linear's input)."""
    x = _f32(x)
    var = np.mean(x * x, axis=-1, keepdims=True, dtype=F32)
    h = _f32(g) * (x * (F32(1.0) / np.sqrt(var + F32(eps))))
    return h, np.abs(h).max(axis=-1)


def quant_scale(amax: np.ndarray) -> np.ndarray:
    return F32(127.0) / np.maximum(_f32(amax), QUANT_EPS)


def quantize(h: np.ndarray, amax: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ActQuant: q = clamp(round_half_even(h * s), -128, 127), s = 127 / max(amax, 1e-5)."""
    s = quant_scale(amax)
    q = np.clip(np.rint(_f32(h) * s[..., None]), -128, 127)
    return q.astype(np.int8), s


def dequantize(acc: np.ndarray, amax: np.ndarray, weight_scale) -> np.ndarray:
    """y = acc / s * weight_scale (fp32; autobitlinear: weight_scale = mean|W|)."""
    s = quant_scale(amax)
    return (_f32(acc) / s[..., None]) * F32(weight_scale)


def linear(h: np.ndarray, amax: np.ndarray, w, weight_scale) -> np.ndarray:
    q, _ = quantize(h, amax)
    acc = ternary_matmul(q.reshape(-1, q.shape[-1]), w).reshape(*q.shape[:-1], -1)
    return dequantize(acc, amax, weight_scale)


def inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """HF ``_compute_default_rope_parameters``: 1 / theta ** (arange(0, hd, 2) / hd), fp32."""
    i = np.arange(0, head_dim, 2, dtype=np.int64).astype(F32)
    return F32(1.0) / (F32(theta) ** (i / F32(head_dim)))


def rope_table(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) float32 [len(positions), hd/2]: angles pos * inv_freq in fp32, as HF."""
    ang = _f32(positions)[:, None] * inv_freq(head_dim, theta)[None, :]
    return np.cos(ang), np.sin(ang)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, pairing: str = "half") -> np.ndarray:
    """x * cos + rotate(x) * sin for x [tokens, heads, hd]; ``half`` = HF rotate_half,
    ``adjacent`` = the same rotation on pairs (2i, 2i+1)."""
    x = _f32(x)
    c = _f32(cos)[:, None, :]
    s = _f32(sin)[:, None, :]
    hd = x.shape[-1]
    out = np.empty_like(x)
    if pairing == "half":
        a, b = x[..., : hd // 2], x[..., hd // 2:]
        out[..., : hd // 2] = a * c - b * s
        out[..., hd // 2:] = b * c + a * s
    elif pairing == "adjacent":
        a, b = x[..., 0::2], x[..., 1::2]
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = b * c + a * s
    else:
        raise ValueError(f"rope pairing must be 'half' or 'adjacent', got {pairing!r}")
    return out


def residual_add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _f32(x) + _f32(y)


def gated_act(gate: np.ndarray, up: np.ndarray, activation: str) -> np.ndarray:
    g = _f32(gate)
    if activation == "silu":
        return (g / (F32(1.0) + np.exp(-g))) * _f32(up)
    if activation == "relu2":
        r = np.maximum(g, F32(0.0))
        return (r * r) * _f32(up)
    raise ValueError(f"activation must be 'silu' or 'relu2', got {activation!r}")


def _softmax_rows(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_prefill(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, start: int,
                      c=None) -> np.ndarray:
    """Causal softmax attention in fp32 (HF eager): softmax(q k^T * hd**-0.5 + mask) v, GQA by
    repeating kv heads. q [N, heads, hd]; caches [>= start+N, kv_heads, hd]."""
    q = _f32(q)
    n_q, heads, hd = q.shape
    n = start + n_q
    k = _f32(k_cache[:n])
    v = _f32(v_cache[:n])
    kvh = k.shape[1]
    grp = heads // kvh
    scaling = F32(hd ** -0.5)
    qh = q.transpose(1, 0, 2).reshape(kvh, grp * n_q, hd)        # [kvh, grp*N, hd]
    s = np.matmul(qh, k.transpose(1, 2, 0)) * scaling             # [kvh, grp*N, n]
    s = s.reshape(kvh, grp, n_q, n)
    mask = np.arange(n)[None, :] > (start + np.arange(n_q))[:, None]
    s = np.where(mask, F32(-np.inf), s)
    p = _softmax_rows(s).reshape(kvh, grp * n_q, n)
    o = np.matmul(p, v.transpose(1, 0, 2))                        # [kvh, grp*N, hd]
    return o.reshape(heads, n_q, hd).transpose(1, 0, 2)


def attention_decode(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray,
                     c=None) -> np.ndarray:
    """One token: q [heads, hd] attends every cached position. Returns [heads, hd]."""
    n = k_cache.shape[0]
    return attention_prefill(_f32(q)[None], k_cache, v_cache, n - 1)[0]


def lm_head(h: np.ndarray, w) -> np.ndarray:
    """Full-precision LM head (not quantised): h @ W^T in fp32."""
    return _f32(h) @ _f32(w).T


__all__ = [
    "attention_decode", "attention_prefill", "dequantize", "embed", "gated_act", "inv_freq",
    "linear", "lm_head", "quant_scale", "quantize", "residual_add", "rmsnorm_absmax", "rope",
    "rope_table",
]
