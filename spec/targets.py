"""The target table: one record per build target, read by every ``--target`` choice.

A target names a board (its part, the part's capacities, its DDR) and the presets the hardware
generators build for it. ``sim`` is the small configuration of the RTL tests; ``sim-demo`` the
RTL simulation build sized to hold the demo model (host/models/demo) and nothing more; both are
reported against the KV260's part. Capacities are AMD's product-table figures (LUT, FF, DSP48E2,
RAMB36, URAM288); DDR peaks are the figures TeLLMe reports for the KV260 (2133 MT/s x 64 bit)
and the ZCU104's PS DDR4-2400 x 64 bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .tiling import TILINGS, Tiling

METRICS = ("LUT", "FF", "DSP", "BRAM36", "URAM")


@dataclass(frozen=True)
class Part:
    name: str
    capacity: dict = field(hash=False)       # {metric: count}, metrics as in METRICS


PARTS = {
    "XCK26": Part("XCK26", {"LUT": 117_120, "FF": 234_240, "DSP": 1_248, "BRAM36": 144,
                            "URAM": 64}),
    "XCZU7EV": Part("XCZU7EV", {"LUT": 230_400, "FF": 460_800, "DSP": 1_728, "BRAM36": 312,
                                "URAM": 96}),
}


@dataclass(frozen=True)
class Target:
    """One build target.

    ``tlmm``: TLMM engine and weight-buffer preset (``v`` index vectors per fill beat,
    ``kb_max`` largest K block count, ``nbt_max`` largest tile in column blocks, ``tok_max``
    tokens per command, ``half_depth`` words per bank in a ping-pong half). ``attention``:
    the FP attention engine's preset (hw/attention/engine.py: head_dim, lanes, beat,
    score-tile depth, context bits).
    ``attention_int``: the integer attention engine's preset (hw/attention/int_engine.py:
    head_dim, lanes, ``beat`` = keys per int8 KV block and codes per K beat, score-tile
    ``depth``, ``ctx_bits``, ``q_beat`` q elements per load beat, ``o_beat`` outputs per
    beat, optional ``score_ram``): the
    engine the programs run, so its beat is the int8 KV layout's (memory map, program header
    ``kv_beat``). ``kv_quant``: the quantising KV writer's preset (hw/attention/kv_quant.py:
    ``beat`` stream elements per beat, ``lanes`` codes per cycle, ``max_head_dim``).
    ``row_max``: the longest row the element-wise row buffers hold. ``ew_lanes``: elements per
    beat of the element-wise streams (every element-wise block and the TLMM output buffer's
    drain side), sized from the rate analysis (``tellme hw rates``: the worst per-block rate of
    the public models on the target, at <= 80 % busy; RoPE needs an even count); a test
    (tests/test_rates.py) asserts it covers ``sim.rates.analyse(...)['elementwise_lanes']``.
    ``lm_head``: the PL LM head's preset (hw/lm_head.py: ``lanes`` int8 MACs per cycle = bytes
    of its weight port's beat, ``max_d`` longest hidden size). ``cma_bytes``: the CMA
    pool of the board's PYNQ image (Kria-PYNQ boots with ``cma=1000M``; the ZCU104 image's
    device tree gives 512 MiB: ../shared/reference/board.md), the memory map's default budget.
    """

    name: str
    board: str
    part: Part
    ddr_peak_gbps: float
    clock_mhz: float
    tiling: Tiling
    tlmm: dict = field(hash=False)
    attention: dict = field(hash=False)
    attention_int: dict = field(default_factory=dict, hash=False)
    kv_quant: dict = field(default_factory=dict, hash=False)
    row_max: int = 0
    cma_bytes: int | None = None   # contiguous memory the board's Linux gives the driver
    ew_lanes: int = 0              # element-wise stream lanes (0: unset; every record sets it)
    lm_head: dict = field(default_factory=lambda: dict(_LM_HEAD), hash=False)


# kv260/zcu104: TeLLMe's T=28, Q=16; the buffer is 16 banks x 2 URAM288 wide x 1 deep = 32 URAM
# (a 2048-word half each); kb_max=96 covers K=6912 (2B4T down_proj: 83 K blocks); nbt_max=128
# covers the largest tile of a 2048-word half (d_model=1536: 19 K blocks -> 107 column
# blocks); attention (the FP engine): head_dim up to 128 (2B4T; 96 and 100 for the 1bitLLM
# models), 8 lanes, 8 elements per beat, 1024-key score tiles; rows up to 2B4T's d_ffn = 6912
# (FFN sub-norm).
# ew_lanes: kv260/zcu104 2 (worst per-block rate 0.80 elements/cycle: RMSNorm's two passes,
# bitnet_b1_58-large prefill; docs/hw/elementwise.md); sim 2 (the default-tier RTL harness).
# sim: small enough for ~10 s Verilator builds; still exercises ragged K/N, several tiles and
# both table banks.
# attention_int: kv260/zcu104 build one integer engine of 4 lanes x 128 MAC slots (the 4 q
# heads of a 2B4T GQA group, or 4 prefill rows; docs/hw/attention.md gives the rates: at 64
# slots a 2B4T decode layer streams 2,560 beats against 2,906 cycles of KV-DDR time at 128
# keys, too little room for the q load, the V weights and the last call's finish; the slots
# are DSP48E2 cascades, so the beat costs DSPs, not LUT adders), q loaded
# 8 elements per beat, 4096-key score tiles in URAM (3 URAM288: 4 lanes x 32-bit logits + the V
# scale), so K is read once up to 4096 keys; 2 outputs per cycle (o_beat: a 2B4T decode call
# emits 4 lanes x 128 outputs, as many as its K/V beats, so at one a cycle the finishing unit
# would be the bottleneck; ``tellme hw rates`` shows it). kv_quant: the engines' FP24 beat of
# 8 (192 bits), 2 codes per cycle (rate: sim/cycles_kv_quant.py), rows up to head_dim 128.
# lm_head: the top's LM-head unit reads m_axi_w1 (one 128-bit HP port: 16 int8 codes a cycle);
# hidden sizes up to 4096 (2B4T 2560, 1bitLLM-3B 3200); the budget line counts the 64-lane
# unit the DDR rate needs (docs/hw/lm_head.md).
_LM_HEAD = dict(lanes=16, max_d=4096)
_BOARD_TLMM = dict(v=4, kb_max=96, nbt_max=128, tok_max=1024, half_depth=2048)
_BOARD_ATTN = dict(head_dim=128, lanes=8, beat=8, depth=1024, ctx_bits=13)
_BOARD_ATTN_INT = dict(head_dim=128, lanes=4, beat=128, depth=4096, ctx_bits=13, q_beat=8,
                       score_ram="ultra", o_beat=2)
_BOARD_KV_QUANT = dict(beat=8, lanes=2, max_head_dim=128)
# sim-demo: the demo model (hidden 256, d_ffn 640, head_dim 64, 4 heads / 2 KV heads) through
# the RTL top in Verilator, nothing larger. The kv260 tiling (T=28, Q=16) so the bundled file
# (converted for kv260) runs as is; TLMM: K <= 640 -> kb <= ceil(640 / 84) = 8 (kb_max 8);
# 64-word halves as sim (q/k/v/o and gate/up at kb 4 take 16-block tiles: gate/up 3 tiles;
# down_proj at kb 8 two 8-block tiles), nbt_max 16 (= 64 / 4, the largest tile a half holds);
# tok_max 15 as sim, v=4 as kv260. Rows up to d_ffn 640. Attention: sim's engines (8 lanes,
# beat 4, 8-key score tiles, 12 context bits, q beat 2) at head_dim 64, the integer engine
# with the boards' 2 outputs per beat (so the RTL top tests run it); the KV quantiser's
# beat 4 as sim.
_SIM_DEMO_TLMM = dict(v=4, kb_max=8, nbt_max=16, tok_max=15, half_depth=64)

TARGETS = {
    "sim": Target("sim", "RTL simulation (reported against the KV260 part)", PARTS["XCK26"],
                  17.1, 250.0, TILINGS["sim"],
                  dict(v=2, kb_max=8, nbt_max=8, tok_max=15, half_depth=64),
                  dict(head_dim=16, lanes=8, beat=4, depth=8, ctx_bits=12),
                  attention_int=dict(head_dim=16, lanes=8, beat=4, depth=8, ctx_bits=12,
                                     q_beat=2, o_beat=1),
                  kv_quant=dict(beat=4, lanes=2, max_head_dim=16), row_max=256, ew_lanes=2),
    "kv260": Target("kv260", "Kria KV260", PARTS["XCK26"], 17.1, 250.0, TILINGS["kv260"],
                    _BOARD_TLMM, _BOARD_ATTN, _BOARD_ATTN_INT, _BOARD_KV_QUANT, row_max=6912,
                    cma_bytes=1000 << 20, ew_lanes=2),
    "zcu104": Target("zcu104", "ZCU104", PARTS["XCZU7EV"], 19.2, 250.0, TILINGS["zcu104"],
                     _BOARD_TLMM, _BOARD_ATTN, _BOARD_ATTN_INT, _BOARD_KV_QUANT, row_max=6912,
                     cma_bytes=512 << 20, ew_lanes=2),
    # appended: CAP_BUILD.TARGET is the index in this table, so earlier entries keep theirs
    "sim-demo": Target("sim-demo", "RTL simulation sized for the demo model (reported against "
                       "the KV260 part)", PARTS["XCK26"], 17.1, 250.0, TILINGS["sim-demo"],
                       _SIM_DEMO_TLMM,
                       dict(head_dim=64, lanes=8, beat=4, depth=8, ctx_bits=12),
                       attention_int=dict(head_dim=64, lanes=8, beat=4, depth=8, ctx_bits=12,
                                          q_beat=2, o_beat=2),
                       kv_quant=dict(beat=4, lanes=2, max_head_dim=64), row_max=640,
                       ew_lanes=2),
}
TARGET_NAMES = tuple(TARGETS)


def target(name: str) -> Target:
    """The record of target ``name``; ValueError naming the known targets."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None
