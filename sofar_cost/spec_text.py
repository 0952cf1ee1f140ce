"""Model spec text, read without torch: ``sofar-cost check`` validates configs (file:line
errors, exit 2) before anything imports torch or a user's code (:mod:`sofar_cost.model_source`
loads the specs)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Sequence
from typing import Any

from sofar_cost.errors import SofarError

DEFAULT_WIDTH_ARG = "width"


def parse_value(text: str) -> Any:
    """A ``--model-arg`` value: a TOML or JSON literal where it is one (``16``, ``true``,
    ``[1, 2]``, ``"x"``, ``null``), otherwise the text itself."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_model_args(items: Iterable[str] | None) -> dict[str, Any]:
    """``["width=16", "act=relu"]`` -> ``{"width": 16, "act": "relu"}``."""
    kwargs: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SofarError(f"--model-arg expects KEY=VALUE with KEY a Python name, got {item!r}")
        kwargs[key] = parse_value(value.strip())
    return kwargs


def parse_input_shape(value: str | Sequence[Any] | None) -> tuple[int, ...] | None:
    """``"1,3,32,32"`` (or a list of ints, as in a config) -> ``(1, 3, 32, 32)``."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        shape = tuple(int(p) if isinstance(p, str) else p for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in shape):
        raise SofarError(
            f"the input shape must be positive integers N,C,H,W (e.g. 1,3,32,32), got {value!r}"
        )
    return shape


def is_callable_spec(text: str) -> bool:
    """``module:callable`` or ``file.py:callable`` (a preset name never holds a colon)."""
    return ":" in text


def split_spec(text: str) -> tuple[str, str]:
    """``"path/net.py:make"`` -> ``("path/net.py", "make")``; SofarError when malformed."""
    where, _, attr = text.rpartition(":")
    if not where or not attr.isidentifier():
        raise SofarError(
            f"model spec {text!r}: expected package.module:callable or path/to/file.py:callable"
        )
    return where, attr
