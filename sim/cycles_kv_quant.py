"""Cycle model of the KV quantiser (hw/attention/kv_quant.py, ``KVQuantizer``) and the rate it
must sustain.

:func:`beat_cycles` is exact for the RTL when the rows are offered without gaps from an idle
block and ``o`` is never stalled (checked by tests/rtl/tb_kv_quant.py): cycle 0 is the
first input beat's transfer. Per row r (bank r % 2, ``bpr`` beats):

* in: its beats on consecutive cycles from ``max(end of row r-1 + 1, last out beat of row
  r-2 + 1)`` (the bank is free the cycle after its row's last beat left);
* max: the row's max is in ``max_stages(beat)`` cycles after its last beat (comparator tree
  registers);
* scale: starts at ``max(last in beat + max_stages + 1, previous row's ready)``, ready
  ``KVQuantizer.scale_cycles(fmt)`` cycles later (ceil((sig_bits + 8) / 7) base-128 digits,
  ``round_fp``'s inputs held ``KVQuantizer.ROUND_HOLD`` (6) cycles, 2 cycles of hand-over:
  FP24 12, FP16 11);
* out: ``bpr * beat / lanes`` issue cycles from ``max(ready, previous row's last issue + 1)``;
  a beat leaves ``LATENCY`` (11) cycles after the issue of its last lane group.

Rate (:func:`required_rate`): the writer only handles the step's new rows, 2 x n_kv_heads x
head_dim elements per token and layer; divided by the layer's time per token (prefill: the
TLMM compute per token, decode: the weight stream, both from sim/rates.py). Records run one at
a time (docs/hw/sequencer.md), so the quantiser's time also adds to the step: at ``lanes``
elements per cycle it adds 2 x kv_size / lanes cycles per token and layer.
"""

from __future__ import annotations

from tellme.spec.numerics import StreamFormat


def beat_cycles(bprs: list[int], *, beat: int, lanes: int,
                fmt: StreamFormat | None = None) -> dict:
    """Per row the input cycles and per output beat its transfer cycle (no stalls).

    Returns ``{"in": [first in-beat cycle per row], "out": [cycle per output beat],
    "cycles": last out cycle + 1}``."""
    from tellme.hw.attention.kv_quant import KVQuantizer, max_stages

    g = beat // lanes
    dm = max_stages(beat)
    lat = KVQuantizer.LATENCY
    sc = KVQuantizer.scale_cycles(fmt)
    ins, outs, last_out = [], [], []
    in_end = -1
    scale_free = 0
    issue_end = -1
    for r, bpr in enumerate(bprs):
        start = in_end + 1
        if r >= 2:
            start = max(start, last_out[r - 2] + 1)
        ins.append(start)
        in_end = start + bpr - 1
        s_start = max(in_end + dm + 1, scale_free)
        ready = s_start + sc
        scale_free = ready
        first = max(ready, issue_end + 1)
        issue_end = first + bpr * g - 1
        row = [first + (j + 1) * g - 1 + lat for j in range(bpr)]
        outs += row
        last_out.append(row[-1])
    return {"in": ins, "out": outs, "cycles": (outs[-1] + 1) if outs else 0}


def row_period(bpr: int, *, beat: int, lanes: int, fmt: StreamFormat | None = None) -> float:
    """Steady-state cycles per row of a long run of equal rows (averaged over two rows: the two
    banks may alternate)."""
    c = beat_cycles([bpr] * 12, beat=beat, lanes=lanes, fmt=fmt)
    last = [c["out"][(r + 1) * bpr - 1] for r in range(12)]
    return (last[11] - last[7]) / 4


def required_rate(model: str, target: str = "kv260") -> dict:
    """Elements per cycle the quantiser must sustain for ``model`` (spec/models.py) on
    ``target``, and the share of the layer's time a ``lanes``-wide quantiser adds."""
    from tellme.hw.attention.kv_quant import KV_QUANT_PRESETS
    from tellme.spec.models import MODELS
    from tellme.spec.targets import TARGETS

    from .rates import Assumptions, tlmm_cycles, weight_bytes

    cfg, tg = MODELS[model], TARGETS[target]
    a = Assumptions(clock_mhz=tg.clock_mhz, ddr_peak_gbps=tg.ddr_peak_gbps,
                    ddr_efficiency=0.85)
    elems = 2 * cfg.num_kv_heads * cfg.head_dim
    p = KV_QUANT_PRESETS[target]
    per_row = row_period(cfg.head_dim // p["beat"], beat=p["beat"], lanes=p["lanes"])
    q_cycles = 2 * cfg.num_kv_heads * per_row
    prefill = tlmm_cycles(cfg, tg, 128) / 128
    decode = weight_bytes(cfg, tg) / a.bytes_per_cycle
    return {"model": model, "elements_per_token_layer": elems,
            "prefill_cycles_per_token": prefill, "decode_cycles_per_token": decode,
            "prefill_rate": elems / prefill, "decode_rate": elems / decode,
            "lanes": p["lanes"], "row_cycles": per_row, "quant_cycles": q_cycles,
            "prefill_share": q_cycles / prefill, "decode_share": q_cycles / decode}
