"""Golden model: the executable specification of tellme's hardware, NumPy only.

Block functions carry the names of the hardware blocks they specify, in two numerics modes
with the same names and signatures:

* :mod:`tellme.sim.golden.hw_numerics`: ``hw`` numerics, the bit-exact spec the RTL matches
  (docs/numerics.md);
* :mod:`tellme.sim.golden.hf`: ``float`` numerics, fp32 with HF transformers' BitNet semantics.

:mod:`tellme.sim.golden.model` runs whole models (``GoldenModel``, ``forward``);
``tellme study accuracy`` measures hw against float (docs/numerics.md §7) and
``tellme study golden-speed`` the speed.
Importing this package checks that the process does not flush subnormals to zero (FTZ/DAZ).
"""

from tellme.spec.numerics import FloatEnvironmentError, check_float_environment

from .tlmm import acc_bits, ternary_matmul, tlmm, tlmm_tables

check_float_environment()

__all__ = ["FloatEnvironmentError", "acc_bits", "check_float_environment", "ternary_matmul",
           "tlmm", "tlmm_tables"]
