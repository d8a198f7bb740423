"""A PYNQ-shaped layer backed by the GoldenDevice (or, with ``FakeBoard(device=...)``, by
another device: the RTL top in Verilator), so ``tellme.host.pynq_device`` runs its own code
in CI: ``Overlay`` (needs the .bit and .hwh pair, "programs" the board from the fake
bitstream's JSON: target and build hash), ``MMIO`` (32-bit reads/writes of the control window
at spec.shell.CONTROL_BASE go to the device's registers; anything else raises), ``allocate``
(a ``PynqBuffer``: an ndarray over the device's DDR with ``device_address``, ``flush``,
``invalidate``, ``freebuffer``), ``Interrupt`` (``await wait()`` until the device's irq line is
up), ``pl_server.global_state.clear_global_state``; ``Overlay(download=False)`` attaches
to the loaded design (``is_loaded``, ``download``). Installed with :func:`install` into
``sys.modules`` (pytest's monkeypatch). Not pynq: no PL, no XRT, no device tree.
"""

from __future__ import annotations

import asyncio
import json
import sys
import types
from pathlib import Path

import numpy as np

from tellme.host.golden_device import GoldenDevice
from tellme.spec import shell
from tellme.spec.registers import ADDR_WIDTH


class FakeBoard:
    """The board: which design is loaded, PYNQ's cached state, the calls seen. ``device``: the
    design "in the PL" (a started device whose target and BUILD_HASH a loaded bitstream must
    name); None: a GoldenDevice of each loaded bitstream's target and hash."""

    def __init__(self, memory_bytes: int = 64 << 20, device=None):
        self.memory_bytes = memory_bytes
        self.fixed = device
        self.device: GoldenDevice | None = None
        self.loaded: str | None = None    # name of the bitstream in the PL
        self.cached: dict = {}            # PYNQ's global state: bitstream name -> hwh
        self.log: list = []

    def program(self, design: dict):
        if self.fixed is None:
            return GoldenDevice(design["target"], design["build_hash"],
                                memory_bytes=self.memory_bytes)
        return self.fixed


def write_bitstream(folder: Path, target: str, build_hash: int, stem: str | None = None,
                    manifest_hash: int | None = None) -> Path:
    """A fake ``.bit`` (JSON naming the design), its ``.hwh`` and a manifest like
    hw/vivado.py writes (``manifest_hash``: a manifest of another build, for the stale test)."""
    from tellme.spec.registers import const_words

    stem = stem or f"tellme_{target}_{build_hash:08x}"
    bit = folder / f"{stem}.bit"
    bit.write_text(json.dumps({"target": target, "build_hash": build_hash}))
    bit.with_suffix(".hwh").write_text("<hwh/>")
    mh = build_hash if manifest_hash is None else manifest_hash
    words = const_words(target, mh)
    bit.with_suffix(".json").write_text(json.dumps({
        "target": target, "build_hash": f"{mh:#010x}",
        "registers": {k: f"{v:#010x}" for k, v in words.items()}}))
    return bit


def make_module(board: FakeBoard) -> types.ModuleType:
    pynq = types.ModuleType("pynq")
    pynq.__version__ = shell.PYNQ_VERSION

    class Overlay:
        def __init__(self, bitfile, download=True):
            bit = Path(bitfile)
            if not bit.with_suffix(".hwh").is_file():
                raise OSError(f"{bit.with_suffix('.hwh')} not found")
            self.bit = bit
            self.interrupt_pins = {f"{shell.IP_INSTANCE}/{shell.INTERRUPT.name}": {}}
            self.ip_dict = {shell.IP_INSTANCE: {"phys_addr": shell.CONTROL_BASE}}
            if download:
                self.download()

        def download(self):
            design = json.loads(self.bit.read_text())
            board.log.append(("load", self.bit.name))
            board.cached[self.bit.name] = "hwh"
            board.loaded = self.bit.name
            board.device = board.program(design)

        def is_loaded(self):
            return board.device is not None and board.loaded == self.bit.name

    class MMIO:
        def __init__(self, base_addr, length=4):
            if base_addr != shell.CONTROL_BASE or length > 1 << ADDR_WIDTH:
                raise RuntimeError(f"nothing mapped at {base_addr:#x}+{length:#x} (on a board "
                                   f"this hangs the SoC)")
            self.base, self.length = base_addr, length

        def _dev(self, offset):
            if board.device is None:
                raise RuntimeError("no overlay loaded: the access would hang the SoC")
            if offset % 4 or not 0 <= offset < self.length:
                raise ValueError(f"MMIO offset {offset:#x}: 4-byte aligned inside the window")
            return board.device

        def read(self, offset=0, length=4):
            if length != 4:
                raise ValueError("the fake MMIO does 32-bit reads only")
            return self._dev(offset).read32(offset)

        def write(self, offset, data):
            if not isinstance(data, (int, np.integer)):
                raise ValueError("the fake MMIO writes integers only")
            self._dev(offset).write32(offset, int(data))

    class PynqBuffer(np.ndarray):
        def flush(self):
            board.log.append(("flush", self.device_address))

        def invalidate(self):
            board.log.append(("invalidate", self.device_address))

        sync_to_device, sync_from_device = flush, invalidate

        @property
        def physical_address(self):
            return self.device_address

        def freebuffer(self):
            board.device._free(self._golden)

    def allocate(shape, dtype="u4", cacheable=False, **kw):
        dev = board.device
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        try:
            g = dev.allocate(nbytes)
        except Exception as e:
            raise RuntimeError(f"Failed to allocate buffer ({e})") from None
        off = g.device_address - dev.ddr.base
        arr = dev.ddr.mem[off:off + nbytes].view(dtype).reshape(shape).view(PynqBuffer)
        arr.device_address = g.device_address
        arr._golden = g
        return arr

    class Interrupt:
        def __init__(self, pinname):
            self.pin = pinname

        async def wait(self):
            while not board.device.irq:
                await asyncio.sleep(1e-3)

    gs = types.ModuleType("pynq.pl_server.global_state")

    def clear_global_state():
        board.log.append(("clear_global_state",))
        board.cached.clear()

    gs.clear_global_state = clear_global_state
    pl = types.ModuleType("pynq.pl_server")
    pl.global_state = gs
    pynq.Overlay, pynq.MMIO, pynq.allocate = Overlay, MMIO, allocate
    pynq.PynqBuffer, pynq.Interrupt, pynq.pl_server = PynqBuffer, Interrupt, pl
    return pynq


def install(monkeypatch, board: FakeBoard) -> types.ModuleType:
    mod = make_module(board)
    monkeypatch.setitem(sys.modules, "pynq", mod)
    monkeypatch.setitem(sys.modules, "pynq.pl_server", mod.pl_server)
    monkeypatch.setitem(sys.modules, "pynq.pl_server.global_state", mod.pl_server.global_state)
    return mod
