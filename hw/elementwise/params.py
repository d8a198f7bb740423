"""Element-wise pipeline parameters per hardware preset, and a harness holding every block."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amaranth.hdl import Module
from amaranth.lib import wiring

from tellme.spec.targets import TARGETS

# Longest row the RMS-MAX row buffer holds, per target (the target table's row_max).
N_MAX = {name: tg.row_max for name, tg in TARGETS.items()}
# Element-wise stream lanes per target (the target table's ew_lanes, sized by the rate analysis
# `tellme hw rates`; tests/test_rates.py checks that they cover it).
EW_LANES = {name: tg.ew_lanes for name, tg in TARGETS.items()}


@dataclass(frozen=True)
class EwParams:
    lanes: int            # stream elements per beat of every element-wise block (the
                          # target's ew_lanes, from the rate analysis: docs/hw/elementwise.md)
    q: int                # the TLMM's Q output columns: the output buffer's input width
    t: int                # TLMM tables: the quantiser emits 3*t int8 per beat
    acc_width: int        # TLMM accumulator width
    n_max: int            # longest RMSNorm row
    man: int = -1         # stream format fraction bits (10: FP16, 18: FP24); -1: the
                          # contract's STREAM_FORMAT at construction
    ob_depth: int = 16    # TLMM output buffer depth in Q-wide beats (presets: 2*nbt_max)

    def __post_init__(self):
        if self.man == -1:
            from tellme.spec.numerics import STREAM_FORMAT

            object.__setattr__(self, "man", STREAM_FORMAT.man)

    @property
    def fmt(self):
        from tellme.spec.numerics import StreamFormat

        return StreamFormat(self.man)

    @classmethod
    def from_preset(cls, name: str, **over) -> EwParams:
        from tellme.hw.presets import preset
        from tellme.spec.tlmm import acc_bits

        p = preset(name)
        kw = dict(lanes=EW_LANES[name], q=p.q, t=p.t, acc_width=acc_bits(p.kb_max * 3 * p.t),
                  n_max=N_MAX[name], ob_depth=2 * p.nbt_max)
        kw.update(over)
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)


BLOCK_KEYS = ("norm", "ts", "quant", "ob", "dq", "res", "ga", "rope")


def make_block(p: EwParams, key: str):
    from .dequantize import Dequantize
    from .gated_act import GatedAct
    from .outbuf import TlmmOutBuffer
    from .quantize import Quantize
    from .residual import ResidualAdd
    from .rmsnorm import RMSNormAbsmax
    from .rope import RoPE
    from .scalar import TokenScale

    f = p.fmt
    makers = {
        "norm": lambda: RMSNormAbsmax(lanes=p.lanes, n_max=p.n_max, fmt=f),
        "ts": lambda: TokenScale(fmt=f),
        "quant": lambda: Quantize(lanes=p.lanes, out_lanes=3 * p.t, fmt=f),
        "ob": lambda: TlmmOutBuffer(q=p.q, lanes=p.lanes, acc_width=p.acc_width,
                                    depth=p.ob_depth),
        "dq": lambda: Dequantize(lanes=p.lanes, acc_width=p.acc_width, fmt=f),
        "res": lambda: ResidualAdd(lanes=p.lanes, fmt=f),
        "ga": lambda: GatedAct(lanes=p.lanes, fmt=f),
        "rope": lambda: RoPE(lanes=p.lanes, fmt=f),
    }
    if key not in makers:
        raise ValueError(f"unknown element-wise block {key!r}; known: {', '.join(makers)}")
    return makers[key]()


def make_blocks(p: EwParams) -> dict:
    return {k: make_block(p, k) for k in BLOCK_KEYS}


class EwHarness(wiring.Component):
    """Every element-wise block side by side, ports renamed ``<block>_<port>`` (one Verilator
    build for the whole test suite). No logic of its own."""

    def __init__(self, p: EwParams):
        self._blocks = make_blocks(p)
        members = {f"{b}_{n}": mem for b, blk in self._blocks.items()
                   for n, mem in blk.signature.members.items()}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for b, blk in self._blocks.items():
            m.submodules[b] = blk
            for n, mem in blk.signature.members.items():
                outer = getattr(self, f"{b}_{n}")
                inner = getattr(blk, n)
                if mem.is_port:
                    if mem.flow == wiring.In:
                        m.d.comb += inner.eq(outer)
                    else:
                        m.d.comb += outer.eq(inner)
                else:
                    wiring.connect(m, wiring.flipped(outer), inner)
        return m


def _quant_as_built(name: str, fmt):
    from .quantize import Quantize

    lanes = EW_LANES[name]
    return Quantize(lanes=lanes, out_lanes=lanes * fmt.bits // 8, fmt=fmt)


def report_blocks() -> dict:
    """``{name: (description, maker(HwPreset, StreamFormat))}`` for tellme.hw.report (yosys
    estimates)."""
    def mk(key):
        return lambda hp, fmt: make_block(EwParams.from_preset(hp.name, man=fmt.man), key)

    return {
        "ew_norm": ("RMSNorm + absmax (row buffer, exact sum of squares, rsqrt unit)",
                    mk("norm")),
        "ew_scale": ("per-token scales s_q, s_tok (sequential RN32 divider)", mk("ts")),
        # as the row unit (hw/exec_ew.py) builds it: int8 repacked to the row writer's beat
        # (ew_lanes stream elements' bytes), since QUANT writes the int8 rows to DDR
        "ew_quant": ("int8 quantiser + repack to the row writer's beat",
                     lambda hp, fmt: _quant_as_built(hp.name, fmt)),
        "ew_dequant": ("dequantiser (ew_lanes lanes, fed by tlmm_outbuf)", mk("dq")),
        "ew_residual": ("residual adder", mk("res")),
        "ew_gated": ("gated activation SiLU-PWL / ReLU^2", mk("ga")),
        "ew_rope": ("RoPE (adjacent pairs, FP32-rounded rotation)", mk("rope")),
        # budget line: TLMM + weight buffer + second accumulator bank (docs/hw/budget.md)
        "tlmm_outbuf": ("TLMM output buffer: second accumulator bank, Q -> ew_lanes gearbox",
                        mk("ob")),
    }
