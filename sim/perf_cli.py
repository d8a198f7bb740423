"""``tellme perf``: whole-model performance projections of the top as built (sim/perf.py from
the whole-step cycle model sim/cycles_top.py; plots in sim/perf_plots.py; docs/performance.md).

Registered in tellme.cli.COMMAND_MODULES. Imports nothing heavy at module level: the handler
imports the cycle models (amaranth for the element-wise latencies) and, for ``--plot``,
matplotlib.
"""

from __future__ import annotations

from tellme.cli import CliError

DESCRIPTION = (
    "Project decode tokens/s, time to first token and prefill tokens/s of a whole model on a "
    "target for the accelerator top AS BUILT (hw/top.py: records one at a time, the linears' "
    "codes on one 128-bit weight port), from the whole-step cycle model sim/cycles_top.py, "
    "which is validated against the RTL top in Verilator simulation (every record kind within "
    "3 %, whole calls within 0.3 %, the demo model through this tool within 5 %), not on a "
    "board. Prints a per-block and per-layer breakdown, DDR bytes per token by kind, the share "
    "of the DDR roofline, issue 15's goals with the limiting block, TeLLMe v2's published "
    "figures and every assumption (clock, DDR peak / efficiency / latency, ports). The LM "
    "head two ways: on the host A53 (an assumed bandwidth) and 'PL head', the top's LM-head "
    "unit as built (on m_axi_w1), which the driver uses. A secondary line gives the previous "
    "per-block model with the design's overlaps (blocks in parallel, NOT the top as built); "
    "--ports, --attention, --attn-engines and --kv apply to that line only. A projection: "
    "nothing here ran on a board.")


def register(sub) -> None:
    from tellme.spec.shell import BOARDS

    p = sub.add_parser("perf", help="whole-model performance projection (decode tok/s, TTFT)",
                       description=DESCRIPTION)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", metavar="NAME",
                     help="a public checkpoint of tellme.spec.models (bitnet_b1_58-large, "
                          "bitnet-b1.58-2B-4T, ...)")
    src.add_argument("--weights", metavar="FILE.tlm", help="a tellme weight file (its config)")
    p.add_argument("--target", choices=tuple(BOARDS), default="kv260")
    p.add_argument("--context", type=int, nargs="+", metavar="N", default=[128, 1024, 4096],
                   help="decode contexts in keys (default 128 1024 4096)")
    p.add_argument("--prompt", type=int, nargs="+", metavar="N", default=[64, 128],
                   help="prompt lengths for TTFT and prefill (default 64 128)")
    p.add_argument("--ddr-eff", type=float, default=0.85,
                   help="sustained fraction of the DDR peak (default 0.85; decode is also "
                        "shown at 0.70 and 0.90); sim.cycles_top.board_memory's efficiency")
    p.add_argument("--clock-mhz", type=float, help="default: the target's clock")
    p.add_argument("--attention", choices=("int", "fp"), default="int",
                   help="secondary per-block model only (the top has the integer engine): "
                        "int: the contract's integer engine over an int8 KV cache (default); "
                        "fp: the FP engine of the previous contract")
    p.add_argument("--attn-engines", type=int, metavar="N",
                   help="secondary per-block model only: integer attention engines "
                        "(default 1: the kv260 preset; fp: 1)")
    p.add_argument("--kv", choices=("stream", "int8"), default="stream",
                   help="secondary per-block model only (the top's cache is int8): KV cache "
                        "rows of the fp engine, the stream format (default) or int8")
    p.add_argument("--ports", choices=("shell", "wide"), default="shell",
                   help="secondary per-block model only (the top uses one 128-bit weight "
                        "port): shell: the AXI masters of spec/shell.py bind (default); wide: "
                        "ports never bind (only the DDR and the buffer fill)")
    p.add_argument("--a53-gbps", type=float, default=4.0,
                   help="assumed host A53 int8 LM-head bandwidth in GB/s (default 4)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", nargs="?", const="", metavar="DIR",
                   help="write PNG plots (matplotlib) to DIR (default build/perf/): decode "
                        "tok/s vs context with the DDR roofline and TeLLMe, time per token by "
                        "block, resources per block against the budget (cached synthesis)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    import json
    from pathlib import Path

    from tellme.sim import perf

    weights, source = None, ""
    if args.weights:
        try:
            cfg, weights, name, source = perf.read_weights(args.weights)
        except (OSError, ValueError, KeyError) as e:
            raise CliError(f"cannot read the weight file: {e}") from None
    else:
        from tellme.spec.models import model_config

        try:
            cfg = model_config(args.model)
        except ValueError as e:
            raise CliError(str(e)) from None
        name = args.model
    try:
        a = perf.default_assumptions(
            args.target, ddr_efficiency=args.ddr_eff, clock_mhz=args.clock_mhz,
            attention=args.attention, attn_engines=args.attn_engines, kv=args.kv,
            a53_gbps=args.a53_gbps, ports=args.ports)
        report = perf.project(cfg, args.target, a, name=name, contexts=args.context,
                              prompts=args.prompt, weights=weights, source=source,
                              extra_contexts=perf.PLOT_CONTEXTS if args.plot is not None
                              else ())
    except ValueError as e:
        raise CliError(str(e)) from None
    files, notes = [], []
    if args.plot is not None:
        if args.plot:
            out_dir = Path(args.plot)
        else:
            from tellme.hw.toolchain import build_dir

            out_dir = build_dir("perf")
        try:
            files = perf.plot(report, out_dir)
        except ImportError as e:
            raise CliError(str(e)) from None
        from tellme.sim.perf_plots import plot_budget_cached

        f, note = plot_budget_cached(args.target, out_dir)
        if f is not None:
            files.append(f)
        else:
            notes.append(note)
    if args.json:
        out = perf.to_json(report)
        if files:
            out["plots"] = [str(f) for f in files]
        if notes:
            out["plot_notes"] = notes
        print(json.dumps(out, indent=1))
    else:
        print(perf.format_report(report))
        for f in files:
            print(f"plot: {f}")
        for n in notes:
            print(n)
    return 0
