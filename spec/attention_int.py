"""Constants of the integer attention contract (issue 11 item 3; docs/numerics.md §4.1).

Integer dot products with exact integer accumulation (one DSP48E2 per MAC), the per-row int8
K/V scales and the per-(row, head) q scale folded once per key:

* q: int14 (``Q_BITS``) with a per-(query row, head) power-of-two scale, after multiplying by
  the score constant C (so the base-2 logit needs no further constant);
* K, V: int8 codes with one stream-format scale per row and KV head (``kv_quant_int8``: the KV
  writer quantises on write);
* scores: exact integer q.k; the K row scale (19-bit significand) is folded once per key into a
  Q.16 base-2 logit;
* softmax: the exact maximum (two passes), the contract's exp2 table, weights p in UQ1.23;
* V: the row scale is folded once per key into an unsigned weight w <= 2**12 against the
  largest V-scale exponent of the lane's keys; p.v is an exact integer sum of w * v_int8
  (q_int and w are both 14-bit signed operands of one MAC slot: one LUTRAM cell wide, and
  products below 2**20 for the lane's adder tree).

NumPy-free pure Python: read by the golden functions (sim/golden/attention_int.py), the engine
(hw/attention/int_engine.py) and the cycle model (sim/cycles_attn_int.py).
"""

from __future__ import annotations

Q_BITS = 14                      # q integer width (signed)
Q_MAX = 2 ** (Q_BITS - 1) - 1    # |q_int| <= Q_MAX (the one value that rounds to 2**13 is clamped)
Q_TOP = Q_BITS - 2               # max|q * C| is scaled into [2**Q_TOP, 2**(Q_TOP + 1))
KV_QMAX = 127                    # int8 K/V codes in [-127, 127]
T_FRAC = 16                      # base-2 logits t in Q.16 (as the FP contract)
T_SAT = 2 ** 31 - 1              # logits saturate to +-T_SAT (32-bit signed register)
P_FRAC = 23                      # softmax weights p in UQ1.23 (exp2 table)
P_ZERO_OCTAVES = 24              # p = 0 once the logit is 24 octaves below the maximum
W_SHIFT = 30                     # w = round(p * mv * 2**(ev - Y) / 2**W_SHIFT): w <= 2**12
W_BITS = 12                      # w <= 2**W_BITS (p * mv < 2**42)
MAX_KEYS = 2 ** 14               # A = sum w * v_int8: |A| <= 2**19 * MAX_KEYS = 2**33
MAX_HEAD_DIM = 256               # |S| < 2**13 * 128 * 256 = 2**28


def s_bits(head_dim: int, q_bits: int = Q_BITS) -> int:
    """Signed width of the exact score S = sum_c q_int * k_int (|terms| < 2**(q_bits + 6))."""
    return q_bits + 7 + max(head_dim - 1, 0).bit_length()


def a_bits(n_keys: int) -> int:
    """Signed width of the exact S.V accumulator (|terms| = |w * v| <= 2**(W_BITS + 7))."""
    return W_BITS + 8 + max(n_keys - 1, 0).bit_length()


def l_bits(n_keys: int) -> int:
    """Unsigned width of the softmax denominator L = sum p (p <= 2**23)."""
    return 24 + max(n_keys - 1, 0).bit_length()
