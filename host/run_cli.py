"""Subcommands of this area for the ``tellme`` CLI (see tellme.host.cli).

Keep imports at module level light: heavy packages are imported inside handlers.
"""


def register(sub) -> None:
    """Add this area's subparsers to ``sub`` (an argparse subparsers action)."""
