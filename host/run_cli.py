"""Subcommands ``generate``, ``eval``, ``demo`` and ``logits`` of the ``tellme`` CLI (see
tellme.cli).

Keep imports at module level light: heavy packages are imported inside handlers.
"""

from __future__ import annotations

from . import NUMERICS

# The demo: fixed prompt, seed and sampling so `make demo` prints the same text every time.
DEMO_PROMPT = "And the LORD said unto Moses,"
DEMO_ARGS = {"max_new_tokens": 60, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 7}


NUMERICS_HELP = ("golden-model arithmetic: float (HF reference), hw (bit-exact accelerator "
                 "arithmetic, the host's LM head) or hw-pl (hw with the PL LM head's int8 "
                 "numerics, what a device with an LM-head unit returns)")


def _model_args(p, numerics=True) -> None:
    p.add_argument("--model", default=None,
                   help="weight file or HF checkpoint folder (default: the bundled demo model "
                        "host/models/demo/model.tlm); the tokenizer.json must sit beside it")
    p.add_argument("--backend", default="auto",
                   help="golden | rtl-sim | board | auto (best available; default)")
    if numerics:
        p.add_argument("--numerics", choices=NUMERICS, default="float",
                       help=NUMERICS_HELP + "; default float")


def register(sub) -> None:
    g = sub.add_parser("generate", help="generate text from a model, streamed, with metrics",
                       description="Continue PROMPT with a model; text is streamed as it is "
                                   "produced, then one metrics line (prompt tokens, TTFT, decode "
                                   "tok/s, backend).")
    _model_args(g)
    g.add_argument("--prompt", required=True, help="text to continue")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=int, default=0, help="0 = off")
    g.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (numpy Generator)")
    g.add_argument("--stop", action="append", default=[], metavar="STR",
                   help="stop when STR is produced (repeatable); STR is not printed")
    g.add_argument("--bos", action="store_true", help="prepend the BOS token to the prompt")
    g.set_defaults(func=_generate)

    e = sub.add_parser("eval", help="perplexity of a model on a text (and hw-vs-float top-1)",
                       description="Perplexity over non-overlapping windows of the model "
                                   "context (each window a fresh sequence; every token but a "
                                   "window's first is scored).")
    _model_args(e)
    e.add_argument("--text", default=None,
                   help="UTF-8 text file (default: heldout.txt beside the model)")
    e.add_argument("--max-tokens", type=int, default=0, help="use only the first N tokens")
    e.add_argument("--window", type=int, default=0, help="window length (default: context)")
    e.add_argument("--compare", action="store_true",
                   help="run float and hw numerics (hw-pl with --numerics hw-pl) and report "
                        "their top-1 agreement")
    e.add_argument("--kv", choices=("stream", "int8"), default="stream",
                   help="int8: also run hw numerics over an int8 KV cache (per token and KV "
                        "head scale) and report its agreement with hw")
    e.set_defaults(func=_eval)

    lg = sub.add_parser(
        "logits", help="run a model on token ids and save the logits (.npy)",
        description="Run a model over a token sequence on a fresh KV cache and write float32 "
                    "logits [tokens, vocab] as .npy: the golden model (docs/numerics.md; "
                    "default) or the accelerator (--backend rtl-sim | board, hw numerics).")
    lg.add_argument("--model", required=True, metavar="PATH",
                    help="HF checkpoint folder or tellme weight file")
    lg.add_argument("--tokens", required=True, metavar="IDS",
                    help="comma-separated token ids, e.g. 1,2,3")
    lg.add_argument("--numerics", choices=NUMERICS, default="float",
                    help=NUMERICS_HELP + " (default: float; the accelerator backends are "
                         "always hw, with the PL head when the build has one)")
    lg.add_argument("--backend", default="golden",
                    help="golden (default) | rtl-sim | board: where the logits are computed")
    lg.add_argument("--out", required=True, metavar="FILE.npy",
                    help="where to write the logits")
    lg.set_defaults(func=_logits)

    d = sub.add_parser("demo", help="generate from the bundled demo model (fixed prompt, seed)")
    d.add_argument("--backend", default="auto", help="see `tellme generate --help`")
    d.add_argument("--numerics", choices=NUMERICS, default="hw",
                   help=NUMERICS_HELP + "; default hw")
    d.set_defaults(func=_demo)


def _errors():
    from tellme.cli import CliError
    from tellme.spec.device import DeviceError

    from .backends import BackendError
    from .driver import DriverError
    from .generate import GenerateError
    from .tokenizer import TokenizerError

    return CliError, (BackendError, GenerateError, TokenizerError, DriverError, DeviceError,
                      ValueError, FileNotFoundError)


def run_generate(model_path, prompt, backend="auto", numerics="float", max_new_tokens=64,
                 temperature=0.0, top_k=0, top_p=1.0, seed=0, stop=(), bos=False, out=None):
    """Load, generate (streaming to ``out``), print the metrics line; return the Generation."""
    import sys

    from .backends import create
    from .generate import generate, load_model_and_tokenizer
    from .sampling import SamplingParams

    out = out or sys.stdout
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    model, tok = load_model_and_tokenizer(model_path)
    be = create(backend, model, numerics=numerics)
    # a simulated device counts its clock cycles: the metrics line reports them
    dev = getattr(getattr(be, "driver", None), "dev", None)
    c0 = getattr(dev, "sim_cycles", None)
    try:
        out.write(prompt)
        out.flush()
        g = generate(be, tok, prompt, max_new_tokens=max_new_tokens, params=params, seed=seed,
                     stop=list(stop), stream=out, add_bos=bos)
        if c0 is not None:
            from tellme.spec.targets import target as get_target

            g.extra["sim_cycles"] = dev.sim_cycles - c0
            g.extra["clock_mhz"] = get_target(be.driver.target).clock_mhz
        out.write("\n" + g.metrics_line() + "\n")
        out.flush()
    finally:
        be.close()
    return g


def _generate(args) -> int:
    CliError, errs = _errors()
    try:
        run_generate(args.model, args.prompt, backend=args.backend, numerics=args.numerics,
                     max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                     top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop,
                     bos=args.bos)
    except errs as e:
        raise CliError(str(e)) from e
    return 0


def run_eval(model_path=None, text_path=None, backend="golden", numerics="float",
             compare=False, max_tokens=0, window=0, kv="stream"):
    from pathlib import Path

    from .evaluate import evaluate
    from .generate import DEFAULT_MODEL, GenerateError, load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(model_path)
    if text_path is None:
        text_path = Path(model_path or DEFAULT_MODEL)
        text_path = (text_path if text_path.is_dir() else text_path.parent) / "heldout.txt"
    text_path = Path(text_path)
    if not text_path.is_file():
        raise GenerateError(f"text file not found: {text_path}")
    ids = tok.encode(text_path.read_text(encoding="utf-8"))
    if max_tokens:
        ids = ids[:max_tokens]
    modes = ("float", numerics if numerics.startswith("hw") else "hw") if compare \
        else (numerics,)
    return evaluate(model, ids, numerics=modes, backend=backend, window=window or None,
                    kv=kv), text_path


def display_path(path) -> str:
    """``path`` for printed output without a machine path (MODEL_CARD.md quotes the output):
    a relative path as given; a file of the bundled demo model relative to the package root
    (``host/models/demo/heldout.txt``, from any working directory); another absolute path
    relative to the working directory when it lies below it, else as given."""
    from pathlib import Path

    from .generate import DEMO_DIR

    path = Path(path)
    if not path.is_absolute():
        return str(path)
    root = Path(__file__).resolve().parent.parent
    for base, under in ((DEMO_DIR, root), (Path.cwd(), Path.cwd())):
        try:
            path.resolve().relative_to(base.resolve())
            return path.resolve().relative_to(under.resolve()).as_posix()
        except ValueError:
            continue
    return str(path)


def _eval(args) -> int:
    CliError, errs = _errors()
    try:
        res, path = run_eval(args.model, args.text, backend=args.backend,
                             numerics=args.numerics, compare=args.compare,
                             max_tokens=args.max_tokens, window=args.window, kv=args.kv)
    except errs as e:
        raise CliError(str(e)) from e
    print(f"{display_path(path)}:")
    for line in res.lines():
        print("  " + line)
    return 0


def _demo(args) -> int:
    CliError, errs = _errors()
    from .generate import DEFAULT_MODEL

    print(f"tellme demo: {DEFAULT_MODEL.parent.name} model, prompt {DEMO_PROMPT!r}, "
          f"seed {DEMO_ARGS['seed']}, temperature {DEMO_ARGS['temperature']}, "
          f"top-k {DEMO_ARGS['top_k']}, top-p {DEMO_ARGS['top_p']}, {args.numerics} numerics\n")
    try:
        run_generate(None, DEMO_PROMPT, backend=args.backend, numerics=args.numerics,
                     **DEMO_ARGS)
    except errs as e:
        raise CliError(str(e)) from e
    return 0


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

    from tellme.quant.loader import load_model

    from .backends import create

    CliError, errs = _errors()

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
    # the golden model in the asked numerics; an accelerator backend is always hw (with the
    # PL LM head when its build has one for this model)
    numerics = args.numerics if args.backend == "golden" else "hw"
    try:
        be = create(args.backend, model, numerics=numerics)
        try:
            logits = be.logits(ids)
        finally:
            be.close()
    except errs as e:
        raise CliError(str(e)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}.npy")
    try:
        np.save(tmp, np.asarray(logits, dtype=np.float32))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    print(f"logits {logits.shape[0]}x{logits.shape[1]} float32 ({numerics} numerics, "
          f"{args.backend}) -> {out}")
    return 0
