"""cocotb testbench of the element-wise harness (tellme.hw.elementwise.params.EwHarness) on
generated Verilog: every block, bit for bit against the golden hw functions, with random idle
cycles on every input stream x random backpressure on every output (a protocol monitor on every
stream), plus a stall-free run per block whose cycle count must equal tellme.sim.cycles_ew.

Launched by tests/rtl/test_ew.py (params in TELLME_PARAMS: EwParams fields); row lengths from
EW_NS (comma-separated), seed from SEED.
"""

from __future__ import annotations

import os

import numpy as np

import cocotb

from tellme.hw.elementwise.params import EwParams
from tellme.hw.tlmm import out_layout
from tellme.sim import cycles_ew
from tellme.sim.drivers import (StreamMonitor, StreamSink, StreamSource, layout_fields,
                                pack_array, pack_struct, start_clock_and_reset, unpack_array)
from tellme.sim.payload import row_beats, unpack_rows
from tellme.sim.runner import cocotb_params
from tests.rtl.tb_ew_cases import (acc_rows, amax_cases, dequant_expected, f16, f32_bits,
                                   fp16_bits, gated_expected, norm_expected, norm_rows,
                                   pack_act_beats, quant_expected, random_fp16,
                                   residual_expected, rope_expected, scales_expected)

INPUTS = ("norm_i", "norm_i_g", "ts_i", "quant_i_scale", "quant_i", "dq_i_scale", "dq_i",
          "res_i_x", "res_i_y", "ga_i_gate", "ga_i_up", "rope_i", "rope_i_cs")
OUTPUTS = ("norm_o", "ts_o", "quant_o", "dq_o", "res_o", "ga_o", "rope_o")
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
    L = tb.p.lanes
    rng = np.random.default_rng(seed())
    for n in row_lengths():
        for k, (idle, bp) in enumerate(STALLS):
            x = random_fp16(rng, 4 * n)
            y = random_fp16(rng, 4 * n)
            y[:n // 4] = x[:n // 4] ^ 0x8000
            x[n // 4:n // 2] = 0x8000
            y[n // 4:n // 2] = 0x8000
            x[n // 2:n // 2 + 8] = 0x7BFF
            y[n // 2:n // 2 + 8] = 0x7BF0
            xb = [b for r in x.reshape(4, n) for b in row_beats(r, L)]
            yb = [b for r in y.reshape(4, n) for b in row_beats(r, L)]
            got, cyc = await tb.transact({"res_i_x": xb, "res_i_y": yb}, "res_o", len(xb),
                                         idle=idle, bp=bp)
            _check(unpack_rows(got, L), residual_expected(x, y), f"residual n={n}")
            if k == 0:
                assert cyc == cycles_ew.expected_cycles("res", beats=len(xb)), cyc


@cocotb.test()
async def test_gated_act(dut):
    tb = TB(dut)
    await tb.start(seed())
    L = tb.p.lanes
    rng = np.random.default_rng(seed() + 1)
    for act, code in (("silu", 0), ("relu2", 1)):
        dut.ga_act.value = code
        for n in row_lengths():
            for k, (idle, bp) in enumerate(STALLS):
                g = random_fp16(rng, 2 * n)
                u = random_fp16(rng, 2 * n)
                g[:64] = fp16_bits(np.linspace(-17, 17, 64))
                g[64:68] = [0x8000, 0, 0x4C00, 0xCC00]
                gb, ub = row_beats(g, L), row_beats(u, L)
                got, cyc = await tb.transact({"ga_i_gate": gb, "ga_i_up": ub}, "ga_o", len(gb),
                                             idle=idle, bp=bp)
                _check(unpack_rows(got, L), gated_expected(g, u, act), f"{act} n={n}")
                if k == 0:
                    assert cyc == cycles_ew.expected_cycles("ga", beats=len(gb)), cyc


@cocotb.test()
async def test_silu_exhaustive(dut):
    """Every finite FP16 gate value (EW_EXHAUSTIVE=1; else every 13th) through the SiLU path
    with up = 1.0: RN16(silu_fx(g)) = golden silu16."""
    tb = TB(dut)
    await tb.start(seed())
    L = tb.p.lanes
    dut.ga_act.value = 0
    g = np.arange(0x10000, dtype=np.uint32).astype(np.uint16)
    g = g[(g & 0x7C00) != 0x7C00]
    if os.environ.get("EW_EXHAUSTIVE") != "1":
        g = g[::13]
    g = np.concatenate([g, np.zeros((-len(g)) % L, np.uint16)])
    u = np.full(len(g), 0x3C00, np.uint16)
    got, _ = await tb.transact({"ga_i_gate": row_beats(g, L), "ga_i_up": row_beats(u, L)},
                               "ga_o", len(g) // L)
    from tellme.sim.golden.hw import silu16

    _check(unpack_rows(got, L), silu16(f16(g)).view(np.uint16), "silu exhaustive")


@cocotb.test()
async def test_rope(dut):
    from tellme.sim.golden.hw import rope_table

    tb = TB(dut)
    await tb.start(seed())
    L = tb.p.lanes
    rng = np.random.default_rng(seed() + 2)
    for hd in (16, 32):
        heads, toks = 3, 5
        for k, (idle, bp) in enumerate(STALLS):
            x = random_fp16(rng, toks * heads * hd).reshape(toks, heads, hd)
            pos = rng.integers(0, 4096, toks)
            cos, sin = rope_table(pos, hd, 10000.0)
            cb, sb = cos.view(np.uint16).copy(), sin.view(np.uint16).copy()
            cb[-1] = random_fp16(rng, hd // 2)            # arbitrary table data as well
            sb[-1] = random_fp16(rng, hd // 2)
            xb, cs = [], []
            for t in range(toks):
                for h in range(heads):
                    xb += row_beats(x[t, h], L)
                    for i in range(0, hd // 2, L // 2):
                        cs.append(pack_array([v for j in range(i, i + L // 2)
                                              for v in (cb[t, j], sb[t, j])], 16))
            got, cyc = await tb.transact({"rope_i": xb, "rope_i_cs": cs}, "rope_o", len(xb),
                                         idle=idle, bp=bp)
            _check(unpack_rows(got, L).reshape(x.shape), rope_expected(x, cb, sb),
                   f"rope hd={hd}")
            if k == 0:
                assert cyc == cycles_ew.expected_cycles("rope", beats=len(xb)), cyc


@cocotb.test()
async def test_token_scale(dut):
    tb = TB(dut)
    await tb.start(seed())
    rng = np.random.default_rng(seed() + 3)
    for ws in (np.float32(0.0421), np.float32(1.0), np.float32(3.1e-4)):
        dut.ts_ws.value = int(f32_bits(ws))
        amax = amax_cases(rng, 40)
        s_q, s_tok = scales_expected(amax, ws)
        got, _ = await tb.transact({"ts_i": [int(a) for a in amax]}, "ts_o", len(amax),
                                   idle=0.3, bp=0.3)
        _check([g & 0xFFFFFFFF for g in got], s_q, "quant_scale")
        _check([g >> 32 for g in got], s_tok, "dequant_scale")
        for a in amax[:6]:
            _, cyc = await tb.transact({"ts_i": [int(a)]}, "ts_o", 1)
            assert cyc == cycles_ew.expected_cycles("ts", amax16=f16(a), ws=ws), (hex(a), cyc)


@cocotb.test()
async def test_quantize(dut):
    tb = TB(dut)
    await tb.start(seed())
    p = tb.p
    L, K = p.lanes, 3 * p.t
    rng = np.random.default_rng(seed() + 4)
    for n in row_lengths():
        for k, (idle, bp) in enumerate(STALLS):
            h = [random_fp16(rng, n) for _ in range(3)]
            amax = np.array([np.abs(f16(r).astype(np.float64)).max() for r in h],
                            np.float16).view(np.uint16)
            amax[1] = 0x2000 if k % 2 else 0                # h beyond amax: saturation; eps
            q, s_q = quant_expected(h, amax)
            exp = np.concatenate([pack_act_beats(r, K) for r in q])
            beats = [b for r in h for b in row_beats(r, L)]
            got, cyc = await tb.transact({"quant_i": beats,
                                          "quant_i_scale": [int(s) for s in s_q]},
                                         "quant_o", len(exp), idle=idle, bp=bp)
            got = np.array([unpack_array(b, 8, K, signed=True) for b in got])
            _check(got, exp, f"quantize n={n}")
            if k == 0:
                want = cycles_ew.expected_cycles("quant", row_beats=[n // L] * 3, lanes=L,
                                                 out_lanes=K)
                assert cyc == want, (cyc, want)


@cocotb.test()
async def test_dequantize(dut):
    tb = TB(dut)
    await tb.start(seed())
    p = tb.p
    Q, aw = p.q, p.acc_width
    fields = layout_fields(out_layout(q=Q, acc_width=aw))
    rng = np.random.default_rng(seed() + 5)
    for n in row_lengths():
        for k, (idle, bp) in enumerate(STALLS):
            acc = acc_rows(rng, 4, n, aw)
            amax = amax_cases(rng, 4)
            ws = np.float32(rng.uniform(1e-3, 2.0))
            y, s_tok = dequant_expected(acc, amax, ws)
            beats = [pack_struct(fields, acc=pack_array(r[i:i + Q], aw), last=int(i + Q == n))
                     for r in acc for i in range(0, n, Q)]
            got, cyc = await tb.transact({"dq_i": beats, "dq_i_scale": [int(s) for s in s_tok]},
                                         "dq_o", len(beats), idle=idle, bp=bp)
            _check(unpack_rows(got, Q), y.reshape(-1), f"dequantize n={n}")
            if k == 0:
                want = cycles_ew.expected_cycles("dq", row_beats=[n // Q] * 4)
                assert cyc == want, (cyc, want)


@cocotb.test()
async def test_rmsnorm(dut):
    tb = TB(dut)
    await tb.start(seed())
    L = tb.p.lanes
    rng = np.random.default_rng(seed() + 6)
    for n in row_lengths():
        rows = norm_rows(rng, n, 8)
        g = fp16_bits(rng.uniform(-1.5, 1.5, n))
        g[0] = 0x8000
        for k, (idle, bp) in enumerate(STALLS):
            eps = np.float32((1e-5, 1e-6)[k % 2])
            dut.norm_eps.value = int(f32_bits(eps))
            sel = rows if k == 0 else [rows[(k + j) % len(rows)] for j in range(3)]
            h, amax = norm_expected(sel, g, eps)
            beats = [b for r in sel for b in row_beats(r, L)]
            gb = [pack_array(g[i:i + L], 16) for i in range(0, n, L)] * len(sel)
            got, cyc = await tb.transact({"norm_i": beats, "norm_i_g": gb}, "norm_o",
                                         len(beats), idle=idle, bp=bp)
            _check(unpack_rows(got, L), h.reshape(-1), f"rmsnorm h n={n}")
            lasts = [b for j, b in enumerate(got) if (j + 1) % (n // L) == 0]
            _check([(b >> (16 * L + 1)) & 0xFFFF for b in lasts], amax, f"rmsnorm amax n={n}")
            if k == 0:
                want = cycles_ew.expected_cycles("norm", x16_rows=[f16(r) for r in sel],
                                                 lanes=L, eps=eps)
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
        L = self.p.lanes
        rows, n = x.shape
        self.tb.dut.norm_eps.value = int(f32_bits(eps))
        beats = [b for r in x for b in row_beats(r, L)]
        gb = [pack_array(g[i:i + L], 16) for i in range(0, n, L)] * rows
        got = await self._go({"norm_i": beats, "norm_i_g": gb}, "norm_o", len(beats))
        lasts = [b for j, b in enumerate(got) if (j + 1) % (n // L) == 0]
        return (unpack_rows(got, L).reshape(rows, n),
                np.array([(b >> (16 * L + 1)) & 0xFFFF for b in lasts], np.uint16))

    async def scales(self, amax, ws):
        self.tb.dut.ts_ws.value = int(f32_bits(ws))
        got = await self._go({"ts_i": [int(a) for a in amax]}, "ts_o", len(amax))
        return ([g & 0xFFFFFFFF for g in got], [g >> 32 for g in got])

    async def quant(self, h, s_q):
        L, K = self.p.lanes, 3 * self.p.t
        rows, n = h.shape
        nb = -(-n // K)
        beats = [b for r in h for b in row_beats(r, L)]
        got = await self._go({"quant_i": beats, "quant_i_scale": list(s_q)}, "quant_o",
                             rows * nb, primary="quant_i")
        q = np.array([unpack_array(b, 8, K, signed=True) for b in got]).reshape(rows, nb * K)
        assert not q[:, n:].any(), "padding lanes must be zero"
        return q[:, :n]

    async def dequant(self, acc, s_tok):
        Q, aw = self.p.q, self.p.acc_width
        rows, n = acc.shape
        fields = layout_fields(out_layout(q=Q, acc_width=aw))
        beats = [pack_struct(fields, acc=pack_array(r[i:i + Q], aw), last=int(i + Q == n))
                 for r in acc for i in range(0, n, Q)]
        got = await self._go({"dq_i": beats, "dq_i_scale": list(s_tok)}, "dq_o", len(beats),
                             primary="dq_i")
        return unpack_rows(got, Q).reshape(rows, n)

    async def rope(self, x, cb, sb):
        L = self.p.lanes
        toks, heads, hd = x.shape
        xb, cs = [], []
        for t in range(toks):
            for h in range(heads):
                xb += row_beats(x[t, h], L)
                for i in range(0, hd // 2, L // 2):
                    cs.append(pack_array([v for j in range(i, i + L // 2)
                                          for v in (cb[t, j], sb[t, j])], 16))
        got = await self._go({"rope_i": xb, "rope_i_cs": cs}, "rope_o", len(xb))
        return unpack_rows(got, L).reshape(x.shape)

    async def residual(self, x, y):
        L = self.p.lanes
        xb = [b for r in x for b in row_beats(r, L)]
        yb = [b for r in y for b in row_beats(r, L)]
        got = await self._go({"res_i_x": xb, "res_i_y": yb}, "res_o", len(xb))
        return unpack_rows(got, L).reshape(x.shape)

    async def gated(self, g, u, act):
        L = self.p.lanes
        self.tb.dut.ga_act.value = {"silu": 0, "relu2": 1}[act]
        gb = [b for r in g for b in row_beats(r, L)]
        ub = [b for r in u for b in row_beats(r, L)]
        got = await self._go({"ga_i_gate": gb, "ga_i_up": ub}, "ga_o", len(gb))
        return unpack_rows(got, L).reshape(g.shape)


@cocotb.test()
async def test_chain_layer(dut):
    """Layer 0 of a small random model (hw numerics, adjacent RoPE pairing): norm -> scales ->
    quantise -> golden TLMM -> dequantise -> RoPE / residual / gating / sub-norm, every RTL
    output equal to the golden model's traced intermediate (each stage fed the RTL's own
    previous outputs)."""
    from tellme.sim.golden.hw import rope_table, to_fp16
    from tellme.sim.golden.model import GoldenModel
    from tellme.sim.golden.testmodels import random_model, tiny_config
    from tellme.sim.golden.tlmm import ternary_matmul

    tb = TB(dut)
    await tb.start(seed())
    blk = Blocks(tb)
    for act in ("relu2", "silu"):
        cfg = tiny_config(activation=act)
        model = random_model(cfg, seed=seed() + (act == "silu"), rope_pairing="adjacent")
        gm = GoldenModel(model, numerics="hw")
        gm.trace = {}
        ids = np.array([3, 141, 59, 26])
        gm.forward(ids, gm.new_cache(16))
        tr = {k: (v.view(np.uint16) if v.dtype == np.float16 else v)
              for k, v in gm.trace.items()}
        lay = model.layers[0]
        lin = lay.linears
        eps = np.float32(cfg.rms_norm_eps)
        gbits = {k: to_fp16(v).view(np.uint16) for k, v in lay.norms.items()}
        T, hd = len(ids), cfg.head_dim

        async def linear(h, amax, name):
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
        cos, sin = rope_table(np.arange(T), hd, cfg.rope_theta)
        qr = await blk.rope(q.reshape(T, -1, hd), cos.view(np.uint16), sin.view(np.uint16))
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
        _check(f, tr["L0.ffn"], f"ffn ({act})")
        fs, amax_f = await blk.norm(f, gbits["ffn_sub_norm"], eps)
        _check(fs, tr["L0.f_sub"], "f_sub")
        _, dn = await linear(fs, amax_f, "down_proj")
        _check(dn, tr["L0.down"], "down")
        xo = await blk.residual(x, dn)
        _check(xo, tr["L0.x_out"], "x_out")
