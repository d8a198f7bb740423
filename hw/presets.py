"""Named hardware presets: the TLMM engine + weight buffer parameters of each target.

The numbers come from the target table (``tellme.spec.targets``); the (T, Q) geometry is the
target's tiling (the weight file is laid out for the
same names), so a weight file converted for a target runs on that target's engine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tellme.spec.targets import TARGETS


@dataclass(frozen=True)
class HwPreset:
    name: str
    t: int               # tables per cycle
    q: int               # parallel output columns = weight-buffer banks
    v: int               # index vectors per weight-buffer fill beat
    kb_max: int          # largest K block count (K <= kb_max*3*t)
    nbt_max: int         # largest tile, in column blocks
    tok_max: int         # largest token count of one command
    half_depth: int      # words per bank in one ping-pong half
    ram_style: str | None
    table: str = "full"

    def with_table(self, table: str) -> HwPreset:
        return replace(self, table=table)


PRESETS = {name: HwPreset(name=name, t=tg.tiling.t, q=tg.tiling.q, ram_style="ultra", **tg.tlmm)
           for name, tg in TARGETS.items()}


def preset(name: str) -> HwPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown hardware preset {name!r}; known: {', '.join(PRESETS)}") \
            from None


def make_tlmm(p: HwPreset, **over):
    from .tlmm import TLMM

    kw = dict(t=p.t, q=p.q, kb_max=p.kb_max, nbt_max=p.nbt_max, tok_max=p.tok_max,
              depth=p.half_depth, table=p.table)
    kw.update(over)
    return TLMM(**kw)


def make_weight_buffer(p: HwPreset, **over):
    from .weight_buffer import WeightBuffer

    kw = dict(t=p.t, q=p.q, v=p.v, half_depth=p.half_depth, ram_style=p.ram_style)
    kw.update(over)
    return WeightBuffer(**kw)


def make_tlmm_core(p: HwPreset):
    from .tlmm_core import TLMMCore

    return TLMMCore(p)
