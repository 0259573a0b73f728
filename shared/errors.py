"""User-facing errors and the CLI wrapper that prints them as one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input the user can fix: the message names the file/line and the fix.

    Entry points print it as one line and exit with status 2, no traceback.
    """


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a component's `main`, turning `UserError` into `error: ...` + exit 2."""
    try:
        code = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
