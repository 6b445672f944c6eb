"""The ``rdl-neuro`` command: one sub-command per module in ``rdl_neuro.cli``.

Each command module defines ``register(subparsers)``, which adds its parser
and sets ``func`` (called with the parsed arguments, returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rdl_neuro import __version__

COMMANDS = ("demo", "train", "evaluate", "searchlight")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="rdl-neuro",
        description="Representational Distance Learning and model-brain RSA.",
    )
    parser.add_argument("--version", action="version", version=f"rdl-neuro {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"rdl_neuro.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from rdl_neuro.train.checkpoints import CheckpointError

    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, KeyError, TypeError, CheckpointError) as err:
        # configuration and data errors (unreadable or unwritable files included): one clear line, no traceback
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        one_line = "; ".join(line.strip() for line in message.splitlines() if line.strip())
        print(f"rdl-neuro {args.command}: error: {one_line}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
