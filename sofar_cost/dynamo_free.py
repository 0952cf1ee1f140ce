"""Keep a trace from importing ``torch._dynamo``, which takes about as long as ``import torch``.

Why it would be imported: torch wraps every ``TorchDispatchMode.__torch_dispatch__`` and, on
the meta device, the type-promotion wrapper of each Python reference (``torch._refs.add``,
``where``, ``cat``, the batch-norm decomposition...) in ``torch._disable_dynamo``. On its first
call that decorator imports ``torch._dynamo`` only to wrap the function in a "do not compile
this" context, which has no effect while nothing is being compiled.

What we do: give each such function the cached disabler the decorator looks for
(``fn.__dynamo_disable``), one that calls the function directly while ``torch._dynamo`` is not
loaded (nothing can be compiling then) and hands over to the real ``torch._dynamo.disable``
once it is. Every op still runs the same code, so counts are unchanged. Should torch change
these internals, nothing is found and torch behaves as before, only slower to start.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import torch

# The code object of the wrapper that torch._disable_dynamo puts around a function.
_WRAPPER_CODE = torch._disable_dynamo(lambda: None).__code__
_REFERENCE_MODULES = ("torch._refs", "torch._prims", "torch._decomp", "torch._meta_registrations")


def _disable_dynamo_wrappers(roots: list[Any]) -> Iterator[Callable]:
    """The ``torch._disable_dynamo`` wrappers reachable from ``roots`` through ``__wrapped__``
    and closures (``functools.wraps(prim)`` hides some references' wrappers from the first)."""
    seen: set[int] = set()
    stack = [r for r in roots if callable(r)]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if getattr(obj, "__code__", None) is _WRAPPER_CODE:
            yield obj
        inner = [getattr(obj, "__wrapped__", None)]
        inner += [c.cell_contents for c in getattr(obj, "__closure__", None) or () if _full(c)]
        stack += [f for f in inner if callable(f)]


def _full(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:  # a closure variable not yet assigned
        return False
    return True


def _lazy_disabler(fn: Callable, recursive: bool) -> Callable:
    def call(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        real = torch._dynamo.disable(fn, recursive, wrapping=False)
        fn.__dynamo_disable = real  # type: ignore[attr-defined]
        return real(*args, **kwargs)

    return call


@cache
def defer_dynamo_import(*functions: Callable) -> None:
    """Pre-empt the lazy ``torch._dynamo`` import of torch's references and of ``functions``
    (once per process: the references are all defined by ``import torch``)."""
    modules = [m for name, m in list(sys.modules.items()) if name.startswith(_REFERENCE_MODULES)]
    candidates = [value for module in modules for value in list(vars(module).values())]
    for wrapper in _disable_dynamo_wrappers([*candidates, *functions]):
        cells = dict(zip(wrapper.__code__.co_freevars, wrapper.__closure__ or (), strict=True))
        fn = cells["fn"].cell_contents
        if getattr(fn, "__dynamo_disable", None) is None:
            fn.__dynamo_disable = _lazy_disabler(fn, cells["recursive"].cell_contents)
