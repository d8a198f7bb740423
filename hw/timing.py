"""Timing proxy: an estimate of a block's worst register-to-register path from its yosys netlist.

yosys has no Xilinx timing model (``sta`` knows LUT arcs only; ``ltp -noff`` does not cut paths
at FDRE/RAMB/URAM/DSP registers and counts cells, so a 64-bit carry chain looks deeper than
six LUT levels). So the report writes the mapped netlist of the block's top module
(``write_json -selected``), and :func:`analyse` computes the longest path over it with a stated
per-cell delay model (:data:`MODEL`, docs/hw/timing.md): every cell input pays the net that
drives it (none on dedicated routes: carry chains, the MUXF tree, DSP cascades) plus the cell's
own pin-to-output delay; paths start at register outputs (FF Q, a registered DSP/RAM output,
LUTRAM/SRL clock-to-out, block inputs) and end at register inputs (FF, DSP/RAM input
registers, LUTRAM/SRL write ports, block outputs). DSP48E2 and block RAM are split by their
register parameters (AREG/BREG/CREG/DREG/ADREG/MREG/PREG, DOA_REG/DOB_REG, OREG_A/OREG_B), so
an unregistered multiply or a RAM read without its output register lands on the path.

The figures are an estimate of logic depth, not timing: placement, fan-out and congestion are
not modelled. A block the estimate flags will fail in Vivado; one it passes may still fail.
"""

from __future__ import annotations

import json
import re
from collections import Counter, deque
from pathlib import Path

# Delay model in ns, UltraScale+ -2 at VCCINT 0.72 V (the K26's -2LV grade; the ZCU104's
# -2 at 0.85 V is faster, so one model serves both conservatively). Sources and assumptions
# are listed in docs/hw/timing.md; "assumed" numbers are typical Vivado post-route figures,
# not data-sheet values.
MODEL = {
    "net": 0.32,             # general routing into a cell input (assumed average)
    "lut": 0.13,             # LUT1..6 / LUTRAM address-to-output logic (assumed)
    "lutram_read": 0.25,     # LUTRAM read address to output (assumed)
    "muxf": 0.10,            # MUXF7/F8/F9, fed on dedicated routes (assumed)
    "carry_entry": 0.20,     # CARRY4 (half a CARRY8) entered on S/DI (assumed)
    "carry_stage": 0.05,     # CARRY4 CI -> CO/O, dedicated chain (assumed, 0.1 per CARRY8)
    "ff_clk_q": 0.10,        # FF clock-to-Q (assumed)
    "ff_setup": 0.15,        # FF D/CE/R setup, incl. the short in-slice net (assumed)
    "clock_uncertainty": 0.10,  # jitter + skew margin, once per path (assumed)
    "dsp_setup": 0.30,       # DSP48E2 input-register setup (assumed)
    "dsp_preadd": 0.83,      # pre-adder without ADREG: DS925 FMAX 410 vs 323 MHz (0.72 V)
    "dsp_mult": 1.55,        # input register -> MREG: DS925 FMAX all registers 644 MHz (0.72 V)
    "dsp_alu": 0.72,         # M -> P without MREG: DS925 FMAX_MULT_NOMREG 440 MHz (0.72 V)
    "dsp_clk_p": 0.40,       # PREG clock-to-out (assumed)
    "dsp_out": 0.30,         # ALU to an unregistered P output (assumed)
    "bram_clk_do": 1.10,     # RAMB clock-to-out without DO_REG (assumed, cf. DS958 0.80-1.14)
    "bram_clk_do_reg": 0.33,  # with DO_REG (assumed, cf. DS958 0.23-0.33)
    "bram_setup": 0.40,      # address / data / enable setup (assumed)
    "uram_clk_do": 1.60,     # URAM288 clock-to-out without OREG (assumed)
    "uram_clk_do_reg": 0.40,  # with OREG (assumed)
    "uram_setup": 0.50,      # (assumed)
    "lutram_clk_o": 1.00,    # LUTRAM / SRL clock-to-out (assumed)
    "lutram_setup": 0.40,    # LUTRAM / SRL write setup (assumed)
    "port": 0.0,             # block ports: registered on the far side, nothing added
}
MODEL_VERSION = 1

FF_TYPES = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")
_LUT = re.compile(r"LUT[1-6]$")
_LUTRAM = re.compile(r"RAM(32|64|128|256|512)(M|M16|M8|X1S|X1D)$")
_SRL = re.compile(r"SRL(C)?(16|32)E$")
_MUXF = re.compile(r"MUXF[789]$")
_CARRY = re.compile(r"CARRY[48]$")
_RAMB = re.compile(r"RAMB(18|36)E2$")

# pins of a LUTRAM that read (combinational to the outputs); the rest are write-side
_LUTRAM_READ = re.compile(r"ADDR[A-G]$|A\d*$|DPRA\d*$|RADR\d*$")


def _param_int(v, default=0) -> int:
    if v is None:
        return default
    if isinstance(v, int):
        return v
    s = str(v).strip().strip('"')
    if s.upper() in ("TRUE", "FALSE"):
        return int(s.upper() == "TRUE")
    try:
        return int(s, 2) if set(s) <= {"0", "1"} else int(s)
    except ValueError:
        return default


class _Cell:
    """Per cell type: which inputs end a path (with what cost), which are combinational to the
    outputs (with what cost), and what a path starting at an output costs."""

    __slots__ = ("ends", "kind", "start", "through")

    def __init__(self, kind, ends=None, through=None, start=None):
        self.kind = kind
        self.ends = ends or {}          # pin -> cost to end there (net + setup)
        self.through = through or {}    # pin -> cost through to the outputs (net + logic)
        self.start = start              # output arrival when the path starts here, or None


def _dsp_model(params: dict, pins) -> _Cell:
    """DSP48E2 by its register parameters: an input pin ends at the first enabled register on
    its way (input register, ADREG, MREG, PREG; the stage figures include that register's
    setup), or passes through to P when none is enabled."""
    m = MODEL
    reg = {k: _param_int(params.get(k), 0) for k in
           ("AREG", "BREG", "CREG", "DREG", "ADREG", "MREG", "PREG")}
    use_mult = str(params.get("USE_MULT", "MULTIPLY")).strip('"').upper() != "NONE"
    preadd = "AD" in (str(params.get("AMULTSEL", "A")).strip('"').upper(),
                      str(params.get("BMULTSEL", "B")).strip('"').upper())
    pre = (m["dsp_preadd"] if preadd else 0.0, reg["ADREG"] > 0 and preadd)
    mult = (m["dsp_mult"] if use_mult else 0.0, reg["MREG"] > 0)
    alu = (m["dsp_alu"], reg["PREG"] > 0)
    ends, through = {}, {}
    for pin in pins:
        base = pin.rstrip("0123456789")
        dedicated = base in ("ACIN", "BCIN", "PCIN", "CARRYCASCIN", "MULTSIGNIN")
        cost = 0.0 if dedicated else m["net"]
        if base in ("A", "ACIN", "B", "BCIN", "D"):
            r = {"A": "AREG", "ACIN": "AREG", "B": "BREG", "BCIN": "BREG", "D": "DREG"}[base]
            if reg[r] > 0:
                ends[pin] = cost + m["dsp_setup"]
                continue
            stages = ([pre] if base in ("A", "ACIN", "D") and preadd else []) + [mult, alu]
        elif base == "C":
            if reg["CREG"] > 0:
                ends[pin] = cost + m["dsp_setup"]
                continue
            stages = [alu]
        elif base in ("PCIN", "CARRYCASCIN", "CARRYIN", "MULTSIGNIN"):
            stages = [alu]
        else:   # CE*/RST* and dynamic OPMODE/ALUMODE/INMODE (yosys ties these): setup
            if not base.startswith("CLK"):
                ends[pin] = cost + m["dsp_setup"]
            continue
        for d, registered in stages:
            cost += d
            if registered:
                ends[pin] = cost
                break
        else:
            through[pin] = cost + m["dsp_out"]
    if reg["PREG"] > 0:
        start = m["dsp_clk_p"]
    elif reg["MREG"] > 0:
        start = m["dsp_alu"] + m["dsp_out"]
    else:   # only input registers: through the multiplier from them
        start = (m["dsp_mult"] if use_mult else 0.0) + m["dsp_alu"] + m["dsp_out"]
    return _Cell("dsp", ends, through, start)


def _cell_model(ctype: str, params: dict, dirs: dict) -> _Cell:
    m = MODEL
    ins = [p for p, d in dirs.items() if d != "output"]
    if _LUT.fullmatch(ctype):
        return _Cell("lut", through=dict.fromkeys(ins, m["net"] + m["lut"]))
    if ctype == "INV":            # absorbed into the next LUT by Vivado
        return _Cell("inv", through=dict.fromkeys(ins, 0.0))
    if _MUXF.fullmatch(ctype):
        return _Cell("muxf", through={p: (m["net"] if p == "S" else 0.0) + m["muxf"]
                                      for p in ins})
    if _CARRY.fullmatch(ctype):
        thr = {}
        for p in ins:
            if p == "CI" or p == "CI_TOP":
                thr[p] = m["carry_stage"]
            else:                 # S / DI from a LUT, CYINIT from fabric
                thr[p] = m["net"] + m["carry_entry"]
        return _Cell("carry", through=thr)
    if ctype in FF_TYPES:
        return _Cell("ff", ends={p: m["ff_setup"] for p in ins if p not in ("C", "G")},
                     start=m["ff_clk_q"])
    if ctype == "DSP48E2":
        return _dsp_model(params, ins)
    if _RAMB.fullmatch(ctype):
        reg = max(_param_int(params.get("DOA_REG")), _param_int(params.get("DOB_REG")))
        start = m["bram_clk_do_reg"] if reg else m["bram_clk_do"]
        return _Cell("bram", ends={p: m["net"] + m["bram_setup"] for p in ins
                                   if not p.startswith("CLK")}, start=start)
    if ctype == "URAM288" or ctype == "URAM288_BASE":
        reg = max(_param_int(params.get("OREG_A")), _param_int(params.get("OREG_B")))
        start = m["uram_clk_do_reg"] if reg else m["uram_clk_do"]
        return _Cell("uram", ends={p: m["net"] + m["uram_setup"] for p in ins
                                   if p != "CLK"}, start=start)
    if _LUTRAM.fullmatch(ctype) or _SRL.fullmatch(ctype):
        kind = "lutram" if ctype.startswith("RAM") else "srl"
        ends, thr = {}, {}
        for p in ins:
            if p in ("WCLK", "CLK"):
                continue
            if _LUTRAM_READ.fullmatch(p) and not (kind == "lutram" and p == "ADDRH"):
                thr[p] = m["net"] + m["lutram_read"]
            else:
                ends[p] = m["net"] + m["lutram_setup"]
        return _Cell(kind, ends=ends, through=thr, start=m["lutram_clk_o"])
    # anything else: a LUT-like combinational cell (listed as unknown in the summary)
    return _Cell("unknown", through=dict.fromkeys(ins, m["net"] + m["lut"]))


def analyse(netlist, top: str, period_ns: float = 4.0, *, keep_steps: int = 40,
            keep_groups: int = 12) -> dict:
    """Longest register-to-register path of module ``top`` in a yosys JSON netlist (a path or
    the parsed dict). Returns the path summary stored in the block's report JSON."""
    if not isinstance(netlist, dict):
        netlist = json.loads(Path(netlist).read_text())
    mods = netlist["modules"]
    key = top if top in mods else next(k for k in mods if k.lstrip("\\") == top)
    mod = mods[key]
    m = MODEL

    # bit -> (cell index, output) driver; best readable name per bit
    cells = []
    driver: dict[int, int] = {}
    for name, c in mod["cells"].items():
        dirs = c.get("port_directions", {})
        model = _cell_model(c["type"], c.get("parameters", {}), dirs)
        idx = len(cells)
        cells.append((name, c["type"], model, c["connections"], dirs))
        for p, bits in c["connections"].items():
            if dirs.get(p) == "output":
                for b in bits:
                    if isinstance(b, int):
                        driver[b] = idx
    names: dict[int, str] = {}
    for wname, w in mod.get("netnames", {}).items():
        if w.get("hide_name"):
            continue
        wname = wname.removeprefix("\\")     # yosys JSON keeps the escape of "\$name"
        for i, b in enumerate(w["bits"]):
            if isinstance(b, int) and b not in names:
                names[b] = wname if len(w["bits"]) == 1 else f"{wname}[{i}]"
    PORT = -1
    port_in = {b for p in mod.get("ports", {}).values() if p["direction"] != "output"
               for b in p["bits"] if isinstance(b, int)}

    # a cell with combinational inputs is a node of the timing graph; a register is a source
    n = len(cells)
    comb = [bool(c[2].through) for c in cells]
    arrival = [c[2].start if c[2].start is not None else 0.0 for c in cells]
    preds: list[list] = [[] for _ in range(n)]
    succs: list[list] = [[] for _ in range(n)]
    indeg = [0] * n
    def driven_inputs(conns, pin_costs):
        """(pin, cost, driver, bit) of the driven bits of the given pins."""
        for p, cost in pin_costs.items():
            for b in conns.get(p, ()):
                d = driver.get(b, PORT if b in port_in else None) if isinstance(b, int) \
                    else None
                if d is not None:
                    yield p, cost, d, b

    for i, (_, _, model, conns, _) in enumerate(cells):
        for _, cost, d, b in driven_inputs(conns, model.through):
            preds[i].append((d, cost, b))
            if d != PORT and comb[d]:
                succs[d].append(i)
                indeg[i] += 1
    back: list = [None] * n
    origin: list = [None] * n      # the bit a comb cell's worst path starts from
    queue = deque(i for i in range(n) if comb[i] and indeg[i] == 0)
    done = 0
    while queue:
        i = queue.popleft()
        done += 1
        start = cells[i][2].start
        best, arg = (start if start is not None else -1.0), None
        for d, cost, b in preds[i]:
            t = (m["port"] if d == PORT else arrival[d]) + cost
            if t > best:
                best, arg = t, (d, b)
        arrival[i], back[i] = max(best, 0.0), arg
        if arg is not None:
            d, b = arg
            origin[i] = origin[d] if d != PORT and comb[d] else b
        for s in succs[i]:
            indeg[s] -= 1
            if indeg[s] == 0:
                queue.append(s)
    loops = sum(comb) - done

    def out_time(d):
        return m["port"] if d == PORT else arrival[d]

    def end_label(i):
        _, etype, _, econns, edirs = cells[i]
        obits = [x for p, bits in econns.items() if edirs.get(p) == "output"
                 for x in bits if isinstance(x, int)]
        return next((names[x] for x in obits if x in names), etype)

    def start_group(d, b):
        """The register group a path into bit ``b`` (driven by ``d``) starts from."""
        if d != PORT and comb[d]:
            b = origin[d] if origin[d] is not None else b
        return _group(names.get(b, cells[driver[b]][1] if b in driver else "input"))

    # endpoints: path-ending pins of every cell, and the block's outputs; the worst arrival
    # per (start group -> end group), register names without indices, beyond half the period
    worst, wend = -1.0, None
    groups: dict[str, tuple] = {}         # group -> (arrival, driver, bit) of its worst
    group_floor = period_ns / 2
    over = set()
    limit = period_ns - m["clock_uncertainty"]
    for i, (_, _, model, conns, _) in enumerate(cells):
        for p, cost, d, b in driven_inputs(conns, model.ends):
            t = out_time(d) + cost
            if t > limit:
                over.add(i)
            if t > worst:
                worst, wend = t, (i, p, d, b)
            if t > group_floor:
                label = end_label(i)
                g = start_group(d, b) + " -> " + _group(label)
                if t > groups.get(g, (-1.0,))[0]:
                    groups[g] = (t, d, b, f"{cells[i][1]} {label}")
    for pname, p in mod.get("ports", {}).items():
        if p["direction"] == "input":
            continue
        for b in p["bits"]:
            if isinstance(b, int) and b in driver:
                d = driver[b]
                t = out_time(d) + m["port"]
                if t > limit:
                    over.add(("port", pname))
                if t > worst:
                    worst, wend = t, ("port", pname, d, b)
                if t > group_floor:
                    g = start_group(d, b) + " -> port " + _group(pname)
                    if t > groups.get(g, (-1.0,))[0]:
                        groups[g] = (t, d, b, f"port {pname}")

    def trace(d, b):
        """The steps (type, kind, net name) of the worst path into bit ``b`` driven by ``d``."""
        steps = []
        while d is not None and d != PORT:
            name, ctype, model, _, _ = cells[d]
            steps.append((ctype, model.kind, names.get(b, name)))
            if back[d] is None:
                break
            d, b = back[d]
        if d == PORT:
            steps.append(("port", "port", names.get(b, "input")))
        return steps[::-1]

    steps = []
    end_desc = None
    if wend is not None:
        end_cell, end_pin, d, b = wend
        if end_cell == "port":
            end_desc = f"port {end_pin}"
        else:
            etype = cells[end_cell][1]
            label = end_label(end_cell)
            end_desc = f"{etype}.{end_pin}" + (f" {label}" if label != etype else "")
        steps = trace(d, b)
    kinds = Counter(k for _, k, _ in steps)
    types = Counter(t for t, _, _ in steps)
    start = steps[0] if steps else None
    worst_groups = []
    for g, (t, d, b, end) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:keep_groups]:
        gs = trace(d, b)
        worst_groups.append({"group": g, "delay_ns": round(t + m["clock_uncertainty"], 3),
                             "path": _composition(gs),
                             "start": f"{gs[0][0]} {gs[0][2]}" if gs else None, "end": end})
    summary = {
        "model": MODEL_VERSION,
        "period_ns": period_ns,
        "delay_ns": round(worst + m["clock_uncertainty"], 3) if worst >= 0 else 0.0,
        "over": worst + m["clock_uncertainty"] > period_ns,
        "endpoints_over": len(over),
        "start": f"{start[0]} {start[2]}" if start else None,
        "end": end_desc,
        "lut_levels": kinds.get("lut", 0) + kinds.get("unknown", 0),
        "lutram_reads": sum(1 for _, k, _ in steps[1:] if k in ("lutram", "srl")),
        "carry_cells": kinds.get("carry", 0),
        "muxf": kinds.get("muxf", 0),
        "dsp": types.get("DSP48E2", 0),
        "bram": sum(v for t, v in types.items() if _RAMB.fullmatch(t)),
        "uram": sum(v for t, v in types.items() if t.startswith("URAM")),
        "cells": len(steps),
        "path": [f"{t} {nm}" for t, _, nm in steps][:keep_steps],
        "worst_endpoints": worst_groups,
        "loops": loops,
        "unknown_types": sorted({c[1] for c in cells if c[2].kind == "unknown"}),
    }
    return summary


_INDEX = re.compile(r"\[\d+\]|<\d+>|\$\d+|(_?\d+)+$")


def _composition(steps) -> str:
    """``"6 LUT, 2 CARRY4, 1 DSP48E2"``: what a path is made of, by cell type class."""
    c = Counter("LUT" if k in ("lut", "unknown") else "CARRY4" if k == "carry" else
                "MUXF" if k == "muxf" else t for t, k, _ in steps[1:] if k != "inv")
    return ", ".join(f"{n} {k}" for k, n in sorted(c.items(), key=lambda kv: -kv[1]))


def _group(name: str) -> str:
    """A register's group: its name without bit, field, lane and stage indices (``acc_3[7]``
    -> ``acc``, ``p265`` -> ``p``, ``idx$144`` -> ``idx``)."""
    prev = None
    while prev != name:
        prev, name = name, _INDEX.sub("", name)
    return name


def describe(t: dict, max_groups: int = 4) -> str:
    """One line: delay, flag and path composition, then the other path groups over the
    period (up to ``max_groups``)."""
    if not t:
        return "-"
    parts = [f"{t['lut_levels']} LUT"]
    for key, label in (("carry_cells", "CARRY4"), ("muxf", "MUXF"), ("dsp", "DSP"),
                       ("bram", "BRAM"), ("uram", "URAM"), ("lutram_reads", "LUTRAM")):
        if t.get(key):
            parts.append(f"{t[key]} {label}")
    flag = " OVER" if t.get("over") else ""
    line = f"{t['delay_ns']:.2f} ns{flag} ({', '.join(parts)}; from {t['start']} to {t['end']})"
    over = [g for g in t.get("worst_endpoints", []) if g["delay_ns"] > t["period_ns"]]
    if len(over) > 1:
        line += "; over: " + "; ".join(f"{g['group']} {g['delay_ns']:.2f} ({g['path']})"
                                       for g in over[:max_groups])
    return line
