"""``GoldenDevice``: the executable specification of the accelerator behind the device
interface (docs/driver.md). NumPy only; not the RTL.

Registers follow ``spec/registers.py`` (reset values, RO/RW/W1C/W1S, unmapped offsets read 0
and set ``ERR_FLAGS.BAD_REG``, 64-bit counters latch HI on the LO read), the DDR is a NumPy
image (``sim.golden.program_exec.Ddr``), and ``CMD.START`` runs the program at ``PROG_ADDR``
with the golden sequencer as the run protocol of docs/hw/registers.md and the error rules of
docs/hw/sequencer.md say: a program that fails a check ends with ``BAD_PROGRAM`` and the
decoder's code and record (0xFFFF: the header), an access outside the DDR window with
``ADDRESS``, an access outside the DDR with ``AXI_DECERR``. The run completes inside the START
write (no clock): ``CYCLES`` stays 0; ``RD_BEATS``/``WR_BEATS`` count the nominal 128-bit beats
of the records' accesses.

Host buffers are separate copies of the DDR ranges (a cacheable buffer): data crosses only on
``sync_to_device``/``sync_from_device``, so a driver that forgets one gets wrong results here.

Injected faults (:meth:`GoldenDevice.inject`, one run each): ``hang`` (BUSY forever, never
DONE: only the driver's timeout and SOFT_RESET end it), ``axi_slverr``/``axi_decerr`` (the
run stops with that flag and port at a chosen record).
"""

from __future__ import annotations

import numpy as np

from tellme.sim.golden.program_exec import Ddr, DdrError, Sequencer, fetch_program
from tellme.spec.memory_map import ADDR_BITS, PAGE, align
from tellme.spec.program import ProgramError, accesses
from tellme.spec.registers import PORTS, REGISTERS, REGS, UNMAPPED_FLAG, const_words
from tellme.spec.targets import target as get_target

from .device import Device, DeviceBuffer, DeviceError

FAULTS = ("hang", "axi_slverr", "axi_decerr")
_HEADER = 0xFFFF
_BEAT = 16                                  # bytes per 128-bit AXI beat


class GoldenBuffer(DeviceBuffer):
    def __init__(self, dev: GoldenDevice, addr: int, nbytes: int):
        self.dev, self.device_address, self.nbytes = dev, addr, nbytes
        self._host = np.zeros(nbytes, dtype=np.uint8)
        self.syncs = {"to": 0, "from": 0}

    @property
    def host(self) -> np.ndarray:
        return self._host

    def _range(self, offset, nbytes):
        off, n = self.span(offset, nbytes)
        return self.device_address + off, off, n

    def sync_to_device(self, offset=0, nbytes=None):
        addr, off, n = self._range(offset, nbytes)
        self.dev.ddr.write(addr, self._host[off:off + n])
        self.syncs["to"] += 1

    def sync_from_device(self, offset=0, nbytes=None):
        addr, off, n = self._range(offset, nbytes)
        self._host[off:off + n] = self.dev.ddr.read(addr, n)
        self.syncs["from"] += 1

    def free(self):
        self.dev._free(self)


class GoldenDevice(Device):
    """The accelerator of ``target`` (its CAP_* words, ``build_hash`` in BUILD_HASH) with
    ``memory_bytes`` of DDR at physical ``base`` (default: the target's CMA size, 256 MiB for
    targets without one). ``const_overrides``: {register: word} to model another build (the
    ID-mismatch tests)."""

    name = "golden-device"

    def __init__(self, target: str = "kv260", build_hash: int = 0,
                 memory_bytes: int | None = None, base: int = 0x6000_0000,
                 const_overrides: dict | None = None):
        tgt = get_target(target)
        self.target = tgt.name
        if memory_bytes is None:
            memory_bytes = tgt.cma_bytes or 256 << 20
        if base % PAGE:
            raise ValueError(f"base {base:#x} is not 4 KiB aligned")
        self.budget_bytes = memory_bytes
        self.ddr = Ddr(base, memory_bytes)           # np.zeros: pages appear when touched
        self._consts = {**const_words(tgt, build_hash), **(const_overrides or {})}
        self._regs = {r.name: r.reset for r in REGISTERS if not r.counter}
        self._counters = {r.name: 0 for r in REGISTERS if r.counter}
        self._hi_latch = 0
        self._by_offset = {}
        for r in REGISTERS:
            for w in range(r.words):
                self._by_offset[r.offset + 4 * w] = (r, w)
        self._next = base
        self._live: list[GoldenBuffer] = []
        self._fault: tuple | None = None
        self.seq = Sequencer(self.ddr)
        self.runs = 0

    # -- buffers ------------------------------------------------------------------------------

    def allocate(self, nbytes: int) -> GoldenBuffer:
        size = align(max(int(nbytes), 1), PAGE)
        used = self._next - self.ddr.base
        if used + size > self.ddr.mem.size:
            raise DeviceError(f"cannot allocate {size:,} bytes: {self.ddr.mem.size - used:,} "
                              f"of the device's {self.ddr.mem.size:,} bytes are free")
        buf = GoldenBuffer(self, self._next, int(nbytes))
        self._next += size
        self._live.append(buf)
        self.seq = Sequencer(self.ddr)               # new contents: drop cached weights
        return buf

    def _free(self, buf: GoldenBuffer) -> None:
        if buf in self._live:
            self._live.remove(buf)
        if not self._live:
            self._next = self.ddr.base

    # -- registers ----------------------------------------------------------------------------

    def read32(self, offset: int) -> int:
        hit = self._by_offset.get(offset & ~3)
        if hit is None:
            self._set_flags(**{UNMAPPED_FLAG[1]: 1})
            return 0
        r, w = hit
        if r.name in self._consts:
            return self._consts[r.name]
        if r.counter:
            v = self._counters[r.name]
            if r.counter == 64:
                if w == 0:
                    self._hi_latch = (v >> 32) & 0xFFFF_FFFF
                    return v & 0xFFFF_FFFF
                return self._hi_latch
            return v & 0xFFFF_FFFF
        if r.access == "W1S":
            return 0
        return self._regs[r.name]

    def write32(self, offset: int, value: int) -> None:
        value &= 0xFFFF_FFFF
        hit = self._by_offset.get(offset & ~3)
        if hit is None:
            self._set_flags(**{UNMAPPED_FLAG[1]: 1})
            return
        r, _ = hit
        if r.access == "RW":
            self._regs[r.name] = value & sum(f.mask for f in r.fields)
        elif r.access == "W1C":
            self._regs[r.name] &= ~value
        elif r.access == "W1S":
            if value & REGS["CMD"].field("SOFT_RESET").mask:
                self._soft_reset()
            if value & REGS["CMD"].field("START").mask:
                self._start()

    @property
    def irq(self) -> bool:
        """The interrupt line: OR(IRQ_STATUS & CTRL enables)."""
        ctrl, irq = self._regs["CTRL"], self._regs["IRQ_STATUS"]
        return bool((irq & 1 and ctrl & 1) or (irq & 2 and ctrl & 2))

    def _set_flags(self, **flags):
        r = REGS["ERR_FLAGS"]
        for name, v in flags.items():
            if v:
                self._regs["ERR_FLAGS"] |= r.field(name).mask

    def _status(self, busy=0, done=0, error=0, record=0):
        self._regs["STATUS"] = busy | done << 1 | error << 2 | (record & 0xFFFF) << 16

    # -- faults -------------------------------------------------------------------------------

    def inject(self, fault: str, record: int = 0, port: str = "kv/act") -> None:
        """Make the next START fail with ``fault`` (one of :data:`FAULTS`) at ``record``;
        ``port``: the AXI port of an AXI error (spec.registers.PORTS)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; faults: {', '.join(FAULTS)}")
        self._fault = (fault, record, PORTS.index(port))

    # -- the sequencer ------------------------------------------------------------------------

    def _soft_reset(self):
        s = self._regs["STATUS"]
        if s & 1:                                   # abort: idle, neither DONE nor ERROR
            self._status(record=s >> 16)

    def _error(self, flag: str, code=0, record=_HEADER, port=0, addr=0):
        self._set_flags(**{flag: 1})
        if not self._regs["ERR_INFO"]:              # first error's details
            self._regs["ERR_INFO"] = (port & 0xF) | (code & 0xFF) << 8 | (record & 0xFFFF) << 16
            self._regs["ERR_ADDR_LO"] = addr & 0xFFFF_FFFF
            self._regs["ERR_ADDR_HI"] = addr >> 32
        self._status(error=1, record=record)
        self._regs["IRQ_STATUS"] |= 2

    def _start(self):
        if self._regs["STATUS"] & 1:                 # ignored while BUSY
            return
        self.runs += 1
        for name in self._counters:
            self._counters[name] = 0
        self._regs["ERR_INFO"] = 0
        self._status(busy=1)
        prog = self._regs["PROG_ADDR_LO"] | self._regs["PROG_ADDR_HI"] << 32
        fault, self._fault = self._fault, None
        if fault and fault[0] == "hang":
            self._status(busy=1, record=fault[1])   # never DONE: the driver's timeout fires
            return
        if prog % 64 or prog >> ADDR_BITS or not self._in_window(prog, 64):
            return self._error("BAD_PROGRAM", code=9, addr=prog)
        try:
            p = fetch_program(self.ddr, prog, None, self.target)
        except ProgramError as e:
            rec = _HEADER if e.record is None else e.record
            return self._error("BAD_PROGRAM", e.code, rec,
                               addr=prog if e.record is None else prog + 64 * (rec + 1))
        except DdrError:
            return self._error("AXI_DECERR", port=PORTS.index("program"), addr=prog)
        for i, r in enumerate(p.records):
            for _, addr, _, _ in accesses(r, p):
                if addr >> ADDR_BITS or not self._in_window(addr, 1):
                    return self._error("BAD_PROGRAM", 9, i, addr=addr)
        if fault:
            flag = "AXI_SLVERR" if fault[0] == "axi_slverr" else "AXI_DECERR"
            return self._error(flag, record=fault[1], port=fault[2],
                               addr=prog + 64 * (fault[1] + 1))
        try:
            stats = self.seq.run(p)
        except ProgramError as e:                   # a run-time field check (token id)
            return self._error("BAD_PROGRAM", e.code, e.record or 0)
        except DdrError:
            return self._error("AXI_DECERR", record=0, port=PORTS.index("kv/act"))
        self._counters["RD_BEATS"] = -(-stats.read_bytes // _BEAT)
        self._counters["WR_BEATS"] = -(-stats.write_bytes // _BEAT)
        self._status(done=1, record=len(p.records) - 1)
        self._regs["IRQ_STATUS"] |= 1

    def _in_window(self, addr: int, n: int) -> bool:
        size = self._regs["WIN_SIZE_LO"] | self._regs["WIN_SIZE_HI"] << 32
        if not size:
            return True
        base = self._regs["WIN_BASE_LO"] | self._regs["WIN_BASE_HI"] << 32
        return base <= addr and addr + n <= base + size


__all__ = ["GoldenDevice", "GoldenBuffer", "FAULTS"]
