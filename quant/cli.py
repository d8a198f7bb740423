"""Subcommands of this area for the ``tellme`` CLI (see tellme.host.cli).

Keep imports at module level light: heavy packages are imported inside handlers.
"""

TARGETS = ("sim", "kv260", "zcu104")


def register(sub) -> None:
    """Add this area's subparsers to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "convert", help="convert a HF BitNet b1.58 checkpoint into a tellme weight file",
        description="Read a Hugging Face BitNet b1.58 checkpoint folder (Microsoft 2B4T packed "
                    "or bf16 master weights, or 1bitLLM fp16) and write the accelerator's "
                    "weight file (docs/weight-format.md), with the TLMM codes laid out for "
                    "the target's tiling.")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="checkpoint folder (config.json + model.safetensors[.index.json])")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="weight file to write")
    p.add_argument("--target", choices=TARGETS, default="kv260",
                   help="board whose TLMM tiling the codes are laid out for (default: kv260)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_convert)


def _convert(args) -> int:
    from tellme.host.cli import CliError
    from tellme.quant.convert import convert
    from tellme.quant.readers import CheckpointError

    try:
        result = convert(args.checkpoint, args.output, args.target, progress=not args.quiet)
    except (CheckpointError, OSError) as e:
        raise CliError(str(e)) from None
    print(result.summary())
    return 0
