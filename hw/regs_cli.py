"""``tellme hw regs``: the control register map (spec/registers.py), joined to the ``hw`` group
by hw/cli.py. Light imports only (no amaranth): runs on the board too.

    tellme hw regs                         -> offsets, access and fields
    tellme hw regs --target kv260          -> plus the build's constant words
    tellme hw regs --json [--target T]     -> the same as JSON (regmap.json beside a bitstream)
    tellme hw regs --markdown              -> docs/hw/registers.md
"""

from __future__ import annotations

from tellme.spec.targets import TARGET_NAMES


def register(hsub) -> None:
    """Add ``regs`` to the ``tellme hw`` subparsers ``hsub``."""
    p = hsub.add_parser("regs", help="the control register map (offsets, fields, docs)")
    p.add_argument("--markdown", action="store_true",
                   help="print docs/hw/registers.md (regenerate: > docs/hw/registers.md)")
    p.add_argument("--json", action="store_true", help="print the map as JSON")
    p.add_argument("--target", choices=TARGET_NAMES,
                   help="show the constant registers' values for this target")
    p.add_argument("--build-hash", type=lambda s: int(s, 0), default=0,
                   help="BUILD_HASH value to show with --target (default 0)")
    p.set_defaults(func=_regs)


def _regs(args) -> int:
    import json

    from tellme.spec import registers as R

    if args.markdown:
        print(R.markdown(), end="")
        return 0
    words = R.const_words(args.target, args.build_hash) if args.target else {}
    regs = []
    for r in R.REGISTERS:
        d = {"name": r.name, "offset": r.offset, "access": r.access, "words": r.words,
             "reset": r.reset, "doc": r.doc,
             "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width, "reset": f.reset,
                         "const": f.const, "doc": f.doc} for f in r.fields]}
        if r.name in words:
            d["value"] = words[r.name]
        regs.append(d)
    if args.json:
        print(json.dumps({"version": R.REGMAP_VERSION, "addr_width": R.ADDR_WIDTH,
                          "target": args.target, "registers": regs}, indent=2))
        return 0
    for d in regs:
        val = f" = {d['value']:#010x}" if "value" in d else ""
        fields = ", ".join(f"{f['name']}[{f['lsb'] + f['width'] - 1}:{f['lsb']}]"
                           for f in d["fields"])
        print(f"{d['offset']:#05x}  {d['name']:<13} {d['access']:<4} {fields}{val}")
    return 0
