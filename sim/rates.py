"""Rate analysis: the throughput each block must sustain so that decode stays weight-DDR-bound
and prefill stays TLMM-bound, and what today's blocks deliver (``tellme hw rates``).

Everything is per transformer layer and derived from the model's configuration, the target's
tiling and DDR, and the blocks' cycle models; nothing is measured here. Assumptions are
returned with the figures and printed beside them:

* decode (one token): the layer costs its weight stream, ``weight bytes / DDR bytes per cycle``
  (weights are read once per token; the TLMM engine is faster than the stream). Element-wise
  work and attention must fit inside that time.
* prefill (``n`` tokens): the layer costs the TLMM's compute, from the engine's cycle model
  (``sim.cycles.layer_cycles``) for an ``n``-token call. Element-wise work and attention must
  hide behind it; the attention budget is ``attn_share`` (10 %) of the TLMM time.
* decode attention must be no slower than reading the KV cache from DDR at every context, once,
  as the int8 layout stores it (``kv_stored_read_cycles``: codes, the scale headers, K rows
  padded to whole engine beats, whole V blocks); the bare rows of each format are printed
  beside it (required MAC/cycle = MACs per key / (KV bytes per key / DDR bytes per cycle)).

Element-wise work per token and layer, by block (``d`` hidden size, ``f`` FFN size, ``qs``
query width, ``kvs`` key/value width): dequantise every linear output (qs + 2 kvs + d + 2 f + d),
RMSNorm two passes over four rows (input norm d, attention sub-norm qs, FFN norm d, FFN
sub-norm f), quantise every linear input (d + qs + d + f), RoPE on q and k (qs + kvs), two
residual adds (2 d), the gated activation (f).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tellme.spec.config import ModelConfig
from tellme.spec.targets import Target

KV_FORMATS = {"fp24": 3, "fp16": 2, "int8": 1}       # bytes per K/V element
DECODE_CONTEXTS = (128, 1024, 4096)
PREFILL_TOKENS = (64, 128)


@dataclass(frozen=True)
class Assumptions:
    clock_mhz: float
    ddr_peak_gbps: float
    ddr_efficiency: float
    attn_share: float = 0.10      # prefill attention may add at most this share of TLMM time
    lane_utilisation: float = 0.8  # element-wise lanes are sized to run at most this busy

    @property
    def bytes_per_cycle(self) -> float:
        return self.ddr_peak_gbps * 1e9 * self.ddr_efficiency / (self.clock_mhz * 1e6)

    def describe(self) -> str:
        return (f"{self.clock_mhz:g} MHz; DDR {self.ddr_peak_gbps:g} GB/s peak x "
                f"{self.ddr_efficiency:.2f} = {self.bytes_per_cycle:.1f} B/cycle; prefill "
                f"attention <= {self.attn_share:.0%} of TLMM time; element-wise lanes at "
                f"<= {self.lane_utilisation:.0%} busy")


def elementwise_ops(cfg: ModelConfig) -> dict[str, int]:
    """Element operations per token and layer, by element-wise block (module docstring)."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    qs, kvs = cfg.q_size, cfg.kv_size
    return {
        "dequant": qs + 2 * kvs + d + 2 * f + d,
        "norm": 2 * (d + qs + d + f),
        "quant": d + qs + d + f,
        "rope": qs + kvs,
        "residual": 2 * d,
        "gated": f,
    }


def weight_bytes(cfg: ModelConfig, target: Target) -> int:
    """TLMM code bytes of one layer in the target's tiling (5-bit codes, padded blocks)."""
    from tellme.spec.codes import padded_dims

    t, q = target.tiling.t, target.tiling.q
    total = 0
    for n_out, k_in in cfg.linear_shapes().values():
        nb, kb = padded_dims(n_out, k_in, t, q)
        total += nb * kb * q * 5 * t / 8
    return int(total)


def tlmm_cycles(cfg: ModelConfig, target: Target, n_tokens: int) -> int:
    """Stall-free TLMM compute cycles of one layer's linears for an ``n_tokens`` call."""
    from tellme.hw.presets import preset

    from .cycles import layer_cycles

    p = preset(target.name)
    return layer_cycles(t=p.t, q=p.q, v=p.v, table=p.table, half_depth=p.half_depth,
                        shapes=cfg.linear_shapes(), n_tokens=n_tokens)["compute"]


def attention_macs(cfg: ModelConfig, keys: int) -> int:
    """q.k and p.v multiply-accumulates of one query row of every head over ``keys`` keys."""
    return 2 * cfg.num_heads * cfg.head_dim * keys


def kv_read_cycles(cfg: ModelConfig, ctx: int, fmt: str, bytes_per_cycle: float,
                   row_extra_bytes: int = 0) -> float:
    """Cycles to read one layer's K and V rows of ``ctx`` keys once at ``bytes_per_cycle``:
    the elements in ``fmt`` plus ``row_extra_bytes`` per row (an int8 row's scale)."""
    row = cfg.head_dim * KV_FORMATS[fmt] + row_extra_bytes
    return 2 * cfg.num_kv_heads * ctx * row / bytes_per_cycle


def kv_stored_read_cycles(cfg: ModelConfig, ctx: int, bytes_per_cycle: float,
                          beat: int) -> float:
    """Cycles to read one layer's int8 KV cache of ``ctx`` keys once as stored (the layout of
    spec/kv_layout.py for an integer engine of ``beat`` MAC slots: codes, scale headers, K
    rows padded to whole beats, whole V blocks) at ``bytes_per_cycle``: the decode
    criterion's KV-DDR time."""
    from tellme.spec.kv_layout import decode_traffic

    t = decode_traffic(ctx, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                       dtype="int8", depth=-(-ctx // beat) * beat, beat=beat)
    return t["read_stored"] / bytes_per_cycle


def engine_cycles(cfg: ModelConfig, target: Target, kind: str, n: int,
                  attention: str = "int") -> int:
    """The attention engine's cycles (one engine, the target's preset) from its cycle model:
    decode at context ``n`` or an ``n``-token prefill from position 0. ``attention``: "int",
    the contract's integer engine (sim/cycles_attn_int.py, ``INT_PRESETS``), or "fp", the FP
    engine (sim/cycles_attn.py, the target's ``attention`` preset)."""
    if attention == "int":
        from tellme.hw.attention.presets import int_cycle_params

        from .cycles_attn_int import layer_cycles

        kw = dict(heads=cfg.num_heads, kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                  **int_cycle_params(target.name))
        if kind == "decode":
            return layer_cycles("decode", pos=n - 1, **kw)
        return layer_cycles("prefill", n_q=n, **kw)
    if attention != "fp":
        raise ValueError(f"attention must be 'int' or 'fp', got {attention!r}")
    from .cycles_attn import expected_cycles

    ep = target.attention
    kw = dict(heads=cfg.num_heads, kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
              lanes=ep["lanes"], beat=ep["beat"], depth=ep["depth"])
    if kind == "decode":
        return expected_cycles("decode", pos=n - 1, **kw)["cycles"]
    return expected_cycles("prefill", n_q=n, **kw)["cycles"]


def analyse(name: str, cfg: ModelConfig, target: Target, a: Assumptions, *,
            contexts=DECODE_CONTEXTS, prefill_tokens=PREFILL_TOKENS) -> dict:
    """The rate analysis of one model on one target (a JSON-ready dict)."""
    from tellme.hw.attention.presets import INT_PRESETS

    bpc = a.bytes_per_cycle
    wbytes = weight_bytes(cfg, target)
    decode_layer = wbytes / bpc
    ops = elementwise_ops(cfg)
    total_ops = sum(ops.values())
    out = {"model": name, "target": target.name, "assumptions": asdict(a),
           "bytes_per_cycle": bpc, "weight_bytes_per_layer": wbytes,
           "decode_weight_cycles": decode_layer, "elementwise_ops": ops,
           "elementwise_ops_total": total_ops, "prefill": [], "decode": []}
    worst_rate = {k: v / decode_layer for k, v in ops.items()}
    for n in prefill_tokens:
        tl = tlmm_cycles(cfg, target, n)
        per_tok = tl / n
        rates = {k: v / per_tok for k, v in ops.items()}
        for k, r in rates.items():
            worst_rate[k] = max(worst_rate[k], r)
        macs = sum(attention_macs(cfg, i + 1) for i in range(n))
        budget = a.attn_share * tl
        eng = engine_cycles(cfg, target, "prefill", n)
        out["prefill"].append({
            "tokens": n, "tlmm_cycles": tl, "tlmm_cycles_per_token": per_tok,
            "elementwise_ops_per_cycle": total_ops / per_tok, "elementwise_rates": rates,
            "attention_macs": macs, "attention_budget_cycles": budget,
            "attention_macs_per_cycle_needed": macs / budget,
            "engine_cycles": eng, "engine_share": eng / tl, "engine_ok": eng <= budget})
    for ctx in contexts:
        eng = engine_cycles(cfg, target, "decode", ctx)
        stored = kv_stored_read_cycles(cfg, ctx, bpc, INT_PRESETS[target.name]["beat"])
        row = {"context": ctx, "engine_cycles": eng, "kv_stored_cycles": stored,
               "engine_ok": eng <= stored, "kv": {}}
        for fmt in KV_FORMATS:
            kv_cycles = kv_read_cycles(cfg, ctx, fmt, bpc)
            row["kv"][fmt] = {"kv_cycles": kv_cycles,
                              "macs_per_cycle_needed": attention_macs(cfg, ctx) / kv_cycles,
                              "engine_ok": eng <= kv_cycles}
        out["decode"].append(row)
    out["elementwise_lanes"] = {k: max(1, math.ceil(r / a.lane_utilisation))
                                for k, r in worst_rate.items()}
    out["elementwise_worst_rates"] = worst_rate
    out["elementwise_lanes_built"] = target.ew_lanes     # the target table's ew_lanes
    return out


def format_report(r: dict) -> str:
    a = Assumptions(**r["assumptions"])
    lines = [f"{r['model']} on {r['target']}: rate analysis per layer (projection from cycle "
             f"models; {a.describe()})",
             f"  decode: {r['weight_bytes_per_layer'] / 1e6:.2f} MB of weights -> "
             f"{r['decode_weight_cycles']:,.0f} cycles per layer (weight-DDR bound); "
             f"element-wise {r['elementwise_ops_total']:,} ops = "
             f"{r['elementwise_ops_total'] / r['decode_weight_cycles']:.2f} ops/cycle"]
    for p in r["prefill"]:
        lines.append(
            f"  prefill {p['tokens']:>4} tokens: TLMM {p['tlmm_cycles']:,} cycles "
            f"({p['tlmm_cycles_per_token']:,.0f}/token); element-wise "
            f"{p['elementwise_ops_per_cycle']:.2f} ops/cycle; attention needs "
            f"{p['attention_macs_per_cycle_needed']:.0f} MAC/cycle; the integer engine "
            f"{p['engine_cycles']:,} cycles = {p['engine_share']:.0%} of TLMM "
            f"[{'ok' if p['engine_ok'] else 'OVER'}]")
    lines.append("  decode attention, cycles per layer: the integer engine vs reading the int8 "
                 "cache as stored (the criterion); then the bare rows of each format, codes "
                 "only (MAC/cycle needed to keep up)")
    for d in r["decode"]:
        kv = "; ".join(f"{f} {v['kv_cycles']:,.0f} ({v['macs_per_cycle_needed']:.0f})"
                       for f, v in d["kv"].items())
        lines.append(f"    context {d['context']:>5}: engine {d['engine_cycles']:,} vs "
                     f"int8 stored {d['kv_stored_cycles']:,.0f} "
                     f"[{'ok' if d['engine_ok'] else 'OVER'}]; rows: {kv}")
    lanes = ", ".join(f"{k} {n} ({r['elementwise_worst_rates'][k]:.2f}/cycle)"
                      for k, n in r["elementwise_lanes"].items())
    lines.append(f"  element-wise lanes needed (worst rate over decode and prefill): {lanes}; "
                 f"built with {r['elementwise_lanes_built']} (the target's ew_lanes)")
    return "\n".join(lines)


def add_parser(sub) -> None:
    """Register ``rates`` under the ``tellme hw`` subparsers."""
    from tellme.spec.models import MODELS
    from tellme.spec.targets import TARGET_NAMES

    ap = sub.add_parser("rates", help="rates each block must sustain (decode DDR-bound, "
                                      "prefill TLMM-bound) against today's cycle models")
    ap.add_argument("--target", choices=TARGET_NAMES, default="kv260")
    ap.add_argument("--model", action="append", choices=sorted(MODELS),
                    help="public checkpoint (repeatable; default bitnet_b1_58-large and "
                         "bitnet-b1.58-2B-4T)")
    ap.add_argument("--ddr-efficiency", type=float, default=0.85,
                    help="sustained fraction of the DDR peak (default 0.85)")
    ap.add_argument("--clock-mhz", type=float, help="default: the target's clock")
    ap.add_argument("--json", action="store_true")
    ap.set_defaults(func=_main)


def _main(args) -> int:
    import json

    from tellme.spec.models import MODELS
    from tellme.spec.targets import target

    tg = target(args.target)
    a = Assumptions(clock_mhz=args.clock_mhz or tg.clock_mhz, ddr_peak_gbps=tg.ddr_peak_gbps,
                    ddr_efficiency=args.ddr_efficiency)
    from tellme.cli import CliError

    names = args.model or ["bitnet_b1_58-large", "bitnet-b1.58-2B-4T"]
    reports = []
    for n in names:
        try:
            reports.append(analyse(n, MODELS[n], tg, a))
        except ValueError as e:                   # a simulation build cannot hold the model
            raise CliError(f"{n} does not fit target {tg.name}: {e} (the rates are for the "
                           f"board targets: --target kv260 or zcu104)") from None
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        print("\n\n".join(format_report(r) for r in reports))
    return 0
