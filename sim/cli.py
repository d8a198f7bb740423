"""Subcommands of this area for the ``tellme`` CLI (see tellme.cli): ``logits`` (the golden
model), and ``hw plan`` / ``hw rates`` / ``hw bench`` in the ``hw`` group (cycle models, RTL
benchmark).

Keep imports at module level light: heavy packages are imported inside handlers.
"""

from tellme.cli import CliError, group
from tellme.spec.targets import TARGET_NAMES


def register(sub) -> None:
    """Add this area's subparsers to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "logits", help="run the golden model on token ids and save the logits (.npy)",
        description="Run the bit-exact golden model (docs/numerics.md) over a token sequence "
                    "on a fresh KV cache and write float32 logits [tokens, vocab] as .npy.")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="HF checkpoint folder or tellme weight file")
    p.add_argument("--tokens", required=True, metavar="IDS",
                   help="comma-separated token ids, e.g. 1,2,3")
    p.add_argument("--numerics", choices=("float", "hw"), default="float",
                   help="float: fp32 HF semantics; hw: the accelerator's arithmetic "
                        "(default: float)")
    p.add_argument("--out", required=True, metavar="FILE.npy", help="where to write the logits")
    p.set_defaults(func=_logits)

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


def parse_token_list(text: str) -> list[int]:
    """'1, 2,3' -> [1, 2, 3]; ValueError naming the bad item."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or all(not t for t in items):
        raise ValueError("--tokens is empty: give at least one token id, e.g. --tokens 1,2,3")
    ids = []
    for i, t in enumerate(items):
        if not t:
            raise ValueError(f"--tokens: empty item at position {i} in {text!r}")
        try:
            ids.append(int(t))
        except ValueError:
            raise ValueError(f"--tokens: {t!r} (position {i}) is not an integer") from None
    return ids


def _logits(args) -> int:
    import os
    from pathlib import Path

    import numpy as np

    from tellme.quant.loader import load_model
    from tellme.sim.golden.model import forward

    out = Path(args.out)
    if out.suffix != ".npy":
        raise CliError(f"--out {out}: expected a .npy file name")
    try:
        ids = parse_token_list(args.tokens)
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        model = load_model(args.model)
    except (OSError, ValueError) as e:
        raise CliError(f"cannot load model: {e}") from None
    c = model.config
    bad = [t for t in ids if not 0 <= t < c.vocab_size]
    if bad:
        raise CliError(f"token id {bad[0]} is out of range for vocab size {c.vocab_size} "
                       f"(valid ids: 0..{c.vocab_size - 1})")
    if len(ids) > c.max_context:
        raise CliError(f"{len(ids)} tokens exceed the model's max_context {c.max_context}")
    try:
        logits = forward(model, np.asarray(ids, dtype=np.int64), numerics=args.numerics)
    except ValueError as e:
        raise CliError(str(e)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}.npy")
    try:
        np.save(tmp, logits.astype(np.float32))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    print(f"logits {logits.shape[0]}x{logits.shape[1]} float32 ({args.numerics} numerics) "
          f"-> {out}")
    return 0


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
