"""Weight-file sizes without the weights: ``python -m tellme.quant.sizes [--target NAME]``.

Prints the data bytes of the weight file (docs/weight-format.md) for the public BitNet b1.58
checkpoints, i.e. what the board must hold in DDR/CMA for the weights. NumPy only.
"""

from __future__ import annotations

import argparse

from .codes import padded_dims
from .config import LINEAR_NAMES, ModelConfig
from .format import ALIGN, code_nbytes
from .tiling import TILINGS, Tiling

# Public checkpoints (reference/bitnet.md §1.1, §1.3): config and 16-bit float storage.
MODELS = {
    "bitnet-b1.58-2B-4T": ModelConfig(
        vocab_size=128256, hidden_size=2560, intermediate_size=6912, num_layers=30, num_heads=20,
        num_kv_heads=5, head_dim=128, activation="relu2", rms_norm_eps=1e-5,
        rope_theta=500000.0, tie_word_embeddings=True, max_context=4096),
    "bitnet_b1_58-large": ModelConfig(
        vocab_size=32002, hidden_size=1536, intermediate_size=4096, num_layers=24, num_heads=16,
        num_kv_heads=16, head_dim=96, activation="silu", rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=True, max_context=2048),
    "bitnet_b1_58-3B": ModelConfig(
        vocab_size=32002, hidden_size=3200, intermediate_size=8640, num_layers=26, num_heads=32,
        num_kv_heads=32, head_dim=100, activation="silu", rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=True, max_context=2048),
}


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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tellme.quant.sizes", description=__doc__)
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


if __name__ == "__main__":
    main()
