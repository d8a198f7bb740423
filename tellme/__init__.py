"""tellme: ternary BitNet b1.58 language models on Kria KV260 / ZCU104 FPGAs.

Subpackages: ``tellme.quant`` (checkpoints, weight format), ``tellme.sim`` (golden model,
cycle models, RTL simulation), ``tellme.hw`` (Amaranth generators), ``tellme.host`` (driver, CLI).
"""

__version__ = "0.1.0"
