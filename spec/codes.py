"""TLMM weight encoding: TeLLMe's 27-entry table code for triples of ternary weights, and the
order in which the accelerator's weight buffer consumes the codes.

NumPy only (runs on the board).

Encoding (reference: TeLLMe v2, ``generate_table_simd`` in ``linear.hpp``)
-------------------------------------------------------------------------
Weights are cut along the reduction dimension K into groups of G = 3. A group (w1, w2, w3),
each in {-1, 0, +1}, is stored as a 5-bit code c in 0..26. For activations (v1, v2, v3) the
TLMM table entry c holds the partial sum ``w1*v1 + w2*v2 + w3*v3``:

====  ==========  ==========
code  entry       (w1,w2,w3)
====  ==========  ==========
0     0           (0, 0, 0)
1..3  v1, v2, v3  single +1
4     v1+v2       (+,+,0)
5     v1-v2       (+,-,0)
6     v1+v3       (+,0,+)
7     v1-v3       (+,0,-)
8     v2+v3       (0,+,+)
9     v2-v3       (0,+,-)
10    v1+v2+v3    (+,+,+)
11    v1+v2-v3    (+,+,-)
12    v1-v2+v3    (+,-,+)
13    -v1+v2+v3   (-,+,+)
14+i  -entry(1+i) negation of code 1+i, i = 0..12
====  ==========  ==========

Buffer order ("layout v1")
--------------------------
A linear W [N_out, K] is laid out for a TLMM engine with T tables and Q parallel output columns:

* K is zero-padded to ``KP = KB * T * G`` and N to ``NP = NB * Q`` (padding weights are 0, so
  padded outputs are 0 and are dropped by the consumer);
* an *index vector* holds the T codes of one output row for one K block: code t covers
  weights ``k = (kb*T + t)*G + 0..2``;
* vectors are ordered ``[nb][kb][q]``: output-column block outermost, so any run of consecutive
  column blocks (a ping-pong tile) is one contiguous DDR range; within a block, the Q vectors of
  the Q parallel columns ``n = nb*Q + q`` are adjacent (one per weight-buffer bank).

Packing: a vector is ``T*5`` bits, code t at bits ``[5t, 5t+5)``; vectors are concatenated
LSB-first into a little-endian byte stream (bit i of the stream is bit ``i % 8`` of byte
``i // 8``).
"""

from __future__ import annotations

import numpy as np

G = 3
N_CODES = 27
CODE_BITS = 5

# PATTERNS[c] = (w1, w2, w3) for code c.
_POSITIVE = [
    (0, 0, 0),
    (1, 0, 0), (0, 1, 0), (0, 0, 1),
    (1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1), (0, 1, -1),
    (1, 1, 1), (1, 1, -1), (1, -1, 1), (-1, 1, 1),
]
PATTERNS = np.array(_POSITIVE + [tuple(-w for w in p) for p in _POSITIVE[1:]], dtype=np.int8)
PATTERNS.setflags(write=False)
assert PATTERNS.shape == (N_CODES, G)

# Lookup from base-3 index (w1+1)*9 + (w2+1)*3 + (w3+1) to code.
_TRIPLE_TO_CODE = np.zeros(27, dtype=np.uint8)
for _c, (_a, _b, _d) in enumerate(PATTERNS.tolist()):
    _TRIPLE_TO_CODE[(_a + 1) * 9 + (_b + 1) * 3 + (_d + 1)] = _c
assert len(set(_TRIPLE_TO_CODE.tolist())) == 27
_TRIPLE_TO_CODE.setflags(write=False)


def check_ternary(w: np.ndarray, what: str = "weights") -> None:
    """Raise ValueError unless every element of ``w`` is -1, 0 or +1."""
    w = np.asarray(w)
    if w.size and (w.min() < -1 or w.max() > 1):
        raise ValueError(f"{what} are not ternary: values in [{w.min()}, {w.max()}]")


def encode_triples(w: np.ndarray) -> np.ndarray:
    """Ternary weights [..., K] with K % 3 == 0 -> codes uint8 [..., K // 3]."""
    w = np.asarray(w)
    if w.shape[-1] % G:
        raise ValueError(f"last dimension {w.shape[-1]} is not a multiple of {G}; pad first")
    check_ternary(w)
    t = w.reshape(*w.shape[:-1], w.shape[-1] // G, G).astype(np.int16) + 1
    return _TRIPLE_TO_CODE[t[..., 0] * 9 + t[..., 1] * 3 + t[..., 2]]


def decode_triples(codes: np.ndarray) -> np.ndarray:
    """Codes uint8 [..., J] -> ternary int8 [..., 3*J]."""
    codes = np.asarray(codes)
    if codes.size and codes.max() >= N_CODES:
        raise ValueError(f"invalid TLMM code {int(codes.max())} (valid: 0..{N_CODES - 1})")
    w = PATTERNS[codes]
    return w.reshape(*codes.shape[:-1], codes.shape[-1] * G)


def padded_dims(n_out: int, k_in: int, t: int, q: int) -> tuple[int, int]:
    """(NB, KB): number of output-column blocks and K blocks for a [n_out, k_in] linear."""
    return -(-n_out // q), -(-k_in // (t * G))


def layout_codes(w: np.ndarray, t: int, q: int) -> np.ndarray:
    """Ternary W [N, K] -> codes uint8 [NB, KB, Q, T] in buffer order (see module docstring)."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {w.shape}")
    n, k = w.shape
    nb, kb = padded_dims(n, k, t, q)
    wp = np.zeros((nb * q, kb * t * G), dtype=np.int8)
    wp[:n, :k] = w
    codes = encode_triples(wp)                      # [NP, KB*T]
    return codes.reshape(nb, q, kb, t).transpose(0, 2, 1, 3).copy()


def unlayout_codes(codes: np.ndarray, n_out: int, k_in: int) -> np.ndarray:
    """Inverse of :func:`layout_codes`: codes [NB, KB, Q, T] -> ternary int8 W [n_out, k_in]."""
    nb, kb, q, t = codes.shape
    w = decode_triples(codes.transpose(0, 2, 1, 3).reshape(nb * q, kb * t))
    if n_out > nb * q or k_in > kb * t * G:
        raise ValueError(f"shape ({n_out}, {k_in}) exceeds the padded layout {w.shape}")
    if np.any(w[n_out:]) or np.any(w[:, k_in:]):
        raise ValueError("padding weights are not zero")
    return w[:n_out, :k_in].copy()


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Codes uint8 [..., T] -> packed little-endian byte stream (uint8, 1-D).

    The last axis is one index vector; vectors are concatenated in C order.
    """
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.size and codes.max() >= N_CODES:
        raise ValueError(f"invalid TLMM code {int(codes.max())}")
    bits = np.unpackbits(codes.reshape(-1, 1), axis=1, bitorder="little")[:, :CODE_BITS]
    return np.packbits(bits.reshape(-1), bitorder="little")


def unpack_codes(data: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: the first ``count`` 5-bit codes of a byte stream."""
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    need = -(-count * CODE_BITS // 8)
    if data.size < need:
        raise ValueError(f"packed code stream too short: {data.size} bytes, need {need}")
    bits = np.unpackbits(data[:need], bitorder="little")[: count * CODE_BITS]
    bits = bits.reshape(count, CODE_BITS)
    codes = np.packbits(bits, axis=1, bitorder="little").reshape(count)
    if codes.size and codes.max() >= N_CODES:
        raise ValueError(f"invalid TLMM code {int(codes.max())} in packed stream")
    return codes
