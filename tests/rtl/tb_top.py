"""cocotb testbench of the accelerator top (hw/top.py) driven by the real host driver
(host/driver.py) through the RTL simulation device (sim/rtl_device.py): the driver runs in a
``cocotb.task.bridge`` thread, MMIO is AXI4-Lite, device memory a sparse DDR behind AxiRam on
all four masters. Launched by tests/rtl/test_top.py (target ``sim``).

Until the execution units exist, a valid program must end in the named "no execution unit"
error (BAD_PROGRAM code UNSUPPORTED_OP at its first record) and idle, never a hang.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import cocotb

import tellme.host.driver as drvmod
from tellme.host.driver import Driver, DriverError
from tellme.quant.format import write_weight_file
from tellme.quant.random_models import random_model, tiny_config
from tellme.sim.rtl_device import RtlDevice
from tellme.spec.program import ERROR_CODES
from tellme.spec.registers import ID_MAGIC, const_words
from tellme.spec.tiling import TILINGS

IDS = [5, 17, 200]
_TMP = tempfile.TemporaryDirectory(prefix="tellme-tb-top-")


def _weights(target: str) -> Path:
    path = Path(_TMP.name) / f"{target}.tlm"
    if not path.exists():
        model = random_model(tiny_config(intermediate_size=96), seed=3)
        write_weight_file(model, path, TILINGS[target], meta={"target": target})
    return path


def _raises(fn, pattern: str) -> str:
    try:
        fn()
    except DriverError as e:
        msg = str(e)
        assert re.search(pattern, msg, re.S), f"{pattern!r} not in:\n{msg}"
        return msg
    raise AssertionError(f"no DriverError (wanted {pattern!r})")


NO_UNIT = (r"BAD_PROGRAM code 11 UNSUPPORTED_OP \(this build has no execution unit for the "
           r"op.*\) at record 0 \(EMBED\)")


def _no_exec_unit(drv: Driver) -> str:
    """A valid prefill ends in the named "no execution unit" error, the device idle."""
    msg = _raises(lambda: drv.prefill(IDS), NO_UNIT)
    for line in ("Registers at the error:", "STATUS", "ERR_FLAGS", "ERR_INFO", "CYCLES",
                 "RD_BEATS", "soft-reset"):
        assert line in msg, line
    st = drv.dev.fields("STATUS")
    assert not st["BUSY"] and not st["DONE"], st
    assert drv.dev.reg("ERR_FLAGS") == 0 and drv.dev.reg("IRQ_STATUS") == 0
    return msg


@cocotb.test()
async def test_identity_and_no_execution_unit(dut):
    """ID/VERSION/CAP read back; the sim weight file loads; a kv260 file is refused; a valid
    program ends in UNSUPPORTED_OP at record 0 (EMBED) with the register dump."""
    dev = await RtlDevice.start(dut)

    def body():
        words = const_words("sim", 0)
        for name, word in words.items():
            assert dev.reg(name) == word, (name, hex(dev.reg(name)), hex(word))
        assert dev.reg("ID") == ID_MAGIC
        drv = Driver(dev, _weights("sim"), max_context=32, timeout_s=60)
        assert drv.target == "sim"
        t0, c0 = time.monotonic(), dev.sim_cycles
        msg = _no_exec_unit(drv)
        dt, dc = time.monotonic() - t0, dev.sim_cycles - c0
        dut._log.info("no-exec-unit run: %d cycles simulated in %.2f s (%d MMIO accesses)\n%s",
                      dc, dt, dev.mmio_count, msg)
        _no_exec_unit(drv)                                # and again: nothing is left hanging
        _raises(lambda: Driver(dev, _weights("kv260"), max_context=32),
                r"tiling T=28 Q=16 \(converted for kv260\).*sim build with tiling T=4 Q=4")
        # speed: free-running clock, and MMIO through the bridge
        t0, c0 = time.monotonic(), dev.sim_cycles
        dev.step(200_000)
        dt, dc = time.monotonic() - t0, dev.sim_cycles - c0
        t1 = time.monotonic()
        for _ in range(200):
            dev.reg("STATUS")
        mm = (time.monotonic() - t1) / 200
        dut._log.info("SPEED: %d cycles in %.2f s = %.0f cycles/s free-running; "
                      "%.0f us per MMIO read (bridge + AXI4-Lite)", dc, dt, dc / dt, mm * 1e6)

    await dev.run(body)


@cocotb.test()
async def test_bad_program_then_next_run(dut):
    """A corrupted CRC: BAD_CHECKSUM at the program header; the next run is checked and
    dispatched again (ending in the no-execution-unit error)."""
    dev = await RtlDevice.start(dut)

    def body():
        drv = Driver(dev, _weights("sim"), max_context=32, timeout_s=60)
        good = drvmod.encode_program

        def corrupt(p):
            b = good(p)
            return b[:100] + bytes([b[100] ^ 1]) + b[101:]

        drvmod.encode_program = corrupt
        try:
            _raises(lambda: drv.prefill(IDS), r"BAD_PROGRAM code 4 BAD_CHECKSUM \(CRC-32.*\) "
                                              r"at the program header")
        finally:
            drvmod.encode_program = good
        assert not dev.fields("STATUS")["BUSY"]
        _no_exec_unit(drv)

    await dev.run(body)


@cocotb.test()
async def test_axi_error_on_program_fetch_then_next_run(dut):
    """SLVERR on a beat of the program: AXI_SLVERR on port program at that record, ERR_ADDR the
    beat; with the fault gone the next run works."""
    dev = await RtlDevice.start(dut)

    def body():
        drv = Driver(dev, _weights("sim"), max_context=32, timeout_s=60)
        addr = drv.mmap.program_addr(drv.calls % drv.mmap.program_slots)
        bad = addr + 64 + 64 * 2 + 16                     # record 2, second beat
        dev.fail_reads((bad, bad + 16))
        try:
            _raises(lambda: drv.prefill(IDS), rf"AXI_SLVERR on port program at record 2 "
                                              rf"\(QUANT, layer 0\), ERR_ADDR {bad:#x}")
        finally:
            dev.fail_reads()
        assert not dev.fields("STATUS")["BUSY"]
        _no_exec_unit(drv)
        assert ERROR_CODES["UNSUPPORTED_OP"] == 11

    await dev.run(body)
