"""Mutation check of the attention-engine tests: build the engine with one rounding step
replaced by truncation (or removed) and confirm the cocotb testbench fails.

    .venv/bin/python -m tests.rtl.attn_mutants [--fmt fp16|fp24] [name ...]
                                                   # one Verilator build per mutant

Prints KILLED (with the failing tests) or SURVIVED per mutant; the build dirs are removed.
"""

from __future__ import annotations

import sys

MUTANTS = {
    "qk_trunc": ('rne_shr(m, prod, shr, QKP, f"qk{i}_{w}")', "(prod >> shr)"),
    "exp2_noround": ("e.eq(t0B - ((dfB * rB + 512) >> 10))", "e.eq(t0B - ((dfB * rB) >> 10))"),
    "sv_trunc": ('rne_shr(m, pv, shr, SVP, f"sv{i}_{w}")', "(pv >> shr)"),
    "out_trunc_lsb": ("m.d.sync += obits.eq(Cat(mag, neg))",
                      "m.d.sync += obits.eq(Cat(mag & ~1, neg))"),
    "a_trunc": ("m.d.sync += [qa.eq(Mux(shv == 0, mag, rnd))",
                "m.d.sync += [qa.eq(Mux(shv == 0, mag, mag >> shv))"),
    "recip_trunc": ("m.d.sync += quo.eq(quo + ((r2 > dn) | ((r2 == dn) & quo[0])))",
                    "m.d.sync += quo.eq(quo)"),
}
PARAMS = dict(head_dim=16, lanes=8, beat=4, depth=8, ctx_bits=12)


def main(argv) -> int:
    from tellme.hw.attention import engine
    from tellme.spec.numerics import STREAM_FORMATS as fmts
    from tests.support.mutants import run_mutants

    fmt_name = "fp16"
    if argv[:1] == ["--fmt"]:
        fmt_name, argv = argv[1], argv[2:]
    if fmt_name not in fmts:
        raise SystemExit(f"--fmt must be one of {', '.join(fmts)}, got {fmt_name!r}")
    fmt, params = fmts[fmt_name], dict(PARAMS, fmt=fmt_name)
    return run_mutants(engine, MUTANTS, argv,
                       lambda mod: mod.AttentionEngine(**PARAMS, fmt=fmt),
                       name="attn_mutant", params=params,
                       test_module="tests.rtl.tb_attn_engine", label=fmt_name)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
