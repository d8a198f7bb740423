"""``convert``: HF BitNet checkpoint folder -> tellme weight file (``tellme convert``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tellme.spec.tiling import Tiling, tiling_for

from .format import FORMAT_VERSION, read_weight_file, write_weight_file
from .readers import read_checkpoint


@dataclass
class ConvertResult:
    path: Path
    style: str                      # bitnet-packed | bitnet-master | 1bitllm
    tiling: Tiling
    params: int                     # all parameters (embedding, head when untied, norms)
    ternary_params: int
    file_bytes: int
    seconds: float
    quant_rel_l2: dict[str, float] = field(default_factory=dict)   # master-weight inputs only

    def summary(self) -> str:
        s = (f"wrote {self.path}: {self.style}, {self.params / 1e6:.2f} M params "
             f"({self.ternary_params / 1e6:.2f} M ternary), {self.file_bytes / 2**20:.2f} MiB, "
             f"tiling T={self.tiling.t} Q={self.tiling.q}, {self.seconds:.1f} s")
        if self.quant_rel_l2:
            v = np.array(list(self.quant_rel_l2.values()))
            worst = max(self.quant_rel_l2, key=self.quant_rel_l2.get)
            s += (f"; weight quantisation rel. L2 (||Wq*scale - W||/||W||) over {v.size} tensors:"
                  f" mean {v.mean():.4f}, max {v.max():.4f} ({worst})")
        return s


def count_params(model) -> tuple[int, int]:
    """(all parameters, ternary parameters) of a TernaryModel."""
    tern = sum(lin.w.size for layer in model.layers for lin in layer.linears.values())
    other = model.embed.size + model.final_norm.size + sum(
        v.size for layer in model.layers for v in layer.norms.values())
    if model.lm_head is not None:
        other += model.lm_head.size
    return tern + other, tern


def convert(checkpoint, out_path, tiling, progress=True) -> ConvertResult:
    """Read ``checkpoint`` (a HF folder, or an existing weight file to re-lay for another
    tiling), write the weight file ``out_path`` laid out for ``tiling`` (a :class:`Tiling` or a
    target name: sim, kv260, zcu104, sim-demo).

    ``progress``: True for stderr progress bars, False for none. Errors propagate as
    ``CheckpointError`` / ``WeightFileError`` (bad input) or OSError (cannot write); ``out_path``
    is only replaced
    once the new file is complete.
    """
    from tellme import __version__

    target = None
    if isinstance(tiling, str):
        target, tiling = tiling, tiling_for(tiling)
    t0 = time.monotonic()
    if progress:
        from tellme.progress import Progress
    else:
        Progress = None

    def run(label, fn, **kw):
        if Progress is None:
            return fn(progress=None, **kw)
        bar = {}

        def cb(done, total, note):
            if "p" not in bar:
                bar["p"] = Progress(total, label).__enter__()
            bar["p"].update(done - bar["p"].done, note=note)

        try:
            return fn(progress=cb, **kw)
        finally:
            if "p" in bar:
                bar["p"].__exit__(None, None, None)

    meta = {"converter": f"tellme.quant.convert {__version__}", "format_version": FORMAT_VERSION,
            "target": target, "tiling": {"t": tiling.t, "q": tiling.q}}
    if Path(checkpoint).is_file():
        # an existing weight file: re-lay its codes for another tiling (provenance is kept)
        wf = read_weight_file(checkpoint)
        model = wf.to_model()
        if model.meta.get("source"):    # files from before names-only provenance held a path
            model.meta["source"] = Path(model.meta["source"]).name
        meta["retiled_from"] = {"file": Path(checkpoint).name,     # no machine path
                                "tiling": {"t": wf.tiling.t, "q": wf.tiling.q}}
    else:
        model = run("reading", lambda progress: read_checkpoint(checkpoint, progress=progress))
    out = run("writing", lambda progress: write_weight_file(model, out_path, tiling, meta=meta,
                                                            progress=progress))
    params, tern = count_params(model)
    return ConvertResult(path=Path(out), style=model.meta.get("style", "unknown"), tiling=tiling,
                         params=params,
                         ternary_params=tern, file_bytes=os.path.getsize(out),
                         seconds=time.monotonic() - t0,
                         quant_rel_l2=dict(model.meta.get("weight_quant_rel_l2", {})))

