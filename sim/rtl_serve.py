"""cocotb side of the out-of-process RTL device (sim/rtl_remote.py): the top's Verilator model
as an :class:`~tellme.sim.rtl_device.RtlDevice`, served over a
``multiprocessing.connection`` socket to the host process, whose driver sees a plain
:class:`~tellme.spec.device.Device`.

Launched by ``RemoteRtlDevice`` through ``run_cocotb(..., test_module="tellme.sim.rtl_serve")``
with ``TELLME_RTL_ADDRESS`` (the host's listener) and ``TELLME_RTL_AUTHKEY`` (hex) in the
environment. Requests are ``(op, args)`` tuples, answered with ``("ok", value)`` or ``("error",
message)``; ``("close", ())`` ends the simulation.
"""

from __future__ import annotations

import os
from multiprocessing.connection import Client

import cocotb

from tellme.sim.rtl_device import RtlDevice


def _serve(dev: RtlDevice, conn) -> None:
    bufs = {}

    def allocate(nbytes):
        buf = dev.allocate(nbytes)
        bufs[buf.device_address] = buf
        return buf.device_address

    def free(addr):
        bufs.pop(addr).free()

    ops = {
        "read32": dev.read32, "write32": dev.write32, "allocate": allocate, "free": free,
        "write_mem": lambda addr, data: dev.mem.write(addr, data),
        "read_mem": lambda addr, n: bytes(dev.mem.read(addr, n)),
        "wait": dev.wait, "sim_cycles": lambda: dev.sim_cycles,
        "budget": lambda: dev.budget_bytes,
    }
    while True:
        op, args = conn.recv()
        if op == "close":
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", ops[op](*args)))
        except Exception as e:                        # the host raises it as a DeviceError
            conn.send(("error", f"{type(e).__name__}: {e}"))


@cocotb.test()
async def serve(dut):
    dev = await RtlDevice.start(dut, memory_bytes=int(os.environ.get("TELLME_RTL_MEMORY",
                                                                      64 << 20)))

    def body():
        conn = Client(os.environ["TELLME_RTL_ADDRESS"],
                      authkey=bytes.fromhex(os.environ["TELLME_RTL_AUTHKEY"]))
        try:
            _serve(dev, conn)
        finally:
            conn.close()

    await dev.run(body)
