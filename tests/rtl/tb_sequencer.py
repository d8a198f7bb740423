"""cocotb testbench for hw/sequencer.py: programs of the demo model (spec.program.build_program)
in a cocotbext-axi AxiRamRead with random AR/R pauses; one responder per block class with
random ready and random done delays. The emitted commands must equal
``sim.cycles_seq.expected_commands`` of the same bytes, in order; faults end in their error
code and idle, and the next good run succeeds.
"""

from __future__ import annotations

import logging
import random
import struct
import zlib
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiRamRead, AxiReadBus

from tellme.hw.sequencer import AXI_PORT_PROGRAM, CLASSES, HEADER_RECORD
from tellme.sim.cycles_seq import expected_commands, expected_cycles, unpack_command
from tellme.sim.drivers import AxiReadMonitor, pause_generator
from tellme.sim.golden.program_exec import Session
from tellme.sim.runner import cocotb_params
from tellme.spec import program as P

DEMO = Path(__file__).resolve().parents[2] / "host/models/demo/model.tlm"
FLAGS = ("irq_status_done_set", "irq_status_error_set", "err_flags_axi_slverr_set",
         "err_flags_axi_decerr_set", "err_flags_bad_program_set", "err_flags_timeout_set")


class FaultyRam(AxiRamRead):
    """AxiRamRead that answers SLVERR for the 16-byte words in ``bad``."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.bad: set[int] = set()

    async def _read(self, address, length):
        if address in self.bad:
            raise ValueError("injected SLVERR")
        return await super()._read(address, length)


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.p = cocotb_params()
        self.aw = self.p["addr_width"]
        logging.getLogger("cocotb.seq.m_axi").setLevel(logging.WARNING)
        self.ram = FaultyRam(AxiReadBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst,
                             size=4 << 20)
        self.rng = random.Random(1)
        self.ready_p = 1.0
        self.max_delay = 0             # done delay (cycles after the handshake) 1..1+max
        self.never: set[str] = set()   # classes whose block never answers
        self.fail: dict[str, int] = {}  # classes whose block answers with an error code
        self.cmds: list[tuple[str, dict]] = []
        self.flags: dict[str, int] = {}
        self.busy = self.stall = 0
        cocotb.start_soon(Clock(dut.clk, 4, unit="ns").start())
        self.mon = AxiReadMonitor(dut, "m_axi", data_width=128, max_burst=self.p["max_burst"],
                                  max_outstanding=self.p["max_outstanding"])
        self.ar_cycles: list[int] = []     # cycle of each ARVALID rise, first R beats
        self.r_first: list[int] = []
        self.cycle = 0

    async def reset(self):
        d = self.dut
        d.rst.value = 1
        for name in ("cmd_start", "cmd_soft_reset", "progress", "prog_addr", "win_base",
                     "win_size"):
            getattr(d, name).value = 0
        d.timeout_cycles.value = 100_000
        for cls in CLASSES:
            getattr(d, f"o_{cls}__ready").value = 0
            getattr(d, f"{cls}_done").value = 0
            getattr(d, f"{cls}_error").value = 0
        await ClockCycles(d.clk, 3)
        d.rst.value = 0
        await ClockCycles(d.clk, 2)
        for cls in CLASSES:
            cocotb.start_soon(self._responder(cls))
        cocotb.start_soon(self._watch())

    async def _responder(self, cls):
        """Random ready; on a handshake record the command and pulse done after a delay."""
        d = self.dut
        valid, ready = getattr(d, f"o_{cls}__valid"), getattr(d, f"o_{cls}__ready")
        payload, done = getattr(d, f"o_{cls}__payload"), getattr(d, f"{cls}_done")
        error = getattr(d, f"{cls}_error")

        def answer():
            if cls in self.fail:
                error.value = self.fail[cls]
            else:
                done.value = 1
        countdown = -1
        pending = None
        while True:
            await RisingEdge(d.clk)
            done.value = 0
            error.value = 0
            if int(valid.value):
                v = payload.value.to_unsigned()
                if pending is not None:
                    assert v == pending, f"{cls}: payload changed while waiting for ready"
                if int(ready.value):
                    self.cmds.append((cls, unpack_command(v, self.aw)))
                    pending = None
                    countdown = -1 if cls in self.never else self.rng.randint(0, self.max_delay)
                    if countdown == 0:         # done in the cycle after the handshake
                        answer()
                        countdown = -1
                    ready.value = 0
                    continue
                pending = v
            else:
                assert pending is None, f"{cls}: valid dropped before the handshake"
            if countdown == 0:
                answer()
            if countdown >= 0:
                countdown -= 1
            ready.value = int(self.rng.random() < self.ready_p)

    async def _watch(self):
        d = self.dut
        last_ar = 0
        while True:
            await RisingEdge(d.clk)
            self.cycle += 1
            for f in FLAGS:
                self.flags[f] = self.flags.get(f, 0) + int(getattr(d, f).value)
            self.busy += int(d.busy_seq_inc.value)
            self.stall += int(d.stall_seq_inc.value)
            ar = int(d.m_axi_arvalid.value)
            if ar and not last_ar:
                self.ar_cycles.append(self.cycle)
            last_ar = ar
            if int(d.m_axi_rvalid.value) and len(self.r_first) < len(self.ar_cycles):
                self.r_first.append(self.cycle)
            if int(d.counters_clear.value):
                self.busy = self.stall = 0

    def stalls(self, p_ar: float, p_r: float):
        rng = self.rng
        self.ram.ar_channel.set_pause_generator(pause_generator(rng, p_ar) if p_ar else None)
        self.ram.r_channel.set_pause_generator(pause_generator(rng, p_r) if p_r else None)
        if not p_ar:
            self.ram.ar_channel.pause = False
        if not p_r:
            self.ram.r_channel.pause = False

    async def run(self, blob: bytes, addr: int, win=(0, 0), timeout=100_000,
                  limit=400_000, soft_reset_at: int | None = None) -> dict:
        d = self.dut
        self.ram.write(addr, blob)
        self.cmds.clear()
        self.flags.clear()
        self.ar_cycles.clear()
        self.r_first.clear()
        d.prog_addr.value = addr
        d.win_base.value, d.win_size.value = win
        d.timeout_cycles.value = timeout
        d.cmd_start.value = 1
        await RisingEdge(d.clk)
        d.cmd_start.value = 0
        cycles = 0
        await RisingEdge(d.clk)
        assert int(d.status_busy.value), "START did not start a run"
        while int(d.status_busy.value):
            await RisingEdge(d.clk)
            cycles += 1
            if soft_reset_at is not None and cycles == soft_reset_at:
                d.cmd_soft_reset.value = 1
                await RisingEdge(d.clk)
                d.cmd_soft_reset.value = 0
            assert cycles < limit, f"no return to idle after {limit} cycles (a hang)"
        await ClockCycles(d.clk, 2)
        assert not any(int(getattr(d, f"o_{c}__valid").value) for c in CLASSES)
        return dict(done=int(d.status_done.value), error=int(d.status_error.value),
                    code=int(d.err_info_code.value), record=int(d.err_info_record.value),
                    port=int(d.err_info_port.value), addr=int(d.err_addr.value),
                    cycles=cycles + 1, flags=dict(self.flags), busy=self.busy,
                    stall=self.stall)


def _programs():
    s = Session(DEMO, "kv260", max_context=64, out_rows=4)
    return s, P.encode_program(s.program(4, 0)), P.encode_program(s.program(1, 4))


def _reseal(blob: bytes) -> bytes:
    head = blob[:16] + b"\0" * 4 + blob[20:64]
    return blob[:16] + struct.pack("<I", zlib.crc32(blob[64:], zlib.crc32(head))) + blob[20:]


def _patch(blob: bytes, i: int, off: int, fmt: str, value) -> bytes:
    at = 64 + 64 * i + off
    return _reseal(blob[:at] + struct.pack(fmt, value) + blob[at + struct.calcsize(fmt):])


def _hpatch(blob: bytes, name: str, value) -> bytes:
    """Header field ``name`` set to ``value`` (CRC resealed)."""
    off = 0
    for n, code, _ in P.HEADER_FIELDS:
        size = struct.calcsize("<" + code)
        if n == name:
            return _reseal(blob[:off] + struct.pack("<" + code, value) + blob[off + size:])
        off += size
    raise KeyError(name)


def _only(flags: dict, *names: str):
    for f in FLAGS:
        want = 1 if f in names else 0
        assert flags.get(f, 0) == want, f"{f}: {flags.get(f, 0)} pulses, want {want}"


async def _good(tb: TB, blob: bytes, addr: int, win, **kw) -> dict:
    r = await tb.run(blob, addr, win, **kw)
    assert r["done"] and not r["error"], r
    _only(r["flags"], "irq_status_done_set")
    want = expected_commands(blob, tb.aw)
    assert len(tb.cmds) == len(want), f"{len(tb.cmds)} commands, want {len(want)}"
    for k, (got, exp) in enumerate(zip(tb.cmds, want, strict=True)):
        assert got == exp, f"command {k}: {got} != {exp}"
    assert abs(r["busy"] - r["cycles"]) <= 2, (r["busy"], r["cycles"])   # edges of the count
    assert 0 < r["stall"] < r["busy"]
    return r


@cocotb.test()
async def test_programs(dut):
    """Prefill and decode programs under random stalls, ready and done delays; then the
    cycle model against a stall-free run with zero-latency blocks."""
    tb = TB(dut)
    await tb.reset()
    s, prefill, decode = _programs()
    win = (s.mmap.base, s.mmap.total_bytes)
    slot0, slot1 = s.mmap.program_addr(0), s.mmap.program_addr(1)
    for k, (blob, addr, stalls, ready, delay) in enumerate((
            (prefill, slot0, (0.3, 0.3), 0.5, 6),
            (decode, slot1, (0.5, 0.2), 0.7, 3),
            (prefill, slot1, (0.0, 0.5), 1.0, 0))):
        tb.stalls(*stalls)
        tb.ready_p, tb.max_delay = ready, delay
        r = await _good(tb, blob, addr, win)
        dut._log.info("run %d: %d records, %d cycles (stall %d), bursts %d", k,
                      len(blob) // 64 - 1, r["cycles"], r["stall"], len(tb.mon.bursts))
    # cycle model: no stalls, ready high, done the cycle after the handshake
    tb.stalls(0, 0)
    tb.ready_p, tb.max_delay = 1.0, 0
    r = await _good(tb, prefill, slot0, win)
    lat = [rf - a + 1 for a, rf in zip(tb.ar_cycles, tb.r_first, strict=False)]
    n = len(prefill) // 64 - 1
    model = expected_cycles(n, lat[0], max_burst=tb.p["max_burst"],
                            max_outstanding=tb.p["max_outstanding"])
    dut._log.info("stall-free: %d cycles, model %s (memory latency %s; header %d, exec %s)",
                  r["cycles"], model, sorted(set(lat)), lat[0], sorted(set(lat[-n:])))
    assert abs(r["cycles"] - model["total"]) <= 2, (r["cycles"], model)   # edges of the count


@cocotb.test()
async def test_faults(dut):
    """Each fault ends in its code (or flag) and idle; a good run follows each one."""
    tb = TB(dut)
    await tb.reset()
    s, prefill, decode = _programs()
    win = (s.mmap.base, s.mmap.total_bytes)
    addr = s.mmap.program_addr(0)
    prog = P.decode_program(prefill)
    recs = prog.records
    lin = next(i for i, r in enumerate(recs) if r.op == "LINEAR")
    att = next(i for i, r in enumerate(recs) if r.op == "ATTENTION")
    gated = next(i for i, r in enumerate(recs) if r.op == "GATED_ACT")
    lay = {op: {n: off for n, _, off in P.OPS[op].layout} for op in P.OPS}
    outside = s.mmap.base + s.mmap.total_bytes
    n = len(recs)
    tb.stalls(0.2, 0.2)
    tb.ready_p, tb.max_delay = 0.8, 2
    cases = [
        ("BAD_MAGIC", b"XXXX" + prefill[4:], HEADER_RECORD),
        ("BAD_VERSION", _reseal(prefill[:4] + struct.pack("<I", 1) + prefill[8:]),
         HEADER_RECORD),
        ("BAD_HEADER", _hpatch(prefill, "kv_beat", 48), HEADER_RECORD),    # not a power of 2
        ("LIMIT", _hpatch(prefill, "kv_dtype", P.KV_DTYPES.index("fp24")), HEADER_RECORD),
        ("LIMIT", _hpatch(prefill, "kv_beat", 32), HEADER_RECORD),         # not the build's
        ("BAD_HEADER", _reseal(prefill[:40] + b"\1" + prefill[41:]), HEADER_RECORD),
        ("BAD_CHECKSUM", prefill[:100] + bytes([prefill[100] ^ 1]) + prefill[101:],
         HEADER_RECORD),
        ("BAD_OPCODE", _patch(prefill, 3, 0, "<B", 0x7E), 3),
        ("BAD_FIELD", _patch(prefill, gated, lay["GATED_ACT"]["act"], "<B", 2), gated),
        ("COUNT", _reseal(prefill[:12] + struct.pack("<I", n - 1) + prefill[16:-64]), n - 2),
        ("ADDRESS", _patch(prefill, lin, lay["LINEAR"]["weights"], "<Q", outside), lin),
        ("LIMIT", _reseal(prefill[:12] + struct.pack("<I", tb.p["max_records"] + 1)
                          + prefill[16:]), HEADER_RECORD),
    ]
    for k, (name, bad, record) in enumerate(cases):
        if k != len(cases) - 1:        # the build's record limit is the hardware's own check
            try:
                P.decode_program(bad, s.mmap, "kv260" if name == "LIMIT" else None)
                raise AssertionError(f"{name}: the golden decoder accepts the program")
            except P.ProgramError as e:
                assert e.name == name, (name, e.name)
                assert (HEADER_RECORD if e.record is None else e.record) == record, (name, e)
        r = await tb.run(bad, addr, win)
        assert r["error"] and not r["done"], (name, r)
        _only(r["flags"], "irq_status_error_set", "err_flags_bad_program_set")
        assert r["code"] == P.ERROR_CODES[name], (name, r["code"])
        assert r["record"] == record, (name, r["record"], record)
        assert tb.cmds == [], f"{name}: a bad program reached the datapath"
        if name == "ADDRESS":
            assert r["addr"] == outside
        dut._log.info("%s: code %d record %d in %d cycles", name, r["code"], r["record"],
                      r["cycles"])
    await _good(tb, decode, addr, win)
    # SLVERR on the program fetch (pass 1 and pass 2 read the same words: pass 1 fails)
    bad_word = addr + 64 + 64 * 7 + 32
    tb.ram.bad = {bad_word}
    r = await tb.run(prefill, addr, win)
    tb.ram.bad = set()
    assert r["error"] and r["port"] == AXI_PORT_PROGRAM and r["addr"] == bad_word, r
    _only(r["flags"], "irq_status_error_set", "err_flags_axi_slverr_set")
    assert tb.cmds == []
    await _good(tb, prefill, addr, win)
    # a block that never answers: the watchdog
    tb.never = {"attn"}
    r = await tb.run(prefill, addr, win, timeout=300)
    tb.never = set()
    assert r["error"] and r["record"] == att and r["code"] == 0, r
    _only(r["flags"], "irq_status_error_set", "err_flags_timeout_set")
    assert [c["record"] for _, c in tb.cmds] == list(range(1 if recs[0].op != "EMBED" else 0,
                                                           att + 1))
    await _good(tb, decode, addr, win)
    # a block answering with an error code instead of done (the top's "no execution unit")
    tb.fail = {"linear": P.ERROR_CODES["UNSUPPORTED_OP"]}
    r = await tb.run(prefill, addr, win)
    tb.fail = {}
    assert r["error"] and not r["done"] and r["record"] == lin, r
    assert r["code"] == P.ERROR_CODES["UNSUPPORTED_OP"] and r["addr"] == addr + 64 * (lin + 1)
    _only(r["flags"], "irq_status_error_set", "err_flags_bad_program_set")
    assert tb.cmds[-1][1]["record"] == lin
    await _good(tb, decode, addr, win)
    # soft reset in the middle of pass 1 (bursts in flight) and of pass 2
    for at in (40, 900):
        r = await tb.run(prefill, addr, win, soft_reset_at=at)
        assert not r["done"] and not r["error"], r
        _only(r["flags"])
        await _good(tb, decode, addr, win)
