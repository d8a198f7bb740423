"""Rates of the integer attention engine (hw/attention/int_engine.py) against the targets of
``tellme hw rates`` (sim/rates.py): decode attention at or below the KV-DDR read time of an int8
cache, prefill attention within ``attn_share`` of TLMM time.

    tellme study attn-int-rates [--target kv260] [--engines 1] [--lanes 4 --beat 64 --depth 1024]

Cycles come from the engine's cycle model (sim/cycles_attn_int.py, exact against the RTL at
zero stalls); ``engines`` single-port engines serve the calls round-robin (MHA decode: one head
per engine, so ``engines`` heads in flight). The KV-DDR time is ``tellme hw rates``'s: the int8
cache read once as stored for an engine of ``beat`` slots (``kv_stored_read_cycles``; the
score-tile K re-reads past ``depth`` keys are the engine's own extra traffic, not in the
budget). Defaults: the target's ``INT_PRESETS`` entry.
"""

from __future__ import annotations

import argparse

from tellme.sim.cycles_attn_int import layer_cycles
from tellme.sim.rates import (
    DECODE_CONTEXTS,
    PREFILL_TOKENS,
    Assumptions,
    kv_stored_read_cycles,
    tlmm_cycles,
)
from tellme.spec.models import MODELS
from tellme.spec.targets import TARGET_NAMES, target as get_target


def int_attention_rates(target: str = "kv260", *, lanes: int = 4, beat: int = 64,
                        depth: int = 4096, engines: int = 1, q_beat: int = 8, o_beat: int = 1,
                        models=("bitnet_b1_58-large", "bitnet-b1.58-2B-4T"),
                        ddr_efficiency: float = 0.85) -> list[dict]:
    """Per model: decode rows {context, engine_cycles, kv_cycles, ok} and prefill rows
    {tokens, engine_cycles, tlmm_cycles, share, ok}."""
    tg = get_target(target)
    a = Assumptions(clock_mhz=tg.clock_mhz, ddr_peak_gbps=tg.ddr_peak_gbps,
                    ddr_efficiency=ddr_efficiency)
    out = []
    for name in models:
        cfg = MODELS[name]
        kw = dict(heads=cfg.num_heads, kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                  lanes=lanes, beat=beat, depth=depth, engines=engines, q_beat=q_beat,
                  o_beat=o_beat)
        dec = []
        for ctx in DECODE_CONTEXTS:
            e = layer_cycles("decode", pos=ctx - 1, **kw)
            kv = kv_stored_read_cycles(cfg, ctx, a.bytes_per_cycle, beat)
            dec.append({"context": ctx, "engine_cycles": e, "kv_cycles": kv, "ok": e <= kv})
        pre = []
        for n in PREFILL_TOKENS:
            tl = tlmm_cycles(cfg, tg, n)
            e = layer_cycles("prefill", n_q=n, **kw)
            pre.append({"tokens": n, "engine_cycles": e, "tlmm_cycles": tl,
                        "share": e / tl, "ok": e <= a.attn_share * tl})
        out.append({"model": name, "target": target, "macs": lanes * beat * engines,
                    "decode": dec, "prefill": pre, "assumptions": a.describe()})
    return out


def format_rates(rows: list[dict], lanes: int, beat: int, engines: int) -> str:
    lines = []
    for r in rows:
        lines.append(f"{r['model']} on {r['target']}: integer attention, {engines} engine(s) x "
                     f"{lanes} lanes x {beat} MACs = {r['macs']} MACs ({r['assumptions']})")
        for d in r["decode"]:
            lines.append(f"  decode context {d['context']:>5}: engine {d['engine_cycles']:,} "
                         f"vs int8 KV reads (as stored) {d['kv_cycles']:,.0f} cycles "
                         f"[{'ok' if d['ok'] else 'OVER'}]")
        for p in r["prefill"]:
            lines.append(f"  prefill {p['tokens']:>4} tokens: engine {p['engine_cycles']:,} "
                         f"cycles = {p['share']:.1%} of TLMM {p['tlmm_cycles']:,} "
                         f"[{'ok' if p['ok'] else 'OVER'}]")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tellme study attn-int-rates",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=TARGET_NAMES, default="kv260")
    ap.add_argument("--lanes", type=int, help="default: the target's INT_PRESETS entry")
    ap.add_argument("--beat", type=int, help="default: the preset's")
    ap.add_argument("--depth", type=int, help="default: the preset's")
    ap.add_argument("--engines", type=int, default=1)
    args = ap.parse_args(argv)
    from tellme.hw.attention.presets import int_cycle_params

    p = int_cycle_params(args.target)
    for k in ("lanes", "beat", "depth"):
        if getattr(args, k) is None:
            setattr(args, k, p[k])
    rows = int_attention_rates(args.target, lanes=args.lanes, beat=args.beat,
                               depth=args.depth, engines=args.engines, q_beat=p["q_beat"],
                               o_beat=p["o_beat"])
    print(format_rates(rows, args.lanes, args.beat, args.engines))
    return 0

