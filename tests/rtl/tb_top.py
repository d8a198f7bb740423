"""cocotb testbench of the accelerator top (hw/top.py) driven by the real host driver
(host/driver.py) through the RTL simulation device (sim/rtl_device.py): the driver runs in a
``cocotb.task.bridge`` thread, MMIO is AXI4-Lite, device memory a sparse DDR behind AxiRam on
all four masters. Launched by tests/rtl/test_top.py (target ``sim``).

Every op has its unit: a model's program runs whole, with logits output (the PL LM head,
bit-exact against GoldenModel(numerics="hw", head="pl")) and with the final hidden rows as
output (prefill and decode, the host's head, bit-exact against the golden model); errors
(LIMIT, AXI_SLVERR, BAD_CHECKSUM) stop a run at their record and the next run works. The
units are also checked record by record against the golden sequencer (every byte of the
activation and KV regions).
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import cocotb
import numpy as np

import tellme.host.driver as drvmod
from tellme.host.driver import Driver, DriverError
from tellme.quant.format import write_weight_file
from tellme.quant.random_models import random_model, tiny_config
from tellme.sim.rtl_device import RtlDevice
from tellme.spec.registers import ID_MAGIC, const_words
from tellme.spec.tiling import TILINGS

IDS = [5, 17, 200]
_TMP = tempfile.TemporaryDirectory(prefix="tellme-tb-top-")


def _weights(target: str, pairing: str = "adjacent", dtype: str = "float32") -> Path:
    """The tiny model for ``target``; its q/k rows in adjacent-pair RoPE order (as a weight file
    converted for the accelerator: the RoPE unit rotates adjacent pairs) or split-half; its
    embedding and norm gains exactly in ``dtype`` and stored as ``dtype``."""
    from tellme.quant.random_models import permute_qk_adjacent, round_to

    path = Path(_TMP.name) / f"{target}-{pairing}-{dtype}.tlm"
    if not path.exists():
        model = random_model(tiny_config(intermediate_size=96), seed=3)
        if pairing == "adjacent":
            model = permute_qk_adjacent(model)
        if dtype != "float32":
            model.embed = round_to(model.embed, dtype)
            for layer in model.layers:
                layer.norms = {k: round_to(v, dtype) for k, v in layer.norms.items()}
            model.meta["checkpoint_dtype"] = dtype
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


_WANT: dict = {}


def _lm_head_run(drv: Driver, ids=IDS) -> np.ndarray:
    """A valid prefill with logits output (the driver's choice: the build has an LM-head unit
    and the model's hidden size fits it): the PL LM head's logits of the last position
    bit-exact against GoldenModel(numerics="hw", head="pl"), the device idle, no error."""
    from tellme.quant.format import read_weight_file
    from tellme.sim.golden.model import GoldenModel

    assert drv.mmap.output == "logits"
    path = _weights("sim")
    key = tuple(ids)
    if key not in _WANT:
        gm = GoldenModel(read_weight_file(path).to_model(), numerics="hw", head="pl")
        _WANT[key] = gm.forward(list(ids), gm.new_cache(len(ids)), last_only=True)[-1]
    got = drv.prefill(list(ids))
    assert np.array_equal(got.view(np.uint32), _WANT[key].view(np.uint32)), "PL head logits"
    assert not drv.dev.fields("STATUS")["BUSY"] and drv.dev.reg("ERR_FLAGS") == 0
    return got


@cocotb.test()
async def test_identity_and_the_lm_head(dut):
    """ID/VERSION/CAP read back; the sim weight file loads; a kv260 file is refused; a valid
    program with logits output runs every layer and the PL LM head (LM_HEAD on m_axi_w1, the
    logits written through m_axi_kv), bit-exact, twice."""
    dev = await RtlDevice.start(dut)

    def body():
        words = const_words("sim", 0)
        for name, word in words.items():
            assert dev.reg(name) == word, (name, hex(dev.reg(name)), hex(word))
        assert dev.reg("ID") == ID_MAGIC
        assert dev.fields("CAP_ROWS")["LM_HEAD_LANES"] == 16
        drv = Driver(dev, _weights("sim"), max_context=32, timeout_s=60)
        assert drv.target == "sim"
        t0, c0 = time.monotonic(), dev.sim_cycles
        _lm_head_run(drv)
        dt, dc = time.monotonic() - t0, dev.sim_cycles - c0
        dut._log.info("prefill of %d tokens with the PL LM head: %d cycles simulated in %.2f s "
                      "(%d MMIO accesses)", len(IDS), dc, dt, dev.mmio_count)
        _lm_head_run(drv)                                 # and again: nothing is left hanging
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
    """A corrupted CRC: BAD_CHECKSUM at the program header; the next run is checked and runs
    to its logits."""
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
        _lm_head_run(drv)

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
        _lm_head_run(drv)

    await dev.run(body)


# --------------------------------------------------------------------------- the EW unit

def _ew_program(drv: Driver, rng, n: int = 3):
    """Random stream-format rows in x, y, gate and up, and a program of the EW unit's ops:
    residual out of place, SiLU and ReLU^2 gating (in place on up), residual in place on x.
    Returns (program, {buffer: cols} the program writes)."""
    from tellme.spec.kv_layout import encode_elems
    from tellme.spec.memory_map import row_stride
    from tellme.spec.program import Record, build_program

    c, mm, fmt = drv.config, drv.mmap, drv.fmt
    eb = fmt.bits // 8
    d, f = c.hidden_size, c.intermediate_size

    def fill(name, cols, scale):
        b = mm.buffer(name)
        x = rng.normal(0, scale, (n, cols))
        x[0, :4] = [0.0, -0.0, 1e-30, -65504.0]            # zeros, an underflow, a large value
        bits = fmt.to_bits(fmt.round(x.astype(np.float32)))
        st = row_stride(cols, eb)
        for r in range(n):
            drv.buf.write(b.addr - drv.base + r * st, encode_elems(bits[r], eb))
        drv.buf.sync_to_device(b.addr - drv.base, n * st)

    for name, cols, scale in (("x", d, 1.0), ("y", d, 0.5), ("gate", f, 2.0), ("up", f, 1.0)):
        fill(name, cols, scale)
    a = {k: mm.buffer(k).addr for k in ("x", "y", "h", "gate", "up")}
    prog = build_program(c, mm, "prefill", 0, n, weights=drv.info, score_c=drv.score_c)
    prog.records = [
        Record("RESIDUAL", 0, dict(rows=n, x=a["x"], y=a["y"], dst=a["h"], cols=d)),
        Record("GATED_ACT", 0, dict(rows=n, gate=a["gate"], up=a["up"], dst=a["gate"], cols=f,
                                    act=0)),
        Record("GATED_ACT", 1, dict(rows=n, gate=a["gate"], up=a["up"], dst=a["up"], cols=f,
                                    act=1)),
        Record("RESIDUAL", 1, dict(rows=n, x=a["x"], y=a["h"], dst=a["x"], cols=d)),
        Record("END"),
    ]
    return prog, {"h": d, "gate": f, "up": f, "x": d}


def _compare_rows(drv: Driver, ddr, outs: dict, n: int) -> None:
    from tellme.spec.memory_map import row_stride

    eb = drv.fmt.bits // 8
    for name, cols in outs.items():
        b = drv.mmap.buffer(name)
        st = row_stride(cols, eb)
        off = b.addr - drv.base
        drv.buf.sync_from_device(off, n * st)
        got = drv.buf.read(off, n * st).reshape(n, st)[:, :cols * eb]
        want = ddr.read(b.addr, n * st).reshape(n, st)[:, :cols * eb]
        bad = np.nonzero((got != want).any(axis=1))[0]
        assert bad.size == 0, f"buffer {name}: rows {bad.tolist()} differ from golden"


@cocotb.test()
async def test_ew_unit_bit_exact(dut):
    """RESIDUAL and GATED_ACT (SiLU, ReLU^2, in place and out of place) through the sequencer,
    the read arbiter and the EW unit, with random stalls on every channel of m_axi_kv: every
    written row equals the golden sequencer's bytes; an LM_HEAD of a hidden size the unit
    cannot take stops with LIMIT, SLVERR on the head region with AXI_SLVERR (port weights1), a
    ROPE of a split-half weight file with LIMIT, and the next run works."""

    from tellme.sim.golden.program_exec import Ddr, execute
    from tellme.spec.program import Record, build_program

    dev = await RtlDevice.start(dut)
    rng = np.random.default_rng(7)
    dev.stall_kv(0.3, seed=7)                       # every channel of m_axi_kv

    def body():
        drv = Driver(dev, _weights("sim"), max_context=32, timeout_s=120)
        n = 3
        prog, outs = _ew_program(drv, rng, n)
        c0 = dev.sim_cycles
        addr = drv.execute(prog, "element-wise program")
        dut._log.info("EW program (%d rows): %d cycles, EW busy %d / stall %d", n,
                      dev.sim_cycles - c0, dev.reg("BUSY_EW"), dev.reg("STALL_EW"))
        ddr = Ddr(drv.base, drv.buf.nbytes)
        ddr.mem[:] = drv.buf.host[:drv.buf.nbytes]      # the image the run started from
        execute(ddr, addr, drv.mmap)
        _compare_rows(drv, ddr, outs, n)
        # LM_HEAD: a hidden size the unit cannot take is LIMIT; SLVERR on the head region is
        # AXI_SLVERR on port weights1; each then a working run
        full = build_program(drv.config, drv.mmap, "prefill", 0, n, weights=drv.info,
                             score_c=drv.score_c)
        head = next(r for r in full.records if r.op == "LM_HEAD")
        bad = Record("LM_HEAD", None, dict(head.args, cols=60))
        prog.records = [bad, Record("END")]
        _raises(lambda: drv.execute(prog, "head program"),
                r"BAD_PROGRAM code 10 LIMIT .* at record 0 \(LM_HEAD\)")
        h0 = drv.mmap.region("head").addr + 4096
        dev.fail_reads((h0, h0 + 16))
        try:
            _raises(lambda: drv.prefill(IDS),
                    r"AXI_SLVERR on port weights1 at record \d+ \(LM_HEAD\)")
        finally:
            dev.fail_reads()
        _lm_head_run(drv)
        # the RoPE unit rotates adjacent pairs: a split-half file's ROPE is refused (LIMIT)
        rope = next(r for r in full.records if r.op == "ROPE")
        rope.args["pairing"] = 0
        prog.records = [rope, Record("END")]
        _raises(lambda: drv.execute(prog, "rope program"),
                r"BAD_PROGRAM code 10 LIMIT .* at record 0 \(ROPE, layer 0\)")
        # SLVERR on a y row: AXI_SLVERR on port kv/act at the RESIDUAL record, then a clean run
        prog2, outs2 = _ew_program(drv, rng, n)
        y1 = drv.mmap.buffer("y").addr + 64
        dev.fail_reads((y1, y1 + 16))
        try:
            _raises(lambda: drv.execute(prog2, "element-wise program"),
                    r"AXI_SLVERR on port kv/act at record 0 \(RESIDUAL, layer 0\)")
        finally:
            dev.fail_reads()
        assert not dev.fields("STATUS")["BUSY"]
        prog2, outs2 = _ew_program(drv, rng, n)
        addr = drv.execute(prog2, "element-wise program again")
        ddr.mem[:] = drv.buf.host[:drv.buf.nbytes]
        execute(ddr, addr, drv.mmap)
        _compare_rows(drv, ddr, outs2, n)

    await dev.run(body)


# ------------------------------------------------------------- the program's first records

def _program_run(drv: Driver, ids, records: int = 1) -> list:
    """The first ``records`` records of the prefill program of ``ids`` (EMBED, NORM, QUANT,
    the q/k/v LINEARs, the q and k ROPEs) through the top against the golden sequencer: the
    bytes of the x rows, with the NORM of the h rows and of the ``len(ids)`` absmaxes, with
    the QUANT of the int8 rows (kpad bytes each, the padding included), with each LINEAR and
    ROPE of the rows it writes."""
    from tellme.sim.golden.program_exec import Ddr, execute
    from tellme.spec.program import Record, build_program

    n = len(ids)
    tok = drv.mmap.buffer("tokens").addr
    drv.buf.write(tok - drv.base, np.asarray(ids, dtype="<u4"))
    drv.buf.sync_to_device(tok - drv.base, 4 * n)
    prog = build_program(drv.config, drv.mmap, "prefill", 0, n, weights=drv.info,
                         score_c=drv.score_c)
    recs = prog.records[:records]
    prog.records = [*recs, Record("END")]
    a = drv.mmap.buffer("amax").addr - drv.base       # a pattern no absmax run leaves there
    nb = n * (drv.fmt.bits // 8) + 16
    drv.buf.write(a, np.full(nb, 0xA5, np.uint8))
    drv.buf.sync_to_device(a, nb)
    addr = drv.execute(prog, "embedding program")
    ddr = Ddr(drv.base, drv.buf.nbytes)
    ddr.mem[:] = drv.buf.host[:drv.buf.nbytes]
    execute(ddr, addr, drv.mmap)
    d = drv.config.hidden_size
    _compare_rows(drv, ddr, {"x": d, "h": d} if records > 1 else {"x": d}, n)
    if records > 1:                                   # the absmaxes and the bytes after them
        drv.buf.sync_from_device(a, nb)
        got, want = drv.buf.read(a, nb), ddr.read(a + drv.base, nb)
        assert (got == want).all(), f"absmaxes differ: {got} != {want}"
    if records > 2:
        from tellme.spec.memory_map import row_stride

        kpad = recs[2]["kpad"]
        st = row_stride(kpad, 1)
        q = drv.mmap.buffer("q8").addr
        drv.buf.sync_from_device(q - drv.base, n * st)
        got = drv.buf.read(q - drv.base, n * st).reshape(n, st)[:, :kpad]
        want = ddr.read(q, n * st).reshape(n, st)[:, :kpad]
        bad = np.nonzero((got != want).any(axis=1))[0]
        assert bad.size == 0, f"int8 rows {bad.tolist()} differ from golden"
    by_addr = {b.addr: name for name, b in drv.mmap.buffers.items()}
    for rec in recs[3:]:                              # the LINEARs' and ROPEs' output rows
        assert rec.op in ("LINEAR", "ROPE"), rec
        cols = rec["n"] if rec.op == "LINEAR" else rec["heads"] * rec["head_dim"]
        _compare_rows(drv, ddr, {by_addr[rec["dst"]]: cols}, n)
    return recs


@cocotb.test()
async def test_row_unit_program_records(dut):
    """EMBED gathers and rounds embedding rows, the first NORM normalises them and writes the
    rows' absmaxes, and QUANT turns them into int8 rows of kpad bytes (float32, bfloat16 and
    float16 tables and gains; 5, 3 and 4 rows: the absmax row ends on a partial beat),
    bit-exact against the golden sequencer under random stalls; an id >= vocab stops the run
    with BAD_FIELD before any row is written, and the next run works."""


    dev = await RtlDevice.start(dut)
    dev.stall_kv(0.3, seed=11)                       # every channel of m_axi_kv

    def body():
        drv = Driver(dev, _weights("sim"), max_context=32, timeout_s=120)
        vocab = drv.config.vocab_size
        _program_run(drv, [0, vocab - 1, 17, 5, 200], records=8)     # odd: a partial beat
        x = drv.mmap.buffer("x")
        span = 4 * x.stride
        drv.buf.sync_from_device(x.addr - drv.base, span)
        before = drv.buf.read(x.addr - drv.base, span).copy()
        _raises(lambda: _program_run(drv, [3, vocab, 4]),
                r"BAD_PROGRAM code 8 BAD_FIELD .* at record 0 \(EMBED\)")
        drv.buf.sync_from_device(x.addr - drv.base, span)
        assert (drv.buf.read(x.addr - drv.base, span) == before).all(), "rows written"
        _program_run(drv, [9, 8, 7], records=8)
        drv.close()
        for dtype in ("bfloat16", "float16"):
            d2 = Driver(dev, _weights("sim", dtype=dtype), max_context=32, timeout_s=120)
            emb, nrm, qnt = _program_run(d2, [1, 255, 128, 64], records=3)
            code = {"bfloat16": 2, "float16": 1}[dtype]
            assert (emb.op, nrm.op, qnt.op) == ("EMBED", "NORM", "QUANT"), (emb, nrm, qnt)
            assert emb["dtype"] == code and nrm["dtype"] == code, (emb, nrm)
            d2.close()

    await dev.run(body)


# ------------------------------------------------------- KV_WRITE, ATTENTION, the whole model

def _same_regions(drv: Driver, ddr, what: str) -> None:
    """Every byte of the device's writable regions (activations, KV cache) equals the golden
    sequencer's image: nothing written that golden does not write, nothing missing."""
    for name in ("act", "kv"):
        reg = drv.mmap.region(name)
        off = reg.addr - drv.base
        drv.buf.sync_from_device(off, reg.size)
        got, want = drv.buf.read(off, reg.size), ddr.read(reg.addr, reg.size)
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (f"{what}: {bad.size} bytes of the {name} region differ from "
                               f"golden, the first at {reg.addr + int(bad[0]):#x}")


def _records_vs_golden(drv: Driver, ids, start: int, ops) -> None:
    """The call's program (ids at ``start``) up to and including the last record whose op is
    in ``ops`` through the top; then the activation and KV regions against the golden
    sequencer run on the image the top started from."""
    from tellme.sim.golden.program_exec import Ddr, execute
    from tellme.spec.program import Record, build_program

    n = len(ids)
    tok = drv.mmap.buffer("tokens").addr
    drv.buf.write(tok - drv.base, np.asarray(ids, dtype="<u4"))
    drv.buf.sync_to_device(tok - drv.base, 4 * n)
    kind = "decode" if n == 1 and start > 0 else "prefill"
    prog = build_program(drv.config, drv.mmap, kind, start, n, weights=drv.info,
                         score_c=drv.score_c)
    last = max(i for i, r in enumerate(prog.records) if r.op in ops)
    prog.records = [*prog.records[:last + 1], Record("END")]
    drv.buf.sync_from_device()              # the host copy = the device's memory, then
    addr = drv.execute(prog, f"program up to record {last}")      # + the program it wrote
    ddr = Ddr(drv.base, drv.buf.nbytes)
    ddr.mem[:] = drv.buf.host[:drv.buf.nbytes]
    execute(ddr, addr, drv.mmap)
    _same_regions(drv, ddr, f"{kind} of {n} at {start}, records 0..{last}")


@cocotb.test()
async def test_kv_write_attention_and_the_whole_model(dut):
    """KV_WRITE (the quantising writer into the int8 layout) and ATTENTION (the KV reader and
    the integer engine; GQA group 2, calls of 4 rows and 1) of layer 0, record by record
    against the golden sequencer (every byte of the activation and KV regions) with 30 %
    stalls on every channel of m_axi_kv; a KV_WRITE of a head_dim the quantiser cannot split
    ends in LIMIT, SLVERR on the K cache in AXI_SLVERR at the ATTENTION record; then the whole
    model through the top with the final
    hidden rows as output (the host's LM head): a 9-token prefill (two score tiles of 8 keys)
    and decode steps, each position's logits bit-exact against GoldenModel(numerics="hw")."""

    from tellme.quant.format import read_weight_file
    from tellme.sim.golden.model import GoldenModel

    dev = await RtlDevice.start(dut)
    dev.stall_kv(0.3, seed=13)                       # every channel of m_axi_kv

    def body():
        path = _weights("sim")
        drv = Driver(dev, path, max_context=32, output="hidden", timeout_s=300)
        _records_vs_golden(drv, [3, 1, 4, 1, 5], 0, ("KV_WRITE",))
        _records_vs_golden(drv, [3, 1, 4, 1, 5], 0, ("ATTENTION",))
        _records_vs_golden(drv, [9], 5, ("ATTENTION",))          # decode: one call per head
        # faults: a head_dim the quantiser cannot split is LIMIT at the KV_WRITE; SLVERR on the
        # K cache is AXI_SLVERR at the first ATTENTION; then the model runs (below)
        from tellme.spec.program import Record, build_program

        prog = build_program(drv.config, drv.mmap, "prefill", 0, 2, weights=drv.info,
                             score_c=drv.score_c)
        kvw = next(r for r in prog.records if r.op == "KV_WRITE")
        kvw.args["head_dim"] = 6
        prog.records = [kvw, Record("END")]
        _raises(lambda: drv.execute(prog, "kv program"),
                r"BAD_PROGRAM code 10 LIMIT .* at record 0 \(KV_WRITE, layer 0\)")
        k0 = drv.mmap.kv.region_addr(0, "K", 0)
        dev.fail_reads((k0, k0 + 16))
        try:
            _raises(lambda: drv.prefill([1, 2, 3]),
                    r"AXI_SLVERR on port kv/act at record \d+ \(ATTENTION, layer 0\)")
        finally:
            dev.fail_reads()
        assert not dev.fields("STATUS")["BUSY"]
        gm = GoldenModel(read_weight_file(path).to_model(), numerics="hw")
        cache = gm.new_cache(32)
        ids = [7, 200, 13, 0, 255, 42, 42, 8, 100]
        c0 = dev.sim_cycles
        got = drv.prefill(ids)
        want = gm.forward(ids, cache)[-1]
        dut._log.info("whole model: prefill of %d tokens in %d cycles", len(ids),
                      dev.sim_cycles - c0)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), "prefill logits"
        # the blocks' counters of that run: each block had work, none longer than the run
        cyc = dev.reg64("CYCLES")
        for blk in ("EW", "WSTREAM", "ATTN", "KVDMA"):
            busy, stall = dev.reg(f"BUSY_{blk}"), dev.reg(f"STALL_{blk}")
            assert 0 < busy <= cyc and stall < busy, (blk, busy, stall, cyc)
        assert dev.reg("RD_BEATS") > dev.reg("WR_BEATS") > 0
        for tok in (5, 77):
            c0 = dev.sim_cycles
            got = drv.decode(tok)
            want = gm.forward([tok], cache)[-1]
            dut._log.info("whole model: decode at %d in %d cycles", drv.length - 1,
                          dev.sim_cycles - c0)
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
                f"decode logits at {drv.length - 1}"
        drv.close()

    await dev.run(body)


# --------------------------------------------------------------------------- board check

@cocotb.test()
async def test_board_check_on_the_rtl_top(dut):
    """``tellme board check`` (host.board.run_check) with the PYNQ-shaped layer backed by this
    Verilator build: versions, files, manifest, CMA, then the overlay "load" and the identity
    registers read through AXI4-Lite from the RTL, all OK; a manifest of another build is a
    FAIL naming the stale design."""
    import io
    import json

    from tellme.host.board import BoardEnv, run_check
    from tests.support import fake_pynq

    dev = await RtlDevice.start(dut)

    def body():
        tmp = Path(_TMP.name) / "board"
        tmp.mkdir(exist_ok=True)
        meminfo = tmp / "meminfo"
        meminfo.write_text("MemTotal: 4007468 kB\nCmaTotal: 1024000 kB\nCmaFree: 921600 kB\n")
        env = dict(python_version=(3, 10, 12), numpy_version="1.26.4", meminfo=meminfo)
        bit = fake_pynq.write_bitstream(tmp, "sim", 0)          # the build test_top makes
        man = json.loads(bit.with_suffix(".json").read_text())
        t = TILINGS["sim"]
        man["tiling"] = {"name": "sim", "t": t.t, "q": t.q}
        bit.with_suffix(".json").write_text(json.dumps(man))
        board = fake_pynq.FakeBoard(device=dev)
        out = io.StringIO()
        rep = run_check(bit, _weights("sim"), None,
                        BoardEnv(pynq=fake_pynq.make_module(board), **env), out)
        text = out.getvalue()
        dut._log.info("board check on the RTL top:\n%s", text)
        assert not rep.failed, text
        st = {c.name: c.status for c in rep.checks}
        for name in ("load", "ID", "VERSION", "BUILD_HASH", "identity"):
            assert st.get(name) == "ok", (name, text)
        # a bitstream whose manifest names another build: the registers disagree
        stale = fake_pynq.write_bitstream(tmp, "sim", 0, stem="stale", manifest_hash=5)
        rep = run_check(stale, _weights("sim"), None,
                        BoardEnv(pynq=fake_pynq.make_module(fake_pynq.FakeBoard(device=dev)),
                                 **env), io.StringIO())
        assert rep.failed and any(c.name == "BUILD_HASH" and c.status == "FAIL"
                                  for c in rep.checks), rep.checks

    await dev.run(body)
