"""Fused element-wise pipeline around the TLMM (TeLLMe v2 §4): RMSNorm + absmax, per-token
scales, quantise, the TLMM output buffer (Q-wide burst -> element-wise lanes), dequantise,
RoPE, residual add, gated activation. Each block is a
``wiring.Component`` with stream ports whose golden function of the same name is in
sim/golden/hw_numerics.py; cycle models in sim/cycles_ew.py; see
docs/hw/elementwise.md. The blocks are in the hw block registry as ``ew_*`` and
``tlmm_outbuf`` (:func:`.params.report_blocks`).
"""
