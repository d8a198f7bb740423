"""Subcommands of the ``tellme hw`` group from this area (see tellme.cli); ``plan`` and
``bench`` join the group from sim/cli.py (they run the cycle models and the simulator).

Keep imports at module level light: heavy packages are imported inside handlers.

    tellme hw blocks                                   -> the block registry
    tellme hw verilog --target kv260 [--block tlmm]    -> build/verilog/<target>/<block>.v
    tellme hw report  --target kv260 [--block tlmm] [--fmt fp16] [--json]
                                                       -> build/report/<target>/<fmt>/
    tellme hw report  --target kv260 --budget [--cached] [--json]
                                                       -> every counted block vs its budget
                                                          line (hw/budget.py); exit 2 if over
"""

from __future__ import annotations

from tellme.cli import CliError, group
from tellme.spec.numerics import STREAM_FORMATS
from tellme.spec.targets import TARGET_NAMES


def register(sub) -> None:
    """Add this area's subcommands to ``sub`` (an argparse subparsers action)."""
    hsub = group(sub, "hw", "hardware: Verilog generation, resource reports, plans, benchmarks")

    b = hsub.add_parser("blocks", help="list the hardware blocks (names for --block)")
    b.set_defaults(func=_blocks)

    v = hsub.add_parser("verilog", help="write a block's Verilog under build/verilog/<target>/")
    v.add_argument("--target", choices=TARGET_NAMES, default="kv260")
    v.add_argument("--block", action="append", metavar="NAME",
                   help="block to write (repeatable; default: all; see `tellme hw blocks`)")
    v.add_argument("--fmt", choices=sorted(STREAM_FORMATS),
                   help="stream format of the blocks (default: the contract's)")
    v.set_defaults(func=_verilog)

    r = hsub.add_parser("report", help="yosys synth_xilinx resource estimate per block")
    r.add_argument("--target", choices=TARGET_NAMES, default="kv260")
    r.add_argument("--block", action="append", metavar="NAME",
                   help="block to synthesise (repeatable; default: tlmm, tlmm_half, "
                        "weight_buffer; see `tellme hw blocks`); `accelerator`: the whole "
                        "top, its parts synthesised one by one and summed")
    r.add_argument("--cached", action="store_true",
                   help="print the last results under build/report/ instead of synthesising")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.add_argument("--fmt", choices=sorted(STREAM_FORMATS),
                   help="stream format of the blocks (default: the contract's)")
    r.add_argument("--budget", action="store_true",
                   help="report every counted block against its budget line and the totals "
                        "(hw/budget.py, docs/hw/budget.md); exit 2 when over")
    r.add_argument("--plot", nargs="?", const="", metavar="DIR",
                   help="with --budget: also write a PNG of each line against its limit "
                        "(matplotlib) to DIR (default build/perf/)")
    r.set_defaults(func=_report)

    from tellme.hw import regs_cli  # tellme hw regs (spec/registers.py)
    regs_cli.register(hsub)

    from tellme.hw import bitstream_cli  # tellme hw bitstream (Vivado flow)
    bitstream_cli.register(hsub)


def _checked_blocks(names) -> dict:
    from tellme.hw.blocks import registry

    blocks = registry()
    unknown = [n for n in names or () if n not in blocks]
    if unknown:
        raise CliError(f"unknown block {unknown[0]!r}; known: {', '.join(blocks)}")
    return blocks


def _blocks(args) -> int:
    blocks = _checked_blocks(())
    for name, (desc, _) in blocks.items():
        print(f"{name:<15} {desc}")
    return 0


def _verilog(args) -> int:
    import os

    from tellme.hw.blocks import make_block
    from tellme.hw.toolchain import build_dir, elaborate_verilog

    fmt = STREAM_FORMATS[args.fmt] if args.fmt else None
    names = args.block or list(_checked_blocks(()))
    _checked_blocks(names)
    out = build_dir("verilog", args.target)
    for block in names:
        path = out / f"{block}.v"
        tmp = path.with_suffix(".v.tmp")
        tmp.write_text(elaborate_verilog(make_block(block, args.target, fmt), block))
        os.replace(tmp, path)
        print(path)
    return 0


def _report(args) -> int:
    import json

    from tellme.hw import budget as hwbudget, report
    from tellme.hw.blocks import DEFAULT_REPORT

    fmt = STREAM_FORMATS[args.fmt] if args.fmt else None
    if args.plot is not None and not args.budget:
        raise CliError("--plot draws the budget check: add --budget")
    if args.block and "accelerator" in args.block:
        return _report_accelerator(args, fmt)
    if args.budget:
        if args.block:
            raise CliError("--budget reports every counted block; drop --block")
        try:
            hwbudget.budget(args.target)     # before any synthesis: sim-demo has no budget
        except ValueError as e:
            raise CliError(str(e)) from None
        names = list(_checked_blocks(()))
        blocks = hwbudget.counted_blocks(names, args.target)
    else:
        names = None
        blocks = args.block or list(DEFAULT_REPORT)
        _checked_blocks(blocks)
    reports = _block_reports(args, blocks, fmt)
    if not args.budget:
        if args.json:
            print(json.dumps([r.to_dict() for r in reports], indent=2))
        else:
            print(report.format_table(reports, args.target))
        return 0
    result = hwbudget.check(reports, args.target, names)
    plot = None
    if args.plot is not None:
        from pathlib import Path

        from tellme.hw.toolchain import build_dir

        try:
            plot = hwbudget.plot_budget(result, Path(args.plot) if args.plot else build_dir("perf"))
        except ImportError as e:
            raise CliError(str(e)) from None
    if args.json:
        result["blocks"] = [r.to_dict() for r in reports]
        if plot:
            result["plot"] = str(plot)
        print(json.dumps(result, indent=2))
    else:
        print(hwbudget.format_budget(result))
        print("\n".join(report.timing_lines(reports)))
        if plot:
            print(f"plot: {plot}")
    if not result["ok"]:
        raise CliError(hwbudget.failure_message(result))
    return 0


def _report_accelerator(args, fmt) -> int:
    """``--block accelerator``: the top's parts (hw.top.ACCELERATOR_BLOCKS), each synthesised
    alone (the WebAssembly yosys has 4 GiB: the whole top at kv260 sizes is split), summed
    with the lines not built yet; with ``--budget``, exit 2 when the sum is over the totals."""
    import json

    from tellme.hw import budget as hwbudget
    from tellme.hw.top import ACCELERATOR_BLOCKS

    if args.block != ["accelerator"]:
        raise CliError("--block accelerator stands alone (it is the top's blocks summed)")
    try:
        hwbudget.budget(args.target)
    except ValueError as e:
        raise CliError(str(e)) from None
    blocks = [b for b in ACCELERATOR_BLOCKS.values() if b]
    reports = _block_reports(args, blocks, fmt)
    result = hwbudget.accelerator_check(reports, args.target, list(_checked_blocks(())))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(hwbudget.format_accelerator(result))
    if args.budget and not result["ok"]:
        raise CliError(f"{args.target}: the accelerator is over the budget in "
                       f"{', '.join(result['over'])}")
    return 0


def _block_reports(args, blocks, fmt) -> list:
    """Synthesise ``blocks`` (or load them with --cached: all missing ones named at once)."""
    from tellme.hw import report
    from tellme.hw.toolchain import ToolMissing

    if args.cached:
        reports = [(b, report.load_block(args.target, b, fmt)) for b in blocks]
        missing = [b for b, r in reports if r is None]
        if missing:
            opt = f" --fmt {args.fmt}" if args.fmt else ""
            cmd = f"tellme hw report --target {args.target}{opt} " + \
                " ".join(f"--block {b}" for b in missing)
            raise CliError(f"no cached report for {args.target}/"
                           f"{', '.join(missing)} ({args.fmt or 'contract format'}) under "
                           f"{report.report_dir(args.target, fmt)}; make it with: {cmd}")
        return [r for _, r in reports]
    out = []
    for block in blocks:
        try:
            out.append(report.synth_block(args.target, block, fmt=fmt))
        except (ToolMissing, RuntimeError) as e:
            raise CliError(str(e)) from None
    return out
