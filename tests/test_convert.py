"""`tellme convert` end to end, tellme.quant.convert and tellme.quant.loader."""

import re
from pathlib import Path

import numpy as np
import pytest

from tellme.cli import main
from tellme.quant.convert import convert
from tellme.quant.format import WeightFileError, read_weight_file
from tellme.quant.loader import load_model
from tellme.quant.random_models import random_model
from tellme.quant.readers import CheckpointError, read_checkpoint
from tellme.spec.tiling import TILINGS

from .support.quant_helpers import (
    assert_models_equal,
    hf_config,
    master_checkpoint_tensors,
    packed_checkpoint_tensors,
    small_config,
    write_checkpoint,
)

OFFLINE = {"linear_class": "autobitlinear", "quantization_mode": "offline"}


@pytest.fixture()
def packed_ckpt(tmp_path):
    cfg = small_config(tie_word_embeddings=False)
    model = random_model(cfg, seed=11, float_dtype="bfloat16")
    folder = write_checkpoint(tmp_path / "ckpt", packed_checkpoint_tensors(model),
                              hf_config(cfg, "bitnet", quant=OFFLINE), shards=2)
    return folder, model


@pytest.fixture()
def master_ckpt(tmp_path):
    cfg = small_config(activation="silu", num_kv_heads=4)
    return write_checkpoint(tmp_path / "master",
                            master_checkpoint_tensors(cfg, "llama", "float16", seed=12),
                            hf_config(cfg, "llama", "v5", dtype="float16"))


def test_cli_convert_packed(tmp_path, packed_ckpt, capsys):
    folder, model = packed_ckpt
    out = tmp_path / "out" / "model.tlw"
    assert main(["convert", str(folder), "-o", str(out), "--target", "sim"]) == 0
    cap = capsys.readouterr()
    assert "reading" in cap.err and "writing" in cap.err and "100.0%" in cap.err
    n_params = sum(a.size for a in (model.embed, model.lm_head, model.final_norm)) + sum(
        v.size for layer in model.layers for v in [*layer.norms.values(),
                                                   *(lin.w for lin in layer.linears.values())])
    size = out.stat().st_size
    assert f"{n_params / 1e6:.2f} M params" in cap.out
    assert f"{size / 2**20:.2f} MiB" in cap.out
    assert "bitnet-packed" in cap.out and "T=4 Q=4" in cap.out
    assert "rel. L2" not in cap.out            # no master weights: no quantisation error
    wf = read_weight_file(out)
    assert wf.tiling == TILINGS["sim"]
    assert wf.meta["target"] == "sim" and wf.meta["style"] == "bitnet-packed"
    assert wf.meta["converter"].startswith("tellme.quant.convert")
    assert_models_equal(model, wf.to_model())
    assert wf.info("embed").dtype == "bfloat16"         # 16-bit checkpoint values stay 16-bit


def test_cli_convert_master_reports_quant_error(tmp_path, master_ckpt, capsys):
    out = tmp_path / "m.tlw"
    assert main(["convert", str(master_ckpt), "-o", str(out), "-q"]) == 0   # default kv260
    cap = capsys.readouterr()
    assert cap.err == ""
    m = re.search(r"rel\. L2 .* over 14 tensors: mean ([0-9.]+), max ([0-9.]+) \((\S+)\)",
                  cap.out)
    assert m, cap.out
    wf = read_weight_file(out)
    errs = wf.meta["weight_quant_rel_l2"]
    assert float(m.group(1)) == pytest.approx(np.mean(list(errs.values())), abs=1e-4)
    assert float(m.group(2)) == pytest.approx(max(errs.values()), abs=1e-4)
    assert m.group(3) == max(errs, key=errs.get)
    assert wf.tiling == TILINGS["kv260"]
    assert wf.info("embed").dtype == "float16"
    assert_models_equal(read_checkpoint(master_ckpt), wf.to_model())


def test_cli_convert_bad_input(tmp_path, packed_ckpt, capsys):
    folder, _ = packed_ckpt
    (folder / "model-00002-of-00002.safetensors").unlink()
    out = tmp_path / "x.tlw"
    assert main(["convert", str(folder), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "tellme: error:" in err and "model-00002-of-00002.safetensors" in err
    assert not out.exists()


def test_cli_convert_unknown_target(packed_ckpt, tmp_path):
    with pytest.raises(SystemExit):
        main(["convert", str(packed_ckpt[0]), "-o", str(tmp_path / "x"), "--target", "vcu118"])


def test_convert_api_accepts_tiling_object(tmp_path, packed_ckpt):
    folder, model = packed_ckpt
    res = convert(folder, tmp_path / "a.tlw", TILINGS["zcu104"], progress=False)
    assert res.tiling == TILINGS["zcu104"] and res.file_bytes == (tmp_path / "a.tlw").stat().st_size
    assert res.ternary_params == sum(lin.w.size for layer in model.layers
                                     for lin in layer.linears.values())


def test_load_model(tmp_path, packed_ckpt):
    folder, model = packed_ckpt
    assert_models_equal(model, load_model(folder))
    out = tmp_path / "w.tlw"
    convert(folder, out, "sim", progress=False)
    assert_models_equal(model, load_model(out))
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder or weight file"):
        load_model(tmp_path / "missing")
    with pytest.raises(ValueError, match="pass the checkpoint folder"):
        load_model(folder / "model-00001-of-00002.safetensors")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="neither a checkpoint folder nor a tellme weight file"):
        load_model(junk)
    data = bytearray(out.read_bytes())
    data[read_weight_file(out).info("final_norm").offset] ^= 1
    out.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match="checksum mismatch"):
        load_model(out)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing config\.json"):
        load_model(folder)


def test_cli_inspect(tmp_path, packed_ckpt, capsys):
    folder, _model = packed_ckpt
    out = tmp_path / "w.tlw"
    assert main(["convert", str(folder), "-o", str(out), "--target", "sim", "-q"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "--sections"]) == 0
    text = capsys.readouterr().out
    assert "checksums ok" in text and "tiling: T=4 Q=4" in text and "untied head" in text
    assert "layers.1.down_proj.codes" in text and '"style": "bitnet-packed"' in text
    data = bytearray(out.read_bytes())
    data[read_weight_file(out).info("lm_head").offset + 5] ^= 0x40
    out.write_bytes(bytes(data))
    assert main(["inspect", str(out)]) == 2
    assert "section 'lm_head': checksum mismatch" in capsys.readouterr().err
    assert main(["inspect", str(out), "--no-verify"]) == 0


def test_cli_convert_output_is_a_directory(tmp_path, packed_ckpt, capsys):
    (tmp_path / "d").mkdir()
    assert main(["convert", str(packed_ckpt[0]), "-o", str(tmp_path / "d"), "-q"]) == 2
    assert "tellme: error:" in capsys.readouterr().err
    assert list((tmp_path / "d").iterdir()) == [] and \
        not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_convert_retiles_a_weight_file(tmp_path, packed_ckpt, capsys):
    folder, model = packed_ckpt
    a, b = tmp_path / "a.tlw", tmp_path / "b.tlw"
    assert main(["convert", str(folder), "-o", str(a), "-q"]) == 0
    assert main(["convert", str(a), "-o", str(b), "--target", "sim", "-q"]) == 0
    wf = read_weight_file(b)
    assert wf.tiling == TILINGS["sim"]
    assert wf.meta["retiled_from"] == {"file": "a.tlw", "tiling": {"t": 28, "q": 16}}
    assert wf.meta["style"] == "bitnet-packed" and wf.meta["target"] == "sim"
    assert_models_equal(model, wf.to_model())
    # a damaged weight file is refused, naming the section
    data = bytearray(a.read_bytes())
    data[read_weight_file(a).info("scales").offset] ^= 1
    a.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["convert", str(a), "-o", str(tmp_path / "c.tlw"), "-q"]) == 2
    assert "section 'scales': checksum mismatch" in capsys.readouterr().err


def _strings(o):
    """Every string (keys and values) in a JSON-like object."""
    if isinstance(o, str):
        yield o
    elif isinstance(o, dict):
        for k, v in o.items():
            yield k
            yield from _strings(v)
    elif isinstance(o, (list, tuple)):
        for v in o:
            yield from _strings(v)


def test_converted_header_holds_no_machine_path(tmp_path, packed_ckpt, monkeypatch):
    """The header names the checkpoint folder and a re-laid file by name only: no absolute
    path, no piece of the working directory (a weight file must not depend on where it was
    made)."""
    folder, _ = packed_ckpt
    a, b = tmp_path / "a.tlw", tmp_path / "b.tlw"
    cwd = Path.cwd()
    convert(folder, a, "kv260", progress=False)                    # absolute input path
    monkeypatch.chdir(tmp_path)
    convert("ckpt", "c.tlw", "sim", progress=False)                # relative input path
    convert(a, b, "sim", progress=False)                           # re-laid weight file
    for f in (a, b, tmp_path / "c.tlw"):
        wf = read_weight_file(f)
        assert wf.meta["source"] == "ckpt", f
        for s in _strings(wf.header):
            assert not s.startswith(("/", "\\")) and not re.match(r"[A-Za-z]:[\\/]", s), \
                (f.name, s)
        raw = f.read_bytes()
        for p in {str(cwd), str(tmp_path), str(tmp_path.resolve()), str(folder)}:
            assert p.encode() not in raw, (f.name, p)
    assert read_weight_file(b).meta["retiled_from"]["file"] == "a.tlw"
