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


@pytest.mark.parametrize("tname", ["kv260", "zcu104"])
def test_ew_lanes_cover_the_rates(tname):
    """The target table's ew_lanes (what hw builds the element-wise blocks with) covers the
    lanes the rate analysis derives for every block of both public models; RoPE needs pairs."""
    from tellme.hw.elementwise.params import EwParams

    tg = target(tname)
    a = Assumptions(clock_mhz=tg.clock_mhz, ddr_peak_gbps=tg.ddr_peak_gbps, ddr_efficiency=0.85)
    rs = [analyse(name, MODELS[name], tg, a)
          for name in ("bitnet_b1_58-large", "bitnet-b1.58-2B-4T")]
    need = max(n for r in rs for n in r["elementwise_lanes"].values())
    assert all(r["elementwise_lanes_built"] == tg.ew_lanes for r in rs)
    assert tg.ew_lanes >= need and tg.ew_lanes % 2 == 0
    assert tg.ew_lanes == max(2, need)        # no more than needed
    p = EwParams.from_preset(tname)
    assert p.lanes == tg.ew_lanes and p.q % p.lanes == 0


def test_rates_cli_names_a_model_the_target_cannot_hold(capsys):
    from tellme.cli import main

    assert main(["hw", "rates", "--target", "sim", "--model", "bitnet_b1_58-large"]) == 2
    err = capsys.readouterr().err
    assert "bitnet_b1_58-large does not fit target sim:" in err and "kv260" in err
