"""``embedforge`` — one entry point; each subcommand group lives in its own module here.

Modules only parse arguments and call the library. Each exposes ``register(subparsers)`` which
adds its subcommands with ``set_defaults(func=...)``; ``func(args) -> int`` is the exit code.
Errors the user can fix (:class:`~embedforge.errors.InputError`, a full disk, a permission
denied) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from embedforge.errors import InputError

__all__ = ["main", "build_parser"]

# Subcommand modules, in help order. A module that fails to import (a missing optional extra)
# leaves its commands out rather than breaking the whole CLI.
COMMAND_MODULES = (
    "embedforge.cli.core",
    "embedforge.cli.explore",
    "embedforge.cli.search",
    "embedforge.cli.serve",
    "embedforge.cli.adapt",
    "embedforge.cli.compress",
    "embedforge.cli.images",
    "embedforge.cli.multilingual",
)

# OS errors the user fixes (space, permissions, a read-only file system): one line, exit 2, like InputError
_USER_FIXABLE = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedforge",
        description="Your own, data-specific sentence-embedding model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    before = set(logging.getLogger().handlers)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in set(logging.getLogger().handlers) - before:  # (bm25s sets its own logger to DEBUG)
        handler.setLevel(level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"embedforge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in _USER_FIXABLE:
            raise
        # a full disk or a place that became unwritable mid-run: writes are atomic, so nothing is half-written
        where = f"{err.filename}: " if err.filename else ""
        print(f"embedforge {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"embedforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
