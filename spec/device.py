"""The abstract accelerator device the host driver talks to (docs/driver.md). NumPy only.

It lives in ``spec`` because it is the contract between the driver (``tellme.host``) and every
implementation of the accelerator: the GoldenDevice and the PYNQ device in ``tellme.host``, the
RTL simulation device in ``tellme.sim`` (which must not import ``tellme.host``).
``tellme.host.device`` re-exports it.

A device is what the PS sees of the accelerator: 32-bit MMIO on the control registers
(``spec/registers.py``: offsets and fields are never copied by hand), physically contiguous
buffers the accelerator's AXI masters reach, cache maintenance between the two views of a
buffer, and a way to wait for the end of a run (interrupt or polling) with a timeout.

Devices: :class:`tellme.host.golden_device.GoldenDevice` (the executable spec, NumPy DDR),
:class:`tellme.host.pynq_device.PynqDevice` (the board, through PYNQ),
:class:`tellme.sim.rtl_device.RtlDevice` (the Verilator build of ``hw/top.py``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np

from .registers import REGISTERS, REGS, Register, decode, encode


class DeviceError(RuntimeError):
    """The device cannot do what was asked (allocation, load, identity, a run that failed)."""


class DeviceTimeout(DeviceError):
    """A run did not end within the timeout; the message carries the register dump."""


class DeviceRunError(DeviceError):
    """A run stopped with ``STATUS.ERROR``; ``flags``, ``code``, ``record``: what the
    registers said (``code`` 0 unless ``BAD_PROGRAM``)."""

    def __init__(self, msg: str, flags: dict, code: int, record: int):
        super().__init__(msg)
        self.flags, self.code, self.record = flags, code, record


class DeviceBuffer(ABC):
    """A physically contiguous buffer: ``host`` is the CPU's view (uint8), ``device_address``
    the address the accelerator's masters use."""

    nbytes: int
    device_address: int

    @property
    @abstractmethod
    def host(self) -> np.ndarray:
        """uint8 [nbytes]: the CPU's view of the buffer."""

    @abstractmethod
    def sync_to_device(self, offset: int = 0, nbytes: int | None = None) -> None:
        """Make CPU writes of ``[offset, offset + nbytes)`` visible to the accelerator."""

    @abstractmethod
    def sync_from_device(self, offset: int = 0, nbytes: int | None = None) -> None:
        """Make accelerator writes of ``[offset, offset + nbytes)`` visible to the CPU."""

    def span(self, offset: int = 0, nbytes: int | None = None) -> tuple[int, int]:
        """(offset, bytes) of a sync range (``nbytes`` None: to the end of the buffer);
        DeviceError if it does not lie in the buffer."""
        n = self.nbytes - offset if nbytes is None else nbytes
        if offset < 0 or offset + n > self.nbytes:
            raise DeviceError(f"sync [{offset}, +{n}) outside the {self.nbytes}-byte buffer")
        return offset, n

    def free(self) -> None:  # noqa: B027 - optional, most buffers need nothing
        """Give the memory back (default: nothing to do)."""

    def write(self, offset: int, data) -> None:
        b = data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else \
            np.frombuffer(bytes(data), dtype=np.uint8)
        if offset < 0 or offset + b.size > self.nbytes:
            raise DeviceError(f"write [{offset}, +{b.size}) outside the {self.nbytes}-byte "
                              f"buffer")
        self.host[offset:offset + b.size] = b

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        if offset < 0 or offset + nbytes > self.nbytes:
            raise DeviceError(f"read [{offset}, +{nbytes}) outside the {self.nbytes}-byte "
                              f"buffer")
        return self.host[offset:offset + nbytes].copy()


class Device(ABC):
    """MMIO, buffers and waiting. Subclasses implement :meth:`read32`, :meth:`write32`,
    :meth:`allocate`; :meth:`wait` polls ``STATUS`` unless a subclass waits on the interrupt."""

    name: str = "device"
    #: bytes of contiguous memory the device can give one session (None: unknown/unlimited)
    budget_bytes: int | None = None
    #: seconds between STATUS polls
    poll_s: float = 1e-3

    @abstractmethod
    def read32(self, offset: int) -> int: ...

    @abstractmethod
    def write32(self, offset: int, value: int) -> None: ...

    @abstractmethod
    def allocate(self, nbytes: int) -> DeviceBuffer: ...

    def close(self) -> None:  # noqa: B027 - optional
        """Release the device (default: nothing)."""

    # -- registers by name (spec.registers) ---------------------------------------------------

    def reg(self, name: str) -> int:
        return self.read32(REGS[name].offset) & 0xFFFF_FFFF

    def set_reg(self, name: str, value: int = 0, **fields) -> None:
        r = REGS[name]
        self.write32(r.offset, (value | encode(r, **fields)) & 0xFFFF_FFFF)

    def fields(self, name: str) -> dict:
        return decode(name, self.reg(name))

    def reg64(self, name: str) -> int:
        """A LO/HI pair or a 64-bit counter (LO first: the read latches HI)."""
        r = REGS.get(name) or REGS[f"{name}_LO"]
        lo = self.read32(r.offset) & 0xFFFF_FFFF
        return lo | (self.read32(r.offset + 4) & 0xFFFF_FFFF) << 32

    def set_reg64(self, name: str, value: int) -> None:
        self.write32(REGS[f"{name}_LO"].offset, value & 0xFFFF_FFFF)
        self.write32(REGS[f"{name}_HI"].offset, (value >> 32) & 0xFFFF_FFFF)

    # -- runs ---------------------------------------------------------------------------------

    def run_ended(self) -> bool:
        s = self.fields("STATUS")
        return not s["BUSY"] and bool(s["DONE"] or s["ERROR"])

    def wait(self, timeout_s: float) -> bool:
        """True once the run has ended (STATUS.DONE or ERROR, not BUSY); False after
        ``timeout_s`` seconds without that. Default: poll STATUS every :attr:`poll_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.run_ended():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_s)

    def soft_reset(self) -> None:
        """CMD.SOFT_RESET, then clear the sticky ERR_FLAGS and IRQ_STATUS (write 1 to clear)."""
        self.set_reg("CMD", SOFT_RESET=1)
        self.set_reg("ERR_FLAGS", _all_bits("ERR_FLAGS"))
        self.set_reg("IRQ_STATUS", _all_bits("IRQ_STATUS"))


def _all_bits(name: str) -> int:
    return sum(f.mask for f in REGS[name].fields)


def _fmt_fields(r: Register, word: int) -> str:
    if len(r.fields) == 1 and r.fields[0].width == 32:
        return ""
    vals = decode(r, word)
    return " ".join(f"{k}={v:#x}" if v > 9 else f"{k}={v}" for k, v in vals.items())


def register_dump(dev: Device, names=None) -> str:
    """Every register (or ``names``), one line each: offset, name, word, decoded fields
    (field tables of spec/registers.py). Counters are read LO then HI."""
    lines = []
    for r in REGISTERS:
        if names is not None and r.name not in names and not any(
                r.name.startswith(n) for n in names):
            continue
        if r.counter == 64:
            lines.append(f"  {r.offset:#05x} {r.name:<14} {dev.reg64(r.name):#018x}")
            continue
        try:
            word = dev.read32(r.offset) & 0xFFFF_FFFF
        except Exception as e:  # a dump must not hide the original failure
            lines.append(f"  {r.offset:#05x} {r.name:<14} unreadable ({e})")
            continue
        lines.append(f"  {r.offset:#05x} {r.name:<14} {word:#010x}  {_fmt_fields(r, word)}"
                     .rstrip())
    return "\n".join(lines)


#: the registers a hang or error report shows: run state, errors, addresses, counters
DUMP_REGISTERS = ("CTRL", "STATUS", "IRQ_STATUS", "ERR_FLAGS", "ERR_INFO", "ERR_ADDR",
                  "PROG_ADDR", "WIN_BASE", "WIN_SIZE", "TIMEOUT", "CYCLES", "RD_BEATS",
                  "WR_BEATS", "BUSY_", "STALL_")


__all__ = ["Device", "DeviceBuffer", "DeviceError", "DeviceTimeout", "DeviceRunError",
           "register_dump", "DUMP_REGISTERS"]
