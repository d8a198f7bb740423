"""Named hardware presets: the TLMM engine + weight buffer parameters of each target.

The (T, Q) geometry comes from ``tellme.quant.tiling`` (the weight file is laid out for the
same names), so a weight file converted for a target runs on that target's engine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tellme.quant.tiling import tiling_for


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

    def with_table(self, table: str) -> "HwPreset":
        return replace(self, table=table)


def _preset(name: str, **kw) -> HwPreset:
    tl = tiling_for(name)
    return HwPreset(name=name, t=tl.t, q=tl.q, **kw)


# sim: small enough for ~10 s Verilator builds; still exercises ragged K/N, several tiles and
# both table banks. kv260/zcu104: TeLLMe's T=28, Q=16; the buffer is 16 banks x 2 URAM288 wide
# x 1 deep = 32 URAM (size_weight_buffer(..., uram_budget=56) picks depth 4096 = 2 x 2048);
# kb_max=96 covers K=6912 (2B4T down_proj: 83 K blocks); nbt_max=128 covers the largest tile
# of a 2048-word half (d_model=1536: 19 K blocks -> 107 column blocks).
PRESETS = {
    "sim": _preset("sim", v=2, kb_max=8, nbt_max=8, tok_max=15, half_depth=64,
                   ram_style="ultra"),
    "kv260": _preset("kv260", v=4, kb_max=96, nbt_max=128, tok_max=1024, half_depth=2048,
                     ram_style="ultra"),
    "zcu104": _preset("zcu104", v=4, kb_max=96, nbt_max=128, tok_max=1024, half_depth=2048,
                      ram_style="ultra"),
}


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
