"""``tellme hw bench``: RTL cycle counts of one transformer layer's linears on the LinearUnit.

Runs the generated Verilog of :class:`tellme.hw.linear.LinearUnit` at a board preset in
Verilator (cocotb testbench ``tellme.sim.bench_tb``), with the weights in a DDR timing model of
stated bandwidth, efficiency and latency (``tellme.sim.ddr_model``). All linears of the layer
are queued back to back; every output is checked exactly against the golden model. Reported:

* measured cycles per token count (decode: 1 token, prefill: 64 tokens);
* compute bound: the engine's stall-free ``sim.cycles.expected_cycles`` summed over tiles;
* bandwidth bound: bytes / (bytes per cycle the DDR model and the streamer can deliver)
  + one read latency;
* overlap efficiency = max(compute bound, bandwidth bound) / measured (1.0 = perfect overlap);
* the load-then-compute schedule of TeLLMe v2 (sum of both per linear) for comparison.

Heavy imports (amaranth, cocotb) happen inside the functions; importing this module is cheap.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict


def reduced_shapes(shapes, factor: int):
    """Same layer with every dimension divided by ``factor`` (for quicker runs)."""
    return [(n, o // factor, i // factor) for n, o, i in shapes]


def tile_plan(p, shapes) -> list[tuple[str, int, int, int]]:
    """(name, n_out, k_in, tile_nb) per linear, from the analytic buffer sizing.

    For URAM-sized presets the plan comes from ``size_weight_buffer`` with the URAM count that
    gives the preset's half depth; otherwise the same rule (whole column blocks, one half).
    """
    from tellme.hw.weight_buffer import URAM_DEPTH, URAM_WIDTH, size_weight_buffer
    from tellme.spec.codes import padded_dims
    from tellme.spec.tiling import Tiling

    width = math.ceil(5 * p.t / URAM_WIDTH)
    if (2 * p.half_depth) % URAM_DEPTH == 0:
        budget = p.q * width * (2 * p.half_depth // URAM_DEPTH)
        sz = size_weight_buffer(Tiling(p.t, p.q), {n: (o, i) for n, o, i in shapes},
                                uram_budget=budget)
        assert sz.half_depth == p.half_depth
        plan = [(lp.name, lp.n_out, lp.k_in, min(lp.tile_nb, p.nbt_max)) for lp in sz.plans]
    else:
        plan = []
        for n, o, i in shapes:
            nb, kb = padded_dims(o, i, p.t, p.q)
            plan.append((n, o, i, min(nb, p.half_depth // kb, p.nbt_max)))
    for n, o, i, tnb in plan:
        _, kb = padded_dims(o, i, p.t, p.q)
        if kb > p.kb_max or tnb < 1:
            raise ValueError(f"{n} [{o}, {i}] does not fit preset {p.name!r} "
                             f"(K blocks {kb} > kb_max {p.kb_max} or no tile fits a half)")
    return plan


def weight_delivery(ddr_bytes_per_cycle: float, port_bytes_per_cycle: float, p) -> float:
    """Bytes of TLMM codes per cycle the weight path delivers: the least of the DDR's
    sustained rate, the AXI port(s) and the buffer fill (``p.v`` index vectors of 5T bits per
    cycle, ``p`` a hardware preset). The benchmark's bound; ``tellme perf`` uses it too."""
    return min(ddr_bytes_per_cycle, port_bytes_per_cycle, p.v * 5 * p.t / 8)


def run_bench(*, target: str = "kv260", tokens=(1, 64), reduce: int = 1,
              data_width: int = 512, max_burst: int = 16, max_outstanding: int = 8,
              timing=None, seed: int = 0, model: str = "bitnet_b1_58-large",
              out=sys.stdout) -> dict:
    """Build + simulate; print the report to ``out``; return the figures as a dict."""
    from tellme.hw.linear import LinearUnit
    from tellme.hw.presets import preset
    from tellme.hw.toolchain import build_dir
    from tellme.sim.cycles import expected_cycles
    from tellme.sim.ddr_model import DdrTiming
    from tellme.sim.runner import run_cocotb
    from tellme.spec.codes import padded_dims
    from tellme.spec.models import layer_shapes

    p = preset(target)
    timing = timing or DdrTiming()
    for m_tok in tokens:
        if not 1 <= m_tok <= p.tok_max:
            raise ValueError(f"token count {m_tok} outside 1..{p.tok_max} (preset {p.name})")
    if reduce < 1:
        raise ValueError(f"--reduce must be >= 1, got {reduce}")
    shapes = [(n, o, i) for n, (o, i) in layer_shapes(model).items()]
    if reduce > 1:
        shapes = reduced_shapes(shapes, reduce)
    plan = tile_plan(p, shapes)
    params = dict(preset=p.name, table=p.table, t=p.t, q=p.q, v=p.v, kb_max=p.kb_max,
                  nbt_max=p.nbt_max, tok_max=p.tok_max, half_depth=p.half_depth,
                  data_width=data_width, max_burst=max_burst, max_outstanding=max_outstanding,
                  addr_width=32)
    res_path = build_dir("bench") / f"{p.name}-r{reduce}-{'_'.join(map(str, tokens))}.json"
    job = dict(linears=plan, tokens=list(tokens), timing=asdict(timing), seed=seed,
               out=str(res_path))
    t0 = time.monotonic()
    run_cocotb(lambda: LinearUnit(p, data_width=data_width, max_burst=max_burst,
                                  max_outstanding=max_outstanding, addr_width=32),
               name=f"linear_{p.name}", params=params, test_module="tellme.sim.bench_tb",
               extra_env={"BENCH_JOB": json.dumps(job)},
               )
    wall = time.monotonic() - t0
    results = json.loads(res_path.read_text())

    vbytes = 5 * p.t / 8
    bpc = weight_delivery(timing.bytes_per_cycle, data_width / 8, p)
    pr = lambda *a: print(*a, file=out)  # noqa: E731
    pr(f"tellme hw bench: {model} layer linears on LinearUnit RTL (Verilator), "
       f"target {p.name}")
    pr(f"  engine: T={p.t} Q={p.q} table={p.table}; buffer: {p.q} banks x 2 halves x "
       f"{p.half_depth} words of {5 * p.t} bits; fill {p.v} vectors/cycle")
    pr(f"  streamer: AXI4 {data_width}-bit, bursts <= {max_burst} beats, "
       f"{max_outstanding} outstanding (a 512-bit port stands for the PS HP ports merged)")
    pr(f"  {timing.describe()}")
    pr(f"  weight delivery = min(DDR {timing.bytes_per_cycle:.2f}, AXI {data_width // 8}, "
       f"buffer fill {p.v * vbytes:.1f}) = {bpc:.2f} B/cycle")
    pr(f"  shapes{f' (reduced 1/{reduce})' if reduce > 1 else ''}: " + ", ".join(
        f"{n} {i}->{o} (tile {tnb} col blocks)" for n, o, i, tnb in plan))
    report = dict(target=p.name, model=model, reduce=reduce, data_width=data_width,
                  timing=asdict(timing), bytes_per_cycle=bpc, runs=[])
    for r in results:
        m_tok = r["tokens"]
        comp_total = 0
        bytes_total = 0
        serial = 0.0
        rows = []
        prev = 0
        for (n, o, i, tnb), done in zip(plan, r["done_at"], strict=True):
            nb, kb = padded_dims(o, i, p.t, p.q)
            tiles = [min(tnb, nb - nb0) for nb0 in range(0, nb, tnb)]
            comp = sum(expected_cycles(table=p.table, kb=kb, nbt=t, n_tokens=m_tok)
                       for t in tiles)
            nbytes = nb * kb * p.q * vbytes
            comp_total += comp
            bytes_total += nbytes
            serial += nbytes / bpc + timing.latency + comp
            rows.append((n, len(tiles), nbytes, comp, nbytes / bpc, done - prev))
            prev = done
        measured = r["done_at"][-1]
        bw = bytes_total / bpc + timing.latency
        # Within one layer the last tile's compute cannot hide behind any fill.
        n, o, i, tnb = plan[-1]
        nb, kb = padded_dims(o, i, p.t, p.q)
        tail = expected_cycles(table=p.table, kb=kb, nbt=nb - (nb - 1) // tnb * tnb,
                               n_tokens=m_tok)
        ideal = max(comp_total, bw)
        eff = ideal / measured
        us = measured / timing.clock_mhz
        kind = "decode" if m_tok == 1 else "prefill"
        pr("")
        pr(f"  {kind}, {m_tok} token(s): measured {measured} cycles = {us:.1f} us at "
           f"{timing.clock_mhz:g} MHz")
        pr(f"    {'linear':<10} {'tiles':>5} {'weight KB':>10} {'compute':>9} "
           f"{'fill':>9} {'measured':>9}   (cycles; measured = from the previous linear's "
           f"last output)")
        for n, nt, nbytes, comp, fill, meas in rows:
            pr(f"    {n:<10} {nt:>5} {nbytes / 1024:>10.1f} {comp:>9} {fill:>9.0f} {meas:>9}")
        pr(f"    compute bound (sum of expected_cycles per tile): {comp_total}")
        pr(f"    bandwidth bound ({bytes_total / 1e6:.3f} MB / {bpc:.2f} B/cycle + latency): "
           f"{bw:.0f}")
        pr(f"    ideal max(compute, bandwidth) = {ideal:.0f}; overlap efficiency "
           f"{eff * 100:.1f}%")
        if bw > comp_total:
            pr(f"    (bandwidth bound + compute of the layer's last tile, which no fill can "
               f"hide: {bw + tail:.0f} = {(bw + tail) / measured * 100:.1f}% of measured)")
        pr(f"    load-then-compute (TeLLMe v2 schedule) would take {serial:.0f} cycles: "
           f"{serial / measured:.2f}x the measured time")
        if comp_total >= bw:
            pr(f"    compute-bound: expected_cycles {comp_total} vs RTL {measured}: "
               f"{(measured - comp_total) / comp_total * 100:+.2f}%")
        report["runs"].append(dict(tokens=m_tok, measured=measured, compute=comp_total,
                                   bandwidth=bw, ideal=ideal, efficiency=eff, serial=serial,
                                   linears=rows, ddr_beats=r["beats"], sim_wall_s=r["wall_s"]))
    pr("")
    pr(f"  simulation wall time {wall:.0f} s (build included); every output checked exactly "
       f"against ternary_matmul")
    return report


def add_parser(sub) -> None:
    """Register ``bench`` under the ``tellme hw`` subparsers."""
    from tellme.spec.targets import TARGET_NAMES

    ap = sub.add_parser("bench", help="RTL cycle counts of one layer's linears (Verilator)",
                        description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=TARGET_NAMES, default="kv260",
                    help="hardware preset (default kv260)")
    ap.add_argument("--tokens", default="1,64",
                    help="comma-separated token counts (default 1,64: decode and prefill)")
    ap.add_argument("--reduce", type=int, default=1,
                    help="divide every layer dimension by this factor (quicker runs)")
    ap.add_argument("--data-width", type=int, default=512, choices=(128, 256, 512))
    ap.add_argument("--max-burst", type=int, default=16)
    ap.add_argument("--outstanding", type=int, default=8)
    ap.add_argument("--clock-mhz", type=float, default=250.0)
    ap.add_argument("--ddr-gbps", type=float,
                    help="DDR peak in GB/s (default: the target's, spec/targets.py)")
    ap.add_argument("--ddr-efficiency", type=float, default=0.85)
    ap.add_argument("--ddr-latency", type=int, default=48, help="read latency (cycles)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.set_defaults(func=main)


def main(args) -> int:
    from tellme.sim.ddr_model import DdrTiming

    try:
        tokens = tuple(int(t) for t in args.tokens.split(","))
    except ValueError:
        from tellme.cli import CliError

        raise CliError(f"--tokens must be comma-separated integers, got {args.tokens!r}") \
            from None
    from tellme.spec.targets import target

    gbps = args.ddr_gbps or target(args.target).ddr_peak_gbps
    timing = DdrTiming(clock_mhz=args.clock_mhz, peak_gbps=gbps,
                       efficiency=args.ddr_efficiency, latency=args.ddr_latency)
    try:
        report = run_bench(target=args.target, tokens=tokens, reduce=args.reduce,
                           data_width=args.data_width, max_burst=args.max_burst,
                           max_outstanding=args.outstanding, timing=timing)
    except ValueError as e:                 # unknown target, shapes that do not fit, ...
        from tellme.cli import CliError

        raise CliError(str(e)) from None
    if args.json:
        import os

        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1, default=float)
        os.replace(tmp, args.json)
    return 0
