"""cocotb testbench of IntAttentionEngine (hw/attention/int_engine.py) on generated Verilog.

Every output is compared bit for bit with the integer attention contract
(tellme.sim.golden.attention_int: attention_decode / attention_prefill over int8 codes and
stream-format row scales) at the build's stream format (params ``fmt``); zero-stall calls are
also checked against the exact cycle model (tellme.sim.cycles_attn_int.calls_cycles: a layer's
calls back to back, the finish of one overlapping the next). Outputs come ``o_beat`` (params,
default 1) to a beat, the lower channel in the low bits; they are flattened in order.
Launched by tests/rtl/test_attn_int.py.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np

from tellme.hw.attention.int_engine import cmd_layout
from tellme.sim.cycles_attn_int import calls_cycles
from tellme.sim.drivers import pack_array, pack_struct
from tellme.sim.golden import attention_int as ai
from tellme.sim.golden.attention_hw import kv_quant_int8
from tellme.spec.attention import decode_calls, kv_schedule, prefill_calls, score_scale
from tellme.spec.attention_int import Q_BITS

from ..support.engine_tb import EngineTB

SEED = int(os.environ.get("SEED", "1"))


class TB(EngineTB):
    def __init__(self, dut):
        super().__init__(dut, cmd_layout)
        self.qb = self.p.get("q_bits", Q_BITS)          # q width of the build (params)
        self.ob = self.p.get("o_beat", 1)                # outputs per o beat
        self.junk = np.random.default_rng(SEED + 99)     # codes of key slots past the cache

    def beats(self, q_lanes, lim, kq, ks, vq, vs, c):
        """(command, q beats, K/V beats) of one call: q_lanes [nq, hd] (stream format), lim
        per lane, kq/vq int8 [n', hd] and ks/vs [n'] of one KV head (n' >= n). K rows are
        row-major beats (codes, K scale, V scale); V segments are whole blocks of ``beat``
        keys, channel-major (beat c = channel c of the block's keys); key slots past the
        cache get random codes, which the engine must ignore."""
        p, fmt = self.p, self.fmt
        EB, W, D = fmt.bits, p["beat"], p["depth"]
        QL = p.get("q_beat") or min(W, 8)
        hd = q_lanes.shape[1]
        n, nq = max(lim) + 1, len(lim)
        lim_all = list(lim) + [0] * (p["lanes"] - nq)
        cmd = pack_struct(self.cmd_f, n=n, nq=nq, c=c, lim=pack_array(lim_all, p["ctx_bits"]),
                          hd=hd)
        qb = self.bits(q_lanes)
        beats_q = [pack_array(qb[i:i + QL], EB) for i in range(0, len(qb), QL)]
        ksb, vsb = self.bits(ks), self.bits(vs)
        junk = self.junk
        beats_kv = []
        for kind, r0, cnt in kv_schedule(n, D):
            if kind == "K":
                pad = -hd % W                 # the last beat's codes past hd: anything
                for r in range(r0, r0 + cnt):
                    codes = [int(x) & 0xFF for x in kq[r]]
                    codes += [int(x) for x in junk.integers(0, 256, pad)]
                    sc = ksb[r] | (vsb[r] << EB)
                    beats_kv += [pack_array(codes[i:i + W], 8) | (sc << (8 * W))
                                 for i in range(0, hd + pad, W)]
                continue
            for b in range(r0 // W, (r0 + cnt + W - 1) // W):
                keys = range(b * W, b * W + W)
                blk = np.array([vq[j] if j < len(vq) else junk.integers(-128, 128, hd)
                                for j in keys], np.int64) & 0xFF
                beats_kv += [pack_array([int(x) for x in blk[:, ch]], 8)
                             | (int(junk.integers(0, 2 ** (2 * EB))) << (8 * W))
                             for ch in range(hd)]
        return cmd, beats_q, beats_kv

    async def calls(self, specs, check_cycles=False):
        """Back-to-back calls (every input offered at once, so the finish of a call overlaps
        the next call's streaming); returns the [nq, hd] result of each."""
        fmt, W, D = self.fmt, self.p["beat"], self.p["depth"]
        cmds, bq, bkv, sizes = [], [], [], []
        for sp in specs:
            cmd, q_beats, kv_beats = self.beats(*sp)
            cmds.append(cmd)
            bq += q_beats
            bkv += kv_beats
            sizes.append((max(sp[1]) + 1, len(sp[1]), sp[0].shape[1]))
        total = sum(nq * hd for _, nq, hd in sizes) // self.ob       # o beats
        start = len(self.sink.beats)
        c0 = len(self.src["i_cmd"].transfer_cycles)
        self.src["i_q"].send(bq)
        self.src["i_kv"].send(bkv)
        self.src["i_cmd"].send(cmds)
        out = (await self.sink.wait_for(start + total, timeout_cycles=4_000_000))[start:]
        if check_cycles:
            hd = sizes[0][2]
            t0 = self.src["i_cmd"].transfer_cycles[c0]
            t1 = self.sink.transfer_cycles[start + total - 1]
            want = calls_cycles([(n, nq) for n, nq, _ in sizes], head_dim=hd, beat=W,
                                depth=D, q_beat=self.p.get("q_beat"), o_beat=self.ob)
            assert t1 - t0 + 1 == want, f"calls {sizes}: {t1 - t0 + 1} cycles, model {want}"
        for mon in self.mon:
            mon.check()
        eb = fmt.bits
        out = [(b >> (eb * j)) & ((1 << eb) - 1) for b in out for j in range(self.ob)]
        res, o = [], 0
        for _, nq, hd in sizes:
            res.append(fmt.from_bits(np.array(out[o:o + nq * hd], np.int64)).reshape(nq, hd))
            o += nq * hd
        return res

    async def decode(self, q, kv, pos, check_cycles=False):
        """q [heads, hd]; kv = (kq, ks, vq, vs) caches [>= pos+1, kvh(, hd)]."""
        kq, ks, vq, vs = (a[:pos + 1] for a in kv)
        heads, hd = q.shape
        c = score_scale(hd)
        want = ai.attention_decode(q, kq, ks, vq, vs, c, fmt=self.fmt, q_bits=self.qb)
        got = np.empty_like(q)
        plan = decode_calls(pos, heads, kq.shape[1], self.p["lanes"])
        specs = [(q[list(cl.heads)], cl.lim, kq[:, cl.kv], ks[:, cl.kv], vq[:, cl.kv],
                  vs[:, cl.kv], c) for cl in plan]
        for cl, o in zip(plan, await self.calls(specs, check_cycles), strict=True):
            got[list(cl.heads)] = o
        self.assert_same(got, want, f"decode pos={pos} heads={heads} kvh={kq.shape[1]}")

    async def prefill(self, q, kv, start, check_cycles=False):
        n_q, heads, hd = q.shape
        kq, ks, vq, vs = (a[:start + n_q] for a in kv)
        c = score_scale(hd)
        want = ai.attention_prefill(q, kq, ks, vq, vs, start, c, fmt=self.fmt, q_bits=self.qb)
        got = np.empty_like(q)
        plan = prefill_calls(n_q, start, heads, kq.shape[1], self.p["lanes"])
        specs = [(q[list(cl.rows), list(cl.heads)], cl.lim, kq[:, cl.kv], ks[:, cl.kv],
                  vq[:, cl.kv], vs[:, cl.kv], c) for cl in plan]
        for cl, o in zip(plan, await self.calls(specs, check_cycles), strict=True):
            got[list(cl.rows), list(cl.heads)] = o
        self.assert_same(got, want, f"prefill n={n_q} start={start} heads={heads}")

    def rand(self, rng, n, heads, kvh, hd, n_q=1, scale=2.0):
        """Random q [n_q, heads, hd] and a quantised cache (kq, ks, vq, vs) as the KV writer
        stores it (kv_quant_int8 of random stream-format rows of mixed magnitudes)."""
        r = self.fmt.round
        q = r(rng.standard_normal((n_q, heads, hd)) * scale)
        k = r(rng.standard_normal((n, kvh, hd)) * scale)
        v = r(rng.standard_normal((n, kvh, hd)) * rng.choice([0.01, 1, 50], (n, kvh, 1)))
        kq, ks = kv_quant_int8(k, fmt=self.fmt)
        vq, vs = kv_quant_int8(v, fmt=self.fmt)
        return q, (kq, ks, vq, vs)


@cocotb.test()
async def test_decode_tiles(dut):
    """Decode, MHA and GQA 4:1, contexts around every score-tile boundary, and an MHA
    prefill; exact cycles of back-to-back calls."""
    tb = TB(dut)
    await tb.start()
    rng = np.random.default_rng(SEED)
    D, hd = tb.p["depth"], tb.p["head_dim"]
    for heads, kvh in ((4, 4), (4, 1)):
        for n in sorted({1, 2, D - 1, D, D + 1, 2 * D + 1, 3 * D + 3}):
            q, kv = tb.rand(rng, n, heads, kvh, hd)
            await tb.decode(q[0], kv, n - 1, check_cycles=True)
    q, kv = tb.rand(rng, 2 * tb.p["lanes"] + 3, 4, 4, hd, n_q=2 * tb.p["lanes"] + 3)
    await tb.prefill(q, kv, 0, check_cycles=True)            # MHA prefill: 12 calls


@cocotb.test()
async def test_decode_stalls(dut):
    """Decode with random idle on every input and backpressure on the output."""
    tb = TB(dut)
    await tb.start(idle=0.3, bp=0.4, seed=SEED)
    rng = np.random.default_rng(SEED + 10)
    D, hd = tb.p["depth"], tb.p["head_dim"]
    for heads, kvh, n in ((4, 1, 2 * D + 1), (4, 4, D), (4, 2, 3)):
        q, kv = tb.rand(rng, n, heads, kvh, hd)
        await tb.decode(q[0], kv, n - 1)


@cocotb.test()
async def test_prefill(dut):
    """Prefill, MHA (n_pe = lanes) and GQA 4:1: prompt lengths 1, n_pe - 1, n_pe, n_pe + 1,
    longer, and after a cached prefix; random stalls."""
    tb = TB(dut)
    await tb.start(idle=0.2, bp=0.2, seed=SEED + 1)
    rng = np.random.default_rng(SEED + 20)
    hd, lanes = tb.p["head_dim"], tb.p["lanes"]
    for heads, kvh in ((4, 4), (4, 1)):
        n_pe = lanes // (heads // kvh)
        for n_q, start in sorted({(1, 0), (max(1, n_pe - 1), 0), (n_pe, 0), (n_pe + 1, 0),
                                  (2 * n_pe + 3, 0), (n_pe + 1, 5)}):
            q, kv = tb.rand(rng, start + n_q, heads, kvh, hd, n_q=n_q)
            await tb.prefill(q, kv, start)


@cocotb.test()
async def test_directed(dut):
    """Edge values: all-zero q (equal scores), huge q and K scales (logits saturate), steep
    softmax (weights 0 beyond 24 octaves), tiny and subnormal q, zero rows (scale 0),
    subnormal / huge / full-significand scales with arbitrary codes (-128 included), output
    underflow and saturation, A past 24 bits (RN32 rounds; past D + 3 >= 33 keys)."""
    tb = TB(dut)
    await tb.start(idle=0.1, bp=0.1, seed=SEED + 3)
    rng = np.random.default_rng(SEED + 30)
    D, hd = tb.p["depth"], tb.p["head_dim"]
    fmt = tb.fmt
    r = fmt.round
    n = D + 3
    pick = np.array([0.0, 2.0 ** -fmt.frac, 2.0 ** -24, 3e-6, 1e-3, 0.7, 900.0, 60000.0,
                     1 + 2.0 ** -fmt.man, fmt.max])

    def codes():
        return rng.integers(-128, 128, (n, 1, hd)).astype(np.int8)

    def scales():
        return r(pick[rng.integers(0, len(pick), (n, 1))] * rng.uniform(1, 1.01, (n, 1)))

    cases = []
    for qs in (0.0, 60000.0, 30.0, 1e-6, 2.0 ** -fmt.frac, 1.0):
        q = r(rng.standard_normal((4, hd)) * qs)
        cases.append((q, (codes(), scales(), codes(), scales())))
    q = r(rng.standard_normal((4, hd)) * 30)          # steep softmax over quantised rows
    _, kv = tb.rand(rng, n, 4, 1, hd, scale=30)
    cases.append((q, kv))
    kq, ks, vq, vs = codes(), scales(), codes(), scales()
    vq[:, :, 0], vs[:] = 127, fmt.max                 # mean of +max saturates
    cases.append((r(np.zeros((4, hd))), (kq, ks, vq, vs)))
    vq = rng.integers(96, 128, (n, 1, hd)).astype(np.int8)   # equal weights, large codes:
    vs = r(rng.uniform(0.5, 1, (n, 1)))                       # |A| >= 2**24 from 33 keys on
    cases.append((r(np.zeros((4, hd))), (kq, ks, vq, vs)))
    for q, kv in cases:
        await tb.decode(q, kv, n - 1)


@cocotb.test()
async def test_runtime_head_dim(dut):
    """Smaller run-time head_dims (bpr = 1 and 2: V blocks shorter than the weight
    preparation), decode and prefill, exact cycles."""
    tb = TB(dut)
    await tb.start()
    rng = np.random.default_rng(SEED + 60)
    D, W, lanes = tb.p["depth"], tb.p["beat"], tb.p["lanes"]
    QL = tb.p.get("q_beat") or min(W, 8)
    for hd in (W, 2 * W, 3 * W, W + QL, 2 * W + 2 * QL):
        if hd > tb.p["head_dim"] or hd % tb.ob:
            continue
        q, kv = tb.rand(rng, D + 2, 4, 2, hd)
        await tb.decode(q[0], kv, D + 1, check_cycles=True)
        q, kv = tb.rand(rng, lanes // 2 + 1, 4, 2, hd, n_q=lanes // 2 + 1)
        await tb.prefill(q, kv, 0, check_cycles=True)


@cocotb.test()
async def test_quant_windows(dut):
    """Back-to-back MHA decode calls at every context up to 2 * beat + 2 and across the first
    tiles, at head_dim and at one K beat per row: the next call's q words start anywhere in a
    K segment up to its last allowed row, in a V segment once its weights are written, or at
    the hand-off (the shared operand shift chain); exact cycles."""
    tb = TB(dut)
    await tb.start()
    rng = np.random.default_rng(SEED + 70)
    D, W = tb.p["depth"], tb.p["beat"]
    for hd in sorted({tb.p["head_dim"], W}):
        for n in sorted(set(range(1, 2 * W + 3)) | {D, D + 1, 2 * D + 1, 2 * D + 2}):
            q, kv = tb.rand(rng, n, 4, 4, hd)
            await tb.decode(q[0], kv, n - 1, check_cycles=True)


@cocotb.test(skip=os.environ.get("LONG_N") is None)
async def test_long_context(dut):
    """Decode at the contexts in LONG_N (comma-separated), GQA 4:1; exact cycles."""
    tb = TB(dut)
    await tb.start()
    rng = np.random.default_rng(SEED + 40)
    hd = tb.p["head_dim"]
    for n in (int(x) for x in os.environ["LONG_N"].split(",")):
        for scale in (0.2, 2.0):
            q, kv = tb.rand(rng, n, 4, 1, hd, scale=scale)
            await tb.decode(q[0], kv, n - 1, check_cycles=True)
