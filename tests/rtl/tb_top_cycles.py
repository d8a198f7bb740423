"""cocotb testbench: the whole-step cycle model (sim/cycles_top.py) against the RTL top's
CYCLES register (docs/performance.md, "Whole-step cycle model"). Launched by
tests/rtl/test_top_cycles.py on the ``sim`` build; the real host driver through the RTL
simulation device (sim/rtl_device.py), whose memory is cocotbext-axi's AxiRam with no pause
generator, the model's ``SIM_MEMORY``.

* Per record: programs of one record and END, the record taken from a call's program (the
  tiny adjacent-pair model of tests/rtl/tb_top.py: 2 layers, hidden 64, d_ffn 96, 4 heads
  over 2 KV heads, head_dim 16): every record of layer 0 and the final NORM of a 5-token
  prefill at position 0 and of a decode step at 12 (13 keys: two score tiles), the
  position-dependent records (ROPE, KV_WRITE, ATTENTION) of 3 rows at 20, and EMBED and
  NORM of a file with bfloat16 tables and gains. A record's RTL figure is the CYCLES of its
  program minus that of an END-only program; the model's is ``record_cycles``.
* The PL LM head: the final QUANT and LM_HEAD records of a call with logits output, and a
  prefill and a decode step through the driver with logits output.
* Per call: a 9-token prefill and two decode steps with ``Driver(..., output="hidden")``
  against ``program_cycles`` of the driver's programs; a 5-token prefill and a decode step
  of each random family of tests/rtl/tb_top_families.py (2B4T-style, 1bitLLM-style). The
  demo model's calls are checked the same way in tests/rtl/tb_top_demo.py.

Every figure must be within 5 % (``TOLERANCE``); the table (record, model, RTL, error) goes
to the log and to ``cycles_table.txt`` in the test directory (the launcher prints it).
"""

from __future__ import annotations

from pathlib import Path

import cocotb
import numpy as np

from tellme.host.driver import Driver
from tellme.sim import cycles_top as ct
from tellme.sim.rtl_device import RtlDevice
from tellme.spec.program import Record, build_program
from tests.rtl.tb_top import _weights

TOLERANCE = 0.05
TABLE = Path("cycles_table.txt")


def _set_ids(drv: Driver, ids) -> None:
    tok = drv.mmap.buffer("tokens").addr
    drv.buf.write(tok - drv.base, np.asarray(ids, dtype="<u4"))
    drv.buf.sync_to_device(tok - drv.base, 4 * len(ids))


def _program(drv: Driver, ids, start: int):
    kind = "decode" if len(ids) == 1 and start > 0 else "prefill"
    return build_program(drv.config, drv.mmap, kind, start, len(ids), weights=drv.info,
                         score_c=drv.score_c, last_only=True)


def _cycles(dev, drv: Driver, prog, what: str) -> int:
    drv.execute(prog, what)
    return dev.reg("CYCLES")


def _records(dev, drv: Driver, ids, start: int, end_rtl: int, ops=None, tag: str = "") -> list:
    """(label, model, rtl) per record of layer 0 (and the final NORM) of the call's program,
    each run as a program of itself and END."""
    _set_ids(drv, ids)
    full = _program(drv, ids, start)
    out = []
    for i, rec in enumerate(full.records):
        if rec.op == "END" or rec.layer not in (0, None) or (ops and rec.op not in ops):
            continue
        prog = _program(drv, ids, start)
        prog.records = [rec, Record("END")]
        rtl = _cycles(dev, drv, prog, f"record {i}") - end_rtl
        model = ct.record_cycles(rec, prog, "sim", ids=ids if rec.op == "EMBED" else None)
        where = "final" if rec.layer is None else f"L{rec.layer}"
        label = f"{full.kind} {len(ids)}@{start}{tag} #{i} {rec.op} {where}"
        out.append((label, model.cycles, rtl))
    return out


def _format(rows: list) -> str:
    lines = [f"{'record / call':44s} {'model':>8s} {'RTL':>8s} {'error':>7s}"]
    for label, model, rtl in rows:
        lines.append(f"{label:44s} {model:8d} {rtl:8d} {100 * (model - rtl) / rtl:+6.2f}%")
    return "\n".join(lines)


@cocotb.test()
async def test_cycle_model_against_the_top(dut):
    """Records and whole calls: the model within 5 % of CYCLES."""
    dev = await RtlDevice.start(dut)                 # no pause generators: SIM_MEMORY

    def body():
        drv = Driver(dev, _weights("sim"), max_context=32, output="hidden", timeout_s=300)
        end = _program(drv, [1], 0)
        end.records = [Record("END")]
        end_rtl = _cycles(dev, drv, end, "END only")
        rows = [("END-only program (the sequencer)", ct.base_cycles(1), end_rtl)]
        rows += _records(dev, drv, [3, 1, 4, 1, 5], 0, end_rtl)
        rows += _records(dev, drv, [9], 12, end_rtl)
        rows += _records(dev, drv, [7, 8, 9], 20, end_rtl,
                         ops=("ROPE", "KV_WRITE", "ATTENTION"))
        drv.close()
        bf = Driver(dev, _weights("sim", dtype="bfloat16"), max_context=32, output="hidden",
                    timeout_s=300)
        rows += _records(dev, bf, [1, 255, 128, 64], 0, end_rtl, ops=("EMBED", "NORM"),
                         tag=" bf16")
        bf.close()
        # the PL LM head (output logits): the final QUANT and LM_HEAD, then whole calls
        lg = Driver(dev, _weights("sim"), max_context=32, timeout_s=300)
        assert lg.mmap.output == "logits"
        rows += [r for r in _records(dev, lg, [3, 1, 4], 0, end_rtl, ops=("QUANT", "LM_HEAD"))
                 if " final" in r[0]]
        ids = [7, 200, 13, 0]
        lg.prefill(ids)
        model = ct.program_cycles(_program(lg, ids, 0), "sim", ids=ids)["total"]
        rows.append((f"call: prefill of {len(ids)} at 0, logits", model, dev.reg("CYCLES")))
        pos = lg.length
        lg.decode(5)
        model = ct.program_cycles(_program(lg, [5], pos), "sim", ids=[5])["total"]
        rows.append((f"call: decode at {pos}, logits", model, dev.reg("CYCLES")))
        lg.close()
        # whole calls through the driver, the model on the driver's programs
        drv = Driver(dev, _weights("sim"), max_context=32, output="hidden", timeout_s=300)
        ids = [7, 200, 13, 0, 255, 42, 42, 8, 100]
        drv.prefill(ids)
        model = ct.program_cycles(_program(drv, ids, 0), "sim", ids=ids)["total"]
        rows.append((f"call: prefill of {len(ids)} at 0", model, dev.reg("CYCLES")))
        for tok in (5, 77):
            pos = drv.length
            drv.decode(tok)
            model = ct.program_cycles(_program(drv, [tok], pos), "sim", ids=[tok])["total"]
            rows.append((f"call: decode at {pos}", model, dev.reg("CYCLES")))
        drv.close()
        # whole calls of the random families (tests/rtl/tb_top_families.py), split-half files
        # the driver converts: a 5-token prefill and a decode step each
        from tellme.quant.random_models import random_model
        from tests.rtl.tb_top_families import FAMILIES

        for name, (cfg, dtype, seed) in FAMILIES.items():
            model = random_model(cfg, seed=seed, float_dtype=dtype,
                                 head_std=None if cfg.tie_word_embeddings else 3.0)
            fd = Driver(dev, model, max_context=32, output="hidden", timeout_s=300)
            ids = [int(v) % cfg.vocab_size for v in (11, 3, 150, 7, 42)]
            fd.prefill(ids)
            model_c = ct.program_cycles(_program(fd, ids, 0), "sim", ids=ids)["total"]
            rows.append((f"call: {name} prefill of {len(ids)}", model_c, dev.reg("CYCLES")))
            fd.decode(9)
            model_c = ct.program_cycles(_program(fd, [9], len(ids)), "sim", ids=[9])["total"]
            rows.append((f"call: {name} decode at {len(ids)}", model_c, dev.reg("CYCLES")))
            fd.close()
        text = _format(rows)
        TABLE.write_text(text + "\n")
        dut._log.info("cycle model against the RTL top (%s):\n%s", ct.SIM_MEMORY.name, text)
        bad = [(label, m, r) for label, m, r in rows if abs(m - r) > TOLERANCE * r]
        assert not bad, f"model off by more than {TOLERANCE:.0%}:\n{_format(bad)}"

    await dev.run(body)
