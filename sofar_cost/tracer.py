"""Walk a model's forward pass and count what it costs, per layer and in total.

Why a dispatch mode of our own rather than fvcore or ``FlopCounterMode``: every ATen op is
seen (also convolutions called functionally, and on the meta device, so no memory or time is
spent on weights), and each op is attributed to the *innermost* module running it, which is
what decides binary against full precision. fvcore (through ``torch.jit.trace``) is kept as an
independent cross-check in the tests; ptflops/thop match exact module types and would
silently drop a Conv2d subclass.

A conv/matmul is binary when it runs inside a module that :func:`is_binary_layer` accepts
(the ``sofar_binary`` marker, a registered class or subclass, or the toolkit's own binary
layers) and whose input is binarized too (:func:`has_binary_input`): a layer with binary
weights but real-valued input (``sofar_binary_input = False``) owns 1-bit parameters and
full-precision MACs, as larq counts it.
Element-wise work inside a binary layer (sign, the weight scale) is binarization bookkeeping
that a deployed model folds away, so it is never counted.

What was *not* counted is reported too, as fvcore's unsupported-ops list is: every op that no
rule knows and that is not memory bookkeeping (``counting.FREE_OPS``) lands in
``CostReport.uncounted_ops``; those that can hide multiplications (FFTs, custom operators,
conv/matmul variants) are singled out, and ``--strict`` refuses them. A conv/linear outside any
binary layer whose input visibly comes from ``sign`` lands in ``unmarked_sign_layers``: it is
counted full precision because nothing marks it binary.

On the meta device no weights exist; each op's output shape comes from a C++ CPU kernel run on
zero-stride stand-ins of its inputs (one activation at a time), not from torch's Python meta
functions, which import sympy on first use (:func:`_run_meta_op`).
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sofar_cost.binary import has_binary_input, is_binary_layer
from sofar_cost.counting import (
    BATCHNORM_MODULES,
    MATMUL_RULES,
    SIGN_OPS,
    CountOptions,
    categorize,
    has_rule,
    is_free_op,
    may_multiply,
    op_name,
)
from sofar_cost.dynamo_free import defer_dynamo_import
from sofar_cost.errors import SofarError


@dataclass
class LayerCost:
    """Costs attributed to one module (ops run directly in it, not in its children)."""

    name: str
    kind: str
    binary: bool
    fp_params: int = 0
    binary_params: int = 0
    fp_macs: int = 0
    binary_macs: int = 0
    fp_other_ops: int = 0
    output_shape: tuple[int, ...] | None = None

    def params_mbit(self, options: CountOptions) -> float:
        return options.params_mbit(self.fp_params, self.binary_params)

    def flops(self, options: CountOptions) -> float:
        return options.flops(self.fp_macs, self.fp_other_ops, self.binary_macs)


@dataclass
class CostReport:
    """Totals and per-layer costs of one model; the numbers every front end prints."""

    model: str
    dataset: str
    width: int | None
    layers: list[LayerCost]
    options: CountOptions = field(default_factory=CountOptions)
    peak_activation_bytes: int = 0
    uncounted_ops: dict[str, int] = field(default_factory=dict)  # op name -> calls
    unmarked_sign_layers: list[str] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None

    def _sum(self, attr: str) -> int:
        return sum(getattr(layer, attr) for layer in self.layers)

    @property
    def fp_params(self) -> int:
        return self._sum("fp_params")

    @property
    def binary_params(self) -> int:
        return self._sum("binary_params")

    @property
    def fp_macs(self) -> int:
        return self._sum("fp_macs")

    @property
    def binary_macs(self) -> int:
        return self._sum("binary_macs")

    @property
    def fp_other_ops(self) -> int:
        return self._sum("fp_other_ops")

    @property
    def params_mbit(self) -> float:
        return self.options.params_mbit(self.fp_params, self.binary_params)

    @property
    def flops(self) -> float:
        return self.options.flops(self.fp_macs, self.fp_other_ops, self.binary_macs)

    def summary(self) -> dict[str, Any]:
        """The JSON contract of ``compare --format json`` (add keys, never rename)."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "width": self.width,
            "params_mbit": self.params_mbit,
            "flops": self.flops,
            "fp_params": self.fp_params,
            "binary_params": self.binary_params,
            "fp_macs": self.fp_macs,
            "binary_macs": self.binary_macs,
            "fp_other_ops": self.fp_other_ops,
            "peak_activation_bytes": self.peak_activation_bytes,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "uncounted_ops": dict(self.uncounted_ops),
            "uncounted_multiplying_ops": self.multiplying_uncounted_ops,
            "unmarked_sign_layers": list(self.unmarked_sign_layers),
        }

    @property
    def multiplying_uncounted_ops(self) -> dict[str, int]:
        """The uncounted ops that can carry multiplications: the costs may be too low."""
        return {op: n for op, n in self.uncounted_ops.items() if may_multiply(op)}

    def uncounted_summary(self) -> str | None:
        """One line naming the uncounted ops that can multiply, or None when there are none."""
        ops = self.multiplying_uncounted_ops
        if not ops:
            return None
        listed = ", ".join(f"{op} x{n}" for op, n in ops.items())
        return (
            f"{self.model}: ops no rule counts and that can carry multiplications were seen "
            f"and counted as 0: {listed}"
        )

    def unmarked_sign_summary(self) -> str | None:
        """One line naming conv/linear layers fed by sign() but counted full precision."""
        if not self.unmarked_sign_layers:
            return None
        return (
            f"{self.model}: {', '.join(self.unmarked_sign_layers)} take a sign() input but are "
            "not marked binary, so they count as full precision; mark them with "
            "`sofar_binary = True` or sofar_cost.binary.register_binary_layer"
        )

    def rolled_up(self, depth: int) -> CostReport:
        """Layer rows summed up to module depth ``depth`` (``stages.0`` is depth 2), like
        fvcore's ``flop_count_table(max_depth)``; the totals stay the same."""
        if depth < 1:
            raise SofarError(f"--depth must be at least 1, got {depth}")
        by_name = {layer.name: layer for layer in self.layers}
        groups: dict[str, list[LayerCost]] = {}
        for layer in self.layers:
            groups.setdefault(".".join(layer.name.split(".")[:depth]), []).append(layer)
        rolled = []
        for prefix, members in groups.items():
            head = by_name.get(prefix, members[0])
            counted = [m for m in members if _costs(m)] or [head]
            row = LayerCost(prefix, head.kind, all(m.binary for m in counted))
            for attr in ("fp_params", "binary_params", "fp_macs", "binary_macs", "fp_other_ops"):
                setattr(row, attr, sum(getattr(m, attr) for m in members))
            row.output_shape = head.output_shape
            rolled.append(row)
        return replace(self, layers=rolled)

    def layer_rows(self) -> list[dict[str, Any]]:
        rows = []
        for layer in self.layers:
            row = asdict(layer)
            row["params_mbit"] = layer.params_mbit(self.options)
            row["flops"] = layer.flops(self.options)
            rows.append(row)
        return rows


class _CostMode(TorchDispatchMode):
    """Counts every op into the innermost running module and tracks live activation bytes."""

    def __init__(self, options: CountOptions, layer_for: dict[int, LayerCost]) -> None:
        super().__init__()
        self.options = options
        self.layer_for = layer_for
        self.stack: list[nn.Module] = []
        self.live_bytes = 0
        self.peak_bytes = 0
        self.uncounted: Counter[str] = Counter()
        self.sign_fed_layers: dict[str, None] = {}  # ordered set of layer names
        self.seen_sign = False

    def track_live(self, tensor: torch.Tensor) -> None:
        """Count a new activation until Python frees it (peak of the sum = run-time memory)."""
        nbytes = tensor.numel() * tensor.element_size()
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(tensor, self._release, nbytes)

    def _release(self, nbytes: int) -> None:
        self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = _run_meta_op(func, args, kwargs or {})
        module = self.stack[-1] if self.stack else None
        self._count(func, module, args, out)
        self._audit(func, module, args, out)
        self._track_outputs(args, out)
        return out

    def _audit(self, func: Any, module: nn.Module | None, args: Any, out: Any) -> None:
        """Note ops no rule counts, and which tensors (and conv/linear inputs) come from sign."""
        packet = getattr(func, "overloadpacket", func)
        if packet in MATMUL_RULES:
            activation = args[_ACTIVATION_ARG.get(packet, 0)]
            fed = self.seen_sign and module is not None and _from_sign(activation)
            if fed and not self._in_binary_layer():
                self.sign_fed_layers[self.layer_for[id(module)].name] = None
            return
        if not (has_rule(func) or is_free_op(func)):
            name = op_name(func)
            if may_multiply(name) or not self._in_binary_layer():  # else: folded bookkeeping
                self.uncounted[name] += 1
        if packet.__name__ in SIGN_OPS:
            self.seen_sign = True
            _mark_from_sign(out)
        elif self.seen_sign and any(_from_sign(t) for t in _tensors(args)):
            _mark_from_sign(out)

    def _in_binary_layer(self) -> bool:
        return any(is_binary_layer(m) for m in self.stack)

    def _track_outputs(self, args: Any, out: Any) -> None:
        """Track each output whose storage is new: not a view, not an input written in place."""
        known = {t.untyped_storage()._cdata for t in _tensors(args)}
        for tensor in _tensors(out):
            if tensor._is_view():
                continue
            key = tensor.untyped_storage()._cdata
            if key not in known:
                known.add(key)
                self.track_live(tensor)

    def _count(self, func: Any, module: nn.Module | None, args: Any, out: Any) -> None:
        found = categorize(func, module)
        if found is None or module is None:
            return
        category, rule = found
        binary_owner = next((m for m in reversed(self.stack) if is_binary_layer(m)), None)
        if binary_owner is not None and category != "matmul":
            return
        if not self.options.counts(category):
            return
        layer = self.layer_for[id(module)]
        count = rule(args, out)
        if category != "matmul":
            layer.fp_other_ops += count
        elif binary_owner is not None and has_binary_input(binary_owner):
            layer.binary_macs += count
        else:
            layer.fp_macs += count


_CONVOLUTION = torch.ops.aten.convolution.default


def _run_meta_op(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    """Run one op; on meta tensors, get its output without torch's Python meta functions.

    Why: many of torch's meta functions are Python references that import sympy and its
    symbolic-shape machinery on first use (~0.6 s, a third of ``compare``'s start-up) and are
    slow besides. Instead, a plain convolution's output shape is computed here, and any other
    functional op runs on CPU over zero-stride stand-ins of its meta inputs (C++ kernels, no
    sympy; element-wise work on one activation), and the result goes back to meta. Views,
    in-place, value-dependent and random ops and anything unusual run as torch runs them, so
    aliasing (which the activation-memory count follows), the random state and torch's own
    error messages are unchanged.
    """
    tensors = list(_tensors((args, kwargs)))
    if not tensors or not all(t.is_meta for t in tensors) or not _functional(func):
        return func(*args, **kwargs)
    if func is _CONVOLUTION:
        out = _meta_convolution(args)
        return func(*args, **kwargs) if out is None else out
    try:
        out = func(*_on_cpu(args), **_on_cpu(kwargs))
    except Exception:  # let torch's meta function raise its own error, or succeed
        return func(*args, **kwargs)
    return _map_tensors(lambda t: torch.empty_like(t, device="meta"), out)


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in an op's arguments (nested in tuples, lists and dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _map_tensors(fn: Callable[[torch.Tensor], Any], value: Any) -> Any:
    """``value`` with ``fn`` applied to each tensor in it (a lighter ``tree_map``)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(fn, item) for item in value)
    if isinstance(value, dict):
        return {key: _map_tensors(fn, item) for key, item in value.items()}
    return value


def _on_cpu(value: Any) -> Any:
    """Meta tensors replaced by zero-stride CPU zeros of the same shape and dtype."""
    return _map_tensors(lambda t: torch.zeros((), dtype=t.dtype).expand(t.shape), value)


# Ops whose output depends on the values (or draws random numbers): zeros would mislead.
_VALUE_TAGS = {torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape,
               torch.Tag.nondeterministic_seeded}


def _functional(func: Any) -> bool:
    """An op that writes no input, returns fresh tensors (no views, no ``out=``) and whose
    output shape and dtype do not depend on the input's values."""
    schema = getattr(func, "_schema", None)
    return (
        schema is not None
        and not schema.is_mutable
        and all(ret.alias_info is None for ret in schema.returns)
        and not _VALUE_TAGS.intersection(getattr(func, "tags", ()))
    )


def _meta_convolution(args: Any) -> torch.Tensor | None:
    """A plain convolution's output on meta, or None (transposed, mismatched, empty output)."""
    x, weight, _bias, stride, padding, dilation, transposed, _out_pad, groups = args
    if transposed or x.dim() != weight.dim() or x.dim() < 3 or len(stride) != x.dim() - 2:
        return None
    if weight.shape[1] * groups != x.shape[1]:
        return None
    spatial = [
        (size + 2 * pad - dil * (k - 1) - 1) // step + 1
        for size, k, step, pad, dil in zip(
            x.shape[2:], weight.shape[2:], stride, padding, dilation, strict=True
        )
    ]
    if min(spatial) < 1:
        return None
    return torch.empty((x.shape[0], weight.shape[0], *spatial), dtype=x.dtype, device="meta")


# Which argument of a matrix op is the activation (addmm's first is the bias).
_ACTIVATION_ARG = {torch.ops.aten.addmm: 1}


def _from_sign(value: Any) -> bool:
    return getattr(value, "_sofar_from_sign", False)


def _mark_from_sign(out: Any) -> None:
    """Tag outputs derived from sign(); the tag follows element-wise and view ops downstream
    (so ``x + (sign(x) - x).detach()`` is seen) and stops at the next conv/matmul."""
    for tensor in _tensors(out):
        tensor._sofar_from_sign = True


def _costs(layer: LayerCost) -> bool:
    return bool(layer.fp_macs or layer.binary_macs or layer.fp_other_ops
                or layer.fp_params or layer.binary_params)


def module_param_counts(module: nn.Module, options: CountOptions) -> tuple[int, int]:
    """(fp, binary) parameters owned directly by ``module`` under the options."""
    fp = binary = 0
    is_bn = isinstance(module, BATCHNORM_MODULES)
    binary_layer = is_binary_layer(module)
    for name, param in module.named_parameters(recurse=False):
        if is_bn:
            fp += param.numel() if options.batchnorm_params else 0
        elif name == "bias":
            fp += param.numel() if options.bias_params else 0
        elif binary_layer:
            binary += param.numel()
        else:
            fp += param.numel()
    return fp, binary


def parameter_counts(model: nn.Module, options: CountOptions | None = None) -> tuple[int, int]:
    """(fp, binary) parameters of a whole model without running it (Params need no input)."""
    options = options or CountOptions()
    counts = [module_param_counts(m, options) for m in model.modules()]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def trace(
    model: nn.Module,
    input_shape: tuple[int, ...],
    options: CountOptions | None = None,
    *,
    name: str | None = None,
    dataset: str = "",
    width: int | None = None,
) -> CostReport:
    """Run one forward pass on the model's device (meta works) and count its costs.

    Args:
        model: any ``torch.nn.Module``; its binary layers are those :func:`is_binary_layer`
            accepts (the ``sofar_binary`` marker, a registered class, the toolkit's layers).
        input_shape: the input tensor's shape, batch included, e.g. ``(1, 3, 224, 224)``.
        options: what counts (:class:`~sofar_cost.count_options.CountOptions`); the papers'
            convention if None.
        name, dataset, width: labels carried into the report.

    Returns:
        A :class:`CostReport` with totals (``params_mbit``, ``flops``, MACs) and one
        :class:`LayerCost` per module.

    Raises:
        RuntimeError: whatever the model's own forward raises for this input shape.

    Example:
        >>> import torch
        >>> from sofar_cost import trace
        >>> from sofar_cost.binary import BinaryConv2d
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1),
        ...                             BinaryConv2d(8, 8, 3, padding=1))
        >>> report = trace(model, (1, 3, 8, 8))
        >>> report.fp_macs, report.binary_macs, report.flops
        (13824, 36864, 14400.0)
    """
    options = options or CountOptions()
    layers: dict[int, LayerCost] = {}
    ran: dict[int, LayerCost] = {}  # by module id, in first-run order (identity, not ==)
    for fqn, module in model.named_modules():
        layer = LayerCost(fqn or "(model)", type(module).__name__, is_binary_layer(module))
        layer.fp_params, layer.binary_params = module_param_counts(module, options)
        layers[id(module)] = layer

    defer_dynamo_import(_CostMode.__torch_dispatch__)  # saves ~2 s on a process's first trace
    mode = _CostMode(options, layers)

    def enter(module: nn.Module, _inputs: Any) -> None:
        if id(module) not in layers:  # a module created inside forward: give it a row
            layers[id(module)] = LayerCost(type(module).__name__, type(module).__name__, False)
        ran.setdefault(id(module), layers[id(module)])
        mode.stack.append(module)

    def leave(module: nn.Module, _inputs: Any, output: Any) -> None:
        mode.stack.pop()
        if isinstance(output, torch.Tensor):
            layers[id(module)].output_shape = tuple(output.shape)

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    pre = nn.modules.module.register_module_forward_pre_hook(enter)
    post = nn.modules.module.register_module_forward_hook(leave)
    try:
        x = torch.zeros(input_shape, device=device)
        with torch.no_grad(), mode:
            mode.track_live(x)
            model(x)
    finally:
        pre.remove()
        post.remove()
        model.train(was_training)
    unseen = [layer for key, layer in layers.items() if key not in ran]
    return CostReport(
        name or type(model).__name__,
        dataset,
        width,
        [*ran.values(), *unseen],
        options,
        mode.peak_bytes,
        dict(mode.uncounted.most_common()),
        list(mode.sign_fed_layers),
        tuple(input_shape),
    )
