"""cocotb testbench of the element-wise harness (tellme.hw.elementwise.params.EwHarness) on
generated Verilog: every block, bit for bit against the golden hw functions, with random idle
cycles on every input stream x random backpressure on every output (a protocol monitor on every
stream), plus a stall-free run per block whose cycle count must equal tellme.sim.cycles_ew.

Launched by tests/rtl/test_ew.py (params in TELLME_PARAMS: EwParams fields, including the
stream format's ``man``: every vector and expectation is in that format); row lengths from
EW_NS (comma-separated), seed from SEED.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np

from tellme.hw.elementwise.params import EwParams
from tellme.hw.tlmm import out_layout
from tellme.sim import cycles_ew
from tellme.sim.drivers import (
    StreamMonitor,
    StreamSink,
    StreamSource,
    layout_fields,
    pack_array,
    pack_struct,
    start_clock_and_reset,
    unpack_array,
)
from tellme.sim.payload import row_beats, unpack_rows
from tellme.sim.runner import cocotb_params
from tests.rtl.tb_ew_cases import (
    acc_rows,
    amax_cases,
    dec,
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
    silu_expected,
    ties,
)

INPUTS = ("norm_i", "norm_i_g", "ts_i", "quant_i_scale", "quant_i", "ob_i", "dq_i_scale",
          "dq_i", "res_i_x", "res_i_y", "ga_i_gate", "ga_i_up", "rope_i", "rope_i_cs")
OUTPUTS = ("norm_o", "ts_o", "quant_o", "ob_o", "dq_o", "res_o", "ga_o", "rope_o")
STALLS = ((0.0, 0.0), (0.3, 0.0), (0.0, 0.4), (0.4, 0.4))


def params() -> EwParams:
    return EwParams(**cocotb_params())


def row_lengths() -> list[int]:
    return [int(v) for v in os.environ.get("EW_NS", "96,256").split(",")]


def seed() -> int:
    return int(os.environ.get("SEED", "1"))


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.p = params()
        self.fmt = self.p.fmt
        self.W = self.fmt.bits

    def rows(self, bits, lanes=None):
        return row_beats(bits, lanes or self.p.lanes, self.W)

    def unrows(self, beats, lanes=None):
        return unpack_rows(beats, lanes or self.p.lanes, self.W)

    def cs_beats(self, cb, sb, t, hd):
        """cos/sin beats of table row t (L/2 pairs per beat)."""
        L = self.p.lanes
        return [pack_array([v for j in range(i, i + L // 2) for v in (cb[t, j], sb[t, j])],
                           self.W) for i in range(0, hd // 2, L // 2)]

    def amax_field(self, beat) -> int:
        return (beat >> (self.W * self.p.lanes + 1)) & ((1 << self.W) - 1)

    async def start(self, s: int = 0):
        await start_clock_and_reset(self.dut)
        self.src = {n: StreamSource(self.dut, n, seed=s * 101 + k) for k, n in enumerate(INPUTS)}
        self.snk = {n: StreamSink(self.dut, n, seed=s * 103 + k) for k, n in enumerate(OUTPUTS)}
        self.mon = [StreamMonitor(self.dut, n) for n in INPUTS + OUTPUTS]

    async def transact(self, feeds: dict, out: str, n_out: int, *, idle=0.0, bp=0.0,
                       primary: str | None = None):
        """Send ``feeds`` {input: [payload]}, collect ``n_out`` beats of ``out``. Returns
        (beats, edges from the first ``primary`` transfer to the last output transfer)."""
        for s in self.src.values():
            s.idle_prob = idle
        for s in self.snk.values():
            s.backpressure_prob = bp
        primary = primary or next(iter(feeds))
        k0 = len(self.src[primary].transfer_cycles)
        snk = self.snk[out]
        b0 = len(snk.beats)
        for name, beats in feeds.items():
            self.src[name].send(beats)
        await snk.wait_for(b0 + n_out, timeout_cycles=2_000_000)
        for m in self.mon:
            m.check()
        beats = snk.beats[b0:b0 + n_out]
        cycles = snk.transfer_cycles[b0 + n_out - 1] - self.src[primary].transfer_cycles[k0]
        return beats, cycles


def _check(got, exp, what):
    got, exp = np.asarray(got), np.asarray(exp)
    if got.shape != exp.shape or not np.array_equal(got, exp):
        if got.shape != exp.shape:
            raise AssertionError(f"{what}: shape {got.shape} != {exp.shape}")
        bad = np.argwhere(got != exp)
        first = [(tuple(i), int(got[tuple(i)]), int(exp[tuple(i)])) for i in bad[:4]]
        raise AssertionError(f"{what}: {len(bad)} mismatches of {exp.size}; first "
                             f"(index, rtl, golden) {first}")


# --------------------------------------------------------------------------- blocks

@cocotb.test()
async def test_residual(dut):
    tb = TB(dut)
    await tb.start(seed())
    fmt = tb.fmt
    rng = np.random.default_rng(seed())
    nz, mx = neg_zero(fmt), max_bits(fmt)
    for n in row_lengths():
        for k, (idle, bp) in enumerate(STALLS):
            x = random_bits(rng, 4 * n, fmt=fmt).astype(np.int64)
            y = random_bits(rng, 4 * n, fmt=fmt).astype(np.int64)
            y[:n // 4] = x[:n // 4] ^ nz
            x[n // 4:n // 2] = nz
            y[n // 4:n // 2] = nz
            x[n // 2:n // 2 + 8] = mx
            y[n // 2:n // 2 + 8] = mx - (15 << (fmt.man - 10))    # saturating sums
            x[n // 2 + 8:n], y[n // 2 + 8:n] = ties(rng, n // 2 - 8, fmt)   # exact midpoints
            xb = [b for r in x.reshape(4, n) for b in tb.rows(r)]
            yb = [b for r in y.reshape(4, n) for b in tb.rows(r)]
            got, cyc = await tb.transact({"res_i_x": xb, "res_i_y": yb}, "res_o", len(xb),
                                         idle=idle, bp=bp)
            _check(tb.unrows(got), residual_expected(x, y, fmt), f"residual n={n}")
            if k == 0:
                assert cyc == cycles_ew.expected_cycles("res", beats=len(xb)), cyc


@cocotb.test()
async def test_gated_act(dut):
    tb = TB(dut)
    await tb.start(seed())
    fmt = tb.fmt
    rng = np.random.default_rng(seed() + 1)
    for act, code in (("silu", 0), ("relu2", 1)):
        dut.ga_act.value = code
        for n in row_lengths():
            for k, (idle, bp) in enumerate(STALLS):
                g = random_bits(rng, 2 * n, fmt=fmt).astype(np.int64)
                u = random_bits(rng, 2 * n, fmt=fmt).astype(np.int64)
                g[:64] = enc(np.linspace(-17, 17, 64), fmt)
                g[64:68] = [neg_zero(fmt), 0, int(enc(16.0, fmt)), int(enc(-16.0, fmt))]
                # g = 0.5: relu2 = u/4, ties at the subnormal rounding point for tiny u
                g[68:84] = int(enc(0.5, fmt))
                u[68:84] = rng.integers(0, 1 << fmt.man, 16) | (rng.integers(0, 2, 16)
                                                                << (fmt.bits - 1))
                gb, ub = tb.rows(g), tb.rows(u)
                got, cyc = await tb.transact({"ga_i_gate": gb, "ga_i_up": ub}, "ga_o", len(gb),
                                             idle=idle, bp=bp)
                _check(tb.unrows(got), gated_expected(g, u, act, fmt), f"{act} n={n}")
                if k == 0:
                    assert cyc == cycles_ew.expected_cycles("ga", beats=len(gb)), cyc


def silu_sweep(fmt, exhaustive: bool) -> np.ndarray:
    """Gate patterns for the SiLU check: FP16 every finite pattern (else every 13th); wider
    formats every 61st (else every 3329th) pattern plus every PWL segment boundary +-1 LSB."""
    M = fmt.man
    allp = np.arange(1 << fmt.bits, dtype=np.int64) if M == 10 else None
    if M == 10:
        g = allp[(allp & (0x1F << M)) != (0x1F << M)]
        return g if exhaustive else g[::13]
    g = np.arange(0, 1 << fmt.bits, 61 if exhaustive else 3329, dtype=np.int64)
    g = g[(g & (0x1F << M)) != (0x1F << M)]
    b = enc(np.arange(-16 * 16, 16 * 16 + 1) / 16.0, fmt).astype(np.int64)
    mag = b & ((1 << (fmt.bits - 1)) - 1)
    near = np.concatenate([b, b + 1, np.where(mag > 0, b - 1, b)])
    return np.concatenate([g, near])


@cocotb.test()
async def test_silu_exhaustive(dut):
    """Gate values through the SiLU path with up = 1.0 (EW_EXHAUSTIVE=1: every finite FP16
    pattern; see silu_sweep): RN_fmt(silu_fx(g)) = golden silu."""
    tb = TB(dut)
    await tb.start(seed())
    fmt = tb.fmt
    L = tb.p.lanes
    dut.ga_act.value = 0
    g = silu_sweep(fmt, os.environ.get("EW_EXHAUSTIVE") == "1")
    g = np.concatenate([g, np.zeros((-len(g)) % L, np.int64)])
    u = np.full(len(g), int(enc(1.0, fmt)), np.int64)
    got, _ = await tb.transact({"ga_i_gate": tb.rows(g), "ga_i_up": tb.rows(u)},
                               "ga_o", len(g) // L)
    _check(tb.unrows(got), silu_expected(g, fmt), "silu sweep")


@cocotb.test()
async def test_rope(dut):
    tb = TB(dut)
    await tb.start(seed())
    fmt = tb.fmt
    rng = np.random.default_rng(seed() + 2)
    for hd in (16, 32):
        heads, toks = 3, 5
        for k, (idle, bp) in enumerate(STALLS):
            x = random_bits(rng, toks * heads * hd, fmt=fmt).reshape(toks, heads, hd)
            pos = rng.integers(0, 4096, toks)
            cb, sb = rope_table_bits(pos, hd, 10000.0, fmt)
            cb[-1] = random_bits(rng, hd // 2, fmt=fmt)        # arbitrary table data as well
            sb[-1] = random_bits(rng, hd // 2, fmt=fmt)
            xb, cs = [], []
            for t in range(toks):
                for h in range(heads):
                    xb += tb.rows(x[t, h])
                    cs += tb.cs_beats(cb, sb, t, hd)
            got, cyc = await tb.transact({"rope_i": xb, "rope_i_cs": cs}, "rope_o", len(xb),
                                         idle=idle, bp=bp)
            _check(tb.unrows(got).reshape(x.shape), rope_expected(x, cb, sb, fmt),
                   f"rope hd={hd}")
            if k == 0:
                assert cyc == cycles_ew.expected_cycles("rope", beats=len(xb)), cyc


@cocotb.test()
async def test_token_scale(dut):
    tb = TB(dut)
    await tb.start(seed())
    fmt = tb.fmt
    rng = np.random.default_rng(seed() + 3)
    for ws in (np.float32(0.0421), np.float32(1.0), np.float32(3.1e-4)):
        dut.ts_ws.value = int(f32_bits(ws))
        amax = amax_cases(rng, 40, fmt)
        s_q, s_tok = scales_expected(amax, ws, fmt)
        got, _ = await tb.transact({"ts_i": [int(a) for a in amax]}, "ts_o", len(amax),
                                   idle=0.3, bp=0.3)
        _check([g & 0xFFFFFFFF for g in got], s_q, "quant_scale")
        _check([g >> 32 for g in got], s_tok, "dequant_scale")
        for a in amax[:6]:
            _, cyc = await tb.transact({"ts_i": [int(a)]}, "ts_o", 1)
            want = cycles_ew.expected_cycles("ts", amax16=dec(a, fmt), ws=ws, fmt=fmt)
            assert cyc == want, (hex(a), cyc, want)


@cocotb.test()
async def test_quantize(dut):
    tb = TB(dut)
    await tb.start(seed())
    p, fmt = tb.p, tb.fmt
    L, K = p.lanes, 3 * p.t
    rng = np.random.default_rng(seed() + 4)
    for n in row_lengths():
        for k, (idle, bp) in enumerate(STALLS):
            h = [random_bits(rng, n, fmt=fmt) for _ in range(3)]
            amax = row_amax(h, fmt)
            amax[1] = enc(2.0 ** -13, fmt) if k % 2 else 0   # h beyond amax: saturation; eps
            q, s_q = quant_expected(h, amax, fmt)
            exp = np.concatenate([pack_act_beats(r, K) for r in q])
            beats = [b for r in h for b in tb.rows(r)]
            got, cyc = await tb.transact({"quant_i": beats,
                                          "quant_i_scale": [int(s) for s in s_q]},
                                         "quant_o", len(exp), idle=idle, bp=bp)
            got = np.array([unpack_array(b, 8, K, signed=True) for b in got])
            _check(got, exp, f"quantize n={n}")
            if k == 0:
                want = cycles_ew.expected_cycles("quant", row_beats=[n // L] * 3, lanes=L,
                                                 out_lanes=K)
                assert cyc == want, (cyc, want)


def tlmm_beats(acc, q, aw):
    """Rows of accumulators as the TLMM's {acc[q], last} beats."""
    fields = layout_fields(out_layout(q=q, acc_width=aw))
    n = acc.shape[1]
    return [pack_struct(fields, acc=pack_array(r[i:i + q], aw), last=int(i + q == n))
            for r in acc for i in range(0, n, q)]


@cocotb.test()
async def test_outbuf(dut):
    """TLMM output buffer: Q-wide beats out as Q/lanes beats of ``lanes`` (golden: identity,
    ``last`` on the final sub-beat of a row)."""
    tb = TB(dut)
    await tb.start(seed())
    p = tb.p
    Q, L, aw = p.q, p.lanes, p.acc_width
    rng = np.random.default_rng(seed() + 7)
    for n in row_lengths():
        for k, (idle, bp) in enumerate(STALLS):
            acc = acc_rows(rng, 3, n, aw)
            beats = tlmm_beats(acc, Q, aw)
            got, cyc = await tb.transact({"ob_i": beats}, "ob_o", n * 3 // L, idle=idle, bp=bp)
            _check(got, tlmm_beats(acc, L, aw), f"outbuf n={n}")
            if k == 0:
                want = cycles_ew.expected_cycles("ob", beats=len(beats), q=Q, lanes=L)
                assert cyc == want, (cyc, want)


@cocotb.test()
async def test_dequantize(dut):
    tb = TB(dut)
    await tb.start(seed())
    p, fmt = tb.p, tb.fmt
    L, aw = p.lanes, p.acc_width
    rng = np.random.default_rng(seed() + 5)
    for n in row_lengths():
        for k, (idle, bp) in enumerate(STALLS):
            acc = acc_rows(rng, 4, n, aw)
            amax = amax_cases(rng, 4, fmt)
            ws = np.float32(rng.uniform(1e-3, 2.0))
            y, s_tok = dequant_expected(acc, amax, ws, fmt)
            beats = tlmm_beats(acc, L, aw)
            got, cyc = await tb.transact({"dq_i": beats, "dq_i_scale": [int(s) for s in s_tok]},
                                         "dq_o", len(beats), idle=idle, bp=bp)
            _check(tb.unrows(got), y.reshape(-1), f"dequantize n={n}")
            if k == 0:
                want = cycles_ew.expected_cycles("dq", row_beats=[n // L] * 4)
                assert cyc == want, (cyc, want)
        # exact ties at the subnormal rounding point (s_tok a power of two)
        acc, amax, ws = dequant_tie_rows(rng, 2, n, aw, fmt)
        y, s_tok = dequant_expected(acc, amax, ws, fmt)
        beats = tlmm_beats(acc, L, aw)
        got, _ = await tb.transact({"dq_i": beats, "dq_i_scale": [int(s) for s in s_tok]},
                                   "dq_o", len(beats), idle=0.3, bp=0.3)
        _check(tb.unrows(got), y.reshape(-1), f"dequantize ties n={n}")


@cocotb.test()
async def test_rmsnorm(dut):
    tb = TB(dut)
    await tb.start(seed())
    fmt = tb.fmt
    L = tb.p.lanes
    rng = np.random.default_rng(seed() + 6)
    for n in row_lengths():
        rows = norm_rows(rng, n, 8, fmt)
        g = enc(rng.uniform(-1.5, 1.5, n), fmt)
        g[0] = neg_zero(fmt)
        for k, (idle, bp) in enumerate(STALLS):
            eps = np.float32((1e-5, 1e-6)[k % 2])
            dut.norm_eps.value = int(f32_bits(eps))
            sel = rows if k == 0 else [rows[(k + j) % len(rows)] for j in range(3)]
            h, amax = norm_expected(sel, g, eps, fmt)
            beats = [b for r in sel for b in tb.rows(r)]
            gb = [pack_array(g[i:i + L], tb.W) for i in range(0, n, L)] * len(sel)
            got, cyc = await tb.transact({"norm_i": beats, "norm_i_g": gb}, "norm_o",
                                         len(beats), idle=idle, bp=bp)
            _check(tb.unrows(got), h.reshape(-1), f"rmsnorm h n={n}")
            lasts = [b for j, b in enumerate(got) if (j + 1) % (n // L) == 0]
            _check([tb.amax_field(b) for b in lasts], amax, f"rmsnorm amax n={n}")
            if k == 0:
                want = cycles_ew.expected_cycles("norm", x16_rows=[dec(r, fmt) for r in sel],
                                                 lanes=L, eps=eps, fmt=fmt)
                assert cyc == want, (cyc, want)


# --------------------------------------------------------------------------- chained layer

class Blocks:
    """Row-level calls of each block through the harness (with random stalls)."""

    def __init__(self, tb: TB, stall: float = 0.2):
        self.tb, self.p, self.stall = tb, tb.p, stall

    async def _go(self, feeds, out, n_out, primary=None):
        got, _ = await self.tb.transact(feeds, out, n_out, idle=self.stall, bp=self.stall,
                                        primary=primary)
        return got

    async def norm(self, x, g, eps):
        L, tb = self.p.lanes, self.tb
        rows, n = x.shape
        tb.dut.norm_eps.value = int(f32_bits(eps))
        beats = [b for r in x for b in tb.rows(r)]
        gb = [pack_array(g[i:i + L], tb.W) for i in range(0, n, L)] * rows
        got = await self._go({"norm_i": beats, "norm_i_g": gb}, "norm_o", len(beats))
        lasts = [b for j, b in enumerate(got) if (j + 1) % (n // L) == 0]
        return (tb.unrows(got).reshape(rows, n),
                np.array([tb.amax_field(b) for b in lasts], np.int64))

    async def scales(self, amax, ws):
        self.tb.dut.ts_ws.value = int(f32_bits(ws))
        got = await self._go({"ts_i": [int(a) for a in amax]}, "ts_o", len(amax))
        return ([g & 0xFFFFFFFF for g in got], [g >> 32 for g in got])

    async def quant(self, h, s_q):
        K = 3 * self.p.t
        rows, n = h.shape
        nb = -(-n // K)
        beats = [b for r in h for b in self.tb.rows(r)]
        got = await self._go({"quant_i": beats, "quant_i_scale": list(s_q)}, "quant_o",
                             rows * nb, primary="quant_i")
        q = np.array([unpack_array(b, 8, K, signed=True) for b in got]).reshape(rows, nb * K)
        assert not q[:, n:].any(), "padding lanes must be zero"
        return q[:, :n]

    async def dequant(self, acc, s_tok):
        """The TLMM's Q-wide beats through the output buffer, then the dequantiser."""
        Q, L, aw = self.p.q, self.p.lanes, self.p.acc_width
        rows, n = acc.shape
        sub = await self._go({"ob_i": tlmm_beats(acc, Q, aw)}, "ob_o", rows * n // L)
        got = await self._go({"dq_i": sub, "dq_i_scale": list(s_tok)}, "dq_o", len(sub),
                             primary="dq_i")
        return self.tb.unrows(got).reshape(rows, n)

    async def rope(self, x, cb, sb):
        tb = self.tb
        toks, heads, hd = x.shape
        xb, cs = [], []
        for t in range(toks):
            for h in range(heads):
                xb += tb.rows(x[t, h])
                cs += tb.cs_beats(cb, sb, t, hd)
        got = await self._go({"rope_i": xb, "rope_i_cs": cs}, "rope_o", len(xb))
        return tb.unrows(got).reshape(x.shape)

    async def residual(self, x, y):
        tb = self.tb
        xb = [b for r in x for b in tb.rows(r)]
        yb = [b for r in y for b in tb.rows(r)]
        got = await self._go({"res_i_x": xb, "res_i_y": yb}, "res_o", len(xb))
        return tb.unrows(got).reshape(x.shape)

    async def gated(self, g, u, act):
        tb = self.tb
        tb.dut.ga_act.value = {"silu": 0, "relu2": 1}[act]
        gb = [b for r in g for b in tb.rows(r)]
        ub = [b for r in u for b in tb.rows(r)]
        got = await self._go({"ga_i_gate": gb, "ga_i_up": ub}, "ga_o", len(gb))
        return tb.unrows(got).reshape(g.shape)


@cocotb.test()
async def test_chain_layer(dut):
    """Layer 0 of a small random model (hw numerics, adjacent RoPE pairing): norm -> scales ->
    quantise -> golden TLMM -> dequantise -> RoPE / residual / gating / sub-norm, every RTL
    output equal to the golden model's traced intermediate (each stage fed the RTL's own
    previous outputs)."""
    from tellme.quant.random_models import random_model, tiny_config
    from tellme.sim.golden.model import GoldenModel
    from tellme.sim.golden.tlmm import ternary_matmul

    tb = TB(dut)
    await tb.start(seed())
    fmt = tb.fmt
    blk = Blocks(tb)
    for act in ("relu2", "silu"):
        cfg = tiny_config(activation=act)
        model = random_model(cfg, seed=seed() + (act == "silu"), rope_pairing="adjacent")
        gm = GoldenModel(model, numerics="hw", fmt=fmt)
        gm.trace = {}
        ids = np.array([3, 141, 59, 26])
        gm.forward(ids, gm.new_cache(16))
        # stream tensors (float16 / float32 on the format's grid) as bits; int8 etc. as is
        tr = {k: (fmt.to_bits(v) if v.dtype == fmt.dtype else v) for k, v in gm.trace.items()
              if k == "embed" or k.startswith("L0.")}
        lay = model.layers[0]
        lin = lay.linears
        eps = np.float32(cfg.rms_norm_eps)
        gbits = {k: enc(v, fmt) for k, v in lay.norms.items()}
        T, hd = len(ids), cfg.head_dim

        async def linear(h, amax, name, *, lin=lin):
            ws = np.float32(lin[name].scale)
            s_q, _ = await blk.scales(amax, np.float32(1.0))
            _, s_tok = await blk.scales(amax, ws)
            q = await blk.quant(h, s_q)
            acc = ternary_matmul(q.astype(np.int8), lin[name].w)
            return q, await blk.dequant(acc, s_tok)

        h, amax = await blk.norm(tr["embed"], gbits["input_norm"], eps)
        _check(h, tr["L0.h_in"], "h_in")
        _check(amax, tr["L0.amax_in"], "amax_in")
        q8, q = await linear(h, amax, "q_proj")
        _check(q8, tr["L0.q_in8"], "q_in8")
        _check(q, tr["L0.q"], "q")
        cb, sb = rope_table_bits(np.arange(T), hd, cfg.rope_theta, fmt)
        qr = await blk.rope(q.reshape(T, -1, hd), cb, sb)
        _check(qr, tr["L0.q_rope"], "q_rope")
        a, amax_a = await blk.norm(tr["L0.attn"].reshape(T, -1), gbits["attn_sub_norm"], eps)
        _check(a, tr["L0.a_sub"], "a_sub")
        _, o = await linear(a, amax_a, "o_proj")
        _check(o, tr["L0.o"], "o")
        x = await blk.residual(tr["embed"], o)
        _check(x, tr["L0.x_attn"], "x_attn")
        hp, amax_p = await blk.norm(x, gbits["post_norm"], eps)
        _check(hp, tr["L0.h_post"], "h_post")
        _, gate = await linear(hp, amax_p, "gate_proj")
        _, up = await linear(hp, amax_p, "up_proj")
        _check(gate, tr["L0.gate"], "gate")
        _check(up, tr["L0.up"], "up")
        f = await blk.gated(gate, up, act)
        _check(f, gated_expected(gate, up, act, fmt), f"ffn ({act})")
        _check(f, tr["L0.ffn"], f"ffn ({act}) vs model trace")
        fs, amax_f = await blk.norm(f, gbits["ffn_sub_norm"], eps)
        _check(fs, tr["L0.f_sub"], "f_sub")
        _, dn = await linear(fs, amax_f, "down_proj")
        _check(dn, tr["L0.down"], "down")
        xo = await blk.residual(x, dn)
        _check(xo, tr["L0.x_out"], "x_out")
