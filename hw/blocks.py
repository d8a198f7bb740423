"""The block registry: every hardware block ``tellme hw verilog`` writes and ``tellme hw report``
synthesises, by name.

Each entry is ``(description, maker(HwPreset, StreamFormat) -> wiring.Component)``; the areas
contribute their own entries (``report_blocks()`` of the element-wise set, the attention engine,
the KV quantiser and the weight streamer). :data:`DEFAULT_REPORT` is what ``hw report``
synthesises without ``--block`` (the TLMM design blocks); :data:`DESIGN_BLOCKS` are summed in
its table.
"""

from __future__ import annotations

DEFAULT_REPORT = ("tlmm", "tlmm_half", "weight_buffer")
DESIGN_BLOCKS = ("tlmm", "weight_buffer")


def registry() -> dict:
    """``{name: (description, maker(HwPreset, StreamFormat))}`` in help order."""
    from tellme.spec.registers import const_values

    from .attention.kv_quant import report_blocks as kv_quant_blocks
    from .attention.presets import report_blocks as attention_blocks
    from .axi_stripe import report_blocks as stripe_blocks
    from .elementwise.params import report_blocks as elementwise_blocks
    from .lm_head import report_blocks as lm_head_blocks
    from .presets import make_tlmm, make_tlmm_core, make_weight_buffer
    from .regs import RegisterFile
    from .sequencer import report_blocks as sequencer_blocks
    from .top import report_blocks as top_blocks
    from .weight_stream import report_blocks as stream_blocks

    return {
        "tlmm": ("TLMM engine, TeLLMe full 27-entry LUTRAM tables",
                 lambda p, fmt: make_tlmm(p.with_table("full"))),
        "tlmm_half": ("TLMM engine, half table (14 entries + negate), alternative",
                      lambda p, fmt: make_tlmm(p.with_table("half"))),
        "weight_buffer": ("ping-pong URAM weight buffer", lambda p, fmt: make_weight_buffer(p)),
        "tlmm_core": ("TLMM engine + weight buffer", lambda p, fmt: make_tlmm_core(p)),
        **stream_blocks(), **elementwise_blocks(), **attention_blocks(), **kv_quant_blocks(),
        **sequencer_blocks(), **top_blocks(), **lm_head_blocks(),
        **stripe_blocks(),
        "regs": ("AXI4-Lite control and status registers (spec/registers.py)",
                 lambda p, fmt: RegisterFile(const_values(p.name, fmt=fmt))),
    }


def make_block(name: str, target: str, fmt=None):
    """Elaborate-ready component of block ``name`` for ``target`` in stream format ``fmt``
    (None: the contract's)."""
    from tellme.spec.numerics import stream_format

    from .presets import preset

    blocks = registry()
    if name not in blocks:
        raise ValueError(f"unknown block {name!r}; known: {', '.join(blocks)}")
    return blocks[name][1](preset(target), stream_format(fmt))
