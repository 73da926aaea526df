"""User-facing errors: one line naming the bad input and the fix, never a traceback.

Any ``UserError`` that reaches the top of a command (``ns-train``, ``triplane-gan``) is printed as a single
``error: ...`` line (exit status 1).  Other exceptions keep their normal tracebacks.
"""

from __future__ import annotations

import sys
from pathlib import Path


class UserError(Exception):
    """A problem with what the user asked for (a path, a name, a value), with the fix in the message."""


class DataNotFound(UserError):
    """The data folder named by a config does not exist (a fatal error for training; the viewer can show a
    trained generator without it)."""

    def __init__(self, message: str, folder: Path) -> None:
        super().__init__(message)
        self.folder = Path(folder)
        """The missing folder."""


def _one_line_hook(exc_type, exc, tb, _previous=sys.excepthook):
    if isinstance(exc, UserError):
        print(f"error: {exc}", file=sys.stderr)
        return
    _previous(exc_type, exc, tb)


def install_excepthook() -> None:
    """Print ``UserError`` as one line at the top level of this process (idempotent)."""
    if sys.excepthook is not _one_line_hook:
        sys.excepthook = _one_line_hook
