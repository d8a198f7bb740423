"""`tellme perf` (sim/perf.py): the projection is consistent with the block models it is made
of, monotone where it must be, and prints / serialises every figure and assumption."""

import itertools
import json
import sys

import pytest

from tellme.cli import main
from tellme.hw.presets import preset
from tellme.sim import perf, rates
from tellme.sim.cycles import layer_cycles
from tellme.spec.models import MODELS
from tellme.spec.targets import target

LARGE = MODELS["bitnet_b1_58-large"]


@pytest.fixture(scope="module")
def large():
    a = perf.default_assumptions("kv260", attention="fp")     # the FP engine's models
    return perf.project(LARGE, "kv260", a, name="bitnet_b1_58-large")


@pytest.fixture(scope="module")
def large_wide():
    a = perf.default_assumptions("kv260", ports="wide", attention="int", attn_engines=3)
    return perf.project(LARGE, "kv260", a, name="bitnet_b1_58-large",
                        contexts=(64, 256, 1024, 2048), prompts=(16, 64, 200))


def test_layer_model_reproduces_the_rtl_bench():
    """The linear-segment model at the bench's conditions (58.14 B/cycle, 512-bit port)
    against the RTL cycles docs/hw/weight-stream.md reports for one large layer."""
    p = preset("kv260")
    kw = dict(t=p.t, q=p.q, v=p.v, table=p.table, half_depth=p.half_depth, nbt_max=p.nbt_max,
              shapes=LARGE.linear_shapes(), bytes_per_cycle=17.1e9 * 0.85 / 250e6)
    assert layer_cycles(n_tokens=1, **kw)["total"] == pytest.approx(106_272, rel=0.005)
    assert layer_cycles(n_tokens=64, **kw)["total"] == pytest.approx(1_399_783, rel=0.005)


def test_decode_weight_time_is_bytes_over_bandwidth(large):
    a = large["assumptions"]
    tg = target("kv260")
    wb = rates.weight_bytes(LARGE, tg)
    # the shell's three 128-bit weight masters bind (48 B/cycle < 58.1 B/cycle of DDR)
    assert a["weight_bytes_per_cycle"] == 48.0 < a["ddr_bytes_per_cycle"]
    for d in large["decode"]:
        assert d["layer"]["weight_fill"] == pytest.approx(wb / 48.0)
        # the linears: every fill plus the exposed compute of each segment's last tile
        lin = d["per_layer_cycles"]["linears"]
        assert wb / 48.0 < lin < wb / 48.0 + 2 * 2000 + 10
        # codes in the program's LINEAR records = the rate analysis' bytes; + norm gains
        gains = LARGE.num_layers * (3 * 1536 + 4096) * 2 + 1536 * 2
        assert d["ddr_bytes"]["weights"] - gains == pytest.approx(LARGE.num_layers * wb,
                                                                  abs=200)


def test_wide_ports_are_ddr_bound(large_wide):
    bpc = 17.1e9 * 0.85 / 250e6
    wb = rates.weight_bytes(LARGE, target("kv260"))
    assert large_wide["assumptions"]["weight_bytes_per_cycle"] == pytest.approx(bpc)
    assert large_wide["decode"][0]["layer"]["weight_fill"] == pytest.approx(wb / bpc)
    json.dumps(perf.to_json(large_wide), allow_nan=False)         # inf ports -> null


def test_tok_s_is_clock_over_cycles(large):
    clk = 250e6
    L = LARGE.num_layers
    for d in large["decode"]:
        sec = d["per_token_s"]
        assert d["seconds"] == pytest.approx(sum(sec.values()))
        assert d["tok_s"] == pytest.approx(1 / d["seconds"])
        for b in ("linears", "kv_write", "attention"):
            assert sec[b] == pytest.approx(d["per_layer_cycles"][b] * L / clk)
        assert sec["lm_head"] == pytest.approx(LARGE.vocab_size * (1536 + 4) / 4e9)
        pl = d["if_pl_lm_head"]
        assert pl["lm_head_s"] == pytest.approx(LARGE.vocab_size * 1540 / (17.1e9 * 0.85)
                                                + 48 / clk)
    for p in large["prefill"]:
        assert p["ttft_s"] == pytest.approx(sum(p["per_call_s"].values()))
        assert p["prefill_tok_s"] == pytest.approx(p["tokens"] / p["ttft_s"])


def test_attention_from_its_cycle_and_traffic_models(large, large_wide):
    from tellme.sim.cycles_attn_int import layer_cycles as int_cycles
    from tellme.spec.kv_layout import decode_traffic

    tg = target("kv260")
    for d in large["decode"]:
        ly, n = d["layer"], d["context"]
        assert ly["attention_engine"] == rates.engine_cycles(LARGE, tg, "decode", n,
                                                             attention="fp")
        t = decode_traffic(n, num_kv_heads=16, head_dim=96, dtype="fp24")
        assert (ly["kv_read_bytes"], ly["kv_write_bytes"]) == (t["read"], t["write"])
        assert d["per_layer_cycles"]["attention"] == pytest.approx(
            max(ly["attention_engine"], t["read"] / 16) + 48)
    from tellme.hw.attention.presets import int_cycle_params

    ip = int_cycle_params("kv260")
    for d in large_wide["decode"]:
        assert d["layer"]["attention_engine"] == int_cycles(
            "decode", pos=d["context"] - 1, heads=16, kv_heads=16, head_dim=96, engines=3, **ip)
        # int8 rows + one FP24 scale per row
        assert d["layer"]["kv_write_bytes"] == 2 * 16 * (96 + 3)


def test_monotone(large_wide):
    dec = large_wide["decode"]
    for a, b in itertools.pairwise(dec):
        assert b["tok_s"] < a["tok_s"]
        assert b["if_pl_lm_head"]["tok_s"] < a["if_pl_lm_head"]["tok_s"]
        assert b["ddr_bytes"]["kv"] > a["ddr_bytes"]["kv"]
    for d in dec:
        at = d["at_efficiency"]
        assert at["0.70"]["tok_s"] < d["tok_s"] < at["0.90"]["tok_s"]
        assert d["if_pl_lm_head"]["tok_s"] > d["tok_s"]           # 4 GB/s A53 < DDR
        assert 0 < d["roofline"]["share"] < 1
    pre = large_wide["prefill"]
    for a, b in itertools.pairwise(pre):
        assert b["ttft_s"] > a["ttft_s"]


def test_goals_name_the_limiting_block(large):
    g = {x["goal"]: x for x in large["goals"]}
    assert set(g) == {"decode at 128 context", "decode at 1024 context", "TTFT for 64 tokens",
                      "TTFT for 128 tokens"}
    for x in g.values():
        assert x["limiting_block"] in perf.BLOCKS
        if not x["met"]:
            assert "MISSED" in x["text"] and x["over_budget_s"] > 0
            assert perf.BLOCK_LABELS[x["limiting_block"]] in x["text"]
    # today's contract at 1024 keys: FP24 KV through one 128-bit port
    assert g["decode at 1024 context"]["limiting_block"] == "attention"


def test_cli_text(capsys):
    assert main(["perf", "--model", "bitnet_b1_58-large", "--target", "kv260",
                 "--context", "128", "1024", "--prompt", "64"]) == 0
    out = capsys.readouterr().out
    assert "PROJECTION" in out and "not yet validated against an RTL top" in out
    for s in ("250 MHz", "17.1 GB/s peak x 0.85", "ports (spec/shell.py)", "KV cache: int8",
              "host A53", "assumed 4 GB/s", "if PL", "@0.70", "@0.90", "roofline",
              "TeLLMe v2 (published)", "arXiv 2510.15926", "issue 15 goals", "schedule"):
        assert s in out, s


def test_cli_json(capsys):
    assert main(["perf", "--model", "bitnet-b1.58-2B-4T", "--target", "zcu104", "--json",
                 "--attention", "int"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["kind"] == "projection" and r["validated_against_rtl_top"] is False
    assert r["model"] == "bitnet-b1.58-2B-4T" and r["target"] == "zcu104"
    for k in ("clock_mhz", "ddr_peak_gbps", "ddr_efficiency", "ddr_latency",
              "weight_port_bytes", "kv_port_bytes", "kv_dtype", "attention", "a53_gbps",
              "attention_engine", "weight_bytes_per_cycle"):
        assert k in r["assumptions"], k
    assert r["assumptions"]["ddr_peak_gbps"] == 19.2 and r["assumptions"]["kv_dtype"] == "int8"
    assert [d["context"] for d in r["decode"]] == [128, 1024, 4096]
    assert [p["tokens"] for p in r["prefill"]] == [64, 128]
    d = r["decode"][0]
    assert set(d["at_efficiency"]) == {"0.70", "0.90"}
    assert set(d["per_token_s"]) == set(perf.BLOCKS)
    assert set(d["ddr_bytes"]) == set(perf.DDR_KINDS)
    assert {"tok_s", "if_pl_lm_head", "roofline", "per_layer_cycles"} <= set(d)
    assert {"ttft_s", "prefill_tok_s", "if_pl_lm_head"} <= set(r["prefill"][0])
    assert r["goals"] is None and r["tellme_v2"]["comparable"] is False
    assert r["tellme_v2"]["decode_tok_s"] == 25.0
    assert r["assumption_lines"] and r["schedule"] and r["notice"]


def test_weight_file(capsys):
    """A weight file's own config (the demo model: 4 layers, GQA 4/2, vocab 4096)."""
    from tellme.host.generate import DEFAULT_MODEL

    assert main(["perf", "--weights", str(DEFAULT_MODEL), "--context", "64", "256",
                 "--prompt", "32", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["config"]["num_layers"] == 4 and r["config"]["vocab_size"] == 4096
    assert r["model"] == "model.tlm" and "weight file" in r["source"]
    assert r["decode"][0]["tok_s"] > r["decode"][1]["tok_s"] > 0
    assert r["decode"][0]["ddr_bytes"]["lm_head"] == 4096 * (r["config"]["hidden_size"] + 4)


@pytest.mark.parametrize("argv, msg", [
    (["--model", "bitnet-9B"], "unknown model 'bitnet-9B'"),
    (["--model", "bitnet_b1_58-3B"], "does not fit target kv260"),
    (["--weights", "/nonexistent/model.tlm"], "cannot read the weight file"),
    (["--model", "bitnet_b1_58-large", "--context", "0"], "context lengths must be >= 1"),
    (["--model", "bitnet_b1_58-large", "--ddr-eff", "1.5"], "DDR efficiency"),
    (["--model", "bitnet_b1_58-large", "--attention", "fp", "--attn-engines", "2"],
     "attention engines"),
])
def test_cli_errors(argv, msg, capsys):
    assert main(["perf", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_bad_weight_file(tmp_path, capsys):
    bad = tmp_path / "bad.tlm"
    bad.write_bytes(b"not a weight file at all")
    assert main(["perf", "--weights", str(bad)]) == 2
    assert "not a tellme weight file" in capsys.readouterr().err


def test_plot_writes_files(tmp_path, capsys, monkeypatch):
    """Without cached synthesis results the budget plot is skipped with a note naming the
    command (CI has none); the two projection plots are written."""
    pytest.importorskip("matplotlib", reason="matplotlib not installed (extra 'plot')")
    import tellme.hw.report

    monkeypatch.setattr(tellme.hw.report, "cached_budget", lambda target: (None, ["tlmm"]))
    assert main(["perf", "--model", "bitnet_b1_58-large", "--context", "128",
                 "--plot", str(tmp_path)]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["bitnet_b1_58-large-kv260-blocks.png", "bitnet_b1_58-large-kv260-decode.png"]
    assert all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    out = capsys.readouterr().out
    assert "plot: " in out
    assert "budget plot skipped: no cached synthesis of tlmm; make it with: tellme hw report " \
        "--target kv260 --budget" in out


def test_plot_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # import fails
    assert main(["perf", "--model", "bitnet_b1_58-large", "--context", "128",
                 "--plot", str(tmp_path)]) == 2
    assert "needs matplotlib" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_budget_plot(tmp_path):
    """The resource plot of `tellme hw report --budget --plot` and `tellme perf --plot`: one
    PNG from a budget check (two hand-made block reports; the other lines are not built)."""
    pytest.importorskip("matplotlib", reason="matplotlib not installed (extra 'plot')")
    from tellme.hw.budget import check, plot_budget

    class Rep:
        def __init__(self, block, lut, dsp):
            self.block, self._t = block, {"LUT": lut, "DSP": dsp, "BRAM36": 1, "URAM": 0}

        def totals(self):
            return self._t

    result = check([Rep("regs", 800, 0), Rep("attention_int", 20_000, 296)], "kv260")
    assert result["over_lines"] == ["attention"]          # drawn red, still drawn
    path = plot_budget(result, tmp_path)
    assert path.name == "budget-kv260.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_report_plot_needs_budget(capsys):
    assert main(["hw", "report", "--target", "kv260", "--cached", "--plot"]) == 2
    assert "--plot draws the budget check: add --budget" in capsys.readouterr().err
