"""Shared cocotb 2.x drivers for Amaranth stream ports.

Amaranth flattens a ``stream.Signature`` port named ``x`` into ``x__valid``, ``x__ready`` and
``x__payload`` (the payload layout packed LSB-first in field order), plus ``clk`` and a
synchronous active-high ``rst``. The classes here bind to those names.

Timing discipline (docs/toolchain.md §3): inputs are driven just after the falling edge, the
handshake is sampled after ``ReadOnly`` in the same half cycle, and the transfer counts at the
next rising edge. Nothing is written after ``ReadOnly`` until the next falling edge.

Typical use::

    clk = await start_clock_and_reset(dut)
    src = StreamSource(dut, "i_act", idle_prob=0.3, seed=1)
    snk = StreamSink(dut, "o", backpressure_prob=0.3, seed=2)
    StreamMonitor(dut, "o")          # fails the test on a protocol violation
    src.send([pack_array(row, 8) for row in x])
    beats = await snk.wait_for(n)
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

# Packing helpers live in a cocotb-free module (the Amaranth-sim tests use them too).
from .payload import layout_fields, pack_array, pack_struct, to_signed, unpack_array, unpack_struct  # noqa: F401

CLOCK_NS = 10


# --------------------------------------------------------------------------- clock and reset

async def start_clock_and_reset(dut, cycles: int = 4, period_ns: int = CLOCK_NS):
    """Start ``dut.clk`` and hold ``dut.rst`` for ``cycles`` rising edges."""
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


class CycleCounter:
    """Counts rising edges from construction (after reset) to read the time of events."""

    def __init__(self, dut):
        self.cycle = 0
        cocotb.start_soon(self._run(dut.clk))

    async def _run(self, clk):
        while True:
            await RisingEdge(clk)
            self.cycle += 1


# --------------------------------------------------------------------------- streams

def _port(dut, prefix: str, field: str):
    name = f"{prefix}__{field}"
    try:
        return getattr(dut, name)
    except AttributeError:
        raise AttributeError(f"DUT has no port {name!r} (stream {prefix!r})") from None


class StreamSource:
    """Drives ``<prefix>__valid/__payload`` and transfers when ``<prefix>__ready`` is high.

    ``idle_prob``: probability of holding valid low for a cycle between beats (random idle).
    """

    def __init__(self, dut, prefix: str, *, idle_prob: float = 0.0, seed: int = 0):
        self.clk = dut.clk
        self.valid = _port(dut, prefix, "valid")
        self.ready = _port(dut, prefix, "ready")
        self.payload = _port(dut, prefix, "payload")
        self.name = prefix
        self.idle_prob = idle_prob
        self.rng = random.Random(seed)
        self.queue: deque[int] = deque()
        self.sent = 0
        self.transfer_cycles: list[int] = []
        self._cycle = 0
        self.valid.value = 0
        self.payload.value = 0
        cocotb.start_soon(self._run())

    def send(self, payloads: Iterable[int]) -> None:
        self.queue.extend(int(p) for p in payloads)

    @property
    def idle(self) -> bool:
        return not self.queue

    async def wait_idle(self) -> None:
        while self.queue:
            await RisingEdge(self.clk)

    async def _run(self):
        busy = False
        while True:
            await FallingEdge(self.clk)
            self._cycle += 1
            if not busy and self.queue:
                if self.idle_prob and self.rng.random() < self.idle_prob:
                    self.valid.value = 0
                else:
                    self.payload.value = self.queue[0]
                    self.valid.value = 1
                    busy = True
            elif not busy:
                self.valid.value = 0
            await ReadOnly()
            if busy and int(self.ready.value):
                self.queue.popleft()
                self.sent += 1
                self.transfer_cycles.append(self._cycle)
                busy = False
                # valid is lowered (or reloaded) at the next falling edge


class StreamSink:
    """Collects ``<prefix>__payload`` ints; ``backpressure_prob`` holds ready low at random."""

    def __init__(self, dut, prefix: str, *, backpressure_prob: float = 0.0, seed: int = 0):
        self.clk = dut.clk
        self.valid = _port(dut, prefix, "valid")
        self.ready = _port(dut, prefix, "ready")
        self.payload = _port(dut, prefix, "payload")
        self.name = prefix
        self.backpressure_prob = backpressure_prob
        self.rng = random.Random(seed)
        self.beats: list[int] = []
        self.transfer_cycles: list[int] = []
        self._cycle = 0
        self.ready.value = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await FallingEdge(self.clk)
            self._cycle += 1
            stall = self.backpressure_prob and self.rng.random() < self.backpressure_prob
            self.ready.value = 0 if stall else 1
            await ReadOnly()
            if not stall and int(self.valid.value):
                self.beats.append(int(self.payload.value))
                self.transfer_cycles.append(self._cycle)

    async def wait_for(self, count: int, timeout_cycles: int = 1_000_000) -> list[int]:
        """Wait until ``count`` beats arrived; return them (raises TimeoutError)."""
        for _ in range(timeout_cycles):
            if len(self.beats) >= count:
                return self.beats[:count]
            await RisingEdge(self.clk)
        raise TimeoutError(f"stream {self.name!r}: {len(self.beats)} of {count} beats after "
                           f"{timeout_cycles} cycles")


class StreamMonitor:
    """Stream-rule checker: once ``valid`` is high it stays high with the same payload until
    ``ready`` accepts the beat. Any violation raises in the monitor task, failing the test
    (``raise_on_error=False`` only records it in ``errors``). Also counts transfers.
    """

    def __init__(self, dut, prefix: str, *, raise_on_error: bool = True):
        self.raise_on_error = raise_on_error
        self.clk = dut.clk
        self.rst = dut.rst
        self.valid = _port(dut, prefix, "valid")
        self.ready = _port(dut, prefix, "ready")
        self.payload = _port(dut, prefix, "payload")
        self.name = prefix
        self.transfers = 0
        self.errors: list[str] = []
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        pending = None          # payload of a beat offered but not taken in the previous cycle
        cycle = 0
        while True:
            await FallingEdge(self.clk)
            await ReadOnly()
            cycle += 1
            if int(self.rst.value):
                pending = None
                continue
            valid = int(self.valid.value)
            payload = int(self.payload.value) if valid else None
            if pending is not None:
                if not valid:
                    self._fail(f"cycle {cycle}: valid dropped before the beat was accepted")
                elif payload != pending:
                    self._fail(f"cycle {cycle}: payload changed before the beat was accepted "
                               f"({pending:#x} -> {payload:#x})")
            if valid and int(self.ready.value):
                self.transfers += 1
                pending = None
            else:
                pending = payload

    def _fail(self, msg: str):
        self.errors.append(msg)
        if self.raise_on_error:
            raise AssertionError(f"stream {self.name!r} protocol violation: {msg}")

    def check(self) -> None:
        """Raise if any violation was seen (call at the end of a test as well)."""
        if self.errors:
            raise AssertionError(f"stream {self.name!r}: {self.errors[0]}")


async def send_and_wait(clk, src: StreamSource, item, count, *, limit: int = 500_000,
                        what: str = "") -> int:
    """Send one ``item`` on ``src`` and wait until ``count()`` (a pulse counter kept by the
    testbench) moves; returns the cycles waited. Fails after ``limit`` cycles."""
    n0 = count()
    src.send([item])
    cycles = 0
    while count() == n0:
        await RisingEdge(clk)
        cycles += 1
        assert cycles < limit, f"no done after {cycles} cycles ({what})"
    return cycles


def pause_generator(rng: random.Random, p: float):
    """Endless pause pattern for cocotbext-axi channels: pause with probability ``p``."""
    while True:
        yield rng.random() < p


class AxiReadMonitor:
    """Checks every AR burst of an AXI4 read master and counts bursts in flight.

    Each accepted AR must be INCR, aligned to the bus width, with ``arsize`` = the bus width,
    at most ``max_burst`` beats, inside one 4 KB page; at most ``max_outstanding`` (+1 for the
    cycle a new AR overlaps the last R beat) bursts may be in flight. Accepted bursts are
    appended to ``bursts`` as (address, beats).
    """

    def __init__(self, dut, prefix: str, *, data_width: int, max_burst: int,
                 max_outstanding: int):
        self.dut = dut
        self.prefix = prefix
        self.nbytes = data_width // 8
        self.max_burst = max_burst
        self.max_outstanding = max_outstanding
        self.bursts: list[tuple[int, int]] = []
        self.max_in_flight = 0
        cocotb.start_soon(self._run())

    def _sig(self, name: str):
        return getattr(self.dut, f"{self.prefix}_{name}")

    async def _run(self):
        in_flight = 0
        nbytes = self.nbytes
        clk = self.dut.clk
        while True:
            await RisingEdge(clk)
            if int(self._sig("arvalid").value) and int(self._sig("arready").value):
                addr = self._sig("araddr").value.to_unsigned()
                beats = self._sig("arlen").value.to_unsigned() + 1
                assert addr % nbytes == 0, f"unaligned burst address {addr:#x}"
                assert beats <= self.max_burst, f"burst of {beats} beats"
                assert addr // 4096 == (addr + beats * nbytes - 1) // 4096, \
                    f"burst {addr:#x}+{beats} crosses a 4 KB page"
                assert self._sig("arsize").value.to_unsigned() == nbytes.bit_length() - 1
                assert self._sig("arburst").value.to_unsigned() == 1, "not an INCR burst"
                self.bursts.append((addr, beats))
                in_flight += 1
            if int(self._sig("rvalid").value) and int(self._sig("rready").value) \
                    and int(self._sig("rlast").value):
                in_flight -= 1
            self.max_in_flight = max(self.max_in_flight, in_flight)
            assert in_flight <= self.max_outstanding + 1, "too many bursts in flight"
