"""Errors meant for people: one line naming the problem and the fix, exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UsageError(Exception):
    """Bad input the user can fix: a file, an argument or a config value."""


EXIT_USAGE = 2


def run_cli(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """Run `main(argv)`; a UsageError prints one `error:` line and exits 2 (`--debug` shows the traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        main(argv)
    except UsageError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
