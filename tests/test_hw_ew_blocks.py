"""Amaranth-simulator unit tests of the element-wise blocks (no external tools), bit for bit
against the golden hw functions. The cocotb/Verilator tests (tests/rtl/test_ew.py) cover the
same blocks on the generated Verilog with larger vector sets and random stalls."""

from __future__ import annotations

import gc
import random
import warnings

import numpy as np
import pytest
from amaranth.sim import Simulator

from tellme.sim.payload import pack_array, pack_struct, row_beats, unpack_array, unpack_rows
from tellme.spec.numerics import FP16, FP24
from tests.rtl.tb_ew_cases import (
    acc_rows,
    amax_cases,
    dequant_expected,
    dequant_tie_rows,
    enc,
    f32_bits,
    gated_expected,
    max_bits,
    neg_zero,
    norm_expected,
    norm_rows,
    pack_act_beats,
    quant_expected,
    random_bits,
    residual_expected,
    rope_expected,
    rope_table_bits,
    row_amax,
    scales_expected,
    ties,
)

FMTS = pytest.mark.parametrize("fmt", [FP16, FP24], ids=["fp16", "fp24"])


def run_sim(dut, inputs, out, n_out, *, statics=(), stall=0.0, seed=0):
    """Drive ``inputs`` [(stream port, [payload ints])] with random idle cycles, collect
    ``n_out`` payload ints from ``out`` with random backpressure; ``statics`` [(port, value)]."""
    got = []

    def driver(port, beats, rs):
        async def bench(ctx):
            for s, v in statics:
                ctx.set(s, v)
            for b in beats:
                while rs.random() < stall:
                    ctx.set(port.valid, 0)
                    await ctx.tick()
                ctx.set(port.valid, 1)
                ctx.set(port.payload.as_value() if hasattr(port.payload, "as_value")
                        else port.payload, int(b))
                await ctx.tick().until(port.ready)
            ctx.set(port.valid, 0)
        return bench

    rs = random.Random(seed)

    pv = out.payload.as_value() if hasattr(out.payload, "as_value") else out.payload

    async def monitor(ctx):
        for s, v in statics:
            ctx.set(s, v)
        while len(got) < n_out:
            ready = int(rs.random() >= stall)
            ctx.set(out.ready, ready)
            _, _, v, p = await ctx.tick().sample(out.valid, pv)
            if v and ready:
                got.append(int(p))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for k, (port, beats) in enumerate(inputs):
        sim.add_testbench(driver(port, beats, random.Random(seed * 31 + k)))
    sim.add_testbench(monitor)
    sim.run()
    return got


L = 4


def _rows(bits, fmt):
    return row_beats(bits, L, fmt.bits)


def _unrows(got, fmt):
    return unpack_rows(got, L, fmt.bits)


@FMTS
def test_residual_add(fmt):
    from tellme.hw.elementwise.residual import ResidualAdd

    rng = np.random.default_rng(1)
    x = random_bits(rng, 2048, fmt=fmt).astype(np.int64)
    y = random_bits(rng, 2048, fmt=fmt).astype(np.int64)
    near = rng.random(2048) < 0.5                      # close exponents: cancellation cases
    span = 3 << (fmt.man - 2)
    y[near] = np.clip(x[near] + rng.integers(-span, span, near.sum()), 0, max_bits(fmt)) \
        | (rng.integers(0, 2, near.sum()) << (fmt.bits - 1))
    nz = neg_zero(fmt)
    y[:16] = x[:16] ^ nz                   # exact cancellation -> +0
    x[16:24] = nz
    y[16:24] = nz                          # -0 + -0 = -0
    x[24:32] = max_bits(fmt)
    y[24:32] = max_bits(fmt)               # saturation
    x[32:96], y[32:96] = ties(rng, 64, fmt)  # exact midpoints of the format's grid
    dut = ResidualAdd(lanes=L, fmt=fmt)
    got = run_sim(dut, [(dut.i_x, _rows(x, fmt)), (dut.i_y, _rows(y, fmt))], dut.o,
                  len(x) // L, stall=0.3)
    np.testing.assert_array_equal(_unrows(got, fmt), residual_expected(x, y, fmt))


@FMTS
@pytest.mark.parametrize("act,code", [("silu", 0), ("relu2", 1)])
def test_gated_act(act, code, fmt):
    from tellme.hw.elementwise.gated_act import GatedAct

    rng = np.random.default_rng(2)
    g = random_bits(rng, 320, fmt=fmt).astype(np.int64)
    u = random_bits(rng, 320, fmt=fmt).astype(np.int64)
    g[:64] = enc(np.linspace(-17, 17, 64), fmt)          # across the PWL range and both tails
    g[64:68] = [neg_zero(fmt), 0, int(enc(16.0, fmt)), int(enc(-16.0, fmt))]  # range edges
    g[68:84] = int(enc(0.5, fmt))                         # relu2: u/4, ties when u is tiny
    u[68:84] = rng.integers(0, 1 << fmt.man, 16) | (rng.integers(0, 2, 16) << (fmt.bits - 1))
    dut = GatedAct(lanes=L, fmt=fmt)
    got = run_sim(dut, [(dut.i_gate, _rows(g, fmt)), (dut.i_up, _rows(u, fmt))], dut.o,
                  len(g) // L, statics=[(dut.act, code)], stall=0.2)
    np.testing.assert_array_equal(_unrows(got, fmt), gated_expected(g, u, act, fmt))


def _cs_beats(cb, sb, fmt, t, hd):
    return [pack_array([v for k in range(i, i + L // 2) for v in (cb[t, k], sb[t, k])],
                       fmt.bits) for i in range(0, hd // 2, L // 2)]


@FMTS
def test_rope_adjacent(fmt):
    from tellme.hw.elementwise.rope import RoPE

    rng = np.random.default_rng(3)
    hd, heads, toks = 8, 2, 6
    x = random_bits(rng, toks * heads * hd, fmt=fmt).reshape(toks, heads, hd)
    x[0, 0, :2] = [neg_zero(fmt), 0]                   # signed zeros
    cb, sb = rope_table_bits(np.array([0, 1, 7, 100, 1000, 4095]), hd, 10000.0, fmt)
    cb[5] = random_bits(rng, hd // 2, fmt=fmt)          # arbitrary table data too
    sb[5] = random_bits(rng, hd // 2, fmt=fmt)
    beats, cs = [], []
    for t in range(toks):
        for h in range(heads):
            beats += _rows(x[t, h], fmt)
            cs += _cs_beats(cb, sb, fmt, t, hd)
    dut = RoPE(lanes=L, fmt=fmt)
    got = run_sim(dut, [(dut.i, beats), (dut.i_cs, cs)], dut.o, len(beats), stall=0.2)
    np.testing.assert_array_equal(_unrows(got, fmt).reshape(x.shape),
                                  rope_expected(x, cb, sb, fmt))


@FMTS
def test_dequantize(fmt):
    from tellme.hw.elementwise.dequantize import Dequantize
    from tellme.hw.tlmm import out_layout
    from tellme.sim.payload import layout_fields

    rng = np.random.default_rng(4)
    aw, n = 21, 16
    acc = acc_rows(rng, 6, n, aw)
    amax = amax_cases(rng, 6, fmt)
    ws = np.float32(0.0173)
    y, s_tok = dequant_expected(acc, amax, ws, fmt)
    acc_t, amax_t, ws_t = dequant_tie_rows(rng, 2, n, aw, fmt)   # subnormal ties
    y_t, s_tok_t = dequant_expected(acc_t, amax_t, ws_t, fmt)
    assert s_tok_t[0] == f32_bits(ws_t)
    acc, y = np.concatenate([acc, acc_t]), np.concatenate([y, y_t])
    s_tok = np.concatenate([s_tok, s_tok_t])
    dut = Dequantize(lanes=L, acc_width=aw, fmt=fmt)
    fields = layout_fields(out_layout(q=L, acc_width=aw))
    beats = [pack_struct(fields, acc=pack_array(row[i:i + L], aw), last=int(i + L == n))
             for row in acc for i in range(0, n, L)]
    got = run_sim(dut, [(dut.i_scale, [int(s) for s in s_tok]), (dut.i, beats)], dut.o,
                  len(beats), stall=0.2)
    np.testing.assert_array_equal(_unrows(got, fmt), y.reshape(-1))


@FMTS
def test_quantize_repack(fmt):
    from tellme.hw.elementwise.quantize import Quantize

    rng = np.random.default_rng(5)
    n, out_lanes = 40, 12                               # 40 = 3 beats of 12 + 4 (padding)
    h = [random_bits(rng, n, fmt=fmt) for _ in range(4)]
    amax = row_amax(h, fmt)
    amax[3] = enc(2.0 ** -13, fmt)                      # h beyond amax: saturation
    q, s_q = quant_expected(h, amax, fmt)
    dut = Quantize(lanes=L, out_lanes=out_lanes, fmt=fmt)
    beats = [b for r in h for b in _rows(r, fmt)]
    exp = np.concatenate([pack_act_beats(r, out_lanes) for r in q])
    got = run_sim(dut, [(dut.i_scale, [int(s) for s in s_q]), (dut.i, beats)], dut.o,
                  len(exp), stall=0.2)
    got = np.array([unpack_array(b, 8, out_lanes, signed=True) for b in got])
    np.testing.assert_array_equal(got, exp)


@FMTS
def test_token_scale(fmt):
    from tellme.hw.elementwise.scalar import TokenScale

    rng = np.random.default_rng(6)
    amax = amax_cases(rng, 24, fmt)
    ws = np.float32(0.0421)
    s_q, s_tok = scales_expected(amax, ws, fmt)
    dut = TokenScale(fmt=fmt)
    got = run_sim(dut, [(dut.i, [int(a) for a in amax])], dut.o, len(amax),
                  statics=[(dut.ws, int(f32_bits(ws)))], stall=0.2)
    got = np.array([[g & 0xFFFFFFFF, g >> 32] for g in got], np.uint64)
    np.testing.assert_array_equal(got[:, 0], s_q)
    np.testing.assert_array_equal(got[:, 1], s_tok)


@FMTS
def test_rmsnorm_absmax(fmt):
    from tellme.hw.elementwise.rmsnorm import RMSNormAbsmax

    rng = np.random.default_rng(7)
    n = 32
    rows = norm_rows(rng, n, 8, fmt)
    g = enc(rng.uniform(-1.5, 1.5, n), fmt)
    eps = np.float32(1e-6)
    h, amax = norm_expected(rows, g, eps, fmt)
    dut = RMSNormAbsmax(lanes=L, n_max=64, fmt=fmt)
    beats = [b for r in rows for b in _rows(r, fmt)]
    gbeats = [pack_array(g[i:i + L], fmt.bits) for i in range(0, n, L)] * len(rows)
    got = run_sim(dut, [(dut.i, beats), (dut.i_g, gbeats)], dut.o, len(beats),
                  statics=[(dut.eps, int(f32_bits(eps)))], stall=0.2)
    np.testing.assert_array_equal(_unrows(got, fmt), h.reshape(-1))
    lasts = [b for k, b in enumerate(got) if (k + 1) % (n // L) == 0]
    W = fmt.bits
    np.testing.assert_array_equal([(b >> (W * L + 1)) & ((1 << W) - 1) for b in lasts], amax)


@pytest.mark.parametrize("n", [1536, 2560])
def test_repack_kv260_geometry(n):
    """The repacker at the kv260 geometry (16 int8 in, 3T = 84 out) over whole rows."""
    from tellme.hw.elementwise.quantize import Repack, int8_row_layout  # noqa: F401

    rng = np.random.default_rng(n)
    li, lo = 16, 84
    rows = rng.integers(-128, 128, (2, n))
    beats = [pack_array(r[i:i + li], 8) | (int(i + li == n) << (8 * li))
             for r in rows for i in range(0, n, li)]
    exp = np.concatenate([pack_act_beats(r, lo) for r in rows])
    dut = Repack(in_lanes=li, out_lanes=lo)
    got = run_sim(dut, [(dut.i, beats)], dut.o, len(exp), stall=0.2)
    np.testing.assert_array_equal(np.array([unpack_array(b, 8, lo, signed=True) for b in got]),
                                  exp)


def test_parameter_errors():
    # components whose constructor raised warn (UnusedElaboratable) when collected: collect
    # them here, with that warning ignored
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _parameter_errors()
        gc.collect()


def _parameter_errors():
    from tellme.hw.elementwise.dequantize import Dequantize
    from tellme.hw.elementwise.params import EwParams, make_block
    from tellme.hw.elementwise.residual import ResidualAdd
    from tellme.hw.elementwise.rmsnorm import RMSNormAbsmax
    from tellme.hw.elementwise.rope import RoPE
    from tellme.hw.elementwise.scalar import ScalarUnit

    with pytest.raises(TypeError, match="lanes must be a positive integer"):
        ResidualAdd(lanes=0)
    with pytest.raises(ValueError, match="lanes must be even"):
        RoPE(lanes=3)
    with pytest.raises(ValueError, match="n_max must be a multiple of lanes=4"):
        RMSNormAbsmax(lanes=4, n_max=30)
    with pytest.raises(ValueError, match="acc_width"):
        Dequantize(lanes=4, acc_width=40)
    with pytest.raises(ValueError, match="width must be >= 26"):
        ScalarUnit(width=16)
    with pytest.raises(ValueError, match="unknown element-wise block 'nope'"):
        make_block(EwParams.from_preset("sim"), "nope")


def test_cycle_model_errors():
    from tellme.sim import cycles_ew

    with pytest.raises(ValueError, match="unknown element-wise block"):
        cycles_ew.expected_cycles("nope")
    with pytest.raises(ValueError, match="eps must be >= 2"):
        cycles_ew.rsqrt_operands(np.ones(4, np.float16), 1e-9, FP16)
    assert cycles_ew.expected_cycles("res", beats=10) == 9 + 7       # residual.LATENCY
    with pytest.raises(ValueError, match=r"eps must be >= 2\*\*-41"):
        cycles_ew.rsqrt_operands(np.ones(1, np.float32), 1e-13, FP24)


@FMTS
def test_rope_cancellation(fmt):
    """RoPE sums with near-total cancellation (b*s close to a*c), zeros of both signs and
    arbitrary table values: the aligned FP32 add must round exactly like the golden RN32."""
    from tellme.hw.elementwise.rope import RoPE

    rng = np.random.default_rng(8)
    n_pairs = 1024
    a = random_bits(rng, n_pairs, "full", fmt).astype(np.int64)
    b = a.copy()
    c = random_bits(rng, n_pairs, "full", fmt).astype(np.int64)
    near = 4                                            # a few LSBs: deep cancellation
    s = (c + rng.integers(-near, near + 1, n_pairs)).clip(0, (neg_zero(fmt) | max_bits(fmt)))
    emask = 0x1F << fmt.man
    s[(s & emask) == emask] &= ~emask
    other = rng.random(n_pairs) < 0.4
    b[other] = random_bits(rng, other.sum(), fmt=fmt)
    zero = rng.random(n_pairs) < 0.05
    a[zero] = rng.choice(np.array([0, neg_zero(fmt)]), zero.sum())
    b[zero] = rng.choice(np.array([0, neg_zero(fmt)]), zero.sum())
    x = np.stack([a, b], axis=1).reshape(-1, 1, 2)          # tokens = pairs, head_dim 2
    beats = _rows(x.reshape(-1), fmt)
    cs = [pack_array([v for j in range(i, i + L // 2) for v in (c[j], s[j])], fmt.bits)
          for i in range(0, n_pairs, L // 2)]
    dut = RoPE(lanes=L, fmt=fmt)
    got = run_sim(dut, [(dut.i, beats), (dut.i_cs, cs)], dut.o, len(beats), stall=0.1)
    np.testing.assert_array_equal(_unrows(got, fmt).reshape(x.shape),
                                  rope_expected(x, c[:, None], s[:, None], fmt))


def test_report_registry():
    """One registry serves ``tellme hw verilog`` and ``tellme hw report``: every block in it
    (the element-wise ``ew_*`` set included) parses as ``--block`` for both and builds."""
    import argparse

    from tellme.hw import cli
    from tellme.hw.blocks import DEFAULT_REPORT, registry
    from tellme.hw.presets import preset

    blocks = registry()
    assert {"ew_norm", "ew_scale", "ew_quant", "ew_dequant", "ew_residual", "ew_gated",
            "ew_rope", "attention", "weight_stream", "tlmm_core"} <= set(blocks)
    assert set(DEFAULT_REPORT) <= set(blocks)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # built, not elaborated
        for name, (desc, make) in blocks.items():
            for cmd in ("report", "verilog"):
                args = parser.parse_args(["hw", cmd, "--target", "sim", "--block", name])
                assert args.block == [name]
            assert desc and hasattr(make(preset("sim"), FP24), "signature")
        gc.collect()
    with pytest.raises(cli.CliError, match="unknown block 'nope'; known: tlmm"):
        cli._checked_blocks(["nope"])


def test_report_format():
    """``tellme hw report --fmt`` builds the blocks in the chosen stream format."""
    from tellme.hw.elementwise.params import report_blocks
    from tellme.hw.presets import preset
    from tellme.hw.report import report_dir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # built, not elaborated
        for fmt in (FP16, FP24):
            blk = report_blocks()["ew_residual"][1](preset("sim"), fmt)
            assert blk.fmt == fmt
            assert len(blk.o.payload.data[0]) == blk.fmt.bits
        del blk
        gc.collect()
    assert report_dir("sim", FP16).name == "fp16" and report_dir("sim").name == "fp24"
