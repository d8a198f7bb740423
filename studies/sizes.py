"""Weight-file sizes without the weights: ``tellme study sizes [--target NAME]``.

Prints the data bytes of the weight file (docs/weight-format.md) for the public BitNet b1.58
checkpoints, i.e. what the board must hold in DDR/CMA for the weights. NumPy only.
"""

from __future__ import annotations

import argparse

from tellme.quant.format import ALIGN, code_nbytes
from tellme.spec.codes import padded_dims
from tellme.spec.config import LINEAR_NAMES, ModelConfig
from tellme.spec.models import MODELS
from tellme.spec.tiling import TILINGS, Tiling


def _al(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def data_bytes(cfg: ModelConfig, tiling: Tiling, float_bytes: int = 2) -> dict[str, int]:
    """Bytes of the sections (with alignment padding) by kind, for floats stored in
    ``float_bytes`` (2: bf16/fp16 checkpoints, 4: float32). The header comes on top."""
    d = cfg.hidden_size
    codes = 0
    for n in LINEAR_NAMES:
        out, k = cfg.linear_shapes()[n]
        nb, kb = padded_dims(out, k, tiling.t, tiling.q)
        codes += _al(code_nbytes((nb, kb, tiling.q, tiling.t)))
    norms = sum(_al(w * float_bytes) for w in (d, cfg.q_size, d, cfg.intermediate_size))
    emb = _al(cfg.vocab_size * d * float_bytes)
    return {"codes": cfg.num_layers * codes, "norms": cfg.num_layers * norms + _al(d * float_bytes),
            "scales": _al(cfg.num_layers * len(LINEAR_NAMES) * 4), "embed": emb,
            "lm_head": 0 if cfg.tie_word_embeddings else emb}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tellme study sizes", description=__doc__)
    ap.add_argument("--target", choices=sorted(TILINGS), default="kv260")
    args = ap.parse_args(argv)
    t = TILINGS[args.target]
    print(f"target {args.target}: T={t.t} Q={t.q}; sizes in MiB (2^20 bytes), 16-bit floats")
    print(f"{'model':22} {'ternary':>10} {'codes':>8} {'bits/w':>7} {'embed':>8} {'head':>7} "
          f"{'total':>8}")
    for name, cfg in MODELS.items():
        b = data_bytes(cfg, t)
        tern = cfg.num_layers * sum(o * k for o, k in cfg.linear_shapes().values())
        total = sum(b.values())
        print(f"{name:22} {tern / 1e6:9.1f}M {b['codes'] / 2**20:8.1f} "
              f"{8 * b['codes'] / tern:7.3f} {b['embed'] / 2**20:8.1f} "
              f"{b['lm_head'] / 2**20:7.1f} {total / 2**20:8.1f}")
    return 0
