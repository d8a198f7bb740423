"""``RemoteRtlDevice``: the accelerator top in Verilator as a device of the host's own process
(docs/driver.md, "The RTL simulation backend").

cocotb owns the process the simulator runs in, so the simulation runs as a child: this class
starts ``run_cocotb(make_top(target), test_module="tellme.sim.rtl_serve")`` in a thread (the
runner builds the top the first time, then reuses the build), listens on a local socket, and
forwards every device operation to the child's :class:`~tellme.sim.rtl_device.RtlDevice`
(``multiprocessing.connection``, an authentication key per session). The host driver, its
checks and its error reports are the same code as on the board; only MMIO, the buffers'
syncs and waiting cross the socket. The build's and the simulation's output go to log files
in the build directory.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path

from tellme.sim.rtl_device import CopyBuffer
from tellme.spec.device import Device, DeviceError

__all__ = ["RemoteRtlDevice", "rtl_sim_available"]

START_TIMEOUT_S = 1800.0        # a cold Verilator build of the top takes minutes


def rtl_sim_available() -> tuple[bool, str]:
    """(can the RTL simulation run here, why not): cocotb and Verilator."""
    import importlib.util

    for mod in ("cocotb", "cocotb_tools", "cocotbext.axi"):
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return False, f"{mod} is not installed (pip install -e '.[dev]'; docs/toolchain.md)"
    from tellme.hw.toolchain import setup_verilator_env

    try:
        setup_verilator_env()
    except Exception as e:                            # names what is missing
        return False, f"Verilator: {e}"
    return True, ""


class RemoteBuffer(CopyBuffer):
    """A buffer in the child's simulated DDR; ``host`` is this process's copy."""

    def _put(self, addr, data):
        self.dev._call("write_mem", addr, data)

    def _get(self, addr, n):
        return self.dev._call("read_mem", addr, n)

    def free(self):
        if self.dev._conn is not None:
            self.dev._call("free", self.device_address)


class RemoteRtlDevice(Device):
    """The top of ``target`` (``sim`` or ``sim-demo``) in a Verilator child process.

    ``memory_bytes``: the simulated DDR the device gives out; ``progress``: a callable for
    one-line status messages (the build, the start), default stderr."""

    name = "rtl-sim"

    def __init__(self, target: str = "sim-demo", *, memory_bytes: int = 64 << 20,
                 progress=None):
        ok, why = rtl_sim_available()
        if not ok:
            raise DeviceError(f"the RTL simulation cannot run here: {why}")
        self.target = target
        self._say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._conn = None
        self._error: BaseException | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="tellme-rtl-")
        key = secrets.token_bytes(16)
        address = str(Path(self._tmp.name) / "dev.sock")
        listener = Listener(address, family="AF_UNIX", authkey=key)
        from tellme.hw.toolchain import build_dir

        self.log = build_dir("sim", "rtl-serve") / f"{target}.log"
        env = {"TELLME_RTL_ADDRESS": address, "TELLME_RTL_AUTHKEY": key.hex(),
               "TELLME_RTL_MEMORY": str(int(memory_bytes))}
        self._thread = threading.Thread(target=self._simulate, args=(env,), daemon=True)
        self._say(f"rtl-sim: starting the {target} top in Verilator (a first build takes "
                  f"minutes; log: {self.log.name} under build/sim/rtl-serve)")
        t0 = time.monotonic()
        accepted = threading.Event()

        def accept():
            with contextlib.suppress(OSError):        # closed: the simulation did not start
                self._conn = listener.accept()
            accepted.set()

        threading.Thread(target=accept, daemon=True).start()
        self._thread.start()
        try:
            while not accepted.wait(1.0):
                if self._error is not None or not self._thread.is_alive():
                    raise DeviceError(f"the RTL simulation of {target} did not start: "
                                      f"{self._error or 'it exited'} (log: {self.log})")
                if time.monotonic() - t0 > START_TIMEOUT_S:
                    raise DeviceError(f"the RTL simulation of {target} did not connect within "
                                      f"{START_TIMEOUT_S:.0f} s (log: {self.log})")
        finally:
            listener.close()
        if self._conn is None:
            raise DeviceError(f"the RTL simulation of {target} did not connect (log: "
                              f"{self.log})")
        self.budget_bytes = self._call("budget")
        self._say(f"rtl-sim: {target} top running ({time.monotonic() - t0:.0f} s to start)")

    def _simulate(self, env: dict) -> None:
        from tellme.sim.rtl_device import run_top

        try:
            run_top(self.target, "tellme.sim.rtl_serve", extra_env=env, log_file=self.log)
        except BaseException as e:                    # reported by the waiting side
            self._error = e

    def _call(self, op: str, *args):
        if self._conn is None:
            raise DeviceError("the RTL simulation is closed")
        try:
            self._conn.send((op, args))
            status, value = self._conn.recv()
        except (EOFError, OSError) as e:
            self._conn = None
            raise DeviceError(f"the RTL simulation ended unexpectedly ({e}; log: "
                              f"{self.log})") from None
        if status != "ok":
            raise DeviceError(f"rtl-sim {op}: {value}")
        return value

    # -- Device -----------------------------------------------------------------------------

    def read32(self, offset: int) -> int:
        return self._call("read32", offset)

    def write32(self, offset: int, value: int) -> None:
        self._call("write32", offset, value)

    def allocate(self, nbytes: int) -> RemoteBuffer:
        return RemoteBuffer(self, self._call("allocate", int(nbytes)), int(nbytes))

    def wait(self, timeout_s: float) -> bool:
        return self._call("wait", float(timeout_s))

    @property
    def sim_cycles(self) -> int:
        """Clock cycles the child has simulated so far."""
        return self._call("sim_cycles")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(DeviceError):
                self._call("close")
            if self._conn is not None:
                self._conn.close()
            self._conn = None
        self._thread.join(timeout=60)
        self._tmp.cleanup()

    def __del__(self):                                # pragma: no cover - best effort
        try:
            if getattr(self, "_conn", None) is not None:
                self.close()
        except Exception:
            pass
