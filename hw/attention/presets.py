"""Attention-engine configurations per target (engine parameters; model dims are run-time),
views of the target table (spec/targets.py: ``attention`` for the FP engine below,
``attention_int`` for the integer engine, ``INT_PRESETS``). The FP engine:

* ``sim``: the cocotb default build (head_dim 16, 8 lanes, 4 elements per beat, 8-key tiles).
* ``kv260`` / ``zcu104``: head_dim up to 128 (2B4T; 96 and 100 for the 1bitLLM models),
  8 lanes (a 2B4T GQA group of 4 x 2 prefill rows, or 8 prefill rows of an MHA head),
  8 elements per beat (FP16: 128 bits, one AXI HP beat; FP24: 192 bits), 1024-key score
  tiles (2 BRAM36 per lane).

The stream format is not part of a preset: it is the contract's ``STREAM_FORMAT`` unless
``make_attention(..., fmt=)`` names one.
"""

from __future__ import annotations

from tellme.spec.numerics import StreamFormat
from tellme.spec.targets import TARGETS

from .engine import AttentionEngine

ATTN_PRESETS = {name: tg.attention for name, tg in TARGETS.items()}


def attention_params(target: str) -> dict:
    try:
        return dict(ATTN_PRESETS[target])
    except KeyError:
        raise ValueError(f"no attention preset for target {target!r}; known: "
                         f"{', '.join(ATTN_PRESETS)}") from None


def make_attention(target: str, fmt: StreamFormat | None = None) -> AttentionEngine:
    return AttentionEngine(**attention_params(target), fmt=fmt)


# The integer engine (hw/attention/int_engine.py), the one programs run: its preset is the
# target table's ``attention_int`` (spec/targets.py, which says why these numbers); this is a
# view of it by target name.
INT_PRESETS = {name: tg.attention_int for name, tg in TARGETS.items()}


def int_cycle_params(target: str) -> dict:
    """The integer engine's parameters its cycle model takes (lanes, beat, depth, q_beat,
    o_beat): ``sim/cycles_attn_int.py`` gets model dims from the model, not the
    preset's maxima."""
    return {k: v for k, v in INT_PRESETS[target].items()
            if k in ("lanes", "beat", "depth", "q_beat", "o_beat")}


def make_attention_int(target: str, fmt: StreamFormat | None = None):
    from .int_engine import IntAttentionEngine

    try:
        params = INT_PRESETS[target]
    except KeyError:
        raise ValueError(f"no integer-attention preset for target {target!r}; known: "
                         f"{', '.join(INT_PRESETS)}") from None
    return IntAttentionEngine(**params, fmt=fmt)


def report_blocks() -> dict:
    """Entries for the ``tellme hw report`` block registry (hw/report.py):
    ``{name: (description, maker(HwPreset, StreamFormat))}``."""
    return {"attention": ("FP attention engine (decode + prefill, exact two-pass softmax; "
                          "the golden model's FP form)",
                          lambda p, fmt: make_attention(p.name, fmt=fmt)),
            "attention_int": ("integer attention engine (the contract: int8 K/V, int14 q, "
                              "one adder tree per lane)",
                              lambda p, fmt: make_attention_int(p.name, fmt=fmt))}
