"""`tellme hw verilog` and `tellme hw plan` (no synthesis)."""

import json

from tellme.cli import main
from tellme.sim.cycles import command_timing


def test_verilog_writes_sim_core(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TELLME_BUILD_DIR", str(tmp_path))
    assert main(["hw", "verilog", "--target", "sim", "--block", "tlmm_core"]) == 0
    path = tmp_path / "verilog" / "sim" / "tlmm_core.v"
    assert capsys.readouterr().out.strip() == str(path)
    text = path.read_text()
    assert "module tlmm_core" in text
    for port in ("i_w__payload", "i_cmd__valid", "i_act__ready", "o__payload"):
        assert port in text


def test_plan_json_decode_is_fill_bound(capsys):
    assert main(["hw", "plan", "--target", "kv260", "--tokens", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    call = out["calls"][0]
    q = {x["name"]: x for x in call["linears"]}["q_proj"]
    # 1536x1536 in one tile: 19 K blocks x 96 column blocks, sweep-bound
    assert q["compute"] == command_timing(table="full", kb=19, nbt=96, n_tokens=1).issue_done + 1
    assert q["fill"] == 96 * 19 * 16 // 4
    assert call["fill"] > call["compute"]          # decode waits for weights (V=4 < Q=16)
    assert call["total"] < call["serial"]          # ping-pong overlap helps


def test_plan_rejects_unknown_model(capsys):
    assert main(["hw", "plan", "--model", "gpt2"]) == 2
    assert "unknown model 'gpt2'" in capsys.readouterr().err
