"""cocotb testbench of the KV quantiser (hw/attention/kv_quant.py, ``KVQuantizer``).

Rows of stream-format element codes (params["fmt"]: FP24 or FP16) go in on ``i``; every output
beat must equal ``kv_quant_int8_beats`` (sim/golden/attention_hw.py: golden ``kv_quant_int8``
in the engine's int8 beat layout) bit for bit. Rows: random codes over a window of binades,
all-zero rows (with -0), one huge element among tiny ones, exact ties ((k + 1/2) s with
s = amax / 127 exact), subnormal rows whose scale underflows to 0 or is a subnormal (codes
clamped at 127), the largest finite value; every run-time ``bpr`` from 1 to the maximum.
Stress: random idle on ``i`` and backpressure on ``o``. Rate: without stalls, the input and
output transfer cycles equal ``sim.cycles_kv_quant.beat_cycles`` exactly.
Launched by tests/rtl/test_kv_quant.py.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from tellme.sim.cycles_kv_quant import beat_cycles
from tellme.sim.drivers import (
    StreamMonitor,
    StreamSink,
    StreamSource,
    pack_array,
    start_clock_and_reset,
)
from tellme.sim.golden.attention_hw import kv_quant_int8_beats
from tellme.sim.runner import cocotb_params
from tellme.spec.kv_layout import FORMATS

SEED = int(os.environ.get("SEED", "1"))


def special_rows(rng, fmt, hd: int) -> list[np.ndarray]:
    """Rows of element codes (int64 bit patterns) exercising the corner cases."""
    M, S = fmt.man, fmt.sig_bits
    top = 31 << M                                      # magnitude codes below exponent 31
    sgn = 1 << (fmt.bits - 1)

    def signs(n):
        return rng.integers(0, 2, size=n) * sgn

    def binade(lo, hi, n):                             # magnitudes with exponent in [lo, hi]
        e = rng.integers(lo, hi + 1, size=n)
        return (e << M) | rng.integers(0, 1 << M, size=n)

    rows = []
    # random over a window of binades (codes from 0 to 2**8 below the max and across it)
    for _ in range(6):
        c = int(rng.integers(1, 31))
        w = int(rng.integers(1, 10))
        rows.append(binade(max(0, c - w), min(30, c), hd) | signs(hd))
    rows.append(signs(hd))                             # all zero (+0 / -0)
    big = binade(0, 8, hd) | signs(hd)                 # one huge element among tiny ones
    big[rng.integers(0, hd)] = binade(25, 30, 1)[0] | signs(1)[0]
    rows.append(big)
    mx = binade(20, 30, hd) | signs(hd)                # the largest finite value
    mx[rng.integers(0, hd)] = (top - 1) | signs(1)[0]
    rows.append(mx)
    # exact ties: s0 = m 2**e (m odd, small); amax = 127 s0; x = (k + 1/2) s0 and k s0
    for _ in range(3):
        m = int(rng.integers(0, 8)) * 2 + 1
        e = int(rng.integers(-12, 6))
        s0 = m * 2.0 ** e
        k = rng.integers(0, 127, size=hd)
        half = rng.integers(0, 2, size=hd)
        v = (k + 0.5 * half) * s0
        v[rng.integers(0, hd)] = 127 * s0
        v = np.where(rng.integers(0, 2, size=hd) == 1, -v, v)
        rows.append(fmt.to_bits(fmt.round(v)))
    # subnormal rows: amax of 1..255 units of the smallest subnormal (scale 0 below 64 units,
    # subnormal scales above, with codes clamped at 127 up to 190 units)
    for amax in (1, 63, 64, 100, 127, 190, 191, 255, int(rng.integers(1, 1 << M))):
        x = rng.integers(0, amax + 1, size=hd)
        x[rng.integers(0, hd)] = amax
        rows.append(x | signs(hd))
    # near the normal/subnormal boundary and within one binade
    rows.append(binade(0, 2, hd) | signs(hd))
    rows.append(binade(15, 15, hd) | signs(hd))
    del S
    return [np.asarray(r, dtype=np.int64) for r in rows]


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.p = cocotb_params()
        self.W, self.L = self.p["beat"], self.p["lanes"]
        self.MB = self.p["max_head_dim"] // self.W
        self.fmt = FORMATS[self.p["fmt"]]

    async def start(self, idle: float, bp: float, seed: int):
        d = self.dut
        d.bpr.value = 1
        await start_clock_and_reset(d)
        self.src = StreamSource(d, "i", idle_prob=idle, seed=seed)
        self.sink = StreamSink(d, "o", backpressure_prob=bp, seed=seed + 1)
        self.mon = [StreamMonitor(d, s) for s in ("i", "o")]

    def beats_of(self, rows: list[np.ndarray]) -> list[int]:
        out = []
        for r in rows:
            out += [pack_array(r[i:i + self.W], self.fmt.bits) for i in range(0, r.size, self.W)]
        return out

    async def run(self, rows: list[np.ndarray], bpr: int) -> tuple[int, int]:
        """Send ``rows`` (all ``bpr * beat`` long) and check the output beats; returns the
        index ranges of the new input / output transfers."""
        d = self.dut
        assert not int(d.busy.value)
        d.bpr.value = bpr
        i0, o0 = len(self.src.transfer_cycles), len(self.sink.beats)
        want = kv_quant_int8_beats(np.stack([self.fmt.from_bits(r) for r in rows]), self.W,
                                   fmt=self.fmt)
        self.src.send(self.beats_of(rows))
        got = await self.sink.wait_for(o0 + len(want), timeout_cycles=200_000)
        got = got[o0:]
        bad = [i for i, (g, e) in enumerate(zip(got, want, strict=True)) if g != e]
        if bad:
            b = bad[0]
            r, c = divmod(b, bpr)
            raise AssertionError(
                f"{len(bad)} of {len(want)} beats differ; first: row {r} beat {c}: "
                f"{got[b]:#x} != {want[b]:#x} (row codes {[hex(int(x)) for x in rows[r]]})")
        for _ in range(3):
            await RisingEdge(d.clk)
        assert not int(d.busy.value) and self.src.idle
        return i0, o0


@cocotb.test()
async def test_rows(dut):
    """Every bpr; special and random rows; random idle and backpressure."""
    tb = TB(dut)
    await tb.start(idle=0.3, bp=0.3, seed=SEED)
    rng = np.random.default_rng(SEED)
    n = 0
    for bpr in range(1, tb.MB + 1):
        hd = bpr * tb.W
        rows = special_rows(rng, tb.fmt, hd)
        rng.shuffle(rows)
        for k, (idle, bp) in enumerate(((0.3, 0.3), (0.0, 0.6), (0.6, 0.0))):
            tb.src.idle_prob, tb.sink.backpressure_prob = idle, bp
            part = rows[k::3]
            await tb.run(part, bpr)
            n += len(part)
    dut._log.info("%s beat %d lanes %d: %d rows bit-exact", tb.fmt.name, tb.W, tb.L, n)
    for mon in tb.mon:
        mon.check()


@cocotb.test()
async def test_cycles(dut):
    """No stalls: transfer cycles of every input row and output beat equal the cycle model."""
    tb = TB(dut)
    await tb.start(idle=0.0, bp=0.0, seed=SEED + 7)
    rng = np.random.default_rng(SEED + 7)
    for bpr in sorted({1, 2, tb.MB}):
        rows = special_rows(rng, tb.fmt, bpr * tb.W)[:7]
        i0, o0 = await tb.run(rows, bpr)
        t0 = tb.src.transfer_cycles[i0]
        got_in = [tb.src.transfer_cycles[i0 + r * bpr] - t0 for r in range(len(rows))]
        got_out = [c - t0 for c in tb.sink.transfer_cycles[o0:]]
        want = beat_cycles([bpr] * len(rows), beat=tb.W, lanes=tb.L, fmt=tb.fmt)
        dut._log.info("bpr %d, %d rows: %d cycles (model %d)", bpr, len(rows),
                      got_out[-1] + 1, want["cycles"])
        assert got_in == want["in"], f"bpr {bpr}: input rows at {got_in}, model {want['in']}"
        assert got_out == want["out"], f"bpr {bpr}: output beats at {got_out}, " \
                                       f"model {want['out']}"
    for mon in tb.mon:
        mon.check()
