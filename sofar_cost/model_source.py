"""Where a model comes from: a preset name, ``package.module:callable`` or ``file.py:callable``.

Every command that takes a model takes such a *spec*. :func:`load_source` turns it into a
:class:`ModelSource`, the one object the costs, the solver, the checks and the benchmarks
use: it builds the model at a width, knows its input shape and display name, and costs it.

Importing a spec runs its code, as pytest and uvicorn do with theirs: name only files and
modules you trust. A file spec's folder and the working directory go on ``sys.path`` so that
the file may import its neighbours (pytest's ``prepend`` mode).

Costing traces on the meta device (no weights, no time). A user model that cannot run there
(data-dependent ops such as ``.item()`` or ``nonzero``, values read while building) is built
and traced on the CPU instead, with the same counts.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from sofar_cost.counting import CountOptions
from sofar_cost.errors import SofarError
from sofar_cost.models.layers import DATASETS
from sofar_cost.models.registry import ModelSpec, check_dataset, check_width, resolve
from sofar_cost.spec_text import (
    DEFAULT_WIDTH_ARG,
    is_callable_spec,
    parse_input_shape,
    parse_model_args,
    parse_value,
    split_spec,
)
from sofar_cost.tracer import CostReport, parameter_counts, trace

__all__ = ["DEFAULT_WIDTH_ARG", "CallableSource", "ModelSource", "PresetSource", "as_source",
           "input_shape", "is_callable_spec", "load_source", "load_sources", "parse_input_shape",
           "parse_model_args", "parse_value", "uncounted_warnings"]

T = TypeVar("T")


def input_shape(dataset: str, batch: int = 1) -> tuple[int, int, int, int]:
    """The NCHW input of a preset on a dataset."""
    size = DATASETS[dataset].image_size
    return (batch, 3, size, size)


class ModelSource(ABC):
    """A model that commands can cost, solve, check and bench, whatever it comes from."""

    spec: str  # as the user wrote it
    name: str  # as tables show it

    @abstractmethod
    def input_shape(self, dataset: str) -> tuple[int, ...]: ...

    @abstractmethod
    def default_width(self, dataset: str) -> int | None:
        """The width used when none is given (None: the model has no width to report)."""

    @abstractmethod
    def build(self, width: int | None, dataset: str) -> nn.Module:
        """The model at ``width`` (the default when None), on torch's current default device."""

    @abstractmethod
    def label(self, dataset: str) -> str:
        """What the ``dataset`` column shows for this model."""

    meta_safe = False  # True when the model is known to build and run on the meta device

    def to_json(self) -> dict[str, Any]:
        """:func:`load_source`'s arguments that rebuild this source (for a subprocess)."""
        return {"text": self.spec}

    def resolved_width(self, width: int | None, dataset: str) -> int | None:
        return self.default_width(dataset) if width is None else check_width(width)

    def on_meta_or_cpu(self, work: Callable[[str], T]) -> T:
        """``work("meta")``; for a model that cannot build or run there, ``work("cpu")``."""
        if self.meta_safe:
            return work("meta")
        try:
            return work("meta")
        except Exception:  # any failure on meta: the CPU run gives the real error, if any
            return work("cpu")

    def model_on(self, device: str, width: int | None, dataset: str) -> nn.Module:
        with torch.device(device):
            return self.build(width, dataset)

    def report(
        self, dataset: str = "imagenet", width: int | None = None,
        options: CountOptions | None = None,
    ) -> CostReport:  # fmt: skip
        """Per-layer and total costs at ``width`` (the default width when None)."""
        width = self.resolved_width(width, dataset)
        shape = self.input_shape(dataset)

        def run(device: str) -> CostReport:
            model = self.model_on(device, width, dataset)
            return self._trace(model, shape, options, dataset, width, device)

        return self.on_meta_or_cpu(run)

    def _trace(
        self, model: nn.Module, shape: tuple[int, ...], options: CountOptions | None,
        dataset: str, width: int | None, device: str,
    ) -> CostReport:  # fmt: skip
        label = self.label(dataset)
        if self.meta_safe or device == "meta":
            return trace(model, shape, options, name=self.name, dataset=label, width=width)
        try:
            return trace(model, shape, options, name=self.name, dataset=label, width=width)
        except Exception as error:
            raise SofarError(
                f"model spec {self.spec!r}: the model's forward failed on input shape "
                f"{','.join(map(str, shape))}: {_one_line(error)}"
            ) from None

    def parameter_counts(
        self, dataset: str, width: int | None = None, options: CountOptions | None = None
    ) -> tuple[int, int]:
        """(fp, binary) parameters, without a forward pass."""
        width = self.resolved_width(width, dataset)
        return self.on_meta_or_cpu(
            lambda device: parameter_counts(self.model_on(device, width, dataset), options)
        )


class PresetSource(ModelSource):
    """A registry preset, alias or fractal name: its shape and width follow ``--dataset``."""

    meta_safe = True

    def __init__(self, spec: ModelSpec, text: str | None = None) -> None:
        self.preset = spec
        self.spec = text or spec.name
        self.name = spec.name

    def __eq__(self, other: object) -> bool:  # one preset, one cache entry (model_cost)
        return isinstance(other, PresetSource) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def input_shape(self, dataset: str) -> tuple[int, ...]:
        check_dataset(dataset)
        return input_shape(dataset)

    def default_width(self, dataset: str) -> int:
        return check_width(self.preset.default_width(dataset))

    def build(self, width: int | None, dataset: str) -> nn.Module:
        width = self.resolved_width(width, dataset)
        model = self.preset.build(width, check_dataset(dataset))
        model.sofar_name = self.name
        model.sofar_width = width
        model.sofar_dataset = dataset
        return model

    def label(self, dataset: str) -> str:
        return dataset


class CallableSource(ModelSource):
    """A user callable returning an ``nn.Module``, called with ``kwargs`` (and the width as the
    keyword ``width_arg`` when one is asked for); it takes the input shape it is given."""

    def __init__(
        self, spec: str, factory: Callable[..., Any], shape: tuple[int, ...],
        kwargs: dict[str, Any] | None = None, width_arg: str = DEFAULT_WIDTH_ARG,
        name: str | None = None,
    ) -> None:  # fmt: skip
        self.spec = spec
        self.name = name or spec
        self.factory = factory
        self.shape = shape
        self.kwargs = dict(kwargs or {})
        self.width_arg = width_arg

    @classmethod
    def from_builder(
        cls, build: Callable[[int], nn.Module], shape: tuple[int, ...], name: str = "model"
    ) -> CallableSource:
        """A width -> model function (as the Python API's ``WidthCosts`` takes)."""
        return cls(name, lambda width: build(width), shape)

    def input_shape(self, dataset: str) -> tuple[int, ...]:
        return self.shape

    def to_json(self) -> dict[str, Any]:
        return {"text": self.spec, "kwargs": self.kwargs, "shape": list(self.shape),
                "width_arg": self.width_arg}

    def default_width(self, dataset: str) -> int | None:
        """The width keyword as given, else the callable's own default for it."""
        value = self.kwargs.get(self.width_arg)
        if value is None:
            try:
                parameter = inspect.signature(self.factory).parameters.get(self.width_arg)
            except (TypeError, ValueError):  # builtins and some C callables have none
                parameter = None
            value = None if parameter is None else parameter.default
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def build(self, width: int | None, dataset: str) -> nn.Module:
        kwargs = dict(self.kwargs)
        if width is not None:
            kwargs[self.width_arg] = width
        call = f"{self.spec.rpartition(':')[2]}({_call_args(kwargs)})"
        try:
            model = self.factory(**kwargs)
        except Exception as error:
            raise SofarError(
                f"model spec {self.spec!r}: calling {call} raised {_one_line(error)}"
            ) from None
        if not isinstance(model, nn.Module):
            raise SofarError(
                f"model spec {self.spec!r}: {call} returned {type(model).__name__}, "
                "not a torch.nn.Module"
            )
        return model

    def label(self, dataset: str) -> str:
        return "input " + "x".join(map(str, self.shape))


def load_source(
    text: str,
    kwargs: dict[str, Any] | None = None,
    shape: Sequence[int] | None = None,
    width_arg: str = DEFAULT_WIDTH_ARG,
    base_dir: Path | None = None,
) -> ModelSource:
    """The source named by ``text``. ``kwargs``/``shape``/``width_arg`` apply to a user
    callable only (presets keep their dataset's shape); relative file paths resolve
    against ``base_dir`` (the working directory when None)."""
    if not is_callable_spec(text):
        return PresetSource(resolve(text), text)
    if shape is None:
        raise SofarError(
            f"model spec {text!r} needs an input shape: --input-shape N,C,H,W "
            "(input_shape = [1, 3, 32, 32] in a config)"
        )
    where, attr = split_spec(text)
    module = _import(text, where, base_dir)
    factory = getattr(module, attr, None)
    if factory is None:
        found = sorted(
            n for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None)
            == module.__name__
        )  # fmt: skip
        hint = f"; callables there: {', '.join(found)}" if found else ""
        raise SofarError(f"model spec {text!r}: {where} has no attribute {attr!r}{hint}")
    if not callable(factory):
        raise SofarError(f"model spec {text!r}: {attr} is a {type(factory).__name__}, not callable")
    name = f"{Path(where).name}:{attr}" if _is_file(where) else text
    return CallableSource(text, factory, tuple(shape), kwargs, width_arg, name)


def as_source(model: str | ModelSource | dict[str, Any]) -> ModelSource:
    """A source from a spec, a source, or :meth:`ModelSource.to_json`'s form (how a
    subprocess, e.g. ``bench --kernel avx2``, gets a user model)."""
    if isinstance(model, ModelSource):
        return model
    return load_source(**model) if isinstance(model, dict) else load_source(model)


def load_sources(
    specs: Sequence[str], model_args: Iterable[str] | None = None, shape: str | None = None,
    width_arg: str = DEFAULT_WIDTH_ARG,
) -> list[ModelSource]:  # fmt: skip
    """A command's model specs with its ``--model-arg``/``--input-shape`` text, which apply
    to every user model among them."""
    kwargs, parsed = parse_model_args(model_args), parse_input_shape(shape)
    return [load_source(spec, kwargs, parsed, width_arg) for spec in specs]


def uncounted_warnings(reports: Iterable[CostReport | None], strict: bool = False) -> list[str]:
    """What the reports did not count, one line each: ops that can carry multiplications and
    sign-fed layers not marked binary. ``strict``: the first kind raises SofarError."""
    lines: list[str] = []
    for report in {id(r): r for r in reports if r is not None}.values():  # each report once
        summary = report.uncounted_summary()
        if summary and strict:
            raise SofarError(f"{summary} (--strict / strict = true)")
        lines += [line for line in (summary, report.unmarked_sign_summary()) if line]
    return lines


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _import(text: str, where: str, base_dir: Path | None) -> Any:
    """The module a spec names, imported once per file / dotted name."""
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` and uvicorn do: local packages import
    if not _is_file(where):
        try:
            return importlib.import_module(where)
        except ModuleNotFoundError as error:
            raise SofarError(f"model spec {text!r}: cannot import {where}: {error}") from None
        except Exception as error:
            raise SofarError(
                f"model spec {text!r}: importing {where} raised {_one_line(error)}"
            ) from None
    path = Path(where) if base_dir is None else base_dir / where
    path = path.resolve()
    if not path.is_file():
        raise SofarError(f"model spec {text!r}: no such file {path}")
    module_name = f"sofar_user_model_{abs(hash(str(path))):x}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise SofarError(f"model spec {text!r}: {path} is not a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise SofarError(
            f"model spec {text!r}: importing {path.name} raised {_one_line(error)}"
        ) from None
    return module


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    message = message if len(message) <= 240 else message[:237] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _call_args(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
