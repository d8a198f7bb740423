"""The area budget as data: per target, lines with LUT/DSP/BRAM36/URAM limits and the registry
blocks that count against each line; :func:`check` sums block reports into lines and totals.

The kv260 column is docs/hw/budget.md's table (issue 11). The zcu104 column keeps the same
headroom fractions of the XCZU7EV (LUT 70 %, DSP 53.2 %, BRAM36 36.1 %, URAM 62.5 % of the
part, as 82K / 664 / 52 / 40 are of the XCK26) and gives the extra to the lines that scale with
T/Q and lanes (TLMM + buffer, element-wise, attention, activation buffers, the margin); the
fixed-function lines (control shell, weight streamer, KV DMA, LM head) keep their kv260 limits.
``sim`` is reported against the kv260 column (it is reported against the KV260 part).

Which block counts where: a block in :data:`NOT_COUNTED` (alternatives and supersets of other
blocks) counts nowhere; otherwise the line listing its exact name, else the line with the
longest matching prefix; a block no line claims is *unassigned* and fails the check (every block
has a line: add it here). A line none of whose blocks is built counts its whole limit as
reserved; the totals are checked over used + reserved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BUDGET_METRICS = ("LUT", "DSP", "BRAM36", "URAM")

# alternatives (tlmm_half: the half-table engine instead of tlmm) and supersets (tlmm_core:
# tlmm + weight_buffer in one module; top: the accelerator top around regs and sequencer)
# are synthesised on request, never counted
NOT_COUNTED = {
    "tlmm_half": "alternative to tlmm",
    "attention": "the FP attention engine, replaced by attention_int (the contract's engine, "
                 "docs/hw/attention.md); it stays in the registry as the twin of the golden "
                 "model's FP form (attention='fp')",
    "tlmm_core": "tlmm + weight_buffer in one module (counted as its parts)",
    "lm_head_ddr": "the 64-lane LM-head unit of the DDR rate, an alternative to lm_head (the "
                   "top's, on one weight port); not built",
    "axi_striper": "the 3 x 128-bit -> 512-bit read striper for the weight streamer; not in the "
                   "top yet (joining it, it counts in the weight streamers' line)",
    "top": "the accelerator top: regs + sequencer + shell_kv_arbiter + the execution units "
           "in one module (counted as its parts)",
    "ew_unit": "the row execution unit: tlmm + weight_buffer + weight_stream_hp0 (its "
               "LinearUnit) + tlmm_outbuf + ew_dequant + ew_norm + ew_scale + ew_quant + "
               "ew_rope + ew_residual + ew_gated + row_dma + row_convert + row_unit_glue in "
               "one module (counted as those; the weight line counts weight_stream)",
    "weight_stream_hp0": "the one-port streamer inside ew_unit today; the weight streamers' "
                         "line counts the 512-bit weight_stream the rates are sized for",
    "kv_quant_writer": "the top's quantising KV writer: kv_quant + kv_writer and their row "
                       "gate (counted as its parts)",
}

# logic that exists only inside a unit, measured as the unit minus its registry parts:
# {name: (superset block, its parts, what it is)}; the superset is synthesised for the budget
DERIVED = {
    "row_unit_glue": ("ew_unit", ("tlmm", "weight_buffer", "weight_stream_hp0",
                                  "tlmm_outbuf", "ew_dequant", "ew_norm", "ew_scale",
                                  "ew_quant", "ew_rope", "ew_residual", "ew_gated", "row_dma",
                                  "row_convert"),
                      "the row execution unit's own logic: command decode and checks, EMBED's "
                      "id pass, ids RAM and address multiply, NORM's absmax RAM and row, "
                      "QUANT's divisions, scale feed and zero padding, LINEAR's activation "
                      "assembly, tile walk and column trim, ROPE's row walk, the stream "
                      "multiplexers"),
}


@dataclass(frozen=True)
class DerivedReport:
    """``superset - parts`` (metrics floored at 0); the superset's timing summary."""
    block: str
    _totals: dict
    timing: dict | None = None

    def totals(self) -> dict:
        return dict(self._totals)


def derived_reports(by_name: dict) -> list:
    """The :data:`DERIVED` entries whose superset and parts are all in ``by_name``."""
    out = []
    for name, (sup, parts, _) in DERIVED.items():
        if sup in by_name and all(p in by_name for p in parts):
            t = by_name[sup].totals()
            for p in parts:
                pt = by_name[p].totals()
                t = {k: v - pt.get(k, 0) for k, v in t.items()}
            out.append(DerivedReport(name, {k: max(v, 0) for k, v in t.items()},
                                     getattr(by_name[sup], "timing", None)))
    return out


@dataclass(frozen=True)
class Line:
    key: str
    title: str
    limits: dict                       # {metric: limit} over BUDGET_METRICS (0: none allowed)
    blocks: tuple = ()                 # exact registry names
    prefixes: tuple = ()               # registry name prefixes
    note: str = ""                     # shown while the line is not built

    def claims(self, name: str) -> int:
        """Match strength of block ``name``: 1000 for an exact name, the prefix length for a
        prefix, 0 for none."""
        if name in self.blocks:
            return 1000
        return max((len(p) for p in self.prefixes if name.startswith(p)), default=0)


@dataclass(frozen=True)
class Budget:
    target: str
    lines: tuple
    totals: dict = field(hash=False)
    basis: str = ""


def _lim(lut, dsp, bram, uram) -> dict:
    return {"LUT": lut, "DSP": dsp, "BRAM36": bram, "URAM": uram}


# (key, title, blocks, prefixes, note); limits per target below
_LINES = (
    ("shell", "AXI4-Lite control shell + sequencer", ("regs", "sequencer", "shell",
                                                       "top_glue"),
     ("regs_", "seq_", "shell_"), "issue 12"),
    ("weight_stream", "weight streamers + HP-port arbitration", ("weight_stream",),
     ("weight_stream_",), ""),
    ("tlmm", "TLMM + weight buffer + second accumulator bank",
     ("tlmm", "weight_buffer", "tlmm_outbuf"), ("tlmm_",), ""),
    ("buffers", "activation and row buffers", ("act_buffer", "row_buffer", "row_dma",
                                               "row_convert", "row_unit_glue"),
     ("act_buf", "row_buf", "actbuf", "rowbuf"), ""),
    ("elementwise", "element-wise set", (), ("ew_",), ""),
    ("attention", "attention (both passes)", ("attention", "attention_int"),
     ("attention_", "attn_"), ""),
    ("kv_dma", "KV DMA incl. a quantising writer", ("kv_dma", "kv_reader", "kv_writer"),
     ("kv_",), "KV reader/writer"),
    ("lm_head", "LM-head unit", ("lm_head", "sampler"), ("lm_head_",), "issue 15"),
    ("margin", "margin for timing closure and the Vivado interconnect", (), (), ""),
)

_LIMITS = {
    "kv260": {
        # traded 2026-12-03 (docs/hw/budget.md, "Trades"): attention +3K LUT / +1 BRAM36 from
        # the KV DMA line (its gearbox-free int8 reader and writer: -2.5K / -1) and the weight
        # streamers (-0.5K)
        # and again: attention's 4096-key score tile moves to 3 URAM288 (K read once up to
        # 4096 keys), taken from the activation and row buffers, which get its 5 BRAM36
        # and the row movers of the execution units (row_dma: 3.7K LUT / 5 DSP, not in the
        # first drawing) went into the buffers line: +1.8K LUT from the weight streamers'
        # arbitration reserve (-0.9K) and the LM-head line (-0.9K), +5 DSP from the LM head
        # and EMBED (the head class's gather) runs in the row unit: +0.4K LUT from the LM head;
        # NORM's absmax row: +0.2K from the weight streamers; QUANT: +1.0K more from them
        # (their output shifter went from 9.1K to 7.0K); LINEAR and ROPE in the row unit:
        # +1.5K LUT from the TLMM line (-1.0K; its adder tree went from 16.2K to 15.0K) and
        # the element-wise line (-0.5K), +4 DSP from the element-wise line; KV_WRITE and
        # ATTENTION's control (AttnCtl) in the row unit: +2.1K LUT from the weight streamers
        # (-0.7K), the shell (-0.6K) and the element-wise line (-0.8K), +7 DSP from attention;
        # the PL LM head in the top (unit + LM_HEAD's control, docs/hw/lm_head.md): +1.8K LUT
        # from the margin (-0.5K), the weight streamers (-0.5K), attention (-0.3K), the TLMM
        # and element-wise lines (-0.2K each) and the shell (-0.1K); the integer engine at
        # 128 MAC slots a lane in DSP48E2 cascades (its adds leave the LUTs, 17.6K -> 16.3K):
        # -1.2K LUT to the margin, +33 DSP from the LM head line (18 used of 59), +4 BRAM36
        # from the row buffers' line (its accumulators split by channel parity for o_beat 2)
        "shell": _lim(5_300, 4, 2, 0),
        "weight_stream": _lim(7_200, 4, 8, 0),
        "tlmm": _lim(15_300, 0, 10, 32),
        "buffers": _lim(9_000, 16, 9, 5),
        "elementwise": _lim(11_500, 60, 8, 0),
        "attention": _lim(16_500, 546, 8, 3),
        "kv_dma": _lim(3_000, 8, 3, 0),
        "lm_head": _lim(3_500, 26, 4, 0),
        "margin": _lim(10_700, 0, 0, 0),
    },
    "zcu104": {
        "shell": _lim(6_000, 4, 2, 0),
        "weight_stream": _lim(8_900, 4, 8, 0),
        "tlmm": _lim(39_000, 0, 28, 48),
        "buffers": _lim(9_000, 16, 27, 9),
        "elementwise": _lim(29_400, 88, 22, 0),
        "attention": _lim(37_000, 740, 17, 3),
        "kv_dma": _lim(5_500, 8, 4, 0),
        "lm_head": _lim(3_500, 59, 4, 0),       # +1.8K from the margin (the LM head built)
        "margin": _lim(22_700, 0, 0, 0),
    },
}
_TOTALS = {
    "kv260": _lim(82_000, 664, 52, 40),
    "zcu104": _lim(161_000, 919, 112, 60),
}
_BASIS = {
    "kv260": "docs/hw/budget.md, issue 11: 70 % LUT / 53 % DSP of the XCK26",
    "zcu104": "same headroom of the XCZU7EV: 70 % LUT, 53 % DSP, 36 % BRAM36, 62.5 % URAM; "
              "the extra goes to the T/Q- and lane-scaled lines",
}


def budget(target: str) -> Budget:
    """The budget of ``target`` (``sim`` uses kv260's: same part)."""
    col = "kv260" if target == "sim" else target
    if col not in _LIMITS:
        raise ValueError(f"no budget for target {target!r}; known: {', '.join(_LIMITS)}")
    lines = tuple(Line(k, title, dict(_LIMITS[col][k]), blocks, prefixes, note)
                  for k, title, blocks, prefixes, note in _LINES)
    return Budget(target, lines, dict(_TOTALS[col]), _BASIS[col])


def line_of(name: str, bud: Budget) -> Line | None:
    """The line block ``name`` counts against (None: unassigned, or not counted)."""
    if name in NOT_COUNTED:
        return None
    best = max(bud.lines, key=lambda ln: ln.claims(name))
    return best if best.claims(name) else None


def counted_blocks(names, target: str = "kv260") -> list:
    """The names (registry order) ``--budget`` synthesises: everything but NOT_COUNTED
    (unassigned blocks included, so that the check can fail on them), and the supersets and
    parts the :data:`DERIVED` entries are measured from."""
    needed = {n for sup, parts, _ in DERIVED.values() for n in (sup, *parts)}
    return [n for n in names if n not in NOT_COUNTED or n in needed]


def check(reports, target: str, registry_names=None) -> dict:
    """Sum block reports (objects with ``.block`` and ``.totals()``) into budget lines.

    ``registry_names``: every block of the registry (default: the reports' blocks), used to
    list what is not counted. Returns a JSON-ready dict; ``ok`` is False when a line or a
    total is over, or a block is unassigned.
    """
    bud = budget(target)
    by_name = {r.block: r for r in reports}
    names = list(registry_names) if registry_names is not None else list(by_name)
    for d in derived_reports(by_name):
        by_name[d.block] = d
        names.append(d.block)
    lines, unassigned = [], []
    members = {ln.key: [] for ln in bud.lines}
    for name in names:
        if name in NOT_COUNTED:
            continue
        ln = line_of(name, bud)
        if ln is None:
            unassigned.append(name)
        else:
            members[ln.key].append(name)
    missing = [n for ks in members.values() for n in ks if n not in by_name] + \
        [n for n in unassigned if n not in by_name]
    if missing:
        raise KeyError(f"no report for block(s) {', '.join(missing)}")

    def tot(name):
        t = by_name[name].totals()
        return {m: t[m] for m in BUDGET_METRICS}

    total_used = dict.fromkeys(BUDGET_METRICS, 0.0)
    for ln in bud.lines:
        blocks = [{"block": n, "totals": tot(n),
                   "timing": _timing_brief(by_name[n])} for n in members[ln.key]]
        built = bool(blocks)
        used = {m: sum(b["totals"][m] for b in blocks) for m in BUDGET_METRICS}
        counted = used if built else dict(ln.limits)
        over = [m for m in BUDGET_METRICS if built and used[m] > ln.limits[m]]
        for m in BUDGET_METRICS:
            total_used[m] += counted[m]
        lines.append({"line": ln.key, "title": ln.title, "limits": dict(ln.limits),
                      "built": built, "status": ("OVER" if over else "ok") if built else
                      ("reserved" if ln.key == "margin" else "not built"),
                      "note": "" if built else ln.note,
                      "used": used, "counted": counted, "over": over, "blocks": blocks})
    un = []
    for n in unassigned:
        t = tot(n)
        un.append({"block": n, "totals": t, "timing": _timing_brief(by_name[n])})
        for m in BUDGET_METRICS:
            total_used[m] += t[m]
    total_over = [m for m in BUDGET_METRICS if total_used[m] > bud.totals[m]]
    over_lines = [ln["line"] for ln in lines if ln["over"]]
    timing_over = [b["block"] for ln in lines for b in ln["blocks"]
                   if b["timing"] and b["timing"].get("over")]
    return {
        "target": target, "basis": bud.basis, "metrics": list(BUDGET_METRICS),
        "lines": lines, "unassigned": un,
        "not_counted": [{"block": n, "why": NOT_COUNTED[n]} for n in names if n in NOT_COUNTED],
        "total": {"limits": dict(bud.totals), "used": total_used, "over": total_over},
        "over_lines": over_lines, "timing_over": timing_over,
        "ok": not over_lines and not total_over and not un,
    }


def _timing_brief(rep) -> dict | None:
    t = getattr(rep, "timing", None)
    if not t or "delay_ns" not in t:
        return None
    return {"delay_ns": t["delay_ns"], "over": t["over"]}


def failure_message(result: dict) -> str:
    """The CliError text of a failed check (names the lines over budget)."""
    parts = []
    if result["over_lines"]:
        parts.append("lines over budget: " + ", ".join(
            f"{ln['line']} ({', '.join(ln['over'])})" for ln in result["lines"] if ln["over"]))
    if result["total"]["over"]:
        parts.append("total over budget: " + ", ".join(result["total"]["over"]))
    if result["unassigned"]:
        parts.append("blocks with no budget line (add them to hw/budget.py): " +
                     ", ".join(b["block"] for b in result["unassigned"]))
    return f"{result['target']}: " + "; ".join(parts)


def accelerator_check(reports, target: str, registry_names) -> dict:
    """``tellme hw report --block accelerator``: the top as built, its parts' reports summed
    (``hw.top.ACCELERATOR_BLOCKS``: each child module of the top synthesised alone, and the
    top's own logic with them black-boxed), plus the limits of the budget lines nothing in
    the registry is built for yet (reserved, as ``--budget`` counts them), against the totals.
    ``registry_names``: every block of the registry."""
    bud = budget(target)
    built = {m: sum(r.totals()[m] for r in reports) for m in BUDGET_METRICS}
    names = [n for n in registry_names if n not in NOT_COUNTED] + \
        [n for n, (sup, _, _) in DERIVED.items() if sup in registry_names]
    claimed = {ln.key for ln in (line_of(n, bud) for n in names) if ln is not None}
    reserved = [{"line": ln.key, "title": ln.title, "limits": dict(ln.limits)}
                for ln in bud.lines if ln.key not in claimed]
    total = {m: built[m] + sum(r["limits"][m] for r in reserved) for m in BUDGET_METRICS}
    over = [m for m in BUDGET_METRICS if total[m] > bud.totals[m]]
    return {"target": target, "basis": bud.basis, "metrics": list(BUDGET_METRICS),
            "parts": [{"block": r.block, "totals": {m: r.totals()[m] for m in BUDGET_METRICS}}
                      for r in reports],
            "built": built, "reserved": reserved, "total": total,
            "limits": dict(bud.totals), "over": over, "ok": not over}


def format_accelerator(result: dict) -> str:
    """The text table of :func:`accelerator_check`'s result."""
    ms = result["metrics"]
    out = [f"accelerator {result['target']} ({result['basis']}): the top's parts, each "
           f"synthesised alone", f"{'part':<42}" + "".join(f"{m:>12}" for m in ms)]

    def row(name, vals):
        return f"{name[:41]:<42}" + "".join(f"{_fmt(vals[m], m):>12}" for m in ms)

    for p in result["parts"]:
        out.append(row("  " + p["block"], p["totals"]))
    out.append(row("built", result["built"]))
    for r in result["reserved"]:
        out.append(row(f"  reserved: {r['title']}", r["limits"]))
    out.append(row("total (built + reserved)", result["total"]))
    out.append(row("budget", result["limits"]))
    out.append("accelerator: " + ("PASS" if result["ok"] else
                                  "FAIL: over the budget in " + ", ".join(result["over"])))
    return "\n".join(out)


def _fmt(v: float, metric: str) -> str:
    if metric == "LUT" and v >= 1000:
        return f"{v / 1000:.1f}K"
    return f"{v:g}"


def format_budget(result: dict) -> str:
    """The text table of :func:`check`'s result."""
    ms = result["metrics"]
    head = f"{'line / block':<42}" + "".join(f"{m:>17}" for m in ms) + "  timing (ns)  status"
    out = [f"budget {result['target']} ({result['basis']}); used / limit", head]

    def cells(used, limits):
        return "".join(f"{_fmt(used[m], m) + ' / ' + _fmt(limits[m], m):>17}" for m in ms)

    for ln in result["lines"]:
        worst = [b["timing"] for b in ln["blocks"] if b["timing"]]
        t = max(worst, key=lambda x: x["delay_ns"]) if worst else None
        tcol = f"{t['delay_ns']:>6.2f}{' OVER' if t['over'] else '     '}" if t else " " * 11
        status = ln["status"] + (f" ({', '.join(ln['over'])})" if ln["over"] else "") + \
            (f" [{ln['note']}]" if ln["note"] else "")
        out.append(f"{ln['title'][:41]:<42}{cells(ln['counted'], ln['limits'])}  {tcol}  {status}")
        for b in ln["blocks"]:
            bt = b["timing"]
            tb = f"{bt['delay_ns']:>6.2f}{' OVER' if bt['over'] else '     '}" if bt else " " * 11
            out.append(f"{'  ' + b['block']:<42}" + "".join(
                f"{_fmt(b['totals'][m], m):>17}" for m in ms) + f"  {tb}")
    for b in result["unassigned"]:
        out.append(f"{'  ' + b['block'] + ' (no line)':<42}" + "".join(
            f"{_fmt(b['totals'][m], m):>17}" for m in ms) + "  " + " " * 11 + "  UNASSIGNED")
    tot = result["total"]
    status = ("OVER (" + ", ".join(tot["over"]) + ")") if tot["over"] else "ok"
    out.append(f"{'total (used + reserved)':<42}{cells(tot['used'], tot['limits'])}  "
               f"{'':11}  {status}")
    if result["not_counted"]:
        out.append("not counted: " + "; ".join(f"{b['block']} ({b['why']})"
                                               for b in result["not_counted"]))
    out.append("timing: estimated worst register-to-register path (docs/hw/timing.md); "
               "OVER = above the clock period")
    out.append("budget: " + ("PASS" if result["ok"] else "FAIL: " + failure_message(result)))
    return "\n".join(out)


def plot_budget(result: dict, out_dir):
    """Resource use of every budget line against its limit (``hw.budget.check``'s result),
    one panel per metric; a PNG in ``out_dir``."""
    from pathlib import Path

    from tellme.plotting import pyplot

    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [ln for ln in result["lines"] if ln["line"] != "margin"]
    fig, axes = plt.subplots(1, len(result["metrics"]), figsize=(11, 4.2), sharey=True)
    ys = range(len(lines))
    for ax, m in zip(axes, result["metrics"], strict=True):
        lim = [ln["limits"][m] for ln in lines]
        used = [ln["used"][m] if ln["built"] else 0 for ln in lines]
        ax.barh(ys, lim, color="lightgray", label="line limit")
        ax.barh(ys, used, height=0.5,
                color=["tab:red" if m in ln["over"] else "tab:blue" for ln in lines],
                label="used (yosys)")
        tot = result["total"]
        ax.set_title(f"{m}: {tot['used'][m]:,.0f} / {tot['limits'][m]:,.0f} "
                     "(used + reserved)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    import textwrap

    axes[0].set_yticks(list(ys), ["\n".join(textwrap.wrap(
        ln["title"] + ("" if ln["built"] else " (not built)"), 26)) for ln in lines],
        fontsize=7)
    axes[0].invert_yaxis()
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{result['target']}: resources per budget line (docs/hw/budget.md; yosys "
                 f"estimates, margin line not drawn)", fontsize=9)
    fig.tight_layout()
    path = out_dir / f"budget-{result['target']}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
