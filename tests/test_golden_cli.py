"""`tellme logits` end to end: weight file on disk -> loader -> golden model -> .npy."""

import numpy as np
import pytest

from tellme.cli import main
from tellme.host.run_cli import parse_token_list
from tellme.quant.format import write_weight_file
from tellme.quant.random_models import random_model, tiny_config
from tellme.sim.golden.model import forward
from tellme.spec.tiling import tiling_for


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory):
    m = random_model(tiny_config(tie_word_embeddings=False, max_context=32), seed=5)
    path = tmp_path_factory.mktemp("cli") / "tiny.tlm"
    write_weight_file(m, path, tiling_for("sim"))
    return m, path


@pytest.mark.parametrize("numerics", ["float", "hw"])
def test_logits_writes_the_golden_logits(weight_file, tmp_path, numerics, capsys):
    m, path = weight_file
    out = tmp_path / "sub" / "l.npy"
    rc = main(["logits", "--model", str(path), "--tokens", "1, 2,3,255",
               "--numerics", numerics, "--out", str(out)])
    assert rc == 0
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (4, 256)
    assert np.array_equal(got, forward(m, np.array([1, 2, 3, 255]), numerics))
    assert "4x256" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["l.npy"]     # no temp files left


@pytest.mark.parametrize("tokens,message", [
    ("1,256", "token id 256 is out of range for vocab size 256"),
    ("", "--tokens is empty"),
    (" , ", "--tokens is empty"),
    ("1,,2", "empty item at position 1"),
    ("1,a", "'a' (position 1) is not an integer"),
    (",".join(["3"] * 33), "33 tokens exceed the model's max_context 32"),
])
def test_logits_bad_tokens(weight_file, tmp_path, tokens, message, capsys):
    _, path = weight_file
    out = tmp_path / "l.npy"
    rc = main(["logits", "--model", str(path), "--tokens", tokens, "--out", str(out)])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_logits_bad_model_and_out(tmp_path, weight_file, capsys):
    rc = main(["logits", "--model", str(tmp_path / "missing"), "--tokens", "1",
               "--out", str(tmp_path / "l.npy")])
    assert rc == 2 and "cannot load model" in capsys.readouterr().err
    rc = main(["logits", "--model", str(weight_file[1]), "--tokens", "1",
               "--out", str(tmp_path / "l.txt")])
    assert rc == 2 and "expected a .npy" in capsys.readouterr().err


def test_parse_token_list():
    assert parse_token_list(" 7,8 , 9") == [7, 8, 9]
    with pytest.raises(ValueError):
        parse_token_list("1.5")
