"""User-facing errors: the command line prints their message on one line and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SofarError(ValueError):
    """A user mistake (unknown name, bad width, malformed config) with a one-line message."""


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> SofarError:
    """'unknown model 'rf-c4d9'; did you mean: rf-c4d8, ...' naming what would be valid."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    hint = f"did you mean: {', '.join(close)}" if close else f"valid: {', '.join(valid)}"
    return SofarError(f"unknown {kind} {name!r}; {hint}")
