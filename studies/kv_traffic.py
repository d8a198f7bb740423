"""KV-cache DDR traffic per decode token and layer, and the attention engine's time against it:
``tellme study kv-traffic`` (docs/hw/attention.md).
"""

from __future__ import annotations

import argparse

from tellme.spec.kv_layout import FORMATS, decode_traffic
from tellme.spec.numerics import FP16, FP24, StreamFormat, stream_format
from tellme.spec.targets import TARGET_NAMES

# the table's columns: (heading, dtype, scale format)
TABLE_KINDS = (("fp16", "fp16", None), ("fp24", "fp24", None), ("int8+s16", "int8", FP16),
               ("int8+s24", "int8", FP24))


def _table(models: dict, contexts, depths) -> str:
    lines = ["decode attention DDR traffic per token per layer, bytes (KV reads + new-row "
             "writes); int8+sN: int8 codes + an N-bit row scale",
             f"{'model':24s} {'kv_h':>4s} {'hd':>4s} {'tile':>5s} {'n':>6s} "
             + " ".join(f"{k:>12s}" for k, _, _ in TABLE_KINDS)]
    for name, (kvh, hd) in models.items():
        for d in depths:
            for c in contexts:
                vals = [decode_traffic(c, num_kv_heads=kvh, head_dim=hd, dtype=dt, depth=d,
                                       fmt=f)["total"] for _, dt, f in TABLE_KINDS]
                lines.append(f"{name:24s} {kvh:4d} {hd:4d} {d:5d} {c:6d} "
                             + " ".join(f"{v:12,d}" for v in vals))
    return "\n".join(lines)


def _engine_table(models: dict, contexts, target: str, mhz: float, gbps: float,
                  fmt: StreamFormat) -> str:
    from tellme.hw.attention.presets import attention_params
    from tellme.sim.cycles_attn import expected_cycles

    ep = attention_params(target)
    eng = dict(lanes=ep["lanes"], beat=ep["beat"], depth=ep["depth"])
    lines = [f"one engine ({target}: lanes {ep['lanes']}, beat {ep['beat']}, tile {ep['depth']}) "
             f"at {mhz:g} MHz vs {fmt.name.upper()} KV reads at {gbps:g} GB/s, per layer, "
             "microseconds",
             f"{'model':24s} {'phase':14s} " + " ".join(f"{'n=' + str(c):>16s}" for c in contexts)]
    for name, (heads, kvh, hd) in models.items():
        for phase in ("decode", "prefill"):
            cells = []
            for c in contexts:
                if phase == "decode":
                    e = expected_cycles("decode", pos=c - 1, heads=heads, kv_heads=kvh,
                                        head_dim=hd, **eng)
                else:
                    e = expected_cycles("prefill", n_q=c, heads=heads, kv_heads=kvh,
                                        head_dim=hd, **eng)
                us_c = e["cycles"] / mhz
                # kv_bytes counts FP16 rows; the engine's cycles do not depend on the format
                us_d = e["kv_bytes"] * (fmt.bits // 8) / 2 / (gbps * 1e3)
                cells.append(f"{us_c:8.0f}/{us_d:7.0f}")
            lines.append(f"{name:24s} {phase + ' eng/ddr':14s} " + " ".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tellme study kv-traffic",
                                 description="KV-cache DDR traffic table (bytes/token/layer)")
    ap.add_argument("--contexts", default="128,1024,4096")
    ap.add_argument("--depths", default="1024,4096",
                    help="score-buffer tiles to compare (keys kept on chip per lane)")
    ap.add_argument("--target", choices=TARGET_NAMES, default="kv260",
                    help="engine preset for the time table")
    ap.add_argument("--mhz", type=float, default=250.0)
    ap.add_argument("--gbps", type=float,
                    help="DDR bandwidth for KV reads (default: the target's DDR peak)")
    ap.add_argument("--fmt", choices=sorted(FORMATS), default=None,
                    help="KV row format of the time table (default: the stream format)")
    args = ap.parse_args(argv)
    from tellme.spec.models import MODELS

    models = {k: (c.num_kv_heads, c.head_dim) for k, c in MODELS.items()}
    ctx = [int(x) for x in args.contexts.split(",")]
    dep = [int(x) for x in args.depths.split(",")]
    print(_table(models, ctx, dep))
    print()
    full = {k: (c.num_heads, c.num_kv_heads, c.head_dim) for k, c in MODELS.items()}
    fmt = FORMATS[args.fmt] if args.fmt else stream_format(None)
    from tellme.spec.targets import target

    gbps = args.gbps or target(args.target).ddr_peak_gbps
    print(_engine_table(full, ctx, args.target, args.mhz, gbps, fmt))
    return 0

