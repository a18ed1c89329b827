"""One error type for everything a user can fix, and the wrapper that turns it into one line.

A stage that fails on bad input must print a single line naming what is wrong and what to do, not a
traceback wall. Set ``VIGSM_DEBUG=1`` to get the full traceback back.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

EXIT_USER_ERROR = 2


class VigsmError(Exception):
    """An error the user can act on; its message is the whole story, on one line."""


def debug_enabled() -> bool:
    return os.environ.get("VIGSM_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def run_cli(main: Callable[[], None]) -> None:
    """Run ``main``; turn a VigsmError (or Ctrl-C) into one stderr line and a non-zero exit.

    Unexpected exceptions keep their traceback: they are bugs, not user errors.
    """
    try:
        main()
    except VigsmError as exc:
        if debug_enabled():
            traceback.print_exc()
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
