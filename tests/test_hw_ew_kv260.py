"""The element-wise blocks at the kv260 parameters (the target's ew_lanes = 2, and the former
16 lanes = Q; 3T = 84, Q = 16, accumulator width 21, row buffer 6912, the TLMM output buffer
ahead of the dequantiser) in the Amaranth simulator, with the full BitNet row lengths, bit for
bit against the golden functions, in the contract's stream format (``slow``: the Verilator
equivalent, tests/rtl/test_ew.py::test_ew_kv260_full_rows, needs a long C++ build)."""

from __future__ import annotations

import numpy as np
import pytest

from tellme.hw.elementwise.params import EwParams, make_block
from tellme.hw.tlmm import out_layout
from tellme.sim.payload import (
    layout_fields,
    pack_array,
    pack_struct,
    row_beats as _row_beats,
    unpack_array,
    unpack_rows as _unpack_rows,
)
from tests.rtl.tb_ew_cases import (
    acc_rows,
    amax_cases,
    dequant_expected,
    enc,
    f32_bits,
    gated_expected,
    norm_expected,
    norm_rows,
    pack_act_beats,
    quant_expected,
    random_bits,
    residual_expected,
    rope_expected,
    rope_table_bits,
    row_amax,
)
from tests.test_hw_ew_blocks import run_sim

FMT = EwParams.from_preset("kv260").fmt
W = FMT.bits
pytestmark = pytest.mark.slow


@pytest.fixture(params=[None, 16], ids=["ew_lanes", "lanes16"])
def P(request):
    over = {} if request.param is None else {"lanes": request.param}
    return EwParams.from_preset("kv260", **over)


def row_beats(bits, lanes):
    return _row_beats(bits, lanes, W)


def unpack_rows(beats, lanes):
    return _unpack_rows(beats, lanes, W)


def random_stream(rng, n, kind="mixed"):
    return random_bits(rng, n, kind, FMT)


@pytest.mark.parametrize("n", [1536, 2560, 4096, 6912])
def test_rmsnorm_kv260(n, P):
    L = P.lanes
    rng = np.random.default_rng(n)
    rows = norm_rows(rng, n, 3, FMT)
    g = enc(rng.uniform(-1.5, 1.5, n), FMT)
    eps = np.float32(1e-6)
    h, amax = norm_expected(rows, g, eps, FMT)
    dut = make_block(P, "norm")
    beats = [b for r in rows for b in row_beats(r, L)]
    gb = [pack_array(g[i:i + L], W) for i in range(0, n, L)] * len(rows)
    got = run_sim(dut, [(dut.i, beats), (dut.i_g, gb)], dut.o, len(beats),
                  statics=[(dut.eps, int(f32_bits(eps)))], stall=0.1)
    np.testing.assert_array_equal(unpack_rows(got, L), h.reshape(-1))
    lasts = [b for k, b in enumerate(got) if (k + 1) % (n // L) == 0]
    np.testing.assert_array_equal([(b >> (W * L + 1)) & ((1 << W) - 1) for b in lasts], amax)


@pytest.mark.parametrize("n", [1536, 6912])
def test_quantize_kv260(n, P):
    L = P.lanes
    rng = np.random.default_rng(n + 1)
    h = [random_stream(rng, n) for _ in range(2)]
    amax = row_amax(h, FMT)
    q, s_q = quant_expected(h, amax, FMT)
    K = 3 * P.t
    exp = np.concatenate([pack_act_beats(r, K) for r in q])
    dut = make_block(P, "quant")
    beats = [b for r in h for b in row_beats(r, L)]
    got = run_sim(dut, [(dut.i_scale, [int(s) for s in s_q]), (dut.i, beats)], dut.o,
                  len(exp), stall=0.1)
    np.testing.assert_array_equal(np.array([unpack_array(b, 8, K, signed=True) for b in got]),
                                  exp)


def test_dequantize_kv260(P):
    L = P.lanes
    rng = np.random.default_rng(5)
    n = 1536
    acc = acc_rows(rng, 3, n, P.acc_width)
    amax = amax_cases(rng, 3, FMT)
    ws = np.float32(0.0173)
    y, s_tok = dequant_expected(acc, amax, ws, FMT)
    # the TLMM's Q-wide beats through the output buffer, then the L-lane dequantiser
    fields = layout_fields(out_layout(q=P.q, acc_width=P.acc_width))
    beats = [pack_struct(fields, acc=pack_array(r[i:i + P.q], P.acc_width),
                         last=int(i + P.q == n)) for r in acc for i in range(0, n, P.q)]
    ob = make_block(P, "ob")
    sub = run_sim(ob, [(ob.i, beats)], ob.o, n * len(acc) // L, stall=0.1)
    dut = make_block(P, "dq")
    got = run_sim(dut, [(dut.i_scale, [int(s) for s in s_tok]), (dut.i, sub)], dut.o,
                  len(sub), stall=0.1)
    np.testing.assert_array_equal(unpack_rows(got, L), y.reshape(-1))


def test_residual_gated_rope_kv260(P):
    L = P.lanes
    rng = np.random.default_rng(6)
    n = 4096
    x, y = random_stream(rng, n), random_stream(rng, n)
    dut = make_block(P, "res")
    got = run_sim(dut, [(dut.i_x, row_beats(x, L)), (dut.i_y, row_beats(y, L))], dut.o,
                  n // L, stall=0.1)
    np.testing.assert_array_equal(unpack_rows(got, L), residual_expected(x, y, FMT))
    for act, code in (("silu", 0), ("relu2", 1)):
        dut = make_block(P, "ga")
        got = run_sim(dut, [(dut.i_gate, row_beats(x, L)), (dut.i_up, row_beats(y, L))],
                      dut.o, n // L, statics=[(dut.act, code)], stall=0.1)
        np.testing.assert_array_equal(unpack_rows(got, L), gated_expected(x, y, act, FMT))
    hd, heads, toks = 128, 4, 8
    xr = random_stream(rng, toks * heads * hd).reshape(toks, heads, hd)
    cb, sb = rope_table_bits(rng.integers(0, 4096, toks), hd, 500000.0, FMT)
    beats, cs = [], []
    for t in range(toks):
        for h in range(heads):
            beats += row_beats(xr[t, h], L)
            for i in range(0, hd // 2, L // 2):
                cs.append(pack_array([v for j in range(i, i + L // 2)
                                      for v in (cb[t, j], sb[t, j])], W))
    dut = make_block(P, "rope")
    got = run_sim(dut, [(dut.i, beats), (dut.i_cs, cs)], dut.o, len(beats), stall=0.1)
    np.testing.assert_array_equal(unpack_rows(got, L).reshape(xr.shape),
                                  rope_expected(xr, cb, sb, FMT))
