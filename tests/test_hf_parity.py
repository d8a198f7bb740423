"""Golden model (float numerics) vs HF transformers, on committed fixtures (NumPy only).

Each folder under tests/fixtures/hf/ holds a tiny BitNet b1.58 checkpoint in one real on-disk
layout, a token sequence and the fp32 logits HF transformers computed for it
(tests/oracle/make_fixtures.py, docs/oracle.md). Every path a user has to the golden model must
reproduce them: the checkpoint folder, the tellme weight file converted from it, and
`tellme logits`.

Tolerance: max|golden - hf| <= 1e-4 * max|hf| and the same argmax at every position. Both
sides quantise the same activations to the same int8 values (the fixtures are chosen so that no
activation lies near a rounding tie) and the ternary matmul is exact, so what remains is fp32
operation-order noise (measured ~4e-7 relative by the fixture generator's independent reference);
one wrongly rounded activation or any semantic slip costs >= 1e-3.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hf"
FOLDERS = sorted(p for p in FIXTURES.iterdir() if (p / "fixture.json").is_file()) \
    if FIXTURES.is_dir() else []
# The layouts the fixtures must cover (reference/bitnet.md §1): a missing one fails, not skips.
REQUIRED = {"ms2b4t_packed", "ms2b4t_bf16", "onebit_llama", "bitnet_gqa_silu_f32_packed"}
REL_TOL = 1e-4
IDS = [p.name for p in FOLDERS]


def load_fixture(folder: Path):
    tokens = np.load(folder / "tokens.npy")
    logits = np.load(folder / "logits.npy")
    info = json.loads((folder / "fixture.json").read_text())
    return tokens, logits, info


def assert_matches_hf(got: np.ndarray, hf: np.ndarray, what: str) -> None:
    got = np.asarray(got)
    assert got.shape == hf.shape, f"{what}: logits shape {got.shape}, HF {hf.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite logits"
    peak = float(np.abs(hf).max())
    diff = np.abs(got.astype(np.float64) - hf)
    err = float(diff.max())
    pos = int(np.unravel_index(diff.argmax(), diff.shape)[0])
    assert err <= REL_TOL * peak, (
        f"{what}: max|golden - hf| = {err:.3e} (worst at position {pos}) > "
        f"{REL_TOL:g} * max|hf| = {REL_TOL * peak:.3e}")
    bad = np.nonzero(got.argmax(-1) != hf.argmax(-1))[0]
    assert bad.size == 0, f"{what}: argmax differs from HF at positions {bad.tolist()}"


# ---- the fixtures themselves (no tellme code involved) ---------------------------------------

def test_fixture_set_complete():
    assert {p.name for p in FOLDERS} >= REQUIRED, (
        f"missing HF fixtures {sorted(REQUIRED - {p.name for p in FOLDERS})} under {FIXTURES}; "
        "regenerate with tests/oracle/make_fixtures.py (docs/oracle.md)")
    total = sum(f.stat().st_size for p in FOLDERS for f in p.iterdir())
    assert total < 4 << 20, f"fixtures take {total} bytes, keep them under 4 MiB"


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_fixture_consistent(folder):
    """Shapes agree with config.json; the recorded logits are finite and well conditioned."""
    tokens, logits, info = load_fixture(folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert info["style"] == folder.name
    assert sum(f.stat().st_size for f in folder.iterdir()) < 1 << 20
    assert tokens.ndim == 1 and 24 <= tokens.size <= 48 and tokens.dtype == np.int32
    assert tokens.min() >= 0 and tokens.max() < cfg["vocab_size"]
    assert logits.dtype == np.float32 and logits.shape == (tokens.size, cfg["vocab_size"])
    assert np.isfinite(logits).all()
    top2 = np.sort(logits, axis=-1)[:, -2:]
    gap = float((top2[:, 1] - top2[:, 0]).min())
    assert gap > 10 * REL_TOL * np.abs(logits).max(), \
        f"{folder.name}: top-2 logit gap {gap:.3e} too small for an argmax check"
    assert info["reference_check"]["argmax_equal_everywhere"]
    assert info["reference_check"]["relative_to_max_abs"] <= REL_TOL


# ---- golden model through every user path ----------------------------------------------------

@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_golden_float_matches_hf(folder):
    from tellme.quant.loader import load_model
    from tellme.sim.golden.model import forward

    tokens, hf, _ = load_fixture(folder)
    model = load_model(folder)
    assert_matches_hf(forward(model, tokens, numerics="float"), hf, f"{folder.name} (folder)")


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_weight_file_matches_hf(folder, tmp_path):
    from tellme.quant.format import write_weight_file
    from tellme.quant.loader import load_model
    from tellme.sim.golden.model import forward
    from tellme.spec.tiling import TILINGS

    tokens, hf, _ = load_fixture(folder)
    path = write_weight_file(load_model(folder), tmp_path / f"{folder.name}.tellme",
                             TILINGS["sim"])
    model = load_model(path)
    assert_matches_hf(forward(model, tokens, numerics="float"), hf,
                      f"{folder.name} (weight file)")


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_cli_logits_matches_hf(folder, tmp_path, capsys):
    from tellme.cli import main

    tokens, hf, _ = load_fixture(folder)
    out = tmp_path / "logits.npy"
    rc = main(["logits", "--model", str(folder), "--tokens", ",".join(map(str, tokens.tolist())),
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert_matches_hf(np.load(out), hf, f"{folder.name} (tellme logits)")


# ---- the fixtures catch the classic slips (each must FAIL the parity check) ------------------

def _mutated_folder(src: Path, dst: Path, **config_changes) -> Path:
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(config_changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _interleave_rows(w: np.ndarray) -> np.ndarray:
    """Rows as an unpacker that assumes bits [2i+1:2i] hold row 4r+i would produce them."""
    r = w.shape[0] // 4
    return w.reshape(4, r, -1).transpose(1, 0, 2).reshape(w.shape)


SLIPS = {
    # a reader that ignores the transformers-4 top-level rope_theta falls back to HF's 500000
    "v4_rope_theta_ignored": ("ms2b4t_bf16", {"rope_theta": 500000.0}, None),
    # 1bitLLM is SwiGLU: running it with 2B4T's relu2 is BitNet issue #588 in reverse
    "wrong_activation": ("onebit_llama", {"hidden_act": "relu2"}, None),
    # the interleaved-row reading of HF's packed layout (reference/bitnet.md §1.1)
    "packed_rows_interleaved": ("ms2b4t_packed", {}, "interleave"),
}


@pytest.mark.parametrize("slip", sorted(SLIPS))
def test_parity_check_catches(slip, tmp_path):
    from tellme.quant.loader import load_model
    from tellme.sim.golden.model import forward

    name, changes, model_change = SLIPS[slip]
    if not (FIXTURES / name / "fixture.json").is_file():
        pytest.fail(f"fixture {name} missing")
    tokens, hf, _ = load_fixture(FIXTURES / name)
    model = load_model(_mutated_folder(FIXTURES / name, tmp_path / name, **changes))
    if model_change == "interleave":
        lin = model.layers[0].linears["gate_proj"]
        lin.w = _interleave_rows(lin.w)
    with pytest.raises(AssertionError):
        assert_matches_hf(forward(model, tokens, numerics="float"), hf, slip)


# ---- live oracle: regenerating reproduces the committed fixtures (needs torch + transformers) --

@pytest.mark.oracle
@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_fixture_regenerates(folder, tmp_path):
    """In the oracle venv: .venv-oracle/bin/python -m pytest -m oracle tests/test_hf_parity.py"""
    pytest.importorskip("transformers")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent / "oracle"))
    import make_fixtures

    make_fixtures.build(make_fixtures.STYLES[folder.name], tmp_path)
    new = tmp_path / folder.name
    assert sorted(p.name for p in new.iterdir()) == sorted(p.name for p in folder.iterdir())
    for f in folder.iterdir():
        if f.suffix in (".safetensors", ".json") and f.name != "fixture.json":
            assert f.read_bytes() == (new / f.name).read_bytes(), f"{f.name} differs"
    tokens, hf, _ = load_fixture(folder)
    tokens2, hf2, _ = load_fixture(new)
    assert np.array_equal(tokens, tokens2)
    assert np.abs(hf2 - hf).max() <= 1e-6 * np.abs(hf).max()
