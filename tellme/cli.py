"""The ``tellme`` command.

Each area registers its subcommands from its own ``cli`` module (``register(subparsers)``).
Those modules import nothing heavy at module level: amaranth, cocotb and torch are imported
inside the command handlers, so ``tellme --help`` and the board-side commands work on a
board image that has none of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = (
    "tellme.quant.cli",     # convert
    "tellme.quant.train_cli",  # train (torch, developer side)
    "tellme.host.run_cli",  # generate, demo
    "tellme.host.board_cli",  # board check / reset / deploy
    "tellme.hw.cli",        # hw blocks / verilog / report
    "tellme.sim.cli",       # logits; hw plan / bench
    "tellme.sim.perf_cli",  # perf
    "tellme.studies.cli",   # study ...
)


class CliError(Exception):
    """A user-facing error: printed as ``tellme: error: <message>`` with exit status 2."""


def group(sub, name: str, help: str):
    """The subparsers action of command group ``name`` (``tellme hw ...``), created on first
    use, so that several areas can add subcommands to one group."""
    parser = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(name, help=help)
        parser._tellme_group = parser.add_subparsers(dest=f"{name}_command",
                                                     metavar=f"{name.upper()}_COMMAND")
        parser._tellme_group.required = True
    return parser._tellme_group


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tellme", description="Ternary BitNet b1.58 LLMs on Kria KV260 / ZCU104 FPGAs.")
    from tellme import __version__

    parser.add_argument("--version", action="version", version=f"tellme {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Commands that forward their own options (``tellme study NAME ...``) set ``forward``.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "forward", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "forward", False):
        args.rest = extra
    try:
        rc = args.func(args)
    except CliError as e:
        print(f"tellme: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tellme: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
