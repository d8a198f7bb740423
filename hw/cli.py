"""Subcommands of this area for the ``tellme`` CLI (see tellme.host.cli).

Keep imports at module level light: heavy packages are imported inside handlers.

    tellme hw verilog --target kv260 [--block tlmm]          -> build/verilog/<target>/<block>.v
    tellme hw report  --target kv260 [--block tlmm] [--fmt fp16] [--json] -> build/report/<target>/<fmt>/
    tellme hw bench   --target kv260 [--tokens 1,64]         -> layer linears, RTL cycles
"""

from __future__ import annotations

TARGETS = ("sim", "kv260", "zcu104")
BLOCKS = ("tlmm", "tlmm_half", "weight_buffer", "tlmm_core", "attention")
REPORT_BLOCKS = ("tlmm", "tlmm_half", "weight_buffer")
EW_REPORT_BLOCKS = ("ew_norm", "ew_scale", "ew_quant", "ew_dequant", "ew_residual", "ew_gated",
                    "ew_rope")  # tellme.hw.elementwise.REPORT_BLOCKS (not in the default set)
ATTN_REPORT_BLOCKS = ("attention",)  # tellme.hw.attention.presets (not in the default set)
WS_REPORT_BLOCKS = ("weight_stream",)  # tellme.hw.weight_stream (not in the default set)


def register(sub) -> None:
    """Add this area's subparsers to ``sub`` (an argparse subparsers action)."""
    hw = sub.add_parser("hw", help="hardware: Verilog generation and resource reports")
    hsub = hw.add_subparsers(dest="hw_command", metavar="HW_COMMAND")
    hsub.required = True

    v = hsub.add_parser("verilog", help="write a block's Verilog under build/verilog/<target>/")
    v.add_argument("--target", choices=TARGETS, default="kv260")
    v.add_argument("--block", choices=BLOCKS, action="append",
                   help="block to write (repeatable; default: all)")
    v.set_defaults(func=_verilog)

    r = hsub.add_parser("report", help="yosys synth_xilinx resource estimate per block")
    r.add_argument("--target", choices=TARGETS, default="kv260")
    r.add_argument("--block", choices=REPORT_BLOCKS + EW_REPORT_BLOCKS + ATTN_REPORT_BLOCKS
                   + WS_REPORT_BLOCKS,
                   action="append",
                   help="block to synthesise (repeatable; default: tlmm, weight_buffer, "
                        "tlmm_half)")
    r.add_argument("--cached", action="store_true",
                   help="print the last results under build/report/ instead of synthesising")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.add_argument("--fmt", choices=("fp16", "fp24"),
                   help="stream format of the blocks (default: the contract's, fp24)")
    r.set_defaults(func=_report)

    pl = hsub.add_parser("plan", help="weight-buffer sizing, tile plan and TLMM cycles per layer")
    pl.add_argument("--target", choices=TARGETS, default="kv260")
    pl.add_argument("--model", default="bitnet_b1_58-large",
                    help="bitnet_b1_58-large or bitnet-b1.58-2B-4T")
    pl.add_argument("--tokens", type=int, action="append",
                    help="tokens per call (repeatable; default 1 and 64)")
    pl.add_argument("--table", choices=("full", "half"), help="table kind (default: preset's)")
    pl.add_argument("--uram-budget", type=int, default=56)
    pl.add_argument("--mhz", type=float, default=250.0, help="clock for the time columns")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_plan)

    from tellme.hw import bench  # module level is light; the handler imports the simulator

    bench.add_parser(hsub)


def _verilog(args) -> int:
    import os

    from tellme.hw.attention.presets import make_attention
    from tellme.hw.presets import make_tlmm, make_tlmm_core, make_weight_buffer, preset
    from tellme.sim.runner import elaborate_verilog
    from tellme.sim.toolchain import build_dir

    p = preset(args.target)
    makers = {
        "tlmm": lambda: make_tlmm(p.with_table("full")),
        "tlmm_half": lambda: make_tlmm(p.with_table("half")),
        "weight_buffer": lambda: make_weight_buffer(p),
        "tlmm_core": lambda: make_tlmm_core(p),
        "attention": lambda: make_attention(args.target),
    }
    out = build_dir("verilog", args.target)
    for block in args.block or BLOCKS:
        path = out / f"{block}.v"
        tmp = path.with_suffix(".v.tmp")
        tmp.write_text(elaborate_verilog(makers[block](), block))
        os.replace(tmp, path)
        print(path)
    return 0


def _plan(args) -> int:
    import dataclasses
    import json

    from tellme.host.cli import CliError
    from tellme.hw.presets import preset
    from tellme.hw.weight_buffer import MODEL_SHAPES, size_weight_buffer
    from tellme.sim.cycles import layer_cycles

    if args.model not in MODEL_SHAPES:
        raise CliError(f"unknown model {args.model!r}; known: {', '.join(MODEL_SHAPES)}")
    shapes = MODEL_SHAPES[args.model]
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


def _report(args) -> int:
    import json

    from tellme.host.cli import CliError
    from tellme.hw import report
    from tellme.sim.toolchain import ToolMissing

    from tellme.sim.golden.numerics import STREAM_FORMATS

    fmt = STREAM_FORMATS[args.fmt] if args.fmt else None
    blocks = args.block or list(REPORT_BLOCKS)
    reports = []
    for block in blocks:
        if args.cached:
            rep = report.load_block(args.target, block, fmt)
            if rep is None:
                raise CliError(f"no cached report for {args.target}/{block} "
                               f"({args.fmt or 'contract format'}); run without --cached first")
        else:
            try:
                rep = report.synth_block(args.target, block, fmt=fmt)
            except ToolMissing as e:
                raise CliError(str(e)) from None
            except RuntimeError as e:
                raise CliError(str(e)) from None
        reports.append(rep)
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        print(report.format_table(reports, args.target))
    return 0
