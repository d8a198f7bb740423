"""Integer attention (issue 11 item 3): the golden form of ``hw/attention/int_engine.py``.

The attention of the hw contract (it replaced the FP form ``hw_numerics.attention_decode``),
NumPy only; constants in :mod:`tellme.spec.attention_int`, prose in docs/numerics.md §4.1.
For one query row and head over keys j = 0..pos (K/V rows as int8 codes kq, vq with
stream-format row scales ks, vs, as ``kv_quant_int8`` writes them):

1. q quantiser (once per row and head): x_c = q_c * C exactly (C the score constant);
   g = floor(log2 max_c |x_c|) - 12; q_int_c = clamp(rnd(x_c * 2**-g), +-8191) (Q_BITS = 14)
   (rnd(y) = floor(y + 1/2), "round half up": an add and a shift in hardware).
2. S_j = sum_c q_int_c * kq_jc: exact integer (< 2**28 at head_dim 256).
3. ks_j = mk_j * 2**ek_j (19-bit integer significand); the Q.16 base-2 logit
   t_j = clamp(rnd(S_j * mk_j * 2**(ek_j + g - 2)), +-(2**31 - 1)): the scale folded once per key.
4. m = max_j t_j (exact: two passes); d = m - t_j; p_j = exp2_neg_frac(d & 0xFFFF) >> (d >> 16),
   0 for d >= 24 octaves (the FP contract's table, UQ1.23).
5. vs_j = mv_j * 2**ev_j, Y = max_j ev_j over the row's keys; w_j = rnd(p_j * mv_j * 2**(ev_j - Y
   - 30)) <= 2**12: the V scale folded once per key (q_int and w are both 14-bit signed MAC
   operands).
6. A_c = sum_j w_j * vq_jc (exact, |A| <= 2**33), L = sum_j p_j (exact);
   o_c = RN(RN32(A_c) * RN32(1/L) * 2**(Y + 30)) (the 24 x 24-bit product exact, one rounding to
   the stream format).

Every sum is an exact integer and every per-key quantity depends only on the key and on the
row's maxima (m, Y), so the result does not depend on the key order: prefill and decode agree
bit for bit. :func:`use_int_attention` makes a hw GoldenModel run its attention through this
contract (its FP K/V cache rows are quantised by ``kv_quant_int8`` when read, which equals
quantising on write: the quantiser is a function of the row).
"""

from __future__ import annotations

import numpy as np

from tellme.spec.attention import score_scale
from tellme.spec.attention_int import (
    MAX_HEAD_DIM,
    MAX_KEYS,
    P_ZERO_OCTAVES,
    Q_BITS,
    T_SAT,
    W_SHIFT,
)
from tellme.spec.numerics import (
    StreamFormat,
    bit_length,
    exp2_neg_frac,
    int_to_fp32,
    round_ratio_fp32,
    stream_format,
)

from .attention_hw import kv_quant_int8


def rnd_shift(x, s) -> np.ndarray:
    """floor(x * 2**-s + 1/2) for int64 x (|x| < 2**61) and integer shifts s >= 1."""
    x = np.asarray(x, np.int64)
    s = np.asarray(s, np.int64)
    if np.any(s < 1):
        raise ValueError("rnd_shift needs s >= 1")
    sc = np.minimum(s, 62)
    return (x + (np.int64(1) << (sc - 1))) >> sc


def parts(x, fmt: StreamFormat | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sign, integer significand, LSB exponent) of stream values: x = +-sig * 2**exp."""
    fmt = stream_format(fmt)
    s, sig, sh = fmt.fields(x)
    return s, sig, sh - fmt.frac


def quantize_q(q, c: int, *, fmt: StreamFormat | None = None,
               q_bits: int = Q_BITS) -> tuple[np.ndarray, np.ndarray]:
    """(q_int int64 [..., hd], g int64 [...]): q_int = clamp(rnd(q * C * 2**-g), +-Q_MAX) with
    g = floor(log2 max|q * C|) - Q_TOP (an all-zero row: q_int = 0, g = 0). ``q_bits`` other
    than Q_BITS: a study variant (Q_TOP = q_bits - 2, Q_MAX = 2**(q_bits-1) - 1)."""
    q_top, q_max = q_bits - 2, 2 ** (q_bits - 1) - 1
    s, sig, e = parts(q, fmt)
    x = np.where(s == 1, -sig, sig) * np.int64(c)                # exact (<= 19 + 17 bits)
    mag = sig * np.int64(c)
    # max |x| and its LSB exponent: the element with the largest magnitude (exponents ascend)
    val = np.ldexp(mag.astype(np.float64), e)                     # exact (<= 36 bits)
    i = val.argmax(axis=-1)[..., None]
    mmax = np.take_along_axis(mag, i, -1)[..., 0]
    emax = np.take_along_axis(e, i, -1)[..., 0]
    g = np.where(mmax > 0, bit_length(mmax) - 1 + emax - q_top, 0)
    sh = g[..., None] - e                                         # >= 1 unless the row is tiny
    qi = np.where(sh >= 1, rnd_shift(x, np.maximum(sh, 1)), x << np.clip(-sh, 0, 40))
    return np.clip(qi, -q_max, q_max), g


def logits(S, g, mk, ek) -> np.ndarray:
    """t = clamp(rnd(S * mk * 2**(ek + g - 2)), +-T_SAT): Q.16 base-2 logits (int64)."""
    v = np.asarray(S, np.int64) * np.asarray(mk, np.int64)
    sh = 2 - np.asarray(g, np.int64) - np.asarray(ek, np.int64)
    right = rnd_shift(v, np.maximum(sh, 1))
    k = np.clip(-sh, 0, 62)
    over = np.abs(v) > (np.int64(T_SAT) >> k)
    left = np.where(over, np.sign(v) * T_SAT, v << np.minimum(k, 31))
    return np.clip(np.where(sh >= 1, right, left), -T_SAT, T_SAT)


def weights(t, valid=None) -> np.ndarray:
    """p_j in UQ1.23 against the exact maximum of the valid keys (last axis)."""
    t = np.asarray(t, np.int64)
    if valid is None:
        valid = np.ones(t.shape, bool)
    m = np.where(valid, t, -(1 << 40)).max(axis=-1, keepdims=True)
    d = np.where(valid, m - t, 1 << 40)
    k = d >> 16
    e = exp2_neg_frac(d & 0xFFFF)
    return np.where(k >= P_ZERO_OCTAVES, 0, e >> np.minimum(k, 63))


def v_weights(p, mv, ev, Y) -> np.ndarray:
    """w_j = rnd(p_j * mv_j * 2**(ev_j - Y - W_SHIFT)) (<= 2**W_BITS; shift >= W_SHIFT)."""
    return rnd_shift(np.asarray(p, np.int64) * np.asarray(mv, np.int64),
                     W_SHIFT + np.asarray(Y, np.int64) - np.asarray(ev, np.int64))


def output(A, L, Y, *, fmt: StreamFormat | None = None) -> np.ndarray:
    """o = RN(RN32(A) * RN32(1/L) * 2**(Y + W_SHIFT)); A [..., hd], L and Y [...]."""
    fmt = stream_format(fmt)
    L = np.asarray(L, np.int64)
    rl = np.array([round_ratio_fp32(1, int(x)) for x in L.reshape(-1)],
                  np.float64).reshape(L.shape)
    a = int_to_fp32(A) * rl[..., None]                            # exact: 24 x 24 bits
    return fmt.round(np.ldexp(a, (np.asarray(Y, np.int64) + W_SHIFT)[..., None]))


def _check(q, kq, vq, n_keys):
    hd = q.shape[-1]
    if hd > MAX_HEAD_DIM:
        raise ValueError(f"head_dim {hd} > {MAX_HEAD_DIM}")
    if n_keys > MAX_KEYS:
        raise ValueError(f"{n_keys} keys > {MAX_KEYS}")
    for a, what in ((kq, "K"), (vq, "V")):
        if np.asarray(a).dtype != np.int8:
            raise TypeError(f"{what} codes must be int8")


def attend(q, kq, ks, vq, vs, valid, c: int, fmt: StreamFormat | None = None,
           q_bits: int = Q_BITS) -> np.ndarray:
    """The contract for rows of lanes: q [..., hd] (stream format), kq/vq int8 [..., n, hd]
    and ks/vs [..., n] broadcasting against q's leading axes, valid bool [..., n] (the keys a
    lane sees). Returns [..., hd] in the stream format."""
    qi, g = quantize_q(q, c, fmt=fmt, q_bits=q_bits)
    S = np.matmul(np.asarray(kq, np.int64), qi[..., :, None])[..., 0]          # [..., n]
    _, mk, ek = parts(ks, fmt)
    t = logits(S, g[..., None], mk, ek)
    p = weights(t, valid)
    _, mv, ev = parts(vs, fmt)
    ev = np.broadcast_to(ev, p.shape)
    Y = np.where(valid, ev, -(1 << 20)).max(axis=-1)
    w = v_weights(p, mv, ev, Y[..., None])
    A = np.matmul(w[..., None, :], np.asarray(vq, np.int64))[..., 0, :]        # [..., hd]
    return output(A, p.sum(axis=-1), Y, fmt=fmt)


def attention_decode(q16, kq, ks, vq, vs, c: int | None = None, *,
                     fmt: StreamFormat | None = None, q_bits: int = Q_BITS) -> np.ndarray:
    """Decode: q16 [heads, hd]; kq/vq int8 [n, kv_heads, hd], ks/vs [n, kv_heads] (stream
    format). GQA: head h reads kv head h // (heads // kv_heads). Returns [heads, hd]."""
    fmt = stream_format(fmt)
    q16 = fmt.check(np.asarray(q16), "q")
    heads, hd = q16.shape
    n, kvh, _ = kq.shape
    _check(q16, kq, vq, n)
    grp = heads // kvh
    c = score_scale(hd) if c is None else c
    qg = q16.reshape(kvh, grp, hd)
    kt = np.asarray(kq).transpose(1, 0, 2)[:, None]                # [kvh, 1, n, hd]
    vt = np.asarray(vq).transpose(1, 0, 2)[:, None]
    kst = np.asarray(ks).T[:, None, :]
    vst = np.asarray(vs).T[:, None, :]
    o = attend(qg, kt, kst, vt, vst, np.ones((kvh, grp, n), bool), c, fmt, q_bits)
    return o.reshape(heads, hd).astype(fmt.dtype)


def attention_prefill(q16, kq, ks, vq, vs, start: int, c: int | None = None, *,
                      fmt: StreamFormat | None = None, q_bits: int = Q_BITS) -> np.ndarray:
    """Causal prefill of rows at positions start..start+N-1: q16 [N, heads, hd]; caches as in
    :func:`attention_decode` with >= start + N rows. Row i sees keys 0..start+i; each row
    equals :func:`attention_decode` over its prefix. Returns [N, heads, hd]."""
    fmt = stream_format(fmt)
    q16 = fmt.check(np.asarray(q16), "q")
    N, heads, hd = q16.shape
    n = start + N
    kq, vq, ks, vs = kq[:n], vq[:n], ks[:n], vs[:n]
    _check(q16, kq, vq, n)
    kvh = kq.shape[1]
    grp = heads // kvh
    c = score_scale(hd) if c is None else c
    qg = q16.reshape(N, kvh, grp, hd)
    kt = np.asarray(kq).transpose(1, 0, 2)[None, :, None]          # [1, kvh, 1, n, hd]
    vt = np.asarray(vq).transpose(1, 0, 2)[None, :, None]
    kst = np.asarray(ks).T[None, :, None, :]
    vst = np.asarray(vs).T[None, :, None, :]
    valid = (np.arange(n)[None, :] <= start + np.arange(N)[:, None])[:, None, None, :]
    valid = np.broadcast_to(valid, (N, kvh, grp, n))
    o = attend(qg, kt, kst, vt, vst, valid, c, fmt, q_bits)
    return o.reshape(N, heads, hd).astype(fmt.dtype)


class IntAttnOps:
    """The hw ops (stream format ``fmt``) with attention in the integer contract over an int8
    KV cache quantised by ``kv_quant_int8`` (the quantising KV writer)."""

    def __init__(self, base, fmt: StreamFormat, q_bits: int = Q_BITS):
        self._b, self._fmt, self._qb = base, fmt, q_bits

    def __getattr__(self, name):
        return getattr(self._b, name)

    def attention_decode(self, q, kc, vc, c=None):
        kq, ks = kv_quant_int8(kc, fmt=self._fmt)
        vq, vs = kv_quant_int8(vc, fmt=self._fmt)
        return attention_decode(q, kq, ks, vq, vs, c, fmt=self._fmt, q_bits=self._qb)

    def attention_prefill(self, q, kc, vc, start, c=None):
        n = start + len(q)
        kq, ks = kv_quant_int8(kc[:n], fmt=self._fmt)
        vq, vs = kv_quant_int8(vc[:n], fmt=self._fmt)
        return attention_prefill(q, kq, ks, vq, vs, start, c, fmt=self._fmt, q_bits=self._qb)


def use_int_attention(gm, q_bits: int = Q_BITS) -> None:
    """Make the hw-numerics GoldenModel ``gm`` run attention in the integer contract
    (``q_bits``: the q width, a study knob; the contract is Q_BITS)."""
    gm.ops = IntAttnOps(gm.ops, gm.fmt, q_bits)
