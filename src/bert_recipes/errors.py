"""Errors meant for people: one line naming the problem and the fix, exit code 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from accelerate import PartialState


class UsageError(Exception):
    """Bad input the user can fix: a file, an argument or a config value."""


EXIT_USAGE = 2


def run_cli(main: Callable[[list[str]], object], argv: list[str] | None = None, init_state: bool = True) -> None:
    """Run `main(argv)`; a UsageError prints one `error:` line and exits 2 (`--debug` shows the traceback).

    `init_state` sets up Accelerate's process state for logging; recipes that build their own Accelerator
    (with a process-group backend of their choosing) pass False.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if init_state:
        PartialState()
    try:
        main(argv)
    except UsageError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
