"""Stream-format variants of hw numerics (studies/variants.py) and the accuracy option that
scores them (``tellme study accuracy --variants``, studies/accuracy.py)."""

import numpy as np
import pytest

from tellme.quant.random_models import random_model, tiny_config
from tellme.sim.golden.model import GoldenModel, forward
from tellme.spec.numerics import FP16
from tellme.studies.accuracy import eval_windows, variant_rows
from tellme.studies.variants import SITES, VariantModel, parse_variant, variant_forward


@pytest.fixture(scope="module", params=["relu2-gqa", "silu-mha"])
def model(request):
    cfg = tiny_config() if request.param == "relu2-gqa" else tiny_config(
        num_kv_heads=4, activation="silu")
    return random_model(cfg, seed=3)


def test_default_variant_is_fp16_hw_bit_for_bit(model):
    toks = np.random.default_rng(0).integers(0, model.config.vocab_size, 20)
    gm16 = GoldenModel(model, "hw", fmt=FP16, attention="fp")
    want = gm16.forward(toks, gm16.new_cache(20))
    assert np.array_equal(variant_forward(model, toks, "fp16"), want)
    # prefill then decode through the variant's own cache, as the hardware runs
    gm = VariantModel(model, "fp16")
    cache = gm.new_cache(20)
    got = [gm.forward(toks[:12], cache)] + [gm.forward(toks[i:i + 1], cache) for i in range(12, 20)]
    assert np.array_equal(np.concatenate(got), want)


def test_widened_variants_run_and_change_the_result(model):
    toks = np.random.default_rng(1).integers(0, model.config.vocab_size, 16)
    gm16 = GoldenModel(model, "hw", fmt=FP16, attention="fp")
    hw = gm16.forward(toks, gm16.new_cache(16))
    flt = forward(model, toks, "float")
    for spec in ("res32", "kv32", "streams32", "normw32+rope32", "fp32"):
        lv = variant_forward(model, toks, spec)
        assert lv.dtype == np.float32 and np.isfinite(lv).all()
        assert not np.array_equal(lv, hw), spec
    # all-FP32 is much nearer to float than hw is (only the function units and int8 remain)
    d32 = np.abs(variant_forward(model, toks, "fp32") - flt).max()
    assert d32 < np.abs(hw - flt).max()
    gm = VariantModel(model, "kv32")
    cache = gm.new_cache(16)
    gm.forward(toks, cache)
    assert cache.k[0].dtype == np.float32 and cache.k[0][:16].any()


def test_parse_variant():
    assert parse_variant("fp16") == dict.fromkeys(SITES, "fp16")
    assert set(parse_variant("e5m18").values()) == {"e5m18"}
    assert parse_variant("e5m18,qkv=fp16")["qkv"] == "fp16"
    f = parse_variant("res32,norm=fp32")
    assert f["residual"] == f["norm"] == "fp32" and f["qkv"] == "fp16"
    assert set(parse_variant("fp32").values()) == {"fp32"}
    for bad, msg in (("res33", "neither a preset"), ("resid=fp32", "unknown site"),
                     ("norm=bf16", "format must be")):
        with pytest.raises(ValueError, match=msg):
            parse_variant(bad)


def test_variant_rows_scores_eval_windows():
    m = random_model(tiny_config(), seed=0)
    ids = np.random.default_rng(2).integers(0, m.config.vocab_size, 41)
    windows = eval_windows(ids, 16)
    assert [len(w) for w in windows] == [16, 16, 9]
    rows = {r[0]: r for r in variant_rows(m, windows, ["contract", "fp32"], floor=True)}
    # the "contract" row is the same measurement as comparing forward(.., "hw") directly
    am_f = np.concatenate([forward(m, w[:-1], "float").argmax(-1) for w in windows])
    am_h = np.concatenate([forward(m, w[:-1], "hw").argmax(-1) for w in windows])
    assert rows["contract"][1] == pytest.approx(float((am_f == am_h).mean()))
    # the printed perplexity is the float one times (1 + dPPL)
    ppl_f = rows["contract"][6] / (1 + rows["contract"][2])
    assert rows["fp32"][6] == pytest.approx(ppl_f * (1 + rows["fp32"][2]), rel=1e-12)
    for name in ("float64 float model", "float, decode token by token"):
        assert 0.5 < rows[name][1] <= 1.0 and abs(rows[name][2]) < 0.05
    assert GoldenModel(m, "float").ops.F32 is np.float32    # the float64 copy is private
