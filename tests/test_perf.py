"""`tellme perf` (sim/perf.py): the headline figures are the whole-step cycle model of the top
as built (sim/cycles_top.py) split by block, the secondary per-block model is consistent with
the block models it is made of, the goals name the right block, and the text and the JSON
carry the same figures and every assumption."""

import itertools
import json
import re
import sys

import pytest

from tellme.cli import main
from tellme.hw.presets import preset
from tellme.sim import cycles_top as ct, perf, rates
from tellme.sim.cycles import layer_cycles
from tellme.spec.models import MODELS
from tellme.spec.targets import target

LARGE = MODELS["bitnet_b1_58-large"]
EW_OPS = ("EMBED", "NORM", "QUANT", "ROPE", "RESIDUAL", "GATED_ACT")


@pytest.fixture(scope="module")
def large():
    a = perf.default_assumptions("kv260")
    return perf.project(LARGE, "kv260", a, name="bitnet_b1_58-large")


@pytest.fixture(scope="module")
def demo():
    """The demo model on the sim-demo build with the simulation memory (what
    tests/rtl/tb_top_demo.py checks against the RTL top's CYCLES)."""
    from tellme.host.generate import DEFAULT_MODEL

    cfg, w, name, source = perf.read_weights(DEFAULT_MODEL)
    return perf.project(cfg, "sim-demo", perf.default_assumptions("sim-demo"), name=name,
                        contexts=(4, 9, 20), prompts=(3, 20), weights=w, source=source,
                        mem=ct.SIM_MEMORY, overlapped=False)


def _model(report, cfg, target_name, a):
    """The tool's programs for ``report`` (the same memory map and weights)."""
    dec = report["_all_decode"]
    pre = [p["tokens"] for p in report["prefill"]]
    tg = target(target_name)
    return perf._Model(cfg, target_name, perf.top_assumptions(a),
                       max_context=max([*dec, *pre]),
                       max_tokens=min(tg.tlmm["tok_max"], max(pre)))


# --------------------------------------------------------------------------- the top as built

def test_decode_is_the_whole_step_model(large):
    """Each decode figure is sim.cycles_top.program_cycles of the call's program on the
    board's memory, within 0.1 % of call_cycles (its own memory map), split by block with
    nothing lost; the per-layer figures times the layers plus the rest are the call."""
    a = perf.default_assumptions("kv260")
    m = _model(large, LARGE, "kv260", a)
    mem = ct.board_memory("kv260", 0.85)
    L = LARGE.num_layers
    for d in large["decode"]:
        c = d["context"]
        prog = m.program("decode", c - 1, 1)
        want = ct.program_cycles(prog, "kv260", mem=mem)
        assert d["pl_cycles"] == want["total"]
        assert d["pl_cycles"] == pytest.approx(
            ct.call_cycles(LARGE, "kv260", "decode", c - 1, 1)["total"], rel=1e-3)
        cyc = d["per_token_cycles"]
        assert sum(cyc.values()) == d["pl_cycles"]
        ops = d["by_op_cycles"]
        assert cyc["linears"] == ops["LINEAR"]
        assert cyc["elementwise"] == sum(ops.get(op, 0) for op in EW_OPS)
        assert cyc["kv_write"] == ops["KV_WRITE"] and cyc["attention"] == ops["ATTENTION"]
        seq = want["base"] + sum(rc.cycles - rc.unit for rc in want["records"])
        assert cyc["sequencer"] == seq
        for b, v in d["per_layer_cycles"].items():
            assert v * L + d["outside_layers_cycles"][b] == pytest.approx(cyc[b])
        assert d["pl_s"] == pytest.approx(d["pl_cycles"] / 250e6)
        assert d["records"] == len(prog.records) == 22 * L + 3


def test_seconds_and_lm_head(large):
    clk = 250e6
    for d in large["decode"]:
        sec = d["per_token_s"]
        assert set(sec) == set(perf.BLOCKS)
        assert d["seconds"] == pytest.approx(sum(sec.values()))
        assert d["seconds"] == pytest.approx(d["pl_s"] + d["lm_head_host_s"])
        assert d["tok_s"] == pytest.approx(1 / d["seconds"])
        for b, v in d["per_token_cycles"].items():
            assert sec[b] == pytest.approx(v / clk)
        assert sec["lm_head"] == pytest.approx(LARGE.vocab_size * (1536 + 4) / 4e9)
        # the PL head as built: one 128-bit port (16 B/cycle), the int8 head and its row
        # scales (64-row blocks) streamed once, plus the QUANT record and the latencies
        pl = d["pl_lm_head"]
        head = -(-LARGE.vocab_size // 64) * (256 + 64 * 1536)
        assert head / 16 / clk < pl["lm_head_s"] < head / 16 / clk * 1.01
        assert pl["seconds"] == pytest.approx(d["pl_s"] + pl["lm_head_s"])
    for p in large["prefill"]:
        assert p["ttft_s"] == pytest.approx(sum(p["per_call_s"].values()))
        assert p["ttft_s"] == pytest.approx(p["pl_s"] + p["lm_head_host_s"])
        assert p["prefill_tok_s"] == pytest.approx(p["tokens"] / p["ttft_s"])
        assert p["pl_cycles"] == sum(c["pl_cycles"] for c in p["calls"])


def test_prefill_is_the_whole_step_model(large, demo):
    """A prompt within tok_max is one call; a longer one is split into calls of tok_max rows
    (the demo's sim-demo build: 15), each the whole-step model of its program."""
    a = perf.default_assumptions("kv260")
    m = _model(large, LARGE, "kv260", a)
    mem = ct.board_memory("kv260")
    for p in large["prefill"]:
        assert p["chunks"] == 1
        prog = m.program("prefill", 0, p["tokens"])
        assert p["pl_cycles"] == ct.program_cycles(prog, "kv260", mem=mem)["total"]
    p20 = demo["prefill"][1]
    assert p20["tokens"] == 20 and [(c["start"], c["tokens"]) for c in p20["calls"]] == \
        [(0, 15), (15, 5)]


def test_the_linears_are_the_one_weight_port(large):
    """Decode on the top as built: the codes through the one 128-bit port m_axi_w0 are most
    of the linears' time; the DDR does not bind (16 B/cycle < the DDR at 0.70 and 0.90), so
    the PL time is the same at every efficiency and only the 'PL head' head changes."""
    tg = target("kv260")
    for d in large["decode"]:
        wp = d["weight_port"]
        assert wp["code_bytes"] == pytest.approx(LARGE.num_layers * rates.weight_bytes(LARGE, tg),
                                                 rel=1e-3)
        assert wp["seconds"] == pytest.approx(wp["code_bytes"] / 16 / 250e6)
        assert 0.9 < wp["share_of_linears"] < 1.0
        at = d["at_efficiency"]
        assert set(at) == {"0.70", "0.90"}
        assert at["0.70"]["pl_cycles"] == at["0.90"]["pl_cycles"] == d["pl_cycles"]
        assert at["0.70"]["tok_s"] == pytest.approx(d["tok_s"])
        # the PL LM head is on a 128-bit port too: the DDR efficiency changes nothing
        assert at["0.70"]["tok_s_pl_lm_head"] == pytest.approx(d["pl_lm_head"]["tok_s"]) \
            == pytest.approx(at["0.90"]["tok_s_pl_lm_head"])
    assert any("the DDR does not bind the top" in n for n in large["notes"])
    a = large["assumptions"]
    assert a["weight_port_bytes"] == a["kv_port_bytes"] == 16
    assert a["memory"]["read_latency"] == 48 and a["memory"]["beats_per_cycle"] == 1.0


def test_a_slow_ddr_binds():
    """Below 16 B/cycle of DDR the ports move less than a beat a cycle: the demo model's
    decode on the kv260 target at 20 % efficiency (13.7 B/cycle) is slower."""
    from tellme.host.generate import DEFAULT_MODEL

    cfg, w, name, _ = perf.read_weights(DEFAULT_MODEL)
    r = [perf.project(cfg, "kv260", perf.default_assumptions("kv260", ddr_efficiency=e),
                      name=name, contexts=(64,), prompts=(8,), weights=w, overlapped=False)
         for e in (0.85, 0.20)]
    assert r[1]["assumptions"]["memory"]["beats_per_cycle"] == pytest.approx(
        17.1e9 * 0.2 / 250e6 / 16)
    assert r[1]["decode"][0]["pl_cycles"] > 1.05 * r[0]["decode"][0]["pl_cycles"]
    assert not any("does not bind" in n for n in r[1]["notes"])


def test_ddr_bytes(large):
    """Weights: the LINEAR records' codes and the norm gains; KV: the int8 cache as stored."""
    from tellme.hw.attention.presets import INT_PRESETS
    from tellme.spec.kv_layout import decode_traffic
    from tellme.spec.numerics import STREAM_FORMAT

    tg = target("kv260")
    wb = rates.weight_bytes(LARGE, tg)
    gains = LARGE.num_layers * (3 * 1536 + 4096) * 2 + 1536 * 2
    beat = INT_PRESETS["kv260"]["beat"]
    for d in large["decode"]:
        assert d["ddr_bytes"]["weights"] - gains == pytest.approx(LARGE.num_layers * wb,
                                                                  abs=200)
        t = decode_traffic(d["context"], num_kv_heads=16, head_dim=96, dtype="int8",
                           depth=INT_PRESETS["kv260"]["depth"], beat=beat,
                           fmt=STREAM_FORMAT)
        assert d["ddr_bytes"]["kv"] == LARGE.num_layers * (t["read_stored"] + t["write"])
        assert d["ddr_bytes"]["lm_head"] == LARGE.vocab_size * 1540
        roof = d["ddr_bytes"]["weights"] + d["ddr_bytes"]["kv"] + d["ddr_bytes"]["lm_head"]
        assert d["roofline"]["tok_s_peak"] == pytest.approx(17.1e9 / roof)
        assert 0 < d["roofline"]["share"] < 1


def test_monotone(large, demo):
    for r in (large, demo):
        for a, b in itertools.pairwise(r["decode"]):
            assert b["pl_cycles"] > a["pl_cycles"]
            assert b["tok_s"] < a["tok_s"]
            assert b["ddr_bytes"]["kv"] > a["ddr_bytes"]["kv"]
            assert b["per_token_cycles"]["linears"] == a["per_token_cycles"]["linears"]
        for a, b in itertools.pairwise(r["prefill"]):
            assert b["ttft_s"] > a["ttft_s"]


def test_record_cache_is_exact():
    """The per-record cache (identical records of other layers, addresses within their
    page) gives the uncached figures, record by record."""
    from tellme.host.generate import DEFAULT_MODEL

    cfg, w, _, _ = perf.read_weights(DEFAULT_MODEL)
    for cfg_, tg, w_ in ((cfg, "sim-demo", w), (LARGE, "kv260", None)):
        m = perf._Model(cfg_, tg, perf.top_assumptions(perf.default_assumptions(tg)),
                        weights=w_, max_context=64, max_tokens=8)
        for kind, start, n in (("decode", 40, 1), ("prefill", 0, 5)):
            prog = m.program(kind, start, n)
            for mem in (ct.SIM_MEMORY, ct.board_memory("kv260")):
                a = ct.program_cycles(prog, tg, mem=mem)
                b = ct.program_cycles(prog, tg, mem=mem, cached=False)
                assert a["total"] == b["total"]
                assert [(x.cycles, x.unit) for x in a["records"]] == \
                    [(x.cycles, x.unit) for x in b["records"]]


# --------------------------------------------------------------------------- the goals

def test_goals_name_the_limiting_block(large):
    g = {x["goal"]: x for x in large["goals"]}
    assert set(g) == {"decode at 128 context", "decode at 1024 context", "TTFT for 64 tokens",
                      "TTFT for 128 tokens"}
    for x in g.values():
        assert x["limiting_block"] in perf.BLOCKS
        if not x["met"]:
            assert "MISSED" in x["text"] and x["over_budget_s"] > 0
            assert perf.BLOCK_LABELS[x["limiting_block"]] in x["text"]
            assert x["why"] and x["why"] in x["text"]
    # the top as built: the codes of every linear through one 128-bit weight port bind
    # decode at both contexts (attention is second at 1024 keys)
    for k in ("decode at 128 context", "decode at 1024 context"):
        assert g[k]["limiting_block"] == "linears" and not g[k]["met"]
        assert "one 128-bit weight port" in g[k]["why"]
    d1k = next(d for d in large["_all_decode"].values() if d["context"] == 1024)
    ranked = sorted(d1k["per_token_s"], key=d1k["per_token_s"].get, reverse=True)
    assert ranked[:2] == ["linears", "attention"]
    for k in ("TTFT for 64 tokens", "TTFT for 128 tokens"):
        assert g[k]["limiting_block"] == "linears"
        assert "TLMM's sweeps" in g[k]["why"]


def test_goals_only_for_the_large_model_on_the_kv260(demo):
    assert demo["goals"] is None and demo["tellme_v2"]["comparable"] is False


# --------------------------------------------------------------------------- the secondary model

def test_layer_model_reproduces_the_rtl_bench():
    """The secondary model's linear segments at the bench's conditions (58.14 B/cycle,
    512-bit port) against the RTL cycles docs/hw/weight-stream.md reports for one layer."""
    p = preset("kv260")
    kw = dict(t=p.t, q=p.q, v=p.v, table=p.table, half_depth=p.half_depth, nbt_max=p.nbt_max,
              shapes=LARGE.linear_shapes(), bytes_per_cycle=17.1e9 * 0.85 / 250e6)
    assert layer_cycles(n_tokens=1, **kw)["total"] == pytest.approx(106_272, rel=0.005)
    assert layer_cycles(n_tokens=64, **kw)["total"] == pytest.approx(1_399_783, rel=0.005)


def test_secondary_is_the_overlapped_block_model(large):
    """The per-block model with the design's overlaps stays as a labelled secondary line:
    three weight ports (48 B/cycle), its figures those of decode_step / prefill."""
    ov = large["overlapped_blocks"]
    assert "NOT the top as built" in ov["label"]
    assert ov["weight_bytes_per_cycle"] == 48.0 and ov["kv_bytes_per_cycle"] == 16.0
    m = perf._Model(LARGE, "kv260", perf.default_assumptions("kv260"), max_context=4096,
                    max_tokens=128)
    for d in ov["decode"]:
        want = perf.decode_step(m, d["context"])
        assert d["tok_s"] == pytest.approx(want["tok_s"])
        # the intended overlaps are worth more than 2x over the top as built
        top = next(x for x in large["decode"] if x["context"] == d["context"])
        assert d["pl_s"] < top["pl_s"]
    wb = rates.weight_bytes(LARGE, target("kv260"))
    assert ov["decode"][0]["per_layer_cycles"]["linears"] > wb / 48.0


def test_secondary_ports_wide():
    a = perf.default_assumptions("kv260", ports="wide", attention="int", attn_engines=3)
    r = perf.project(LARGE, "kv260", a, name="bitnet_b1_58-large", contexts=(256,),
                     prompts=(16,))
    bpc = 17.1e9 * 0.85 / 250e6
    assert r["overlapped_blocks"]["weight_bytes_per_cycle"] == pytest.approx(bpc)
    # the headline is the top as built whatever the secondary's options
    assert r["assumptions"]["weight_port_bytes"] == 16 and r["assumptions"]["attn_engines"] == 1
    json.dumps(perf.to_json(r), allow_nan=False)           # inf ports -> null


# --------------------------------------------------------------------------- the command

def _run(capsys, *argv):
    assert main(["perf", *argv]) == 0
    return capsys.readouterr().out


def test_cli_text_and_json_carry_the_same_figures(capsys):
    args = ("--model", "bitnet_b1_58-large", "--target", "kv260", "--context", "128", "1024",
            "--prompt", "64")
    out = _run(capsys, *args)
    r = json.loads(_run(capsys, *args, "--json"))
    assert "PROJECTION of the top as built" in out
    assert "validated against the RTL top in simulation (not on a board)" in out
    for s in ("250 MHz", "17.1 GB/s peak x 0.85", "read latency 48 cycles", "write response",
              "m_axi_w0", "m_axi_w1, m_axi_w2 idle", "m_axi_kv", "one record at a time",
              "int8 + one FP24 scale per row", "host A53", "assumed 4 GB/s", "PL head", "@0.70",
              "@0.90", "roofline", "TeLLMe v2 (published)", "arXiv 2510.15926",
              "issue 15 goals", "secondary: blocks in parallel, NOT the top as built",
              "cycles per layer", "by record kind"):
        assert s in out, s
    for line in r["assumption_lines"]:
        assert line in out
    table = out.split("decode, the top as built")[1].split("roofline:")[0]
    for d in r["decode"]:
        row = next(x for x in table.splitlines() if re.match(rf"\s+{d['context']}\s", x))
        cells = row.split()
        assert cells[1] == f"{d['seconds'] * 1e3:.2f}" and cells[2] == f"{d['pl_s'] * 1e3:.2f}"
        assert cells[3] == f"{d['tok_s']:.1f}"
        assert cells[4] == f"{d['pl_lm_head']['tok_s']:.1f}"
        assert cells[5] == f"{d['at_efficiency']['0.70']['tok_s']:.1f}"
        assert f"{d['pl_cycles']:,} PL cycles" in out
        for b in perf.BLOCKS:
            assert _ms_cell(d["per_token_s"][b]) in out
    p = r["prefill"][0]
    assert f"{p['ttft_s']:.3f}" in out and f"{p['prefill_tok_s']:.1f}" in out
    for g in r["goals"]:
        assert g["text"] in out
    assert r["validated_against_rtl_top"] is True and r["validated_on_board"] is False
    assert r["model_of"] == "the top as built (hw/top.py)"


def _ms_cell(s):
    return f"{s * 1e3:.2f}"


def test_cli_json(capsys):
    r = json.loads(_run(capsys, "--model", "bitnet-b1.58-2B-4T", "--target", "zcu104",
                        "--json"))
    assert r["kind"] == "projection" and r["model"] == "bitnet-b1.58-2B-4T"
    assert r["target"] == "zcu104"
    for k in ("clock_mhz", "ddr_peak_gbps", "ddr_efficiency", "ddr_latency", "memory",
              "weight_port_bytes", "kv_port_bytes", "kv_dtype", "attention", "a53_gbps",
              "attention_engine", "tlmm"):
        assert k in r["assumptions"], k
    assert r["assumptions"]["ddr_peak_gbps"] == 19.2 and r["assumptions"]["kv_dtype"] == "int8"
    assert [d["context"] for d in r["decode"]] == [128, 1024, 4096]
    assert [p["tokens"] for p in r["prefill"]] == [64, 128]
    d = r["decode"][0]
    assert set(d["at_efficiency"]) == {"0.70", "0.90"}
    assert set(d["per_token_s"]) == set(perf.BLOCKS)
    assert set(d["ddr_bytes"]) == set(perf.DDR_KINDS)
    assert {"tok_s", "pl_lm_head", "roofline", "per_layer_cycles", "by_op_cycles",
            "pl_cycles", "weight_port"} <= set(d)
    assert {"ttft_s", "prefill_tok_s", "pl_lm_head", "per_layer_cycles"} <= set(r["prefill"][0])
    assert r["goals"] is None and r["tellme_v2"]["comparable"] is False
    assert r["tellme_v2"]["decode_tok_s"] == 25.0
    assert r["assumption_lines"] and r["notice"] and r["validation"]["tests"]
    assert r["overlapped_blocks"]["decode"][0]["tok_s"] > d["tok_s"]


def test_weight_file(capsys):
    """A weight file's own config (the demo model: 4 layers, GQA 4/2, vocab 4096)."""
    from tellme.host.generate import DEFAULT_MODEL

    r = json.loads(_run(capsys, "--weights", str(DEFAULT_MODEL), "--context", "64", "256",
                        "--prompt", "32", "--json"))
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


# --------------------------------------------------------------------------- plots

def test_plot_writes_files(tmp_path, capsys, monkeypatch):
    """Without cached synthesis results the budget plot is skipped with a note naming the
    command (CI has none); the two projection plots are written."""
    pytest.importorskip("matplotlib", reason="matplotlib not installed (extra 'plot')")
    import tellme.hw.report

    monkeypatch.setattr(tellme.hw.report, "cached_budget", lambda target: (None, ["tlmm"]))
    out = _run(capsys, "--model", "bitnet_b1_58-large", "--context", "128", "--plot",
               str(tmp_path))
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["bitnet_b1_58-large-kv260-blocks.png", "bitnet_b1_58-large-kv260-decode.png"]
    assert all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "plot: " in out
    assert "budget plot skipped: no cached synthesis of tlmm; make it with: tellme hw report " \
        "--target kv260 --budget" in out


def test_plot_with_a_cached_budget(tmp_path, capsys, monkeypatch):
    """With cached synthesis results the resource plot is the third PNG."""
    pytest.importorskip("matplotlib", reason="matplotlib not installed (extra 'plot')")
    import tellme.hw.report
    from tellme.hw.budget import check

    result = check([_Rep("regs", 800, 0), _Rep("attention_int", 20_000, 296)], "kv260")
    monkeypatch.setattr(tellme.hw.report, "cached_budget", lambda target: (result, []))
    r = json.loads(_run(capsys, "--weights", _demo(), "--context", "64", "--prompt", "8",
                        "--json", "--plot", str(tmp_path)))
    assert sorted(p.split("/")[-1] for p in r["plots"]) == [
        "budget-kv260.png", "model.tlm-kv260-blocks.png", "model.tlm-kv260-decode.png"]
    assert "plot_notes" not in r


def _demo():
    from tellme.host.generate import DEFAULT_MODEL

    return str(DEFAULT_MODEL)


class _Rep:
    def __init__(self, block, lut, dsp):
        self.block, self._t = block, {"LUT": lut, "DSP": dsp, "BRAM36": 1, "URAM": 0}

    def totals(self):
        return self._t


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

    result = check([_Rep("regs", 800, 0), _Rep("attention_int", 20_000, 296)], "kv260")
    assert result["over_lines"] == ["attention"]          # drawn red, still drawn
    path = plot_budget(result, tmp_path)
    assert path.name == "budget-kv260.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_report_plot_needs_budget(capsys):
    assert main(["hw", "report", "--target", "kv260", "--cached", "--plot"]) == 2
    assert "--plot draws the budget check: add --budget" in capsys.readouterr().err
