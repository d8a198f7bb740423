"""The optional int8 KV cache beside the hw contract (NumPy only).

* :func:`kv_quant_int8` / :func:`kv_dequant_int8`: one scale per token per KV head, in the
  stream format; the engine consumes the dequantised rows (stream format), so attention over
  an int8 cache is exactly ``attention_decode(q, kv_dequant_int8(..., fmt=f), ..., fmt=f)``.
* :func:`use_int8_kv` (:class:`Int8KVOps`): a hw-numerics GoldenModel reading its KV cache as
  int8 (``tellme eval``'s int8-KV row, ``tellme study kv-int8``).

The one-pass (online-softmax) form measured against the contract is a study:
``tellme study online-softmax`` (studies/online_softmax.py).
"""

from __future__ import annotations

import numpy as np

from tellme.spec.numerics import StreamFormat, stream_format

INT8_QMAX = 127


def kv_quant_int8(x16: np.ndarray, *, fmt: StreamFormat | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8: s = RN_fmt(max|x| / 127), q = clamp(RNE(x / s), -127, 127).

    x16: [..., head_dim] in the stream format ``fmt`` (None: STREAM_FORMAT; one row = one
    token of one KV head). Returns (q int8 [..., head_dim], s [...] in the stream format); an
    all-zero row (or one whose scale underflows) has s = 0 and q = 0. amax/127 and x/s are
    correctly rounded in float64 and (significands of at most 19 bits) can never sit on a
    rounding boundary of the format / of the integers by less than 2**-30 relative unless
    they are on it exactly, so each is a single rounding.
    """
    fmt = stream_format(fmt)
    x = np.asarray(x16)
    if x.dtype != fmt.dtype:
        raise TypeError(f"KV rows must be {fmt.dtype.name} ({fmt.name} stream), got {x.dtype}")
    x = fmt.check(x, "KV rows")
    xf = x.astype(np.float64)
    amax = np.abs(xf).max(axis=-1)
    s = fmt.round(amax / INT8_QMAX)
    sf = s.astype(np.float64)[..., None]
    safe = np.where(sf > 0, sf, 1.0)
    q = np.where(sf > 0, np.clip(np.rint(xf / safe), -INT8_QMAX, INT8_QMAX), 0)
    return q.astype(np.int8), s


def kv_dequant_int8(q: np.ndarray, s16: np.ndarray, *, fmt: StreamFormat | None = None
                    ) -> np.ndarray:
    """RN_fmt(q * s): the row the engine reads (int8 x stream-format product exact in float64,
    one rounding). ``s16``: the row scales in the stream format ``fmt``."""
    fmt = stream_format(fmt)
    s = fmt.check(np.asarray(s16, fmt.dtype) if fmt.man == 10 else np.asarray(s16),
                  "int8 KV scales")
    return fmt.round(np.asarray(q, dtype=np.float64) * s.astype(np.float64)[..., None])


def kv_quant_int8_beats(x16: np.ndarray, beat: int, *, fmt: StreamFormat | None = None
                        ) -> list[int]:
    """:func:`kv_quant_int8` of rows ``x16`` ([rows, head_dim], head_dim a multiple of
    ``beat``) as the quantiser's int8 beats (``KVQuantizer.o``, the input of the int8 KV
    writer): per ``beat`` elements one integer with the codes
    (two's complement bytes, code 0 lowest) in bits [0, 8*beat) and the row's scale
    (``fmt.to_bits``) in the next ``fmt.bits`` bits."""
    fmt = stream_format(fmt)
    q, s = kv_quant_int8(np.asarray(x16).reshape(-1, np.shape(x16)[-1]), fmt=fmt)
    sb = fmt.to_bits(s)
    out = []
    for row, sc in zip(q.astype(np.int64) & 0xFF, sb, strict=True):
        for i in range(0, row.size, beat):
            out.append(sum(int(c) << (8 * j) for j, c in enumerate(row[i:i + beat]))
                       | int(sc) << (8 * beat))
    return out


def _int8_round_trip(x, fmt):
    return kv_dequant_int8(*kv_quant_int8(x, fmt=fmt), fmt=fmt)


class Int8KVOps:
    """The hw ops (stream format ``fmt``) with attention reading an int8 KV cache."""

    def __init__(self, base, fmt):
        self._b, self._fmt = base, fmt

    def __getattr__(self, name):
        return getattr(self._b, name)

    def attention_decode(self, q, kc, vc, c=None):
        f = self._fmt
        return self._b.attention_decode(q, _int8_round_trip(kc, f), _int8_round_trip(vc, f), c)

    def attention_prefill(self, q, kc, vc, start, c=None):
        f = self._fmt
        return self._b.attention_prefill(q, _int8_round_trip(kc, f), _int8_round_trip(vc, f),
                                         start, c)


def use_int8_kv(gm) -> None:
    """Make the hw-numerics GoldenModel ``gm`` read its KV cache as int8 (scales in its stream
    format)."""
    gm.ops = Int8KVOps(gm.ops, gm.fmt)
