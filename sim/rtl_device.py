"""``RtlDevice``: the accelerator's device interface (``tellme.spec.device.Device``, the one the
host driver uses) over the Verilator build of ``hw/top.py``, inside a cocotb test
(docs/driver.md, "The RTL simulation device").

How the synchronous driver meets the simulator: the driver runs in a thread started with
cocotb 2.1's ``cocotb.task.bridge`` from the cocotb test (:meth:`RtlDevice.run`); every
device operation that needs simulated time (an AXI4-Lite access, waiting for the end of a
run) is a coroutine called through ``cocotb.task.resume``, which blocks the driver's thread
while the simulator runs it. The simulator never runs in parallel with the driver's code.

* MMIO: cocotbext-axi ``AxiLiteMaster`` on ``s_axil_*``.
* Device memory: one sparse 2^40-byte memory (cocotbext-axi ``SparseMemory``) behind
  ``AxiRam`` models on all four masters (``m_axi_w0..2``, ``m_axi_kv``), so every master sees
  the same DDR. :meth:`fail_reads` makes reads of an address range answer SLVERR (fault tests).
* ``allocate``: page-aligned buffers from ``base`` up (``memory_bytes`` in all); the host view
  is a separate NumPy copy, so ``sync_to_device``/``sync_from_device`` copy (a driver that
  forgets one gets wrong data, as on a cacheable board buffer).
* ``wait``: steps the clock in chunks until ``irq`` rises, polling ``STATUS`` between chunks
  (so a run without interrupt enables ends too), until ``timeout_s`` of wall time or
  ``max_wait_cycles`` simulated cycles (if set) have passed.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from tellme.spec.device import Device, DeviceBuffer, DeviceError
from tellme.spec.memory_map import ADDR_BITS, PAGE, align

__all__ = ["RtlDevice", "RtlBuffer", "CopyBuffer", "CLOCK_NS", "TOP_BUILD_ARGS", "TOP_MAKEFLAGS",
           "run_top"]

CLOCK_NS = 4                    # 250 MHz, the targets' clock (spec/targets.py)
#: Verilator options of every top build: cocotb's runner makes every signal VPI-visible
#: (``--public-flat-rw``), which keeps Verilator from optimising the datapaths (the sim-demo
#: build's (T, Q) = (28, 16) TLMM above all); RtlDevice touches only the top's ports, so only
#: depth 1 is public. With the C++ at -O1 (``TOP_MAKEFLAGS``, not the wheel's -Os: no slower
#: to simulate here) the demo test went from 345 s to about 75 s cold on 2 cores (simulation
#: 6.1K -> 17K cycles/s; the C++ build about 100 s -> 65 s).
TOP_BUILD_ARGS = ("--no-public-flat-rw", "--public-depth", "1")
TOP_MAKEFLAGS = "OPT_FAST=-O1"
MASTERS = ("m_axi_w0", "m_axi_w1", "m_axi_w2", "m_axi_kv")


class CopyBuffer(DeviceBuffer):
    """A buffer in a simulated DDR whose ``host`` view is a separate NumPy copy: the syncs copy
    through :meth:`_put` / :meth:`_get` (device address, bytes)."""

    def __init__(self, dev, addr: int, nbytes: int):
        self.dev, self.device_address, self.nbytes = dev, addr, nbytes
        self._host = np.zeros(nbytes, dtype=np.uint8)

    @property
    def host(self) -> np.ndarray:
        return self._host

    def sync_to_device(self, offset=0, nbytes=None):
        off, n = self.span(offset, nbytes)
        self._put(self.device_address + off, self._host[off:off + n].tobytes())

    def sync_from_device(self, offset=0, nbytes=None):
        off, n = self.span(offset, nbytes)
        self._host[off:off + n] = np.frombuffer(self._get(self.device_address + off, n),
                                                dtype=np.uint8)

    def _put(self, addr: int, data: bytes) -> None:
        raise NotImplementedError

    def _get(self, addr: int, n: int) -> bytes:
        raise NotImplementedError


class RtlBuffer(CopyBuffer):
    """A buffer in the simulated DDR of an :class:`RtlDevice`."""

    def _put(self, addr, data):
        self.dev.mem.write(addr, data)

    def _get(self, addr, n):
        return self.dev.mem.read(addr, n)

    def free(self):
        self.dev._free(self)


class RtlDevice(Device):
    """The top's Verilator model ``dut`` as a device. Create it in the cocotb test with
    ``dev = await RtlDevice.start(dut)`` (clock, AXI models, reset), then run blocking code
    that uses it with ``await dev.run(fn, *args)``."""

    name = "rtl-sim"

    def __init__(self, dut, *, memory_bytes: int = 64 << 20, base: int = 0x6000_0000,
                 clock_ns: int = CLOCK_NS, chunk_cycles: int = 2000,
                 max_wait_cycles: int | None = None):
        from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiRamRead, AxiReadBus
        from cocotbext.axi.sparse_memory import SparseMemory

        if base % PAGE:
            raise ValueError(f"base {base:#x} is not 4 KiB aligned")
        self.dut, self.clock_ns = dut, clock_ns
        self.base, self.budget_bytes = base, memory_bytes
        self.chunk_cycles, self.max_wait_cycles = chunk_cycles, max_wait_cycles
        self.mem = SparseMemory(1 << ADDR_BITS)
        for name in ("s_axil", *MASTERS):
            logging.getLogger(f"cocotb.{dut._name}.{name}").setLevel(logging.WARNING)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.rams = {}
        for name in MASTERS:
            if name == "m_axi_kv":                     # read and write channels
                ram = AxiRam(AxiBus.from_prefix(dut, name), dut.clk, dut.rst, mem=self.mem)
                self._wrap_read(ram.read_if)
            else:                                     # the weight masters only read
                ram = AxiRamRead(AxiReadBus.from_prefix(dut, name), dut.clk, dut.rst,
                                 mem=self.mem)
                self._wrap_read(ram)
            self.rams[name] = ram
        self._bad: list[tuple[int, int]] = []
        self._next = base
        self._live: list[RtlBuffer] = []
        self.mmio_count = 0

    @classmethod
    async def start(cls, dut, **kw) -> RtlDevice:
        """Start the clock, the AXI models and a reset; return the device."""
        import cocotb
        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles

        dev = cls(dut, **kw)
        cocotb.start_soon(Clock(dut.clk, dev.clock_ns, unit="ns").start())
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        return dev

    async def run(self, fn, *args, **kw):
        """Run the blocking ``fn(*args, **kw)`` (driver code) in a bridge thread."""
        from cocotb.task import bridge

        return await bridge(fn)(*args, **kw)

    # -- faults ---------------------------------------------------------------------------------

    def _wrap_read(self, read_if):
        orig = read_if._read

        async def _read(address, length):
            if any(lo <= address < hi for lo, hi in self._bad):
                raise DeviceError(f"injected SLVERR at {address:#x}")
            return await orig(address, length)

        read_if._read = _read

    def stall_kv(self, prob: float, seed: int) -> None:
        """Random pauses (probability ``prob`` per cycle, ``random.Random(seed)``) on every
        channel of ``m_axi_kv``'s memory model (AR, R, AW, W, B)."""
        import random

        from tellme.sim.drivers import pause_generator

        prng = random.Random(seed)
        ram = self.rams["m_axi_kv"]
        for ch in (ram.read_if.ar_channel, ram.read_if.r_channel, ram.write_if.aw_channel,
                   ram.write_if.w_channel, ram.write_if.b_channel):
            ch.set_pause_generator(pause_generator(prng, prob))

    def fail_reads(self, *ranges: tuple[int, int]) -> None:
        """Reads of beats whose address lies in one of the [lo, hi) ``ranges`` answer SLVERR
        (on every master) until the next call; ``fail_reads()`` clears."""
        self._bad = [(int(lo), int(hi)) for lo, hi in ranges]

    # -- simulated time -------------------------------------------------------------------------

    @property
    def sim_cycles(self) -> int:
        """Clock cycles simulated so far."""
        from cocotb.utils import get_sim_time

        return int(get_sim_time("ns")) // self.clock_ns

    @staticmethod
    def _blocking(coro_fn, *args):
        from cocotb.task import resume

        return resume(coro_fn)(*args)

    async def _step(self, cycles: int) -> int:
        """Up to ``cycles`` clock cycles, fewer if ``irq`` rises; returns irq."""
        from cocotb.triggers import First, RisingEdge, Timer

        if not int(self.dut.irq.value):           # a Timer, not ClockCycles: no per-cycle
            await First(RisingEdge(self.dut.irq),  # Python callback of our own
                        Timer(cycles * self.clock_ns, unit="ns"))
            await RisingEdge(self.dut.clk)
        return int(self.dut.irq.value)

    def step(self, cycles: int) -> int:
        """Blocking: run ``cycles`` clock cycles (or until irq rises); returns irq."""
        return self._blocking(self._step, cycles)

    # -- the device interface ------------------------------------------------------------------

    async def _read32(self, offset: int) -> int:
        return await self.axil.read_dword(offset)

    async def _write32(self, offset: int, value: int) -> None:
        await self.axil.write_dword(offset, value)

    def read32(self, offset: int) -> int:
        self.mmio_count += 1
        return self._blocking(self._read32, offset)

    def write32(self, offset: int, value: int) -> None:
        self.mmio_count += 1
        self._blocking(self._write32, offset, value & 0xFFFF_FFFF)

    def allocate(self, nbytes: int) -> RtlBuffer:
        size = align(max(int(nbytes), 1), PAGE)
        used = self._next - self.base
        if used + size > self.budget_bytes:
            raise DeviceError(f"cannot allocate {size:,} bytes: {self.budget_bytes - used:,} "
                              f"of the device's {self.budget_bytes:,} bytes are free")
        buf = RtlBuffer(self, self._next, int(nbytes))
        self._next += size
        self._live.append(buf)
        return buf

    def _free(self, buf: RtlBuffer) -> None:
        if buf in self._live:
            self._live.remove(buf)
        if not self._live:
            self._next = self.base

    def wait(self, timeout_s: float) -> bool:
        """Step the clock until the run has ended (irq, or STATUS polled between chunks);
        False after ``timeout_s`` wall seconds or ``max_wait_cycles`` simulated cycles."""
        deadline = time.monotonic() + timeout_s
        start = self.sim_cycles
        while True:
            self.step(self.chunk_cycles)
            if self.run_ended():
                return True
            if time.monotonic() >= deadline:
                return False
            if self.max_wait_cycles is not None and \
                    self.sim_cycles - start >= self.max_wait_cycles:
                return False


def run_top(target: str, test_module: str, *, params: dict | None = None, **kw):
    """``run_cocotb`` of ``make_top(target)`` with :data:`TOP_BUILD_ARGS` and
    :data:`TOP_MAKEFLAGS` (every launcher of the top builds it the same way, so they share
    one Verilator build per design). ``params``: extra keys of the build directory."""
    import os

    from tellme.hw.top import make_top
    from tellme.sim.runner import run_cocotb
    from tellme.spec import shell

    flags = os.environ.get("MAKEFLAGS", "")
    if TOP_MAKEFLAGS not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {TOP_MAKEFLAGS}".strip()
    return run_cocotb(lambda: make_top(target), name=shell.TOP_MODULE,
                      params=dict(target=target, build_hash=0, **(params or {})),
                      test_module=test_module, build_args=list(TOP_BUILD_ARGS), **kw)
