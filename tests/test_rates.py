"""`tellme hw rates`: the rate analysis against hand-computed figures (docs/hw/budget.md)."""

import json

import pytest

from tellme.cli import main
from tellme.sim.rates import Assumptions, analyse, elementwise_ops
from tellme.spec.models import MODELS
from tellme.spec.targets import target


def test_elementwise_ops_by_hand():
    # bitnet_b1_58-large: d 1536, f 4096, MHA 16 x 96
    ops = elementwise_ops(MODELS["bitnet_b1_58-large"])
    assert ops == {"dequant": 4 * 1536 + 2 * 4096 + 1536, "norm": 2 * (3 * 1536 + 4096),
                   "quant": 3 * 1536 + 4096, "rope": 2 * 1536, "residual": 2 * 1536,
                   "gated": 4096}
    assert sum(ops.values()) == 52224
    # 2B4T: d 2560, f 6912, 20 q heads / 5 kv heads of 128
    assert sum(elementwise_ops(MODELS["bitnet-b1.58-2B-4T"]).values()) == 81792


def test_attention_rates_by_hand():
    a = Assumptions(clock_mhz=250.0, ddr_peak_gbps=17.1, ddr_efficiency=0.85)
    r = analyse("bitnet_b1_58-large", MODELS["bitnet_b1_58-large"], target("kv260"), a)
    bpc = 17.1e9 * 0.85 / 250e6
    # decode: MACs per key 2*16*96; KV bytes per key 2*16*96*elem
    for fmt, eb in (("fp24", 3), ("fp16", 2), ("int8", 1)):
        need = r["decode"][0]["kv"][fmt]["macs_per_cycle_needed"]
        assert need == pytest.approx(2 * 16 * 96 / (2 * 16 * 96 * eb / bpc))
    assert [round(p["attention_macs_per_cycle_needed"]) for p in r["prefill"]] == [46, 91]
    # weights: 5-bit codes of 3 weights, 28.3 M weights per layer, padded to the tiling
    assert 28_311_552 * 5 / 3 / 8 <= r["weight_bytes_per_layer"] < 1.08 * 28_311_552 * 5 / 24
    assert r["decode_weight_cycles"] == pytest.approx(r["weight_bytes_per_layer"] / bpc)


def test_rates_cli_json(capsys):
    assert main(["hw", "rates", "--model", "bitnet-b1.58-2B-4T", "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    assert r["model"] == "bitnet-b1.58-2B-4T" and r["target"] == "kv260"
    assert [d["context"] for d in r["decode"]] == [128, 1024, 4096]
    assert set(r["elementwise_lanes"]) == set(r["elementwise_ops"])
