"""Subcommands of this area for the ``tellme`` CLI (see tellme.cli): ``hw plan`` / ``hw rates``
/ ``hw bench`` in the ``hw`` group (cycle models, RTL benchmark). (``logits`` is the host's:
host/run_cli.py.)

Keep imports at module level light: heavy packages are imported inside handlers.
"""

from tellme.cli import CliError, group
from tellme.spec.targets import TARGET_NAMES


def register(sub) -> None:
    """Add this area's subparsers to ``sub`` (an argparse subparsers action)."""
    hsub = group(sub, "hw", "hardware: Verilog generation, resource reports, plans, benchmarks")
    pl = hsub.add_parser("plan", help="weight-buffer sizing, tile plan and TLMM cycles per layer")
    pl.add_argument("--target", choices=TARGET_NAMES, default="kv260")
    pl.add_argument("--model", default="bitnet_b1_58-large",
                    help="a public checkpoint of tellme.spec.models (default "
                         "bitnet_b1_58-large)")
    pl.add_argument("--tokens", type=int, action="append",
                    help="tokens per call (repeatable; default 1 and 64)")
    pl.add_argument("--table", choices=("full", "half"), help="table kind (default: preset's)")
    pl.add_argument("--uram-budget", type=int, default=56)
    pl.add_argument("--mhz", type=float, default=250.0, help="clock for the time columns")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_plan)

    from tellme.sim import bench, rates  # module level is light; handlers import the rest

    bench.add_parser(hsub)
    rates.add_parser(hsub)


def _plan(args) -> int:
    import dataclasses
    import json

    from tellme.hw.presets import preset
    from tellme.hw.weight_buffer import size_weight_buffer
    from tellme.sim.cycles import layer_cycles
    from tellme.spec.models import layer_shapes

    try:
        shapes = layer_shapes(args.model)
    except ValueError as e:
        raise CliError(str(e)) from None
    p = preset(args.target)
    if args.table:
        p = p.with_table(args.table)
    try:
        sizing = size_weight_buffer(args.target, shapes, uram_budget=args.uram_budget)
    except ValueError as e:
        raise CliError(str(e)) from None
    out = {"target": args.target, "model": args.model, "mhz": args.mhz,
           "preset": dataclasses.asdict(p), "sizing": sizing.to_dict(), "calls": []}
    for n in args.tokens or [1, 64]:
        if not 1 <= n <= p.tok_max:
            raise CliError(f"--tokens {n} outside 1..{p.tok_max} (preset tok_max)")
        lc = layer_cycles(t=p.t, q=p.q, v=p.v, table=p.table, half_depth=p.half_depth,
                          shapes=shapes, n_tokens=n)
        lc["linears"] = [dataclasses.asdict(x) for x in lc["linears"]]
        out["calls"].append(dict(tokens=n, **lc))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    s = sizing
    print(f"{args.model} on {args.target}: T={p.t} Q={p.q} V={p.v} table={p.table}; buffer "
          f"{s.urams} URAM288 ({p.q} banks x {s.uram_width} wide x {s.uram_deep} deep), "
          f"half = {s.half_depth} words/bank; a whole-linear buffer would need "
          f"{s.whole_layer_urams} URAM")
    for call in out["calls"]:
        n = call["tokens"]
        print(f"\n{n} token(s) per call; cycles per layer (stall-free, fill at V vectors/cycle)")
        print(f"{'linear':<10}{'KB':>4}{'NB':>5}{'tile':>6}{'tiles':>6}{'compute':>10}"
              f"{'fill':>10}")
        for x in call["linears"]:
            print(f"{x['name']:<10}{x['kb']:>4}{x['nb']:>5}{x['tile_nb']:>6}{x['tiles']:>6}"
                  f"{x['compute']:>10}{x['fill']:>10}")
        us = call["total"] / args.mhz
        print(f"layer: compute {call['compute']}, fill {call['fill']}, ping-pong total "
              f"{call['total']} cycles = {us:.1f} us at {args.mhz:g} MHz "
              f"(load-then-compute: {call['serial']}); "
              f"{n * 1e6 / us:,.0f} token-layers/s")
    return 0
