"""GoldenModel: prefill/decode consistency, RoPE pairings, errors, hw-vs-float sanity, speed."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from tellme.quant.model import TernaryModel
from tellme.quant.random_models import permute_qk_adjacent, random_model, tiny_config
from tellme.sim.golden.model import GoldenModel, forward

# Float mode: decode runs the attention and LM-head BLAS calls on other shapes than prefill,
# so float32 sums round differently (relative ~1e-7 per op); an int8 code at a rounding tie
# can then flip, moving logits by ~1e-3 of their scale. Bound: 1e-3 * max|logit|.
FLOAT_DECODE_RTOL = 1e-3

CONFIGS = {
    "mha-silu-untied": tiny_config(num_heads=4, num_kv_heads=4, activation="silu",
                                   tie_word_embeddings=False),
    "gqa-relu2-tied": tiny_config(num_heads=4, num_kv_heads=2, activation="relu2"),
    "gqa1-silu-tied": tiny_config(num_heads=4, num_kv_heads=1, activation="silu"),
    "mha-relu2-untied": tiny_config(num_heads=2, num_kv_heads=2, head_dim=32,
                                    activation="relu2", tie_word_embeddings=False),
}


def split_run(gm, tokens, split):
    cache = gm.new_cache(len(tokens) + 3)
    out = [gm.forward(tokens[:split], cache)]
    for t in tokens[split:]:
        out.append(gm.forward(np.array([t]), cache))
    assert cache.length == len(tokens)
    return np.concatenate(out)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("numerics", ["hw", "float"])
def test_prefill_then_decode_equals_full_forward(name, numerics):
    m = random_model(CONFIGS[name], seed=7)
    toks = np.random.default_rng(1).integers(0, m.config.vocab_size, 12)
    full = forward(m, toks, numerics)
    assert full.shape == (12, m.config.vocab_size) and full.dtype == np.float32
    got = split_run(GoldenModel(m, numerics), toks, 5)
    if numerics == "hw":
        assert np.array_equal(got, full)                   # bit for bit
    else:
        assert np.abs(got - full).max() <= FLOAT_DECODE_RTOL * np.abs(full).max()
    # two prefill chunks, too
    gm = GoldenModel(m, numerics)
    cache = gm.new_cache(12)
    two = np.concatenate([gm.forward(toks[:4], cache), gm.forward(toks[4:], cache)])
    if numerics == "hw":
        assert np.array_equal(two, full)


@pytest.mark.parametrize("numerics", ["hw", "float"])
def test_adjacent_rope_pairing_with_permuted_rows_gives_same_logits(numerics):
    m = random_model(CONFIGS["gqa-relu2-tied"], seed=3)
    toks = np.arange(10) * 7 % m.config.vocab_size
    a = forward(m, toks, numerics)
    b = forward(permute_qk_adjacent(m), toks, numerics)
    if numerics == "hw":
        assert np.array_equal(a, b)                        # every reduction is order-free
    else:
        assert np.abs(a - b).max() <= FLOAT_DECODE_RTOL * np.abs(a).max()


def test_errors_name_the_problem():
    m = random_model(tiny_config(max_context=16), seed=0)
    gm = GoldenModel(m, "hw")
    cache = gm.new_cache(8)
    with pytest.raises(ValueError, match="empty"):
        gm.forward(np.array([], dtype=np.int64), cache)
    with pytest.raises(ValueError, match=r"token id 256 at index 1 .* vocab size 256"):
        gm.forward(np.array([1, 256]), cache)
    with pytest.raises(ValueError, match="token id -1"):
        gm.forward(np.array([-1]), cache)
    with pytest.raises(ValueError, match=r"need 9 positions, but the cache holds 8 and the "
                                         r"model's max_context is 16"):
        gm.forward(np.arange(9), cache)
    with pytest.raises(ValueError, match=r"cache of 17 positions exceeds the model's "
                                         r"max_context 16"):
        gm.new_cache(17)
    with pytest.raises(ValueError, match=r"17 tokens exceed the model's max_context 16"):
        forward(m, np.arange(17))
    with pytest.raises(ValueError, match="numerics"):
        GoldenModel(m, "bf16")
    with pytest.raises(ValueError, match="does not match"):
        GoldenModel(m, "float").forward([1], cache)
    assert cache.length == 0                               # failed calls leave it untouched


def top1_and_ppl(model, toks):
    lf = forward(model, toks, "float").astype(np.float64)
    lh = forward(model, toks, "hw").astype(np.float64)

    def nll(lg):
        lg = lg[:-1] - lg[:-1].max(-1, keepdims=True)
        lse = np.log(np.exp(lg).sum(-1))
        return float(np.mean(lse - lg[np.arange(len(toks) - 1), toks[1:]]))
    return (lf.argmax(-1) == lh.argmax(-1)).mean(), np.exp(nll(lf)), np.exp(nll(lh))


def test_hw_vs_float_sanity_on_random_model():
    """A loose bound (the accuracy bar is measured on the demo model; docs/numerics.md).

    Random ternary models are chaotic: rounding only the embedding to FP16 inside float mode
    already changes ~10 % of the argmaxes here. hw must stay near that noise floor; a broken
    block (sign, scale, rounding mode) drops agreement far below it.
    """
    c = tiny_config(vocab_size=512, hidden_size=128, intermediate_size=320, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=32, tie_word_embeddings=False,
                    max_context=64)
    m = random_model(c, seed=11, head_std=3.0)             # peaky logits
    toks = np.random.default_rng(2).integers(0, 512, 48)
    top1, _ppl_f, _ppl_h = top1_and_ppl(m, toks)
    noisy = TernaryModel(c, m.embed.astype(np.float16).astype(np.float32), m.layers,
                         m.final_norm, m.lm_head)
    floor = (forward(m, toks).argmax(-1) == forward(noisy, toks).argmax(-1)).mean()
    assert top1 >= min(0.8, floor - 0.1), (top1, floor)
    lf, lh = forward(m, toks, "float"), forward(m, toks, "hw")
    assert np.corrcoef(lf.reshape(-1), lh.reshape(-1))[0, 1] > 0.95


@pytest.mark.slow
def test_float_decode_speed_4m_model_one_core():
    """3.8M-parameter model (d=256, L=4, vocab 4096), one BLAS thread: > 50 tok/s decode."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "tellme.cli", "study", "golden-speed",
                          "--numerics", "float"], env=env, check=True, capture_output=True,
                         text=True).stdout
    rate = float(out.split("decode")[1].split()[0])
    assert rate > 50, out


def test_hw_logits_regression_pin():
    """hw numerics is a frozen spec: these bits were produced identically under NumPy 1.23.5
    and 2.4.6, for both stream formats. A change here is a spec change (docs/numerics.md) and
    breaks RTL parity."""
    from tellme.spec.numerics import FP16, FP24

    digests = {}
    for fmt in (FP16, FP24):
        for act in ("silu", "relu2"):
            m = random_model(tiny_config(activation=act, tie_word_embeddings=False), seed=4)
            gm = GoldenModel(m, "hw", fmt=fmt)
            lg = gm.forward(np.arange(30) * 11 % 256, gm.new_cache(30))
            digests[f"{fmt.name} {act}"] = hashlib.sha256(lg.tobytes()).hexdigest()[:16]
    assert digests == HW_PIN, digests


# the integer attention contract (numerics.md §4.1); checked identical under NumPy 1.23.5 and
# 2.4.6 on 2026-12-03 (the FP-attention pins before it were 3afb7e23..., b307fcf1..., 80549156...,
# 7bd25da1...)
HW_PIN = {"fp16 silu": "3d14bcecbdb725fc", "fp16 relu2": "6174b87f74599b92",
          "fp24 silu": "ec05222339789db1", "fp24 relu2": "099ad9426f0bbc24"}


def test_trace_keeps_consistent_intermediates():
    m = random_model(CONFIGS["gqa-relu2-tied"], seed=1)
    gm = GoldenModel(m, "hw")
    gm.trace = {}
    cache = gm.new_cache(8)
    lg = gm.forward(np.arange(5), cache)
    tr = gm.trace
    assert np.array_equal(tr["logits"], lg)
    assert tr["L0.h_in"].dtype == gm.fmt.dtype and tr["L0.q_in8"].dtype == np.int8
    assert np.array_equal(tr["L1.k_rope"], cache.keys(1, 5))
    assert np.array_equal(tr["L0.amax_in"], np.abs(tr["L0.h_in"]).max(-1))
    from tellme.sim.golden import hw_numerics as hw
    assert np.array_equal(tr["L0.x_attn"], hw.residual_add(tr["embed"], tr["L0.o"]))
    assert np.array_equal(tr["L1.x_out"], hw.residual_add(tr["L1.x_attn"], tr["L1.down"]))


@pytest.mark.parametrize("numerics", ["hw", "float"])
def test_last_only_gives_the_last_row(numerics):
    m = random_model(CONFIGS["mha-silu-untied"], seed=2)
    toks = np.arange(9)
    full = forward(m, toks, numerics)
    gm = GoldenModel(m, numerics)
    cache = gm.new_cache(9)
    last = gm.forward(toks, cache, last_only=True)
    assert last.shape == (1, m.config.vocab_size) and cache.length == 9
    if numerics == "hw":
        assert np.array_equal(last[0], full[-1])
    else:
        assert np.allclose(last[0], full[-1], rtol=0, atol=FLOAT_DECODE_RTOL * np.abs(full).max())


@pytest.mark.parametrize("module", ["tellme.sim.golden.model", "tellme.sim.golden.hw_numerics",
                                    "tellme.sim.golden.hf", "tellme.studies.accuracy",
                                    "tellme.studies.golden_speed", "tellme.quant.random_models"])
def test_golden_modules_are_numpy_only(module):
    from tests.test_imports import imported_after, third_party

    assert third_party(imported_after(f"import {module}")) == set()
