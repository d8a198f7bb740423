"""Mutation check of the integer attention-engine tests: build IntAttentionEngine with one
rounding, clamp or hazard guard removed and confirm the cocotb testbench
(tests/rtl/tb_attn_int.py) fails (``MID_MUTANTS`` on a larger build, ``O2_MUTANTS`` on the
small build with two outputs per beat).

    .venv/bin/python -m tests.rtl.attn_int_mutants [name ...]   # one Verilator build each

Prints KILLED (with the failing tests) or SURVIVED per mutant; the build dirs are removed.
"""

from __future__ import annotations

import sys

MUTANTS = {
    "rnd_trunc": ("m.d.comb += xh.eq(x + _half(sr, width + 3))",
                  "m.d.comb += xh.eq(x)"),                       # q quantiser and logits
    "no_sat": ("rs = Mux(r3 > limit, limit, Mux(r3 < -limit, -limit, r3))", "rs = r3"),
    "left_no_sat": ("ls = Mux(xs > bound, limit, Mux(xs < nbound, -limit, low))", "ls = low"),
    "w_trunc": ("addend=_half(swcG, PMW + 2)", "addend=None"),   # the weight's rounding half
    "y_first": ("with m.If(vhL > yh[i]):", "with m.If(yh[i] == 0):"),
    "exp2_noround": ("eE.eq(t0D - ((ipD + 512) >> 10))", "eE.eq(t0D - (ipD >> 10))"),
    "recip_trunc": ("oquo.eq(quo + rup)", "oquo.eq(quo)"),
    "one_bank": ("xbank.eq(cbank),", "xbank.eq(~cbank),"),
    "no_init": ("anew.eq(Mux(init[T], 0, ard) + tsum)", "anew.eq(ard + tsum)"),
    "no_mask": ("visE = (wk[5] <= lim[i]) & lane_on", "visE = lane_on"),
    "early_ready": ("Mux(in_v, rdy > blk, 1)", "Mux(in_v, rdy >= blk, 1)"),
    # the overlap of a call's q preparation with the previous call's stream
    "q_in_prep": ("s_wait | (in_v & (rdy == blk_end))", "s_wait | in_v"),   # chain shared
    "q_bank_stuck": ("m.d.sync += qob.eq(~qob)", "m.d.sync += qob.eq(qob)"),
    # the DSP cascades' skew: slice p's codes, or its operand read, not p cycles late
    "chain_codes_unskewed": ("codes_sk[p_][8 * j:8 * j + 8]", "codes_sk[0][8 * j:8 * j + 8]"),
    "chain_reads_unskewed": ("orp.addr.eq(opaddr_d[p_]), orp.en.eq(accept_d[p_])",
                             "orp.addr.eq(opaddr_d[0]), orp.en.eq(accept_d[0])"),
    "raw_bank_stuck": ("m.d.sync += lbank.eq(~lbank)", "m.d.sync += lbank.eq(lbank)"),
    "g_live": ("- sg[i] - kh)", "- gq[i] - kh)"),           # stream reads the quantiser's g
    "early_take": ("q_ready.eq(~Cat(*qv[1:]).any())", "q_ready.eq(1)"),
    # the finishing unit's 1/L of the next lane overlapping the outputs of this one
    "quo_live": ('qm = pn.delay(q2, ROUND32_LATENCY, "qm")', "qm = oquo"),
}
# on a beat-16 build with 64-key tiles and head_dim 64: the quantiser's K-segment margin is
# not zero, V segments have 4 blocks (more than the weight banks) that stream longer than
# 3 blocks' preparation, and |A| reaches 2**24 (RN32 rounds); the sim build has none of these
MID_MUTANTS = {
    # RN32(A) truncated: |A| cut to its 24 leading bits before round32 (exact from then on)
    "a_trunc": ("qa, ea = round32(pn, amag2, e2)",
                "qa, ea = round32(pn, (lambda s: ((amag2 >> s) << s)[:AW])(Mux("
                "msb_index(m, amag2)[1] > 23, msb_index(m, amag2)[1] - 23, 0).as_unsigned()), e2)"),
    "bank_overrun": ("(wp_blk < blk + BANKS))", "(wp_blk < blk + BANKS + 1))"),
    "k_margin_short": ("KGAP = k_gap(W)", "KGAP = max(0, k_gap(W) - 1)"),
}
# o_beat 2: the two elements of a beat, the finish's and the V pass's accumulator memories
O2_MUTANTS = {
    "o_swap": ("self.o.payload.as_value().eq(Cat(*obits))",
               "self.o.payload.as_value().eq(Cat(*reversed(obits)))"),
    "o_same_half": ("av.eq(Array(mm[j][2].data for mm in amems)[xl1])",
                    "av.eq(Array(mm[0][2].data for mm in amems)[xl1])"),
    "rmw_next_half": ("ard.eq(Array(rp.data for _, rp, _ in aps)[chp[T][:LOGOB]])",
                      "ard.eq(Array(rp.data for _, rp, _ in aps)[chp[T - 1][:LOGOB]])"),
}
PARAMS = dict(head_dim=16, lanes=8, beat=4, depth=8, ctx_bits=12, q_beat=2)
MID = dict(head_dim=64, lanes=4, beat=16, depth=64, ctx_bits=9, q_beat=4)


def main(argv) -> int:
    from tellme.hw.attention import int_engine
    from tellme.spec.numerics import FP24
    from tests.support.mutants import run_mutants

    bad = [a for a in argv if a not in MUTANTS and a not in MID_MUTANTS
           and a not in O2_MUTANTS]
    if bad:
        raise SystemExit(f"unknown mutant(s): {', '.join(bad)}")
    rc = 0
    for table, params, name in ((MUTANTS, PARAMS, "attn_int_mutant"),
                                (MID_MUTANTS, MID, "attn_int_mid_mutant"),
                                (O2_MUTANTS, dict(PARAMS, o_beat=2), "attn_int_o2_mutant")):
        names = [a for a in argv if a in table] if argv else list(table)
        if names:
            rc |= run_mutants(int_engine, table, names,
                              lambda mod, params=params: mod.IntAttentionEngine(**params,
                                                                                fmt=FP24),
                              name=name, params=dict(params, fmt="fp24"),
                              test_module="tests.rtl.tb_attn_int")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
