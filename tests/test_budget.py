"""Area budget (hw/budget.py, `tellme hw report --budget`) and the timing proxy (hw/timing.py)
on synthetic block reports and a captured netlist: no synthesis here (the real yosys run with
the proxy is in test_hw_report.py)."""

import json
from pathlib import Path

import pytest

from tellme.cli import main
from tellme.hw import budget as hwbudget, report, timing
from tellme.hw.report import BlockReport
from tellme.spec.targets import target as target_record

FIXTURE = Path(__file__).parent / "fixtures" / "timing" / "mac_bram.net.json"


def _rep(block, lut=0, dsp=0, bram36=0, uram=0, target="kv260", timing_summary=None):
    """A BlockReport whose totals are the given figures (LUT6 / DSP48E2 / RAMB36E2 / URAM288)."""
    cells = {"LUT6": lut, "DSP48E2": dsp, "RAMB36E2": bram36, "URAM288": uram, "FDRE": 10}
    return BlockReport(target, block, f"synthetic {block}", cells, 1.0, "fp24", timing_summary)


# ---- budget as data -------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["kv260", "zcu104"])
def test_lines_add_up_to_the_totals_within_the_part(target):
    bud = hwbudget.budget(target)
    cap = target_record(target).part.capacity
    for m in hwbudget.BUDGET_METRICS:
        assert sum(ln.limits[m] for ln in bud.lines) == bud.totals[m], m
    assert bud.totals["LUT"] <= 0.70 * cap["LUT"] + 1000       # 70 % headroom (rounded)
    assert bud.totals["DSP"] <= 0.533 * cap["DSP"]
    assert bud.totals["BRAM36"] <= cap["BRAM36"] and bud.totals["URAM"] <= cap["URAM"]


def test_kv260_totals_are_the_issue_figures():
    assert hwbudget.budget("kv260").totals == {"LUT": 82_000, "DSP": 664, "BRAM36": 52,
                                               "URAM": 40}
    assert hwbudget.budget("sim").totals == hwbudget.budget("kv260").totals


def test_blocks_map_to_lines():
    bud = hwbudget.budget("kv260")

    def key(name):
        ln = hwbudget.line_of(name, bud)
        return ln.key if ln else None

    assert [key(n) for n in ("tlmm", "weight_buffer", "tlmm_outbuf")] == ["tlmm"] * 3
    assert key("ew_norm") == key("ew_rope") == "elementwise"
    assert key("attention_int") == key("attention_decode") == "attention"
    assert key("attention") is None                       # the FP engine it replaces
    assert key("weight_stream") == "weight_stream" and key("regs") == "shell"
    assert key("tlmm_half") is None and key("tlmm_core") is None          # not counted
    assert key("frobnicator") is None                                     # unassigned


def test_every_registry_block_has_a_line_or_is_not_counted():
    from tellme.hw.blocks import registry

    bud = hwbudget.budget("kv260")
    orphans = [n for n in registry() if n not in hwbudget.NOT_COUNTED
               and hwbudget.line_of(n, bud) is None]
    assert not orphans, f"add these blocks to a line in hw/budget.py: {orphans}"


# ---- arithmetic ---------------------------------------------------------------------------

def test_check_sums_lines_and_reserves_unbuilt_ones():
    reps = [_rep("tlmm", lut=10_000), _rep("weight_buffer", lut=100, uram=32),
            _rep("ew_norm", lut=5_000, dsp=20), _rep("ew_gated", lut=4_000, dsp=30),
            _rep("attention_int", lut=14_000, dsp=500, bram36=4), _rep("tlmm_half", lut=99_999)]
    res = hwbudget.check(reps, "kv260")
    assert res["ok"], res
    lines = {ln["line"]: ln for ln in res["lines"]}
    assert lines["tlmm"]["used"] == {"LUT": 10_100, "DSP": 0, "BRAM36": 0, "URAM": 32}
    assert lines["elementwise"]["used"]["DSP"] == 50 and lines["elementwise"]["status"] == "ok"
    assert lines["shell"]["status"] == "not built" and not lines["shell"]["built"]
    assert lines["shell"]["counted"] == lines["shell"]["limits"]
    assert lines["margin"]["status"] == "reserved"
    # total = built usage + the limits of the lines with no block yet
    reserved = sum(ln["limits"]["LUT"] for ln in res["lines"] if not ln["built"])
    assert res["total"]["used"]["LUT"] == 10_100 + 9_000 + 14_000 + reserved
    assert res["not_counted"] == [{"block": "tlmm_half", "why": "alternative to tlmm"}]


def test_derived_glue_is_the_unit_minus_its_parts():
    t = {"delay_ns": 2.5, "over": False}
    reps = [_rep("ew_unit", lut=34_014, dsp=38, bram36=18, uram=32, timing_summary=t),
            _rep("ew_rope", lut=3_000, dsp=8),
            _rep("tlmm", lut=15_000, bram36=5), _rep("weight_buffer", lut=14, uram=32),
            _rep("weight_stream_hp0", lut=5_000, bram36=5), _rep("tlmm_outbuf", lut=100),
            _rep("ew_dequant", lut=900),
            _rep("ew_norm", lut=2_000, dsp=11, bram36=6), _rep("ew_scale", lut=600, dsp=2),
            _rep("ew_quant", lut=400, dsp=2),
            _rep("ew_residual", lut=900), _rep("ew_gated", lut=1_800, dsp=14, bram36=1),
            _rep("row_dma", lut=2_700, dsp=1), _rep("row_convert", lut=500)]
    assert "ew_unit" in hwbudget.counted_blocks(["ew_unit", "top", "row_dma"])
    assert "top" not in hwbudget.counted_blocks(["ew_unit", "top", "row_dma"])
    res = hwbudget.check(reps, "kv260")
    lines = {ln["line"]: ln for ln in res["lines"]}
    blocks = {b["block"]: b for b in lines["buffers"]["blocks"]}
    assert blocks["row_unit_glue"]["totals"] == {"LUT": 1_100, "DSP": 0, "BRAM36": 1,
                                                 "URAM": 0}
    assert blocks["row_unit_glue"]["timing"] == t          # the unit's estimate
    assert lines["buffers"]["used"]["LUT"] == 2_700 + 500 + 1_100
    assert {"block": "ew_unit", "why": hwbudget.NOT_COUNTED["ew_unit"]} in res["not_counted"]
    # without the superset there is nothing to derive
    res = hwbudget.check(reps[1:], "kv260")
    assert all(b["block"] != "row_unit_glue" for ln in res["lines"] for b in ln["blocks"])


def test_check_flags_a_line_over_and_names_it():
    reps = [_rep("ew_norm", lut=9_000, dsp=70), _rep("ew_quant", lut=5_000)]
    res = hwbudget.check(reps, "kv260")
    assert not res["ok"] and res["over_lines"] == ["elementwise"]
    ln = next(x for x in res["lines"] if x["line"] == "elementwise")
    assert ln["over"] == ["LUT", "DSP"] and ln["status"] == "OVER"
    assert res["total"]["over"] == ["LUT", "DSP"]     # the lines add up to the totals
    msg = hwbudget.failure_message(res)
    assert "elementwise (LUT, DSP)" in msg and "total over budget: LUT, DSP" in msg
    text = hwbudget.format_budget(res)
    assert "OVER (LUT, DSP)" in text and "FAIL" in text


def test_check_fails_on_unassigned_blocks():
    res = hwbudget.check([_rep("frobnicator", lut=10)], "kv260")
    assert not res["ok"] and res["unassigned"][0]["block"] == "frobnicator"
    assert "frobnicator" in hwbudget.failure_message(res)


def test_check_needs_a_report_for_every_counted_block():
    with pytest.raises(KeyError, match="ew_rope"):
        hwbudget.check([_rep("ew_norm")], "kv260", ["ew_norm", "ew_rope", "tlmm_half"])


# ---- CLI --------------------------------------------------------------------------------

def _write_cached(tmp_path, monkeypatch, figures, target="kv260"):
    """Cached reports for every counted registry block (figures[name] or zero)."""
    from tellme.hw.blocks import registry

    monkeypatch.setenv("TELLME_BUILD_DIR", str(tmp_path))
    names = hwbudget.counted_blocks(list(registry()), target)
    out = report.report_dir(target)
    t_ok = {"delay_ns": 3.1, "over": False, "lut_levels": 5, "carry_cells": 2, "muxf": 0,
            "dsp": 0, "bram": 0, "uram": 0, "lutram_reads": 0, "start": "FDRE a",
            "end": "FDRE.D b"}
    for n in names:
        kw = figures.get(n, {})
        r = _rep(n, target=target, timing_summary=dict(t_ok), **kw)
        (out / f"{n}.json").write_text(json.dumps(r.to_dict()))
    return names


def test_cli_budget_passes_under_budget(tmp_path, monkeypatch, capsys):
    _write_cached(tmp_path, monkeypatch, {"tlmm": {"lut": 9_000}, "attention_int": {"dsp": 300}})
    assert main(["hw", "report", "--target", "kv260", "--budget", "--cached"]) == 0
    out = capsys.readouterr().out
    assert "budget: PASS" in out and "TLMM + weight buffer" in out and "not built" in out


def test_cli_budget_exits_2_naming_the_lines_over(tmp_path, monkeypatch, capsys):
    _write_cached(tmp_path, monkeypatch, {"attention_int": {"lut": 89_000, "dsp": 322}})
    assert main(["hw", "report", "--target", "kv260", "--budget", "--cached"]) == 2
    cap = capsys.readouterr()
    assert "OVER" in cap.out
    assert "lines over budget: attention (LUT)" in cap.err and "total over budget: LUT" in cap.err


def test_cli_budget_zcu104_has_its_own_column(tmp_path, monkeypatch, capsys):
    figures = {"tlmm": {"lut": 30_000, "uram": 48}, "attention_int": {"lut": 30_000, "dsp": 700}}
    _write_cached(tmp_path, monkeypatch, figures, target="zcu104")
    assert main(["hw", "report", "--target", "zcu104", "--budget", "--cached"]) == 0
    assert "budget: PASS" in capsys.readouterr().out
    _write_cached(tmp_path, monkeypatch, figures, target="kv260")
    assert main(["hw", "report", "--target", "kv260", "--budget", "--cached"]) == 2
    err = capsys.readouterr().err
    assert "tlmm (LUT, URAM)" in err and "attention (LUT, DSP)" in err


def test_cli_budget_json_carries_the_same(tmp_path, monkeypatch, capsys):
    names = _write_cached(tmp_path, monkeypatch, {"ew_norm": {"lut": 20_000}})
    assert main(["hw", "report", "--target", "kv260", "--budget", "--cached", "--json"]) == 2
    res = json.loads(capsys.readouterr().out)
    assert set(res) >= {"target", "lines", "total", "over_lines", "ok", "blocks",
                        "not_counted", "unassigned", "timing_over"}
    assert res["ok"] is False and res["over_lines"] == ["elementwise"]
    assert [b["block"] for b in res["blocks"]] == names
    ln = next(x for x in res["lines"] if x["line"] == "elementwise")
    assert set(ln) >= {"limits", "used", "counted", "over", "status", "blocks"}
    assert ln["blocks"][0]["timing"] == {"delay_ns": 3.1, "over": False}
    assert res["blocks"][0]["timing"]["lut_levels"] == 5


def test_cli_budget_missing_cache_names_block_and_command(tmp_path, monkeypatch, capsys):
    names = _write_cached(tmp_path, monkeypatch, {})
    (report.report_dir("kv260") / f"{names[-1]}.json").unlink()
    assert main(["hw", "report", "--target", "kv260", "--budget", "--cached"]) == 2
    err = capsys.readouterr().err
    assert names[-1] in err
    assert f"tellme hw report --target kv260 --block {names[-1]}" in err


def test_cli_budget_rejects_block(capsys):
    assert main(["hw", "report", "--budget", "--block", "tlmm", "--cached"]) == 2
    assert "drop --block" in capsys.readouterr().err


# ---- timing proxy on a captured netlist ----------------------------------------------------
# tests/fixtures/timing/mac_bram.net.json: `write_json -selected` after synth_xilinx -family xcup
# of a small Amaranth design: ra, rb <= a, b; acc <= acc + ra*rb (40 bit: a DSP48E2 with no
# internal register, then a fabric carry chain); a 512 x 32 memory (RAMB18E2, no DO_REG)
# whose read data feeds cnt <= cnt + rd[:24]. Hidden net names and attributes stripped.

def test_proxy_on_captured_netlist_finds_the_unregistered_multiply():
    t = timing.analyse(FIXTURE, "fx", 4.0)
    m = timing.MODEL
    assert t["start"] == "FDRE ra[0]" and t["end"].startswith("FDRE.D acc[")
    assert (t["dsp"], t["lut_levels"], t["carry_cells"]) == (1, 1, 10)
    expect = (m["ff_clk_q"] + m["net"] + m["dsp_mult"] + m["dsp_alu"] + m["dsp_out"]
              + m["net"] + m["lut"] + m["net"] + m["carry_entry"] + 9 * m["carry_stage"]
              + m["ff_setup"] + m["clock_uncertainty"])
    assert t["delay_ns"] == pytest.approx(expect, abs=1e-3)
    assert t["over"] and t["endpoints_over"] > 0 and t["loops"] == 0
    assert t["path"][1].startswith("DSP48E2") and t["unknown_types"] == []
    assert "OVER" in timing.describe(t) and "1 DSP" in timing.describe(t)
    groups = {g["group"]: g for g in t["worst_endpoints"]}
    assert set(groups) == {"ra -> acc", "rp__data -> cnt"}        # both paths, by register
    assert groups["ra -> acc"]["delay_ns"] == t["delay_ns"]
    assert groups["rp__data -> cnt"]["start"].startswith("RAMB18E2")
    assert groups["rp__data -> cnt"]["path"] == "6 CARRY4, 1 LUT"
    # at a slower clock the same path passes
    assert not timing.analyse(FIXTURE, "fx", 5.0)["over"]


def test_proxy_register_parameters_move_the_path():
    net = json.loads(FIXTURE.read_text())
    cells = net["modules"]["fx"]["cells"]
    dsp = next(c for c in cells.values() if c["type"] == "DSP48E2")
    dsp["parameters"]["MREG"] = "1"           # the multiply now ends at MREG
    t = timing.analyse(net, "fx", 4.0)
    assert t["delay_ns"] < 4.0 and not t["over"]
    for c in cells.values():                  # and the RAM path gets faster with DO_REG
        if c["type"] == "RAMB18E2":
            c["parameters"]["DOA_REG"] = c["parameters"]["DOB_REG"] = "1"
    assert timing.analyse(net, "fx", 4.0)["delay_ns"] <= t["delay_ns"]


def test_proxy_hand_netlist_arithmetic():
    """FF -> LUT -> LUT -> CARRY4 -> CARRY4 -> FF, plus an unknown cell type off the path."""
    def cell(ctype, conns, outs, params=None):
        return {"type": ctype, "parameters": params or {}, "connections": conns,
                "port_directions": {p: ("output" if p in outs else "input") for p in conns}}

    net = {"modules": {"top": {"ports": {"clk": {"direction": "input", "bits": [2]}},
                               "netnames": {"q0": {"hide_name": 0, "bits": [10]},
                                            "q1": {"hide_name": 0, "bits": [20]}},
                               "cells": {
        "ff0": cell("FDRE", {"C": [2], "CE": ["1"], "R": ["0"], "D": [20], "Q": [10]}, {"Q"}),
        "l1": cell("LUT2", {"I0": [10], "I1": [10], "O": [11]}, {"O"}),
        "l2": cell("LUT6", {"I0": [11], "I1": [10], "I2": [10], "I3": [10], "I4": [10],
                            "I5": [10], "O": [12]}, {"O"}),
        "c1": cell("CARRY4", {"CI": ["0"], "CYINIT": ["0"], "DI": [12, 12, 12, 12],
                              "S": [12, 12, 12, 12], "O": [13, 14, 15, 16],
                              "CO": [30, 31, 32, 33]}, {"O", "CO"}),
        "c2": cell("CARRY4", {"CI": [33], "CYINIT": ["0"], "DI": ["0", "0", "0", "0"],
                              "S": [10, 10, 10, 10], "O": [17, 18, 19, 20],
                              "CO": [34, 35, 36, 37]}, {"O", "CO"}),
        "odd": cell("FROB", {"A": [10], "Y": [40]}, {"Y"}),
    }}}}
    t = timing.analyse(net, "top", 4.0)
    m = timing.MODEL
    expect = (m["ff_clk_q"] + 2 * (m["net"] + m["lut"]) + m["net"] + m["carry_entry"]
              + m["carry_stage"] + m["ff_setup"] + m["clock_uncertainty"])
    assert t["delay_ns"] == pytest.approx(expect, abs=1e-3)
    assert (t["lut_levels"], t["carry_cells"], t["cells"]) == (2, 2, 5)
    assert t["start"] == "FDRE q0" and t["end"] == "FDRE.D q0"
    assert t["unknown_types"] == ["FROB"] and not t["over"]


# ---- the accelerator as built (`tellme hw report --block accelerator`) -----------------------

def test_accelerator_blocks_are_the_tops_children():
    """Every child module of the top is a registry block (or tied off), so the sum of
    ``ACCELERATOR_BLOCKS`` with the top's own logic is the whole top."""
    import re

    from tellme.hw.blocks import registry
    from tellme.hw.top import ACCELERATOR_BLOCKS, Top

    il = report.elaborate_rtlil(Top("sim"), "top_glue")
    children = {m[len("top_glue."):] for m in re.findall(r"^module \\(\S+)", il, re.M)
                if m.startswith("top_glue.") and "." not in m[len("top_glue."):]}
    assert children == set(ACCELERATOR_BLOCKS) - {""}
    names = registry()
    assert all(b in names for b in ACCELERATOR_BLOCKS.values() if b)
    assert "top_glue" in report.BLACKBOX_CHILDREN


def test_accelerator_check_adds_the_reserved_lines():
    from tellme.hw.blocks import registry

    parts = [_rep("top_glue", 200), _rep("ew_unit", 40_000, 60), _rep("attention_int", 18_000,
                                                                        290, 4, 3)]
    res = hwbudget.accelerator_check(parts, "kv260", list(registry()))
    reserved = {r["line"] for r in res["reserved"]}
    assert reserved == {"margin"}              # every other line has a block in the registry
    assert res["built"]["LUT"] == 58_200
    assert res["total"]["LUT"] == 58_200 + 10_700 and res["ok"]
    text = hwbudget.format_accelerator(res)
    assert "reserved: margin" in text and text.endswith("accelerator: PASS")
    res = hwbudget.accelerator_check(parts + [_rep("big", 20_000)], "kv260", list(registry()))
    assert not res["ok"] and res["over"] == ["LUT"]


def test_cli_accelerator_sums_the_tops_parts(tmp_path, monkeypatch, capsys):
    """`tellme hw report --block accelerator --budget --cached`: the top's parts summed with
    the reserved lines; over the totals it exits 2 naming the metric; it stands alone."""
    from tellme.hw.top import ACCELERATOR_BLOCKS

    monkeypatch.setenv("TELLME_BUILD_DIR", str(tmp_path))
    out = report.report_dir("kv260")

    def cache(figures):
        for n in filter(None, ACCELERATOR_BLOCKS.values()):
            (out / f"{n}.json").write_text(json.dumps(_rep(n, **figures.get(n, {})).to_dict()))

    cache({"ew_unit": {"lut": 40_000, "dsp": 64}, "attention_int": {"lut": 18_000}})
    argv = ["hw", "report", "--target", "kv260", "--block", "accelerator", "--budget", "--cached"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "  kv_quant_writer" in text and "  top_glue" in text and "accelerator: PASS" in text
    assert "total (built + reserved)" in text and "68.7K" in text      # 58K + 10.7K margin
    cache({"ew_unit": {"lut": 60_000}, "attention_int": {"lut": 18_000}})
    assert main(argv) == 2
    assert "the accelerator is over the budget in LUT" in capsys.readouterr().err
    assert main(["hw", "report", "--block", "accelerator", "--block", "tlmm", "--cached"]) == 2
    assert "stands alone" in capsys.readouterr().err
