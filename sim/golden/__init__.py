"""Golden model: the executable specification of tellme's hardware, NumPy only.

Block functions carry the names of the hardware blocks they specify.
"""

from .tlmm import acc_bits, ternary_matmul, tlmm, tlmm_tables

__all__ = ["acc_bits", "ternary_matmul", "tlmm", "tlmm_tables"]
