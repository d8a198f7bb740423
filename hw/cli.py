"""Subcommands of this area for the ``tellme`` CLI (see tellme.host.cli).

Keep imports at module level light: heavy packages are imported inside handlers.

    tellme hw verilog --target kv260 [--block tlmm]          -> build/verilog/<target>/<block>.v
    tellme hw report  --target kv260 [--block tlmm] [--json] -> build/report/<target>/
    tellme hw bench   --target kv260 [--tokens 1,64]         -> layer linears, RTL cycles
"""

from __future__ import annotations

TARGETS = ("sim", "kv260", "zcu104")
BLOCKS = ("tlmm", "tlmm_half", "weight_buffer", "tlmm_core")
REPORT_BLOCKS = ("tlmm", "tlmm_half", "weight_buffer")


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
    r.add_argument("--block", choices=REPORT_BLOCKS, action="append",
                   help="block to synthesise (repeatable; default: tlmm, weight_buffer, "
                        "tlmm_half)")
    r.add_argument("--cached", action="store_true",
                   help="print the last results under build/report/ instead of synthesising")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.set_defaults(func=_report)

    from tellme.hw import bench  # module level is light; the handler imports the simulator

    bench.add_parser(hsub)


def _verilog(args) -> int:
    import os

    from tellme.hw.presets import make_tlmm, make_tlmm_core, make_weight_buffer, preset
    from tellme.sim.runner import elaborate_verilog
    from tellme.sim.toolchain import build_dir

    p = preset(args.target)
    makers = {
        "tlmm": lambda: make_tlmm(p.with_table("full")),
        "tlmm_half": lambda: make_tlmm(p.with_table("half")),
        "weight_buffer": lambda: make_weight_buffer(p),
        "tlmm_core": lambda: make_tlmm_core(p),
    }
    out = build_dir("verilog", args.target)
    for block in args.block or BLOCKS:
        path = out / f"{block}.v"
        tmp = path.with_suffix(".v.tmp")
        tmp.write_text(elaborate_verilog(makers[block](), block))
        os.replace(tmp, path)
        print(path)
    return 0


def _report(args) -> int:
    import json

    from tellme.host.cli import CliError
    from tellme.hw import report
    from tellme.sim.toolchain import ToolMissing

    blocks = args.block or list(REPORT_BLOCKS)
    reports = []
    for block in blocks:
        if args.cached:
            rep = report.load_block(args.target, block)
            if rep is None:
                raise CliError(f"no cached report for {args.target}/{block}; run without "
                               f"--cached first")
        else:
            try:
                rep = report.synth_block(args.target, block)
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
