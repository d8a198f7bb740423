"""Fused element-wise pipeline around the TLMM (TeLLMe v2 §4): RMSNorm + absmax, per-token
scales, quantise, dequantise, RoPE, residual add, gated activation. Each block is a
``wiring.Component`` with stream ports whose golden function of the same name is in
``tellme.sim.golden.hw``; cycle models in ``tellme.sim.cycles_ew``; see docs/hw/elementwise.md.
"""

# Blocks of ``tellme hw report --block NAME`` (makers in :func:`.params.report_blocks`).
REPORT_BLOCKS = ("ew_norm", "ew_scale", "ew_quant", "ew_dequant", "ew_residual", "ew_gated",
                 "ew_rope")
