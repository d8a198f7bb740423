"""Subcommands of this area for the ``tellme`` CLI (see tellme.cli).

Keep imports at module level light: heavy packages are imported inside handlers.
"""

from tellme.spec.targets import TARGET_NAMES as TARGETS


def register(sub) -> None:
    """Add this area's subparsers to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "convert", help="convert a HF BitNet b1.58 checkpoint into a tellme weight file",
        description="Read a Hugging Face BitNet b1.58 checkpoint folder (Microsoft 2B4T packed "
                    "or bf16 master weights, or 1bitLLM fp16) and write the accelerator's "
                    "weight file (docs/weight-format.md), with the TLMM codes laid out for "
                    "the target's tiling.")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="checkpoint folder (config.json + model.safetensors[.index.json]), or "
                        "a tellme weight file to re-lay for another target")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="weight file to write")
    p.add_argument("--target", choices=TARGETS, default="kv260",
                   help="board whose TLMM tiling the codes are laid out for (default: kv260)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "inspect", help="check a tellme weight file and print its config, tiling and sections",
        description="Open a weight file, verify every checksum (unless --no-verify) and print "
                    "a summary. Runs on the board (NumPy only).")
    p.add_argument("file", metavar="FILE", help="weight file written by `tellme convert`")
    p.add_argument("--no-verify", action="store_true", help="skip the section checksums")
    p.add_argument("--sections", action="store_true", help="list every section")
    p.set_defaults(func=_inspect)


def _convert(args) -> int:
    from tellme.cli import CliError
    from tellme.quant.convert import convert
    from tellme.quant.format import WeightFileError
    from tellme.quant.readers import CheckpointError

    try:
        result = convert(args.checkpoint, args.output, args.target, progress=not args.quiet)
    except (CheckpointError, WeightFileError, OSError) as e:
        raise CliError(str(e)) from None
    print(result.summary())
    return 0


def _inspect(args) -> int:
    import json

    from tellme.cli import CliError
    from tellme.quant.format import WeightFileError, read_weight_file

    try:
        wf = read_weight_file(args.file, verify=not args.no_verify)
    except WeightFileError as e:
        raise CliError(str(e)) from None
    c = wf.config
    by_kind: dict[str, int] = {}
    for s in wf.sections.values():
        kind = "codes" if s.dtype == "code5" else s.name.rsplit(".", 1)[-1] if \
            s.name.startswith("layers.") else s.name
        kind = "norms" if kind.endswith("norm") else kind
        by_kind[kind] = by_kind.get(kind, 0) + s.nbytes
    print(f"{wf.path}: tellme weight file v{wf.version}, {wf.path.stat().st_size} bytes, "
          f"checksums {'skipped' if args.no_verify else 'ok'}")
    print(f"model: {c.num_layers} layers, hidden {c.hidden_size}, ffn {c.intermediate_size}, "
          f"heads {c.num_heads}/{c.num_kv_heads}x{c.head_dim}, vocab {c.vocab_size}, "
          f"{c.activation}, rope_theta {c.rope_theta:g} ({wf.rope_pairing}), "
          f"{'tied' if c.tie_word_embeddings else 'untied'} head, max_context {c.max_context}")
    print(f"tiling: T={wf.tiling.t} Q={wf.tiling.q}; bytes by kind: "
          + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())))
    print("meta: " + json.dumps({k: v for k, v in wf.meta.items()
                                 if k != "weight_quant_rel_l2"}, sort_keys=True))
    if args.sections:
        for s in wf.sections.values():
            print(f"  {s.offset:>12} {s.nbytes:>12} {s.dtype:>9} {list(s.shape)!s:>20} "
                  f"{s.crc32} {s.name}")
    return 0
