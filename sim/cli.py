"""Subcommands of this area for the ``tellme`` CLI (see tellme.host.cli).

Keep imports at module level light: heavy packages are imported inside handlers.
"""


def register(sub) -> None:
    """Add this area's subparsers to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "logits", help="run the golden model on token ids and save the logits (.npy)",
        description="Run the bit-exact golden model (docs/numerics.md) over a token sequence "
                    "on a fresh KV cache and write float32 logits [tokens, vocab] as .npy.")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="HF checkpoint folder or tellme weight file")
    p.add_argument("--tokens", required=True, metavar="IDS",
                   help="comma-separated token ids, e.g. 1,2,3")
    p.add_argument("--numerics", choices=("float", "hw"), default="float",
                   help="float: fp32 HF semantics; hw: the accelerator's arithmetic "
                        "(default: float)")
    p.add_argument("--out", required=True, metavar="FILE.npy", help="where to write the logits")
    p.set_defaults(func=_logits)


def parse_token_list(text: str) -> list[int]:
    """'1, 2,3' -> [1, 2, 3]; ValueError naming the bad item."""
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or all(not t for t in items):
        raise ValueError("--tokens is empty: give at least one token id, e.g. --tokens 1,2,3")
    ids = []
    for i, t in enumerate(items):
        if not t:
            raise ValueError(f"--tokens: empty item at position {i} in {text!r}")
        try:
            ids.append(int(t))
        except ValueError:
            raise ValueError(f"--tokens: {t!r} (position {i}) is not an integer") from None
    return ids


def _logits(args) -> int:
    import os
    from pathlib import Path

    import numpy as np

    from tellme.host.cli import CliError
    from tellme.quant.loader import load_model
    from tellme.sim.golden.model import forward

    out = Path(args.out)
    if out.suffix != ".npy":
        raise CliError(f"--out {out}: expected a .npy file name")
    try:
        ids = parse_token_list(args.tokens)
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        model = load_model(args.model)
    except (OSError, ValueError) as e:
        raise CliError(f"cannot load model: {e}") from None
    c = model.config
    bad = [t for t in ids if not 0 <= t < c.vocab_size]
    if bad:
        raise CliError(f"token id {bad[0]} is out of range for vocab size {c.vocab_size} "
                       f"(valid ids: 0..{c.vocab_size - 1})")
    if len(ids) > c.max_context:
        raise CliError(f"{len(ids)} tokens exceed the model's max_context {c.max_context}")
    try:
        logits = forward(model, np.asarray(ids, dtype=np.int64), numerics=args.numerics)
    except ValueError as e:
        raise CliError(str(e)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}.npy")
    try:
        np.save(tmp, logits.astype(np.float32))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    print(f"logits {logits.shape[0]}x{logits.shape[1]} float32 ({args.numerics} numerics) "
          f"-> {out}")
    return 0
