"""cocotb testbench for hw/axi_stripe.py: AxiReadStriper between an in-order 512-bit burst
master (here) and one cocotbext-axi AxiRamRead per 128-bit physical port, all over ONE shared
memory image.

``test_random``: rounds of back-to-back bursts of 1..16 beats at random beat-aligned
addresses inside 4 KiB pages, under random logical AR gaps, physical AR/R pauses and logical
R backpressure; every word must be the image's 64 bytes, RLAST on each burst's last word,
RRESP OKAY, and each port's bursts exactly those of ``stripe_stream``.
``test_rate``: no stalls, long stream of contiguous 16-beat bursts; logical beats/cycle
>= 0.7 and the idle latency are measured (printed in the log as ``RATE``/``LATENCY``).
``test_slverr``: some 128-bit beat addresses fail (SLVERR, zero data from AxiRamRead); a word
with such a sub-beat must come back SLVERR, the others OKAY.
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiRamRead, AxiReadBus

from tellme.hw.axi_stripe import stripe_stream
from tellme.sim.drivers import AxiReadMonitor, pause_generator, start_clock_and_reset
from tellme.sim.runner import cocotb_params

SIZE = 1 << 16


class ErrRam(AxiRamRead):
    """AxiRamRead whose reads of the addresses in ``err`` fail (-> SLVERR, zero data)."""

    def __init__(self, *args, err=frozenset(), **kw):
        super().__init__(*args, **kw)
        self.err = err

    async def _read(self, address, length):
        if address in self.err:
            raise OSError(f"injected error at {address:#x}")
        return self.read(address, length)


class Bench:
    def __init__(self, dut, rng, err=frozenset()):
        p = cocotb_params()
        self.dut, self.rng, self.p = dut, rng, p
        self.ports = p["ports"]
        self.nb = p["data_width"] // 8
        self.mem = rng.randbytes(SIZE)
        self.rams, self.mons = [], []
        shared = None
        for k in range(self.ports):
            logging.getLogger(f"cocotb.{dut._name}.m{k}").setLevel(logging.ERROR)
            ram = ErrRam(AxiReadBus.from_prefix(dut, f"m{k}"), dut.clk, dut.rst, size=SIZE,
                         mem=shared, err=err)
            if shared is None:
                shared = ram.mem
                ram.write(0, self.mem)
            self.rams.append(ram)
            self.mons.append(AxiReadMonitor(dut, f"m{k}", data_width=p["port_width"],
                                            max_burst=256, max_outstanding=64))
        self.got: list[tuple[int, int, int, int]] = []
        self.ready_p = 1.0
        self.cycle = 0
        self.ar_cycles: list[int] = []      # cycles of the logical AR handshakes
        self.m_ar_cycles: list[int] = []    # cycles of port 0's AR handshakes
        dut.s_arvalid.value = 0
        dut.s_rready.value = 0
        dut.s_arsize.value = (self.nb).bit_length() - 1
        dut.s_arburst.value = 1
        dut.s_arid.value = 0

    async def start(self):
        await start_clock_and_reset(self.dut)
        cocotb.start_soon(self._sink())

    def stalls(self, p_ar: float, p_r: float, p_ready: float):
        for ram in self.rams:
            for ch, p_ch in ((ram.ar_channel, p_ar), (ram.r_channel, p_r)):
                ch.set_pause_generator(pause_generator(self.rng, p_ch) if p_ch else None)
                ch.pause = False
        self.ready_p = p_ready

    async def _sink(self):
        dut, pending = self.dut, None
        while True:
            await RisingEdge(dut.clk)
            self.cycle += 1
            if int(dut.s_arvalid.value) and int(dut.s_arready.value):
                self.ar_cycles.append(self.cycle)
            if int(dut.m0_arvalid.value) and int(dut.m0_arready.value):
                self.m_ar_cycles.append(self.cycle)
            if int(dut.s_rvalid.value):
                beat = (dut.s_rdata.value.to_unsigned(), int(dut.s_rresp.value),
                        int(dut.s_rlast.value))
                assert pending is None or beat == pending, "R changed while stalled"
                if int(dut.s_rready.value):
                    self.got.append((*beat, self.cycle))
                    pending = None
                else:
                    pending = beat
            else:
                assert pending is None, "RVALID dropped before the transfer"
            dut.s_rready.value = int(self.ready_p >= 1 or self.rng.random() < self.ready_p)

    async def issue(self, bursts, p_gap: float = 0.0):
        dut = self.dut
        for addr, beats in bursts:
            while p_gap and self.rng.random() < p_gap:
                dut.s_arvalid.value = 0
                await RisingEdge(dut.clk)
            dut.s_araddr.value = addr
            dut.s_arlen.value = beats - 1
            dut.s_arvalid.value = 1
            for _ in range(20_000):
                await RisingEdge(dut.clk)
                if int(dut.s_arready.value):
                    break
            else:
                raise AssertionError(f"AR {addr:#x}+{beats} not taken, {len(self.got)} "
                                     f"words out")
        dut.s_arvalid.value = 0

    def expected(self, bursts, err=frozenset()):
        out = []
        pb = self.p["port_width"] // 8
        for addr, beats in bursts:
            for i in range(beats):
                a = addr + i * self.nb
                data = bytearray(self.mem[a:a + self.nb])
                bad = [s for s in range(0, self.nb, pb) if a + s in err]
                for s in bad:
                    data[s:s + pb] = bytes(pb)
                out.append((int.from_bytes(data, "little"), 2 if bad else 0,
                            int(i == beats - 1)))
        return out

    async def wait_for(self, n: int, limit: int = 50_000):
        for _ in range(limit):
            if len(self.got) >= n:
                break
            await RisingEdge(self.dut.clk)
        for _ in range(20):                        # nothing extra may follow
            await RisingEdge(self.dut.clk)
        assert len(self.got) == n, f"{len(self.got)} words, want {n}"

    def check(self, bursts, all_bursts, what: str, err=frozenset()):
        want = self.expected(bursts, err)
        got = [g[:3] for g in self.got]
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, (f"{what} word {i}: got resp {g[1]} last {g[2]} data "
                            f"{g[0]:#x}, want resp {w[1]} last {w[2]} data {w[0]:#x}")
        plans = stripe_stream(all_bursts, self.ports, data_width=self.p["data_width"],
                              port_width=self.p["port_width"])
        for k, mon in enumerate(self.mons):
            want_k = [(a, b) for plan in plans for port, a, b in plan if port == k]
            assert mon.bursts == want_k, f"{what} port {k}: {mon.bursts[:6]} != {want_k[:6]}"


def random_bursts(rng, n: int, max_beats: int = 16, nb: int = 64):
    out = []
    for _ in range(n):
        beats = rng.randint(1, max_beats)
        page = rng.randrange(SIZE // 4096)
        out.append((page * 4096 + rng.randint(0, 4096 // nb - beats) * nb, beats))
    return out


@cocotb.test()
async def test_random(dut):
    rng = random.Random(int(os.environ.get("SEED", "1")))
    b = Bench(dut, rng)
    await b.start()
    all_bursts = []
    stalls = [(0.0, 0.0, 0.0, 1.0), (0.3, 0.3, 0.3, 0.6), (0.0, 0.0, 0.5, 0.9),
              (0.5, 0.2, 0.0, 0.3), (0.0, 0.3, 0.7, 1.0)]
    for rnd, (p_gap, p_ar, p_r, p_ready) in enumerate(stalls):
        b.stalls(p_ar, p_r, p_ready)
        bursts = random_bursts(rng, 50, nb=b.nb)
        if rnd == 0:
            bursts[:6] = [(0, 1), (64, 2), (4096 - 64, 1), (4096, 3), (8192, 16),
                          (4096 * 3 - 16 * 64, 16)]
        all_bursts += bursts
        b.got.clear()
        await b.issue(bursts, p_gap)
        await b.wait_for(sum(n for _, n in bursts))
        b.check(bursts, all_bursts, f"round {rnd}")
        dut._log.info("round %d: %d bursts, %d words ok", rnd, len(bursts), len(b.got))


@cocotb.test()
async def test_rate(dut):
    rng = random.Random(2)
    b = Bench(dut, rng)
    await b.start()
    # idle latency: one 16-beat burst
    await b.issue([(0, 16)])
    await b.wait_for(16)
    latency = b.got[0][3] - b.ar_cycles[0]
    ar_latency = b.m_ar_cycles[0] - b.ar_cycles[0]
    # steady state: contiguous 16-beat bursts, no stalls anywhere
    n = 192
    bursts = [((i * 16 * b.nb) % SIZE, 16) for i in range(n)]
    b.got.clear()
    await b.issue(bursts)
    await b.wait_for(16 * n)
    b.check(bursts, [(0, 16), *bursts], "rate")
    first, last = b.got[0][3], b.got[-1][3]
    rate = (len(b.got) - 1) / (last - first)
    dut._log.info("LATENCY %d cycles (logical AR handshake -> first R beat), %d to the "
                  "port-0 AR handshake", latency, ar_latency)
    dut._log.info("RATE %.4f logical beats/cycle = %.1f B/cycle (%d beats in %d cycles)",
                  rate, rate * b.nb, len(b.got), last - first + 1)
    assert rate >= 0.7, f"steady-state rate {rate:.3f} < 0.7 beats/cycle"


@cocotb.test()
async def test_slverr(dut):
    rng = random.Random(3)
    bursts = random_bursts(rng, 30)
    pb = cocotb_params()["port_width"] // 8
    cand = sorted({a + i * 64 + s for a, n in bursts for i in range(n) for s in range(0, 64, pb)})
    err = frozenset(rng.sample(cand, 12))
    b = Bench(dut, rng, err=err)
    await b.start()
    b.stalls(0.2, 0.3, 0.7)
    await b.issue(bursts, 0.2)
    await b.wait_for(sum(n for _, n in bursts))
    b.check(bursts, bursts, "slverr", err)
    assert sum(g[1] == 2 for g in b.got) >= 1
