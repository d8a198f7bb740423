"""`tellme generate --backend rtl-sim` (host/backends.py RtlSimBackend over
sim/rtl_remote.py's RemoteRtlDevice: the accelerator top of the ``sim-demo`` build in a
Verilator child process, the same host driver as the board) prints the same text as the golden
model in hw numerics with the PL LM head (``--numerics hw-pl``: the device returns logits when
the model's hidden size fits its LM-head unit), greedy and sampled, on the bundled demo model.
Slow: a Verilator build of the top the first time, then about 90 s a run."""

from __future__ import annotations

import pytest

from tellme.cli import main

pytestmark = [pytest.mark.rtl, pytest.mark.slow]

PROMPT = "And God said"


def _text(capsys, argv) -> tuple[str, str]:
    assert main(["generate", "--prompt", PROMPT, "--max-new-tokens", "8", "--seed", "1",
                 *argv]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return "\n".join(out[:-1]), out[-1]


@pytest.mark.parametrize("sampling", [[], ["--temperature", "0.8", "--top-k", "40"]],
                         ids=["greedy", "sampled"])
def test_rtl_sim_generates_the_golden_text(capsys, sampling):
    want, _ = _text(capsys, ["--backend", "golden", "--numerics", "hw-pl", *sampling])
    got, metrics = _text(capsys, ["--backend", "rtl-sim", *sampling])
    assert got == want
    assert "backend rtl-sim:sim-demo" in metrics and "simulated " in metrics


def _family_file(tmp_path, family):
    """The demo weight file; a committed HF checkpoint fixture (2B4T-style: GQA 3/1, ReLU²,
    untied head, bf16 master; 1bitLLM-style: MHA, SiLU), converted when it is loaded; or a
    random model of the family (split-half RoPE pairs, as a checkpoint converts: the driver
    permutes them for the device) at the kv260 tiling (the driver re-writes it at the
    device's)."""
    from pathlib import Path

    from tellme.quant.format import write_weight_file
    from tellme.quant.random_models import random_model
    from tellme.spec.tiling import TILINGS
    from tests.rtl.tb_top_families import FAMILIES

    here = Path(__file__).resolve().parent
    if family == "demo":
        return here.parent / "host/models/demo/model.tlm"
    if family.startswith("hf:"):                  # an HF checkpoint, converted on load
        return here / "fixtures/hf" / family[3:]
    cfg, dtype, seed = FAMILIES[family]
    model = random_model(cfg, seed=seed, float_dtype=dtype,
                         head_std=None if cfg.tie_word_embeddings else 3.0)
    return write_weight_file(model, tmp_path / f"{family}.tlm", TILINGS["kv260"])


@pytest.mark.parametrize("family", ["demo", "2b4t", "1bitllm", "hf:ms2b4t_bf16",
                                    "hf:onebit_llama"])
def test_rtl_sim_logits_equal_golden_hw(tmp_path, capsys, family):
    """`tellme logits --backend rtl-sim` writes the same bits as `tellme logits --numerics
    hw-pl` (every position: prefill chunks through the RTL top and its LM head), or, for a
    hidden size the LM-head unit cannot take (the 2B4T-style family's 58), as `--numerics hw`
    (the device's hidden rows, the host's head)."""
    import numpy as np

    from tellme.quant.loader import load_model
    from tellme.spec.lm_head import Q_BEAT

    path = _family_file(tmp_path, family)
    ids = "5,17,1,9,33,2,64,7,8,11"
    hw = "hw-pl" if load_model(path).config.hidden_size % Q_BEAT == 0 else "hw"
    for name, extra in (("hw", ["--numerics", hw]), ("rtl", ["--backend", "rtl-sim"])):
        assert main(["logits", "--model", str(path), "--tokens", ids, *extra,
                     "--out", str(tmp_path / f"{name}.npy")]) == 0
    want, got = np.load(tmp_path / "hw.npy"), np.load(tmp_path / "rtl.npy")
    assert got.shape == want.shape == (10, want.shape[1])
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert "(hw numerics, rtl-sim)" in capsys.readouterr().out
