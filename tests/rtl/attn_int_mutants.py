"""Mutation check of the integer attention-engine tests: build IntAttentionEngine with one
rounding or clamp removed and confirm the cocotb testbench (tests/rtl/tb_attn_int.py) fails.

    .venv/bin/python -m tests.rtl.attn_int_mutants [name ...]   # one Verilator build each

Prints KILLED (with the failing tests) or SURVIVED per mutant; the build dirs are removed.
"""

from __future__ import annotations

import sys

MUTANTS = {
    "rnd_trunc": ("m.d.comb += r.eq((x + _half(sr, width + 3)) >> sr)",
                  "m.d.comb += r.eq(x >> sr)"),                  # q quantiser and logits
    "no_sat": ("return Mux(v > limit, limit, Mux(v < -limit, -limit, v))", "return v"),
    "w_trunc": ("wE.eq((pmD + _half(swc, PMW + 2)) >> swc)", "wE.eq(pmD >> swc)"),
    "y_first": ("with m.If(vhJ > yh[i]):", "with m.If(yh[i] == 0):"),
    "exp2_noround": ("e.eq(t0B - ((dfB * rB + 512) >> 10))", "e.eq(t0B - ((dfB * rB) >> 10))"),
    "a_trunc": ("qa.eq(Mux(shv == 0, amag, arnd))", "qa.eq(Mux(shv == 0, amag, amag >> shv))"),
    "recip_trunc": ("m.d.sync += quo.eq(quo + ((r2 > dn) | ((r2 == dn) & quo[0])))",
                    "m.d.sync += quo.eq(quo)"),
    "one_bank": ("xbank.eq(cbank),", "xbank.eq(~cbank),"),
    "no_init": ("anew.eq(Mux(init[T], 0, arp.data) + tsum)", "anew.eq(arp.data + tsum)"),
    "no_mask": ("visB = (wk[2] <= lim[i]) & lane_on", "visB = lane_on"),
    "bank_overrun": ("(wp_blk < blk + BANKS))", "(wp_blk < blk + BANKS + 1))"),
    "early_ready": ("Mux(in_v, rdy > blk, 1)", "Mux(in_v, rdy >= blk, 1)"),
}
PARAMS = dict(head_dim=16, lanes=8, beat=4, depth=8, ctx_bits=12, q_beat=2)


def main(argv) -> int:
    from tellme.hw.attention import int_engine
    from tellme.spec.numerics import FP24
    from tests.support.mutants import run_mutants

    return run_mutants(int_engine, MUTANTS, argv,
                       lambda mod: mod.IntAttentionEngine(**PARAMS, fmt=FP24),
                       name="attn_int_mutant", params=dict(PARAMS, fmt="fp24"),
                       test_module="tests.rtl.tb_attn_int")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
