"""``load_model(path)``: one entry point for everything that holds a model.

A folder is read as a HF checkpoint (tellme.quant.readers, NumPy only); a file must be a tellme
weight file (tellme.quant.format). NumPy only, so it runs on the board for weight files.
"""

from __future__ import annotations

from pathlib import Path

from .format import MAGIC, read_weight_file
from .model import TernaryModel


def load_model(path, verify: bool = True) -> TernaryModel:
    """Folder -> ``read_checkpoint``; weight file -> ``read_weight_file(...).to_model()``.

    Raises FileNotFoundError for a missing path, ``CheckpointError`` / ``WeightFileError``
    (both ValueError) for unreadable input, ValueError for anything else.
    """
    path = Path(path)
    if path.is_dir():
        from .readers import read_checkpoint

        return read_checkpoint(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint folder or weight file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file or folder")
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC:
        return read_weight_file(path, verify=verify).to_model()
    if path.suffix == ".safetensors" or path.name == "config.json":
        raise ValueError(f"{path}: pass the checkpoint folder (the one holding config.json), "
                         f"not a file inside it")
    raise ValueError(f"{path}: neither a checkpoint folder nor a tellme weight file "
                     f"(starts with {head!r}, a weight file starts with {MAGIC!r})")
