"""DDR timing model for cocotb: an AXI4 read slave with a fixed latency and a bandwidth cap.

cocotbext-axi's ``AxiRam`` answers one burst at a time at one beat per cycle with no latency;
that tests the protocol, not the throughput. This model answers the performance question:

* every read burst's first beat is available ``latency`` cycles after its AR handshake;
  bursts are pipelined (up to ``max_queued`` accepted ARs) and return in order;
* R beats are paced by a byte-credit bucket refilled at ``peak_gbps * efficiency`` bytes per
  second at the simulated clock (``bytes_per_cycle``); the bucket holds at most two beats, so
  idle time is not banked into a burst faster than the DDR could deliver.

Only INCR bursts are modelled (the weight streamer issues nothing else); the test fails on a
4 KB page crossing. The memory is a NumPy uint8 array (byte address = index).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly

from tellme.spec.targets import TARGETS


@dataclass(frozen=True)
class DdrTiming:
    """Stated assumptions of the model (printed by the benchmark beside every figure)."""

    clock_mhz: float = 250.0
    peak_gbps: float = TARGETS["kv260"].ddr_peak_gbps   # as TeLLMe reports: 2133 MT/s x 64 bit
    efficiency: float = 0.85         # sustained fraction of peak for long sequential reads
    latency: int = 48                # cycles from AR handshake to first R beat (192 ns at 250 MHz)
    max_queued: int = 16             # read bursts the controller accepts ahead

    @property
    def bytes_per_cycle(self) -> float:
        return self.peak_gbps * 1e9 * self.efficiency / (self.clock_mhz * 1e6)

    def describe(self) -> str:
        return (f"DDR model: {self.peak_gbps} GB/s peak x {self.efficiency:.2f} efficiency "
                f"= {self.peak_gbps * self.efficiency:.2f} GB/s sustained "
                f"= {self.bytes_per_cycle:.2f} B/cycle at {self.clock_mhz:g} MHz; "
                f"read latency {self.latency} cycles "
                f"({self.latency * 1e3 / self.clock_mhz:.0f} ns); "
                f"{self.max_queued} bursts accepted ahead; in-order return")


class DdrReadModel:
    """AXI4 read slave on ``<prefix>_ar*``/``<prefix>_r*`` of ``dut`` (see module docstring).

    Drives inputs just after the falling edge and samples handshakes at ``ReadOnly`` (the
    discipline of ``tellme.sim.drivers``). Counts ``beats`` and ``bursts`` served.
    """

    def __init__(self, dut, mem: np.ndarray, timing: DdrTiming = DdrTiming(),
                 prefix: str = "m_axi"):
        self.dut = dut
        self.mem = np.asarray(mem, dtype=np.uint8)
        self.timing = timing
        self.sig = {n: getattr(dut, f"{prefix}_{n}") for n in
                    ("arvalid", "arready", "araddr", "arlen", "arsize", "arburst",
                     "rvalid", "rready", "rdata", "rlast", "rresp", "rid")}
        self.nbytes = len(self.sig["rdata"]) // 8
        self.beats = 0
        self.bursts = 0
        self.cycle = 0
        self.busy_cycles = 0          # cycles with at least one burst outstanding
        self._queue: deque[list[int]] = deque()   # [addr, beats_left, ready_cycle]
        self.sig["arready"].value = 0
        self.sig["rvalid"].value = 0
        self.sig["rresp"].value = 0
        self.sig["rid"].value = 0
        self._task = cocotb.start_soon(self._run())

    def _beat(self, addr: int) -> int:
        end = addr + self.nbytes
        if end > self.mem.size:
            raise AssertionError(f"DDR read at {addr:#x} beyond the {self.mem.size}-byte memory")
        return int.from_bytes(self.mem[addr:end].tobytes(), "little")

    async def _run(self):
        t = self.timing
        s = self.sig
        rate = t.bytes_per_cycle
        cap = 2 * self.nbytes
        credit = 0.0
        offered = False                  # an R beat is on the bus
        lg = self.nbytes.bit_length() - 1
        while True:
            await FallingEdge(self.dut.clk)
            self.cycle += 1
            credit = min(cap, credit + rate)
            if self._queue:
                self.busy_cycles += 1
            s["arready"].value = int(len(self._queue) < t.max_queued)
            if not offered and self._queue:
                head = self._queue[0]
                if head[2] <= self.cycle and credit >= self.nbytes:
                    s["rdata"].value = self._beat(head[0])
                    s["rlast"].value = int(head[1] == 1)
                    s["rvalid"].value = 1
                    offered = True
            if not offered:
                s["rvalid"].value = 0
            await ReadOnly()
            if offered and int(s["rready"].value):
                offered = False
                credit -= self.nbytes
                self.beats += 1
                head = self._queue[0]
                head[0] += self.nbytes
                head[1] -= 1
                if head[1] == 0:
                    self._queue.popleft()
            if int(s["arvalid"].value) and int(s["arready"].value):
                addr = int(s["araddr"].value)
                beats = int(s["arlen"].value) + 1
                if int(s["arburst"].value) != 1 or int(s["arsize"].value) != lg:
                    raise AssertionError("DDR model: only full-width INCR bursts are modelled")
                if addr % 4096 + beats * self.nbytes > 4096:
                    raise AssertionError(f"DDR model: burst {addr:#x}+{beats} crosses 4 KB")
                self._queue.append([addr, beats, self.cycle + t.latency])
                self.bursts += 1
