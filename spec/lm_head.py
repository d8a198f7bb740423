"""DDR layout of the int8 LM head read by the PL LM-head unit (hw/lm_head.py ``LmHead``).

The head ``w8`` [vocab, d] (int8 codes, :func:`quantize_head`; the golden function is
sim/golden/lm_head_int.py)
with its row scales ``dscale`` [vocab] (float32) is stored in blocks of :data:`HEAD_ROWS` (64)
vocab rows; the vocabulary is padded to a multiple of 64 with zero rows (codes 0, scale 0).
Block ``b`` (rows ``64 b .. 64 b + 63``) is :func:`head_block_bytes` (``256 + 64 d``) bytes:

* bytes ``[0, 256)``: the 64 row scales, float32 little-endian (row ``64 b + r`` at ``4 r``);
* bytes ``[256 + 64 c, 256 + 64 (c + 1))``: column ``c`` (``0 <= c < d``): the 64 rows' codes
  of that column, row ``r`` at byte ``r`` (column-major inside the block).

So a ``lanes``-byte beat of the unit's weight stream is ``lanes / 4`` scales or ``lanes`` rows
of one column; every block sweeps the activation codes once. Blocks follow each other without
gaps (:func:`head_bytes`). ``d`` is a multiple of :data:`Q_BEAT` (the unit loads the activation
codes 8 per beat), at most :data:`MAX_D`.

Used by the host (it quantises and packs a model's head when it loads it), the golden
model, the RTL testbench and the top's LM_HEAD control.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .numerics import round_ratio_fp32

HEAD_ROWS = 64                       # vocab rows per block
SCALE_BYTES = 4 * HEAD_ROWS          # the block's float32 row scales
Q_BEAT = 8                           # activation codes per q beat: d is a multiple of it
MAX_D = 16384                        # |acc| < 128 * 127 * d < 2**28 (exact float64 products)
PL_TOP_K = 8                         # logits the host recomputes with its head (the PL head's
#                                      K largest; docs/numerics.md, "LM head on the PL")

__all__ = ["DSCALE_DEN", "HEAD_ROWS", "MAX_D", "PL_TOP_K", "Q_BEAT", "SCALE_BYTES", "check_d",
           "fits", "head_block_bytes", "head_blocks", "head_bytes", "pack_head",
           "quantize_head", "unpack_head"]

DSCALE_DEN = 127 * 127


def check_d(d) -> int:
    """``d`` as an int; ValueError unless it is a multiple of :data:`Q_BEAT` in
    ``[Q_BEAT, MAX_D]``."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < Q_BEAT or \
            d > MAX_D or d % Q_BEAT:
        raise ValueError(f"LM-head width d={d!r} must be a multiple of {Q_BEAT} in "
                         f"[{Q_BEAT}, {MAX_D}]")
    return int(d)


def fits(hidden: int, lanes: int, max_d: int) -> bool:
    """Whether a build's LM-head unit (``lanes`` MACs a cycle, 0 for none; rows up to
    ``max_d`` codes) takes a model of hidden size ``hidden``: then the device returns logits,
    else the final hidden rows for the host's head."""
    return bool(lanes) and hidden % Q_BEAT == 0 and hidden <= max_d


def head_blocks(vocab: int) -> int:
    """Blocks of :data:`HEAD_ROWS` rows holding ``vocab`` rows (the last one padded)."""
    if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)) or vocab < 1:
        raise ValueError(f"vocab must be a positive integer, got {vocab!r}")
    return -(-int(vocab) // HEAD_ROWS)


def head_block_bytes(d: int) -> int:
    """Bytes of one block: 64 float32 scales + ``d`` columns of 64 codes."""
    return SCALE_BYTES + HEAD_ROWS * check_d(d)


def head_bytes(vocab: int, d: int) -> int:
    """Bytes of the whole packed head (``ceil(vocab / 64)`` blocks)."""
    return head_blocks(vocab) * head_block_bytes(d)


def pack_head(w8: np.ndarray, dscale: np.ndarray) -> np.ndarray:
    """The packed head (uint8 [``head_bytes(vocab, d)``]) of codes ``w8`` (int8 [vocab, d]) and
    row scales ``dscale`` (float32 [vocab])."""
    w8 = np.asarray(w8)
    dscale = np.asarray(dscale)
    if w8.dtype != np.int8 or w8.ndim != 2:
        raise TypeError(f"w8 must be a 2-D int8 array, got {w8.dtype} {w8.shape}")
    if dscale.dtype != np.float32 or dscale.shape != w8.shape[:1]:
        raise TypeError(f"dscale must be float32 [{w8.shape[0]}], got {dscale.dtype} "
                        f"{dscale.shape}")
    vocab, d = w8.shape
    check_d(d)
    nb = head_blocks(vocab)
    pad = nb * HEAD_ROWS - vocab
    w = np.concatenate([w8, np.zeros((pad, d), np.int8)])          # [nb * 64, d]
    s = np.concatenate([dscale, np.zeros(pad, np.float32)])         # [nb * 64]
    scales = s.astype("<f4").view(np.uint8).reshape(nb, SCALE_BYTES)
    cols = w.reshape(nb, HEAD_ROWS, d).transpose(0, 2, 1)           # [nb, d, 64]: column-major
    cols = cols.view(np.uint8).reshape(nb, HEAD_ROWS * d)
    return np.ascontiguousarray(np.concatenate([scales, cols], axis=1).reshape(-1))


def unpack_head(buf, vocab: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_head`: (w8 int8 [vocab, d], dscale float32 [vocab]). ValueError
    if the size is wrong or a pad row is not zero."""
    buf = np.asarray(buf, dtype=np.uint8).reshape(-1)
    size = head_bytes(vocab, d)
    if buf.size != size:
        raise ValueError(f"packed head of vocab {vocab}, d {d} is {size} bytes, got {buf.size}")
    nb = head_blocks(vocab)
    blk = buf.reshape(nb, head_block_bytes(d))
    s = np.ascontiguousarray(blk[:, :SCALE_BYTES]).view("<f4").reshape(-1).astype(np.float32)
    cols = np.ascontiguousarray(blk[:, SCALE_BYTES:]).view(np.int8).reshape(nb, d, HEAD_ROWS)
    w = cols.transpose(0, 2, 1).reshape(nb * HEAD_ROWS, d)          # [nb * 64, d]
    if np.any(w[vocab:]) or np.any(s[vocab:].view(np.uint32)):
        raise ValueError("pad rows of the packed head are not zero")
    return np.ascontiguousarray(w[:vocab]), s[:vocab].copy()


def quantize_head(w) -> tuple[np.ndarray, np.ndarray]:
    """Head codes and row scales of W [vocab, d] (float32 values): ``(w8 int8 [vocab, d],
    dscale float32 [vocab])``.

    ``dscale_j = round_ratio_fp32`` of the exact ``m_j / 16129``; ValueError (naming the row)
    unless it is 0 or a normal float32, or if W holds NaN / Inf. The codes: ``W * 127`` is exact
    in float64 (31 bits), the quotient by ``m`` is rounded once to float64; an exact tie
    ``k + 1/2`` survives that rounding, and a non-tie quotient lies at least ``2**-34`` from any
    tie (numerator and denominator are integers of <= 31 and 24 bits with a power-of-two ratio)
    while float64's error is below ``2**-46`` for |x| <= 127, so ``np.rint`` rounds as the exact
    quotient would.
    """
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"head must be 2-D [vocab, d], got shape {w.shape}")
    w = w.astype(np.float32)
    if not np.all(np.isfinite(w)):
        raise ValueError("head holds NaN or Inf")
    m = np.abs(w).max(axis=1)                                       # [vocab], exact
    dscale = np.zeros(m.size, dtype=np.float32)
    for j, mj in enumerate(m):
        if mj == 0:
            continue
        fr = Fraction(float(mj)) / DSCALE_DEN
        try:
            dscale[j] = round_ratio_fp32(fr.numerator, fr.denominator)
        except OverflowError:
            raise ValueError(f"row {j}: dscale = {float(mj)!r} / 16129 is not a normal "
                             f"float32") from None
    safe = np.where(m > 0, m, 1.0).astype(np.float64)
    x = w.astype(np.float64) * 127.0 / safe[:, None]
    w8 = np.clip(np.rint(x), -127, 127).astype(np.int8)
    return w8, dscale
