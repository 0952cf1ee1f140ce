"""sofar-cost: exact Params (Mbit) and Flops of binary CNNs, counted from the model graph.

The public names are imported on first use (module ``__getattr__``), so ``import sofar_cost``
stays free of torch until a model is built or traced.

    import sofar_cost
    report = sofar_cost.model_cost("rf-c4d8", "imagenet")
    print(f"{report.params_mbit:.2f} Mbit, {report.flops:.3e} Flops")
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("sofar-cost")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> the module that defines it
_EXPORTS = {
    "create_model": "sofar_cost.models.registry",
    "list_models": "sofar_cost.models.registry",
    "resolve": "sofar_cost.models.registry",
    "ModelSpec": "sofar_cost.models.registry",
    "trace": "sofar_cost.tracer",
    "CostReport": "sofar_cost.tracer",
    "model_cost": "sofar_cost.costs",
    "load_source": "sofar_cost.model_source",
    "ModelSource": "sofar_cost.model_source",
    "compare": "sofar_cost.costs",
    "WidthCosts": "sofar_cost.costs",
    "solve_width": "sofar_cost.solver",
    "solve": "sofar_cost.solver",
    "Budget": "sofar_cost.solver",
    "CountOptions": "sofar_cost.count_options",
    "pack_model": "sofar_cost.engine",
    "register_binary_layer": "sofar_cost.binary",
    "check_configs": "sofar_cost.budget",
    "SofarError": "sofar_cost.errors",
}
__all__ = [
    "Budget",
    "CostReport",
    "CountOptions",
    "ModelSource",
    "ModelSpec",
    "SofarError",
    "WidthCosts",
    "__version__",
    "check_configs",
    "compare",
    "create_model",
    "list_models",
    "load_source",
    "model_cost",
    "pack_model",
    "register_binary_layer",
    "resolve",
    "solve",
    "solve_width",
    "trace",
]

if TYPE_CHECKING:
    from sofar_cost.binary import register_binary_layer
    from sofar_cost.budget import check_configs
    from sofar_cost.costs import WidthCosts, compare, model_cost
    from sofar_cost.count_options import CountOptions
    from sofar_cost.engine import pack_model
    from sofar_cost.errors import SofarError
    from sofar_cost.model_source import ModelSource, load_source
    from sofar_cost.models.registry import ModelSpec, create_model, list_models, resolve
    from sofar_cost.solver import Budget, solve, solve_width
    from sofar_cost.tracer import CostReport, trace


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sofar_cost' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
