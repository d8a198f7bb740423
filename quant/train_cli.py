"""``tellme train``: quantisation-aware training of a small BitNet b1.58 model (needs torch).

Registered in tellme.cli.COMMAND_MODULES. Imports nothing heavy at module level.
"""

from __future__ import annotations

import dataclasses


def register(sub) -> None:
    from .train import TrainConfig

    p = sub.add_parser(
        "train", help="train a small ternary model (QAT, CPU) on the KJV corpus and export it",
        description="BitNet b1.58 quantisation-aware training (HF AutoBitLinear online "
                    "semantics) on the King James Bible; exports an HF-style folder DIR/hf "
                    "(config.json, model.safetensors, tokenizer.json). Needs torch.")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, export)")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/ckpt/state.pt if present")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="checkpoint and exit after STEP (continue later with --resume)")
    p.add_argument("--snapshot", default=None, metavar="DST",
                   help="only export the run's current checkpoint to folder DST and exit")
    p.add_argument("--embed-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="storage of the exported embedding / LM head (default float32)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("extra",):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"),
                           default=default, metavar="BOOL", help=f"(default {default})")
        else:
            p.add_argument(flag, type=type(default), default=default,
                           help=f"(default {default})")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from tellme.cli import CliError

    from .train import TrainConfig, train

    if args.snapshot:
        from .train import snapshot

        try:
            dst = snapshot(Path(args.out), Path(args.snapshot), args.embed_dtype)
            print(f"exported {dst}")
        except FileNotFoundError as e:
            raise CliError(f"no checkpoint to snapshot: {e}") from e
        return 0
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
          if f.name != "extra"}
    try:
        cfg = TrainConfig(**kw)
        if cfg.hidden_size % cfg.num_heads or cfg.num_heads % cfg.num_kv_heads:
            raise ValueError("hidden-size must be a multiple of num-heads, and num-heads a "
                             "multiple of num-kv-heads")
        if cfg.activation not in ("relu2", "silu"):
            raise ValueError(f"activation must be relu2 or silu, got {cfg.activation!r}")
        train(Path(args.out), cfg, resume=args.resume, log=lambda s: print(s, flush=True),
              stop_at=args.stop_at)
    except ImportError as e:
        raise CliError(f"tellme train needs torch and tokenizers ({e})") from e
    except ValueError as e:
        raise CliError(str(e)) from e
    return 0
