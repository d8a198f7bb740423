"""``tellme hw bitstream``: the scripted Vivado flow (tellme.hw.vivado), joined to the ``hw``
group by hw/cli.py. Light imports only.

    tellme hw bitstream --target kv260 [--clock-fallback] [--jobs 4]
        -> bitstreams/<target>/tellme_<target>_<build hash>_<source hash>.{bit,hwh,json}
           + reports (nothing is written when vivado 2022.1 is missing or the top's ports
           differ from spec/shell.py; nothing is published when timing fails)
    tellme hw bitstream --target kv260 --tcl-only [--out DIR]
        -> the Tcl, wrapper and constraints for inspection (no Vivado, no top needed)
"""

from __future__ import annotations

from tellme.cli import CliError
from tellme.spec.shell import BOARDS, WRAPPER


def register(hsub) -> None:
    """Add ``bitstream`` to the ``tellme hw`` subparsers ``hsub``."""
    p = hsub.add_parser("bitstream", help="Vivado flow: package the top, block design, "
                        "implement, write bitstreams/<target>/ (needs Vivado 2022.1)")
    p.add_argument("--target", choices=tuple(BOARDS), default="kv260")
    p.add_argument("--clock-fallback", action="store_true",
                   help="accept a lower PL clock when the PS dividers cannot give the "
                        "target's exactly (recorded in the manifest)")
    p.add_argument("--jobs", type=int, default=4, help="Vivado threads (default 4)")
    p.add_argument("--tcl-only", action="store_true",
                   help="only write the generated Tcl, wrapper and constraints (no Vivado)")
    p.add_argument("--out", help="folder for --tcl-only (default build/vivado/<target>-tcl)")
    p.set_defaults(func=_bitstream)


def _bitstream(args) -> int:
    from pathlib import Path

    from tellme.hw import vivado
    from tellme.hw.toolchain import ToolMissing

    if args.tcl_only:
        out = Path(args.out) if args.out else vivado.build_root(args.target + "-tcl")
        out.mkdir(parents=True, exist_ok=True)
        files = {"package_ip.tcl": vivado.package_tcl(args.target),
                 "block_design.tcl": vivado.block_design_tcl(args.target),
                 "build.tcl": vivado.build_tcl(args.target, 0, args.clock_fallback, args.jobs),
                 f"tellme_{args.target}.xdc": vivado.xdc(args.target),
                 f"{WRAPPER}.v": vivado.wrapper_verilog()}
        for name, text in files.items():
            (out / name).write_text(text)
            print(out / name)
        return 0
    try:
        res = vivado.run(args.target, clock_fallback=args.clock_fallback, jobs=args.jobs)
    except (ToolMissing, vivado.FlowError) as e:
        raise CliError(str(e)) from None
    m = res.manifest
    print(f"{res.out_dir / res.stem}.bit (.hwh, .json): {m['clock_mhz']['actual']} MHz, "
          f"WNS {m['wns_ns']} ns, build hash {m['build_hash']}")
    return 0
