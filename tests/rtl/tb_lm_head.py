"""cocotb testbench of the LM-head unit (hw/lm_head.py, ``LmHead``).

Rows go in as a command (d, vocab, amax), ``d / 8`` activation-code beats and the packed head
(spec/lm_head.py ``pack_head``) in ``lanes``-byte beats; every logit must equal golden
``lm_head_int8`` (sim/golden/lm_head_int.py) bit for bit. Rows: random heads from
``quantize_head`` (an all-zero row, a row of one huge weight), codes over the full int8 range
(-128 and 127 included) and all zero, amax random, tiny (below QUANT_EPS) and the format's
largest, every d from 8 to the unit's max_d in steps of the q beat, vocab ragged (70), one row,
one block; crafted scales whose s = RN32(A dscale) flushes to 0 or saturates, logits that
saturate, and scales (1 + 2**-k) 2**e that make both roundings hit exact ties. Stress: random
idle on ``cmd``, ``q``, ``w`` and backpressure on ``o``; stream protocol monitors on all four.
Rate: without stalls, the cycle of every logit after its command equals
``sim.cycles_lm_head.row_cycles`` exactly. Launched by tests/rtl/test_lm_head.py.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from tellme.hw.arith import ceil_log2
from tellme.hw.lm_head import VOCAB_BITS
from tellme.sim.cycles_lm_head import row_cycles
from tellme.sim.drivers import (
    StreamMonitor,
    StreamSink,
    StreamSource,
    pack_array,
    pack_struct,
    start_clock_and_reset,
)
from tellme.sim.golden.lm_head_int import lm_head_int8, quantize_head
from tellme.sim.runner import cocotb_params
from tellme.spec.lm_head import Q_BEAT, pack_head
from tellme.spec.numerics import STREAM_FORMATS

SEED = int(os.environ.get("SEED", "1"))


def random_row(rng, fmt, d: int, vocab: int, kind: str = "random"):
    """(q int8 [d], amax stream value, w8 int8 [vocab, d], dscale float32 [vocab])."""
    w = (rng.standard_normal((vocab, d)) * rng.uniform(0.01, 2.0, size=(vocab, 1))
         ).astype(np.float32)
    w[rng.integers(0, vocab)] = 0.0                                  # an all-zero row
    if vocab > 1:
        r = rng.integers(0, vocab)
        w[r] = rng.standard_normal(d).astype(np.float32) * 1e-3
        w[r, rng.integers(0, d)] = 50.0                              # one huge weight
    w8, dscale = quantize_head(w)
    q = rng.integers(-128, 128, size=d).astype(np.int8)
    q[rng.integers(0, d, size=2)] = [-128, 127]
    if kind == "zero_q":
        q[:] = 0
    if kind in ("ties", "ties_s"):
        # exact ties of both roundings: dscale = (1 + 2**-k) 2**e; amax = 4 makes s exact and
        # acc * s often a tie (k >= 6 drops bits of a 16-bit acc); amax = 1 + 2**-man makes
        # A * dscale a tie at k = 24 - man (RNE keeps the even significand)
        amax = fmt.round(4.0 if kind == "ties" else 1.0 + 2.0 ** -fmt.man)
        k = rng.choice(np.array([7, 8, 8, 9, 9, 10, 12] + [24 - fmt.man] * 4), size=vocab)
        e = rng.integers(-12, -4, size=vocab)
        dscale = np.ldexp(1.0 + np.ldexp(1.0, -k), e).astype(np.float32)
    elif kind in ("tiny", "flush"):
        amax = fmt.from_bits(rng.integers(0, 8))                   # below QUANT_EPS: A = eps
    elif kind in ("max", "sat"):
        amax = fmt.from_bits(np.int64((0x1E << fmt.man) | ((1 << fmt.man) - 1)))
    else:
        amax = fmt.round(rng.uniform(0.05, 60.0) * 2.0 ** rng.integers(-6, 6))
    if kind in ("flush", "sat"):
        # flush: A = eps, dscale 2**-126 gives s < 2**-126 (flushed to 0, logits +0);
        # sat: A = the format's largest, dscale 1.5 * 2**120 gives s >= 2**128 (FLT_MAX) and
        # dscale 2**100 logits beyond FLT_MAX (saturated)
        dscale = dscale.copy()
        sel = rng.integers(0, 3, size=vocab)
        dscale[sel == 0] = np.float32(2.0 ** -126 if kind == "flush" else 1.5 * 2.0 ** 120)
        dscale[sel == 1] = np.float32(2.0 ** 100)
    return q, np.asarray(amax, dtype=fmt.dtype).reshape(()), w8, dscale


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.p = cocotb_params()
        self.L, self.max_d = self.p["lanes"], self.p["max_d"]
        self.fmt = STREAM_FORMATS[self.p["fmt"]]
        self.cmd_fields = [("d", ceil_log2(self.max_d + 1)), ("vocab", VOCAB_BITS),
                           ("amax", self.fmt.bits)]

    async def start(self, idle: float, bp: float, seed: int):
        d = self.dut
        await start_clock_and_reset(d)
        self.cmd = StreamSource(d, "cmd", idle_prob=idle, seed=seed)
        self.q = StreamSource(d, "q", idle_prob=idle, seed=seed + 1)
        self.w = StreamSource(d, "w", idle_prob=idle, seed=seed + 2)
        self.sink = StreamSink(d, "o", backpressure_prob=bp, seed=seed + 3)
        self.mon = [StreamMonitor(d, s) for s in ("cmd", "q", "w", "o")]

    def send_row(self, q, amax, w8, dscale) -> np.ndarray:
        """Queue one row; returns the expected logit bits (uint32 [vocab])."""
        vocab, d = w8.shape
        bits = int(self.fmt.to_bits(amax))
        self.cmd.send([pack_struct(self.cmd_fields, d=d, vocab=vocab, amax=bits)])
        self.q.send([pack_array(q[i:i + Q_BEAT], 8) for i in range(0, d, Q_BEAT)])
        buf = pack_head(w8, dscale).tobytes()
        self.w.send([int.from_bytes(buf[i:i + self.L], "little")
                     for i in range(0, len(buf), self.L)])
        want = lm_head_int8(q, amax, w8, dscale, fmt=self.fmt)[0]
        return want.view(np.uint32).astype(np.int64)

    async def check(self, wants: list[np.ndarray], o0: int, timeout: int = 400_000):
        want = np.concatenate(wants)
        got = np.array(await self.sink.wait_for(o0 + want.size, timeout_cycles=timeout),
                       dtype=np.int64)[o0:]
        bad = np.flatnonzero(got != want)
        if bad.size:
            b = int(bad[0])
            raise AssertionError(f"{bad.size} of {want.size} logits differ; first at {b}: "
                                 f"{int(got[b]):#010x} != {int(want[b]):#010x}")
        for _ in range(POST_IDLE):
            await RisingEdge(self.dut.clk)
        assert not int(self.dut.busy.value), "busy after the last logit"
        assert self.cmd.idle and self.q.idle and self.w.idle
        assert len(self.sink.beats) == o0 + want.size, "extra logits"


POST_IDLE = 12


@cocotb.test()
async def test_rows(dut):
    """Rows back to back (every d, ragged and tiny vocab, special amax and scales) under random
    idle on the inputs and backpressure on the output."""
    tb = TB(dut)
    await tb.start(idle=0.3, bp=0.3, seed=SEED)
    rng = np.random.default_rng(SEED)
    ds = list(range(Q_BEAT, tb.max_d + 1, Q_BEAT))
    rows = [(d, 70, "random") for d in ds]
    rows += [(tb.max_d, 1, "random"), (tb.max_d, 64, "tiny"), (ds[-1], 70, "zero_q"),
             (ds[0], 65, "max"), (tb.max_d, 130, "flush"), (tb.max_d, 70, "sat"),
             (ds[len(ds) // 2], 3, "tiny"), (tb.max_d, 130, "ties"),
             (tb.max_d, 130, "ties_s")]
    n = 0
    for k, (idle, bp) in enumerate(((0.3, 0.3), (0.0, 0.7), (0.6, 0.0))):
        tb.cmd.idle_prob = tb.q.idle_prob = tb.w.idle_prob = idle
        tb.sink.backpressure_prob = bp
        part = rows[k::3]
        o0 = len(tb.sink.beats)
        wants = [tb.send_row(*random_row(rng, tb.fmt, d, v, kind)) for d, v, kind in part]
        await tb.check(wants, o0)
        n += sum(v for _, v, _ in part)
    dut._log.info("lanes %d: %d rows, %d logits bit-exact", tb.L, len(rows), n)
    for mon in tb.mon:
        mon.check()


@cocotb.test()
async def test_cycles(dut):
    """No stalls: every logit's cycle after its command equals the cycle model."""
    tb = TB(dut)
    await tb.start(idle=0.0, bp=0.0, seed=SEED + 5)
    rng = np.random.default_rng(SEED + 5)
    for d, vocab in ((tb.max_d, 70), (Q_BEAT, 130), (tb.max_d, 1), (tb.max_d // 2, 64)):
        d = max(Q_BEAT, d - d % Q_BEAT)
        c0 = len(tb.cmd.transfer_cycles)
        o0 = len(tb.sink.beats)
        want = tb.send_row(*random_row(rng, tb.fmt, d, vocab))
        await tb.check([want], o0)
        t0 = tb.cmd.transfer_cycles[c0]
        got = [c - t0 for c in tb.sink.transfer_cycles[o0:]]
        model = row_cycles(vocab, d, tb.L)
        dut._log.info("d %d vocab %d: %d cycles (model %d)", d, vocab, got[-1] + 1,
                      model["cycles"])
        assert got == model["out"], f"d {d} vocab {vocab}: logits at {got[:8]}..{got[-3:]}, " \
                                    f"model {model['out'][:8]}..{model['out'][-3:]}"
    for mon in tb.mon:
        mon.check()
