"""Constants of the integer attention contract (issue 11 item 3; docs/numerics.md §4.1, proposed).

Integer dot products with exact integer accumulation (one DSP48E2 per MAC), the per-row int8
K/V scales and the per-(row, head) q scale folded once per key:

* q: int16 with a per-(query row, head) power-of-two scale, after multiplying by the score
  constant C (so the base-2 logit needs no further constant);
* K, V: int8 codes with one stream-format scale per row and KV head (``kv_quant_int8``: the KV
  writer quantises on write);
* scores: exact integer q.k; the K row scale (19-bit significand) is folded once per key into a
  Q.16 base-2 logit;
* softmax: the exact maximum (two passes), the contract's exp2 table, weights p in UQ1.23;
* V: the row scale is folded once per key into an unsigned weight w < 2**26 against the
  largest V-scale exponent of the lane's keys; p.v is an exact integer sum of w * v_int8.

NumPy-free pure Python: read by the golden functions (sim/golden/attention_int.py), the engine
(hw/attention/int_engine.py) and the cycle model (sim/cycles_attn_int.py).
"""

from __future__ import annotations

Q_BITS = 16                      # q integer width (signed)
Q_MAX = 2 ** (Q_BITS - 1) - 1    # |q_int| <= Q_MAX (the one value that rounds to 2**15 is clamped)
Q_TOP = Q_BITS - 2               # max|q * C| is scaled into [2**Q_TOP, 2**(Q_TOP + 1))
KV_QMAX = 127                    # int8 K/V codes in [-127, 127]
T_FRAC = 16                      # base-2 logits t in Q.16 (as the FP contract)
T_SAT = 2 ** 31 - 1              # logits saturate to +-T_SAT (32-bit signed register)
P_FRAC = 23                      # softmax weights p in UQ1.23 (exp2 table)
P_ZERO_OCTAVES = 24              # p = 0 once the logit is 24 octaves below the maximum
W_SHIFT = 16                     # w = round(p * mv * 2**(ev - Y) / 2**W_SHIFT): w < 2**26
W_BITS = 26                      # unsigned width of the folded weight (27-bit signed DSP port)
MAX_KEYS = 2 ** 14               # A = sum w * v_int8 < 2**33 * MAX_KEYS = 2**47 (48-bit DSP P)
MAX_HEAD_DIM = 256               # |S| < 2**15 * 127 * 256 < 2**30


def s_bits(head_dim: int) -> int:
    """Signed width of the exact score S = sum_c q_int * k_int (terms < 2**22 in magnitude)."""
    return 23 + max(head_dim - 1, 0).bit_length()


def a_bits(n_keys: int) -> int:
    """Signed width of the exact S.V accumulator (terms |w * v| < 2**33)."""
    return 34 + max(n_keys - 1, 0).bit_length()


def l_bits(n_keys: int) -> int:
    """Unsigned width of the softmax denominator L = sum p (p <= 2**23)."""
    return 24 + max(n_keys - 1, 0).bit_length()
