"""``PynqDevice``: the accelerator on a KV260/ZCU104 through PYNQ 3.0 (docs/driver.md).

``pynq`` is imported only when a device is opened (the host package imports nothing but NumPy).
Opening: the bitstream and its ``.hwh`` of the same name must both exist; PYNQ's cached
overlay state is cleared first (PYNQ 3.0 can reuse a stale ``.hwh`` for a reloaded bitstream
of the same name, issue 1409; the build also names bitstreams uniquely by hash), the overlay
is downloaded, and the identity registers are read back and compared with the manifest
(``<stem>.json`` beside the bitstream: BUILD_HASH and every constant register word) after
every load. Control registers: ``pynq.MMIO`` at ``spec.shell.CONTROL_BASE`` over the 4 KiB
window; buffers: ``pynq.allocate`` (CMA; the default non-cacheable buffers, flushed and
invalidated anyway so a cacheable one also works); end of a run: the interrupt through PYNQ's
``axi_intc`` when the overlay exposes it, else polling ``STATUS``, both with the driver's
timeout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from tellme.spec import shell
from tellme.spec.registers import ADDR_WIDTH, REGS

from .device import Device, DeviceBuffer, DeviceError

IRQ_PIN = f"{shell.IP_INSTANCE}/{shell.INTERRUPT.name}"


def _pynq():
    try:
        import pynq
    except ImportError as e:
        raise DeviceError(f"pynq is not importable ({e}): the board backend runs on a "
                          f"KV260/ZCU104 with PYNQ {shell.PYNQ_VERSION} (docs/board.md)") from None
    return pynq


class PynqBuffer(DeviceBuffer):
    """A ``pynq.allocate`` buffer (uint8)."""

    def __init__(self, buf):
        self.buf = buf
        self.nbytes = int(buf.nbytes)
        self.device_address = int(buf.device_address)

    @property
    def host(self) -> np.ndarray:
        return self.buf

    def sync_to_device(self, offset=0, nbytes=None):
        self.buf.flush()            # PYNQ 3.0 flushes the whole buffer (no range)

    def sync_from_device(self, offset=0, nbytes=None):
        self.buf.invalidate()

    def free(self):
        self.buf.freebuffer()


def load_manifest(bitstream: Path) -> dict | None:
    m = bitstream.with_suffix(".json")
    return json.loads(m.read_text()) if m.is_file() else None


class PynqDevice(Device):
    """The accelerator of ``bitstream`` (``.bit`` with ``.hwh`` beside it, and the build's
    manifest ``.json`` if present). ``interrupt``: wait on the IRQ when the overlay has it;
    ``pynq``: the pynq module (default: imported); ``check``: compare the identity registers
    with the manifest after loading; ``download``: program the PL (False: attach to the design
    already loaded if PYNQ says it is this bitstream, else download it)."""

    name = "board"

    def __init__(self, bitstream, control_base: int = shell.CONTROL_BASE,
                 interrupt: bool = True, budget_bytes: int | None = None, *,
                 pynq=None, check: bool = True, download: bool = True):
        bit = Path(bitstream)
        hwh = bit.with_suffix(".hwh")
        missing = [str(p) for p in (bit, hwh) if not p.is_file()]
        if missing:
            raise DeviceError("missing " + " and ".join(missing) + ": PYNQ needs the .bit and "
                              "the .hwh of the same name (bitstreams/<target>/, docs/board.md)")
        pynq = _pynq() if pynq is None else pynq
        self.pynq, self.bitstream = pynq, bit
        self.manifest = load_manifest(bit)
        self.budget_bytes = budget_bytes
        self.downloaded = download
        try:
            if download:
                self._clear_state()
                self.overlay = pynq.Overlay(str(bit))
            else:                   # attach to the loaded design (tellme board reset)
                self.overlay = pynq.Overlay(str(bit), download=False)
                if not self.overlay.is_loaded():     # nothing of ours there: MMIO would hang
                    self._clear_state()
                    self.overlay.download()
                    self.downloaded = True
        except Exception as e:
            raise DeviceError(f"loading {bit.name} failed: {e}") from None
        self.mmio = pynq.MMIO(control_base, 1 << ADDR_WIDTH)
        self.name = f"board ({bit.name})"
        if check:
            self.check_loaded()
        self.irq = self._interrupt() if interrupt else None

    def _clear_state(self):
        gs = getattr(getattr(self.pynq, "pl_server", None), "global_state", None)
        clear = getattr(gs, "clear_global_state", None)
        if clear is not None:
            clear()

    def _interrupt(self):
        pins = getattr(self.overlay, "interrupt_pins", {}) or {}
        if IRQ_PIN not in pins:
            return None
        return self.pynq.Interrupt(IRQ_PIN)

    def check_loaded(self) -> None:
        """The ID register, and with a manifest BUILD_HASH and every constant word, must read
        what the build wrote (else a stale .hwh or another bitstream answers)."""
        from tellme.spec.registers import ID_MAGIC

        magic = self.read32(REGS["ID"].offset)
        if magic != ID_MAGIC:
            raise DeviceError(f"{self.bitstream.name}: ID reads {magic:#010x}, not "
                              f"{ID_MAGIC:#010x}: no tellme accelerator at "
                              f"{shell.CONTROL_BASE:#x} (stale .hwh or another design?)")
        if not self.manifest:
            return
        for name, word in self.manifest.get("registers", {}).items():
            got = self.read32(REGS[name].offset)
            if got != int(word, 16):
                raise DeviceError(f"{self.bitstream.name}: register {name} reads {got:#010x}, "
                                  f"the manifest {self.bitstream.with_suffix('.json').name} "
                                  f"says {word}: the loaded design is not this build (stale "
                                  f".hwh? reload after pynq.pl_server.global_state."
                                  f"clear_global_state())")

    def read32(self, offset: int) -> int:
        return int(self.mmio.read(offset)) & 0xFFFF_FFFF

    def write32(self, offset: int, value: int) -> None:
        self.mmio.write(offset, int(value) & 0xFFFF_FFFF)

    def allocate(self, nbytes: int) -> PynqBuffer:
        try:
            buf = self.pynq.allocate(shape=(int(nbytes),), dtype=np.uint8)
        except Exception as e:
            raise DeviceError(f"CMA allocation of {nbytes / (1 << 20):,.1f} MiB failed ({e}); "
                              f"check CmaFree in /proc/meminfo and cma= in /proc/cmdline "
                              f"(docs/driver.md)") from None
        return PynqBuffer(buf)

    def wait(self, timeout_s: float) -> bool:
        if self.irq is None:
            return super().wait(timeout_s)
        import asyncio

        deadline = time.monotonic() + timeout_s
        while not self.run_ended():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                asyncio.run(asyncio.wait_for(self.irq.wait(), left))
            except asyncio.TimeoutError:
                return self.run_ended()
        return True

    def close(self) -> None:
        self.mmio = None


__all__ = ["PynqDevice", "PynqBuffer", "IRQ_PIN", "load_manifest"]
