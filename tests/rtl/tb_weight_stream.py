"""cocotb testbench for hw/weight_stream.py: WeightStreamer against cocotbext-axi's AxiRamRead.

The memory holds layout-v1 packed code streams (quant.codes) of random ternary matrices; the
streamed words must equal the index vectors of ``layout_codes`` exactly. Stress: random AR/R
pauses of the memory model, random backpressure on the word stream, unaligned base addresses,
ragged vector ranges, 4 KB page crossings. A protocol monitor checks the output stream rules and
the AXI bursts (length, page, outstanding limit, exact burst list against ``stream_plan``).
"""

from __future__ import annotations

import logging
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiRamRead, AxiReadBus

from tellme.hw.weight_stream import stream_plan
from tellme.sim.drivers import AxiReadMonitor, pause_generator
from tellme.sim.runner import cocotb_params
from tellme.spec.codes import layout_codes, pack_codes


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.p = cocotb_params()
        self.vb = 5 * self.p["t"]
        self.lanes = self.p["lanes"]
        self.dw = self.p["data_width"]
        self.t = self.p["t"]
        logging.getLogger("cocotb.ws.m_axi").setLevel(logging.WARNING)
        self.ram = AxiRamRead(AxiReadBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst,
                              size=1 << 20)
        self.words: list[tuple[int, int]] = []
        self.ready_p = 1.0
        self.rng = random.Random(0)
        cocotb.start_soon(Clock(dut.clk, 4, unit="ns").start())
        cocotb.start_soon(self._sink())
        self.axi_mon = AxiReadMonitor(dut, "m_axi", data_width=self.dw,
                                      max_burst=self.p["max_burst"],
                                      max_outstanding=self.p["max_outstanding"])
        self.bursts = self.axi_mon.bursts

    async def reset(self):
        d = self.dut
        d.rst.value = 1
        d.i_cmd__valid.value = 0
        d.o__ready.value = 0
        await ClockCycles(d.clk, 3)
        d.rst.value = 0
        await ClockCycles(d.clk, 2)

    async def _sink(self):
        """Collect output words; random ready; stream-rule monitor (valid held, payload stable)."""
        d = self.dut
        pending = None
        while True:
            await RisingEdge(d.clk)
            valid = int(d.o__valid.value)
            ready = int(d.o__ready.value)
            if valid:
                payload = d.o__payload.value.to_unsigned()
                if pending is not None:
                    assert payload == pending, "o payload changed while valid and not ready"
                if ready:
                    self.words.append((payload & ((1 << self.vb * self.lanes) - 1),
                                       payload >> (self.vb * self.lanes)))
                    pending = None
                else:
                    pending = payload
            else:
                assert pending is None, "o valid dropped before the transfer"
            d.o__ready.value = int(self.rng.random() < self.ready_p)

    async def fetch(self, addr: int, first: int, count: int, timeout: int = 200_000) -> int:
        """Run one command; return cycles from acceptance to the done pulse."""
        return await self.fetch_seq([(addr, first, count)], timeout)

    async def fetch_seq(self, cmds, timeout: int = 400_000) -> int:
        """Issue commands back to back (each as soon as it is accepted); wait for all done
        pulses; return cycles from the first acceptance to the last done."""
        d = self.dut
        aw, cw = self.p["addr_width"], self.p["count_width"]
        self.words.clear()
        self.bursts.clear()
        dones = 0
        cycles = 0
        started = False
        for addr, first, count in cmds:
            d.i_cmd__payload.value = addr | (first << aw) | (count << (aw + cw))
            d.i_cmd__valid.value = 1
            while True:
                await RisingEdge(d.clk)
                dones += int(d.done.value)
                cycles += started
                if int(d.i_cmd__ready.value):
                    break
            started = True
        d.i_cmd__valid.value = 0
        while dones < len(cmds):
            await RisingEdge(d.clk)
            cycles += 1
            dones += int(d.done.value)
            assert cycles < timeout, f"{dones} done after {timeout} cycles"
        await RisingEdge(d.clk)
        assert not int(d.busy.value)
        assert not int(d.error.value)
        return cycles

    def check(self, vectors: np.ndarray, addr: int, first: int, count: int):
        """Compare collected words with vectors[first:first+count] (codes [n, T])."""
        self.check_seq(vectors, [(addr, first, count)])

    def check_seq(self, vectors: np.ndarray, cmds):
        """Words of back-to-back commands: each ends with ``last``; exact vectors; bursts."""
        pos = 0
        plan = []
        for ci, (addr, first, count) in enumerate(cmds):
            n_words = count // self.lanes
            seg = self.words[pos:pos + n_words]
            pos += n_words
            want = vectors[first:first + n_words * self.lanes]
            got = []
            for i, (word, last) in enumerate(seg):
                assert last == (i == n_words - 1), f"command {ci} word {i}: last={last}"
                for j in range(self.lanes):
                    v = (word >> (j * self.vb)) & ((1 << self.vb) - 1)
                    got.append([(v >> (5 * t)) & 31 for t in range(self.t)])
            got = np.array(got, dtype=np.uint8).reshape(-1, self.t)
            assert got.shape == want.shape, \
                f"command {ci}: got {got.shape[0]} vectors, want {want.shape[0]}"
            bad = np.nonzero(np.any(got != want, axis=1))[0]
            assert bad.size == 0, f"command {ci}: {bad.size} vectors differ, first at " \
                                  f"{bad[0]}: {got[bad[0]].tolist()} != {want[bad[0]].tolist()}"
            plan += stream_plan(addr=addr, first=first, count=count, t=self.t,
                                lanes=self.lanes, data_width=self.dw,
                                max_burst=self.p["max_burst"])
        assert pos == len(self.words), f"{len(self.words) - pos} extra words"
        assert self.bursts == plan, f"bursts {self.bursts[:4]}... != plan {plan[:4]}..."


def _matrix(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.integers(-1, 2, size=(n, k), dtype=np.int8)


@cocotb.test()
async def test_stream_layout(dut):
    """Whole matrices, tiles, unaligned/ragged ranges, page crossings, under random stalls."""
    tb = TB(dut)
    await tb.reset()
    seeds = [int(s) for s in os.environ.get("SEEDS", "1").split(",")]
    q = tb.p["q"]
    lanes = tb.lanes
    for seed in seeds:
        rng = np.random.default_rng(seed)
        prng = random.Random(seed)
        tb.rng = prng
        # ragged shapes: neither N nor K a multiple of the tile
        n = int(rng.integers(2 * q + 1, 5 * q)) | 1
        k = int(rng.integers(10 * tb.t * 3, 40 * tb.t * 3)) | 1
        codes = layout_codes(_matrix(rng, n, k), tb.t, q)        # [NB, KB, Q, T]
        nb, kb = codes.shape[:2]
        vectors = codes.reshape(-1, tb.t)                        # buffer order
        stream = pack_codes(codes).tobytes()
        nvec = vectors.shape[0]
        base = 0x1000 * int(rng.integers(1, 8)) - int(rng.integers(1, 200))  # crosses a page
        tb.ram.write(base, stream)
        per_block = kb * q
        cases = [(0, nvec)]                                       # the whole linear
        cases.append((per_block, 2 * per_block))                  # a 2-column-block tile
        cases.append((nvec - per_block, per_block))               # the last tile
        if lanes == 1:                                            # ragged ranges
            cases += [(1, 1), (3, 7), (int(rng.integers(0, nvec // 2)), nvec // 3 + 1)]
        else:
            cases += [(lanes, lanes), (3 * lanes, 5 * lanes)]
        stalls = [(0.0, 0.0, 1.0), (0.3, 0.3, 0.5), (0.0, 0.5, 0.8), (0.5, 0.0, 0.3)]
        for ci, (first, count) in enumerate(cases):
            p_ar, p_r, p_ready = stalls[(ci + seed) % len(stalls)]
            tb.ram.ar_channel.set_pause_generator(pause_generator(prng, p_ar) if p_ar else None)
            tb.ram.r_channel.set_pause_generator(pause_generator(prng, p_r) if p_r else None)
            tb.ready_p = p_ready
            cyc = await tb.fetch(base, first, count)
            tb.check(vectors, base, first, count)
            dut._log.info("seed %d case %d: %d vectors in %d cycles (stalls %s)", seed, ci,
                          count, cyc, (p_ar, p_r, p_ready))
            tb.ram.ar_channel.set_pause_generator(None)
            tb.ram.r_channel.set_pause_generator(None)
            tb.ram.ar_channel.pause = False
            tb.ram.r_channel.pause = False
    # back to back: the tiles of a linear, then a ragged range, without waiting in between
    tb.ram.ar_channel.set_pause_generator(pause_generator(prng, 0.2))
    tb.ram.r_channel.set_pause_generator(pause_generator(prng, 0.2))
    tb.ready_p = 0.7
    tiles = [(base, nb0 * per_block, min(2, nb - nb0) * per_block) for nb0 in range(0, nb, 2)]
    tiles.append((base, lanes * 3, lanes * 5))
    await tb.fetch_seq(tiles)
    tb.check_seq(vectors, tiles)
    tb.ram.ar_channel.set_pause_generator(None)
    tb.ram.r_channel.set_pause_generator(None)
    tb.ram.ar_channel.pause = False
    tb.ram.r_channel.pause = False
    # zero-length command completes at once with no bursts
    tb.ready_p = 1.0
    await tb.fetch(0x40, 0, 0)
    assert tb.words == [] and tb.bursts == []


@cocotb.test()
async def test_stream_rate(dut):
    """No stalls: the stream sustains min(data_width, lanes*5*T) bits per cycle.

    AxiRamRead returns back-to-back bursts without gaps; the bound allows 2% plus the pipeline
    fill, so a lost cycle per burst (1/16 at most here), per beat or per word fails it.
    """
    tb = TB(dut)
    await tb.reset()
    tb.ready_p = 1.0
    rng = np.random.default_rng(7)
    q = tb.p["q"]
    codes = layout_codes(_matrix(rng, 8 * q, 40 * tb.t * 3), tb.t, q)
    vectors = codes.reshape(-1, tb.t)
    tb.ram.write(0, pack_codes(codes).tobytes())
    count = vectors.shape[0]
    cyc = await tb.fetch(0, 0, count)
    tb.check(vectors, 0, 0, count)
    bits = count * tb.vb
    beats = -(-bits // tb.dw)
    words = count // tb.lanes
    bursts = len(tb.bursts)
    ideal = max(beats, words)
    bound = int(ideal * 1.02) + 20
    dut._log.info("rate: %d vectors, %d beats, %d words, %d bursts: %d cycles (ideal %d, "
                  "bound %d)", count, beats, words, bursts, cyc, ideal, bound)
    assert cyc <= bound, f"{cyc} cycles > bound {bound} (ideal {ideal})"
