"""cocotb testbench of AttentionEngine (hw/attention/engine.py) on generated Verilog.

Every output is compared bit for bit with tellme.sim.golden.hw_numerics (attention_decode /
attention_prefill) at the build's stream format (params ``fmt``: "fp16" / "fp24"; absent:
the contract's STREAM_FORMAT); zero-stall calls are also checked against the exact cycle model
(tellme.sim.cycles_attn.call_cycles). Launched by tests/rtl/test_attn_engine.py.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np

from tellme.hw.attention.engine import cmd_layout
from tellme.sim.cycles_attn import call_cycles
from tellme.sim.drivers import pack_array, pack_struct
from tellme.sim.golden import hw_numerics as hw
from tellme.sim.golden.attention_hw import kv_dequant_int8, kv_quant_int8
from tellme.spec.attention import decode_calls, kv_schedule, prefill_calls

from ..support.engine_tb import EngineTB

SEED = int(os.environ.get("SEED", "1"))


class TB(EngineTB):
    def __init__(self, dut):
        super().__init__(dut, cmd_layout)

    async def call(self, q_lanes, lim, k, v, c, check_cycles=False, scales=None):
        """q_lanes [nq, hd]; lim per lane; k, v [n, hd] of one KV head, in the stream format,
        or int8 codes with ``scales`` = (k scales [n], v scales [n]) (int8 KV mode)."""
        p, fmt = self.p, self.fmt
        EB = fmt.bits
        W, D = p["beat"], p["depth"]
        hd = q_lanes.shape[1]                 # run-time head_dim (<= the engine's maximum)
        assert hd % W == 0
        n = max(lim) + 1
        nq = len(lim)
        lim_all = list(lim) + [0] * (p["lanes"] - nq)
        cmd = pack_struct(self.cmd_f, n=n, nq=nq, c=c, lim=pack_array(lim_all, p["ctx_bits"]),
                          int8=int(scales is not None), bpr=hd // W)
        qb = self.bits(q_lanes)
        beats_q = [pack_array(qb[i:i + W], EB) for i in range(0, len(qb), W)]
        beats_kv = []
        for kind, r0, cnt in kv_schedule(n, D):
            src = k if kind == "K" else v
            if scales is None:
                b = self.bits(src[r0:r0 + cnt])
                beats_kv += [pack_array(b[i:i + W], EB) for i in range(0, len(b), W)]
                continue
            sc = self.bits(scales[kind == "V"][r0:r0 + cnt])
            for r in range(cnt):
                codes = [int(x) for x in src[r0 + r]]
                beats_kv += [pack_array(codes[i:i + W], 8) | (sc[r] << (8 * W))
                             for i in range(0, hd, W)]
        start = len(self.sink.beats)
        c0 = len(self.src["i_cmd"].transfer_cycles)
        self.src["i_q"].send(beats_q)
        self.src["i_kv"].send(beats_kv)
        self.src["i_cmd"].send([cmd])
        out = (await self.sink.wait_for(start + nq * hd, timeout_cycles=2_000_000))[start:]
        if check_cycles:
            t0 = self.src["i_cmd"].transfer_cycles[c0]
            t1 = self.sink.transfer_cycles[start + nq * hd - 1]
            want = call_cycles(n, nq, head_dim=hd, beat=W, depth=D)
            assert t1 - t0 + 1 == want, f"n={n} nq={nq}: {t1 - t0 + 1} cycles, model {want}"
        for mon in self.mon:
            mon.check()
        return fmt.from_bits(np.array(out, dtype=np.int64)).reshape(nq, hd)

    async def decode(self, q, kc, vc, pos, check_cycles=False):
        """q [heads, hd]; kc/vc [>= pos+1, kvh, hd]; compare with hw.attention_decode."""
        heads, hd = q.shape
        kvh = kc.shape[1]
        c = hw.score_scale(hd)
        want = hw.attention_decode(q, kc[:pos + 1], vc[:pos + 1], fmt=self.fmt)
        got = np.empty_like(q)
        for call in decode_calls(pos, heads, kvh, self.p["lanes"]):
            o = await self.call(q[list(call.heads)], call.lim, kc[:, call.kv], vc[:, call.kv],
                                c, check_cycles)
            got[list(call.heads)] = o
        self.assert_same(got, want, f"decode pos={pos} heads={heads} kvh={kvh}")

    async def decode_int8(self, q, k8, ks, v8, vs, pos):
        """int8 KV: codes [n, kvh, hd] and scales [n, kvh] (stream format); golden =
        attention_decode over the dequantised cache (attention_hw.kv_dequant_int8)."""
        heads, hd = q.shape
        kvh = k8.shape[1]
        c = hw.score_scale(hd)
        f = self.fmt
        want = hw.attention_decode(q, kv_dequant_int8(k8, ks, fmt=f)[:pos + 1],
                                   kv_dequant_int8(v8, vs, fmt=f)[:pos + 1], fmt=f)
        got = np.empty_like(q)
        for call in decode_calls(pos, heads, kvh, self.p["lanes"]):
            o = await self.call(q[list(call.heads)], call.lim, k8[:, call.kv], v8[:, call.kv],
                                c, scales=(ks[:, call.kv], vs[:, call.kv]))
            got[list(call.heads)] = o
        self.assert_same(got, want, f"int8 decode pos={pos} heads={heads} kvh={kvh}")

    async def prefill(self, q, kc, vc, start, check_cycles=False):
        n_q, heads, hd = q.shape
        kvh = kc.shape[1]
        c = hw.score_scale(hd)
        want = hw.attention_prefill(q, kc[:start + n_q], vc[:start + n_q], start,
                                    fmt=self.fmt)
        got = np.empty_like(q)
        for call in prefill_calls(n_q, start, heads, kvh, self.p["lanes"]):
            o = await self.call(q[list(call.rows), list(call.heads)], call.lim, kc[:, call.kv],
                                vc[:, call.kv], c, check_cycles)
            got[list(call.rows), list(call.heads)] = o
        self.assert_same(got, want, f"prefill n={n_q} start={start} heads={heads} kvh={kvh}")

    def rand_qkv(self, rng, n, heads, kvh, hd, n_q=1, scale=2.0):
        """Random q [n_q, heads, hd], K/V caches [n, kvh, hd] in the stream format; q scaled
        so that scores span several octaves (softmax weights from ~1 down to below 2**-24)."""
        r = self.fmt.round
        q = r(rng.standard_normal((n_q, heads, hd)) * scale)
        k = r(rng.standard_normal((n, kvh, hd)) * scale)
        v = r(rng.standard_normal((n, kvh, hd)) * rng.choice([0.01, 1, 50], (n, kvh, 1)))
        return q, k, v


@cocotb.test()
async def test_decode_tiles(dut):
    """Decode, MHA and GQA 4:1, contexts around every score-tile boundary; exact cycles."""
    tb = TB(dut)
    await tb.start()
    rng = np.random.default_rng(SEED)
    D, hd = tb.p["depth"], tb.p["head_dim"]
    for heads, kvh in ((4, 4), (4, 1)):
        for n in sorted({1, 2, D - 1, D, D + 1, 2 * D, 2 * D + 1, 3 * D + 3}):
            q, k, v = tb.rand_qkv(rng, n, heads, kvh, hd)
            await tb.decode(q[0], k, v, n - 1, check_cycles=True)


@cocotb.test()
async def test_decode_stalls(dut):
    """Decode with random idle on every input and backpressure on the output."""
    tb = TB(dut)
    await tb.start(idle=0.3, bp=0.4, seed=SEED)
    rng = np.random.default_rng(SEED + 10)
    D, hd = tb.p["depth"], tb.p["head_dim"]
    for heads, kvh, n in ((4, 1, 2 * D + 1), (4, 4, D), (4, 2, 3)):
        q, k, v = tb.rand_qkv(rng, n, heads, kvh, hd)
        await tb.decode(q[0], k, v, n - 1)


@cocotb.test()
async def test_prefill(dut):
    """Prefill, MHA (n_pe = lanes) and GQA 4:1 (n_pe = lanes/4): prompt lengths 1, n_pe-1,
    n_pe, n_pe+1 and longer, from position 0 and after a cached prefix; random stalls."""
    tb = TB(dut)
    await tb.start(idle=0.2, bp=0.2, seed=SEED + 1)
    rng = np.random.default_rng(SEED + 20)
    hd, lanes = tb.p["head_dim"], tb.p["lanes"]
    for heads, kvh in ((4, 4), (4, 1)):
        n_pe = lanes // (heads // kvh)
        for n_q, start in sorted({(1, 0), (max(1, n_pe - 1), 0), (n_pe, 0), (n_pe + 1, 0),
                                  (2 * n_pe + 3, 0), (n_pe + 1, 5)}):
            q, k, v = tb.rand_qkv(rng, start + n_q, heads, kvh, hd, n_q=n_q)
            await tb.prefill(q, k, v, start)


@cocotb.test()
async def test_directed(dut):
    """Edge values: saturating scores, subnormal and max-magnitude V, all-equal scores, keys
    far below the maximum (weights 0), output underflow to signed zero and overflow, and q.k
    products of tiny channels far below the 2**-20 score LSB (round to 0, not to 1)."""
    tb = TB(dut)
    await tb.start()
    rng = np.random.default_rng(SEED + 30)
    D, hd = tb.p["depth"], tb.p["head_dim"]
    fmt = tb.fmt
    r = fmt.round
    tiny = 2.0 ** -fmt.frac                      # smallest subnormal
    n = D + 3
    cases = []
    # huge q.k: raw scores saturate at 2**44 - 1
    q = r(np.full((4, hd), 60000.0))
    k = r(np.full((n, 1, hd), 60000.0) * np.where(rng.random((n, 1, 1)) < 0.5, 1, -1))
    v = r(rng.standard_normal((n, 1, hd)))
    cases.append((q, k, v))
    # all scores equal (q = 0); V subnormal / max / mixed signs
    q = r(np.zeros((4, hd)))
    v = r(np.where(rng.random((n, 1, hd)) < 0.5, 6e-8, -fmt.max))
    v[:, :, 0] = fmt.max                         # mean of +max saturates
    v[:, :, 1] = tiny                            # output underflow: to 0 or min subnormal
    v[:, :, 2] = -tiny
    cases.append((q, r(rng.standard_normal((n, 1, hd))), v))
    # steep softmax: most keys beyond 24 octaves below the maximum (weight 0)
    q = r(rng.standard_normal((4, hd)) * 30)
    k = r(rng.standard_normal((n, 1, hd)) * 30)
    v = r(rng.standard_normal((n, 1, hd)) * 1e-3)
    cases.append((q, k, v))
    # half the channels tiny (|x| < 2**-11, subnormals included): their products are
    # < 2**-22, far below the score LSB, and must round to 0 (the rounding shift exceeds the
    # product width); the other channels make the scores sit anywhere between Q.16 steps
    for _ in range(4):
        q = rng.standard_normal((4, hd)) * 2
        k = rng.standard_normal((n, 1, hd)) * 2
        small = rng.random(hd) < 0.5
        q = np.where(small, np.sign(q) * rng.uniform(2.0 ** -16, 2.0 ** -11, q.shape), q)
        k = np.where(small, np.sign(k) * rng.uniform(2.0 ** -16, 2.0 ** -11, k.shape), k)
        cases.append((r(q), r(k), r(rng.standard_normal((n, 1, hd)))))
    for q, k, v in cases:
        await tb.decode(q, k, v, n - 1)


@cocotb.test()
async def test_rounding_sensitive(dut):
    """Rows whose outputs flip if RN32(1/L) or RN32(A) is off by one ulp
    (tests/support/attn_cases.py): random rows rarely expose these bits."""
    from tests.support.attn_cases import sensitive_rows

    tb = TB(dut)
    await tb.start(idle=0.1, bp=0.1, seed=SEED + 3)
    for q, k, v in sensitive_rows(12, tb.p["head_dim"], seed=SEED, fmt=tb.fmt):
        n = len(k)
        await tb.decode(q[None], k[:, None], v[:, None], n - 1)


@cocotb.test()
async def test_runtime_head_dim(dut):
    """One engine, smaller run-time head_dims (bpr = 1 exercises the accumulator forwarding,
    bpr = 2 the transparent read), decode and prefill, exact cycles."""
    tb = TB(dut)
    await tb.start()
    rng = np.random.default_rng(SEED + 60)
    D, W, lanes = tb.p["depth"], tb.p["beat"], tb.p["lanes"]
    for hd in (W, 2 * W, 3 * W):
        q, k, v = tb.rand_qkv(rng, D + 2, 4, 2, hd)
        await tb.decode(q[0], k, v, D + 1, check_cycles=True)
        q, k, v = tb.rand_qkv(rng, lanes // 2 + 1, 4, 2, hd, n_q=lanes // 2 + 1)
        await tb.prefill(q, k, v, 0)


@cocotb.test()
async def test_int8_kv(dut):
    """int8 KV (per-token-per-head scales in the stream format, dequantised on input):
    quantised random caches across tile boundaries with stalls, and arbitrary codes with
    subnormal / huge scales (dequantisation saturating at the format's maximum)."""
    tb = TB(dut)
    await tb.start(idle=0.25, bp=0.25, seed=SEED + 2)
    rng = np.random.default_rng(SEED + 50)
    D, hd = tb.p["depth"], tb.p["head_dim"]
    fmt = tb.fmt
    for heads, kvh, n in ((4, 1, 2 * D + 1), (4, 4, D - 1)):
        q, k, v = tb.rand_qkv(rng, n, heads, kvh, hd)
        k8, ks = kv_quant_int8(k, fmt=fmt)
        v8, vs = kv_quant_int8(v, fmt=fmt)
        await tb.decode_int8(q[0], k8, ks, v8, vs, n - 1)
    n = D + 2
    q = tb.rand_qkv(rng, 1, 4, 1, hd, scale=0.05)[0][0]
    k8 = rng.integers(-128, 128, (n, 1, hd)).astype(np.int8)
    v8 = rng.integers(-128, 128, (n, 1, hd)).astype(np.int8)
    # subnormal scales (the smallest one, 2**-fmt.frac, included), huge ones, and scales
    # with full-width significands (FP24: 19 bits)
    pick = np.array([2.0 ** -fmt.frac, 2.0 ** -24, 3e-6, 1e-3, 0.7, 900.0, 60000.0,
                     1 + 2.0 ** -fmt.man, fmt.max])
    ks = fmt.round(pick[rng.integers(0, len(pick), (n, 1))] * rng.uniform(1, 1.01, (n, 1)))
    vs = fmt.round(pick[rng.integers(0, len(pick), (n, 1))] * rng.uniform(1, 1.01, (n, 1)))
    await tb.decode_int8(q, k8, ks, v8, vs, n - 1)


@cocotb.test(skip=os.environ.get("LONG_N") is None)
async def test_long_context(dut):
    """Decode at the contexts in LONG_N (comma-separated, e.g. past 1024 and 4096 keys), GQA
    4:1, flat and peaked softmax; exact cycles."""
    tb = TB(dut)
    await tb.start()
    rng = np.random.default_rng(SEED + 40)
    hd = tb.p["head_dim"]
    for n in (int(x) for x in os.environ["LONG_N"].split(",")):
        for scale in (0.2, 2.0):
            q, k, v = tb.rand_qkv(rng, n, 4, 1, hd, scale=scale)
            await tb.decode(q[0], k, v, n - 1, check_cycles=True)
