"""What the packed engine (and plain torch fp32) run for a model: a list of costed operations.

This is the one module that knows how :mod:`sofar_cost.engine` executes a traced model, so it
is the one to re-point when the engine changes. The model is run once on the meta device
(no weights, no time) under a dispatch mode that records every ATen op with the module that
runs it; each op then becomes an :class:`Op` of a *kind* the calibration has timed:

- ``binary_conv``: a binary conv as :class:`~sofar_cost.engine.PackedConv` runs it: packing
  of the float input, the XNOR-popcount kernel and the per-channel affine pass. In a
  :class:`~sofar_cost.models.layers.BinaryConvUnit` the eval BN and the shortcut add are fused
  into that pass (``pack_model``), so they cost nothing of their own; the residual read does.
- ``conv1x1`` / ``conv3x3`` / ``conv7x7`` (torch fp32 convs by kernel class), ``linear`` and
  memory-bound torch ops (``batchnorm``, ``relu``, ``add``, ``concat``, ``mean`` over pixels,
  ``join_mean`` / ``join_mean_strided`` over stacked NCHW / channels-last tensors (a
  fractal join), ``maxpool``, ``avgpool``, and
  ``elementwise`` for anything else that writes a tensor).
- ``layout_copy``: a change of memory layout. Both sides run channels-last torch, but a packed
  conv writes NCHW: a torch conv reading NCHW copies it to channels-last first, a fused
  residual is made NCHW-contiguous, and a packed conv's input in neither layout (a channel
  slice) is copied before packing. The trace follows layouts on the meta device to see these.
- ``mixed_layout``: an element-wise op or concatenation whose inputs are in different layouts
  (NCHW from a packed conv or a join, channels-last from torch), which torch runs strided.
- ``module_call``: the Python cost of entering one module.

Binarization bookkeeping (sign, weight scale) inside a binary layer is folded away in both
engines and never costed; view ops (view, slice, t) and allocations cost nothing.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sofar_cost.binary import has_binary_input, is_binary_layer, set_binarization
from sofar_cost.errors import SofarError
from sofar_cost.models.layers import BinaryConvUnit

WORD_BITS = 64

# Per kind: the work measures a calibration fits time against (besides one fixed cost per
# call). Binary conv words: out_pixels * out_channels * k * k * ceil(in_channels / 64),
# which sees the bits a width like 41 channels leaves unused in every word.
FEATURES: dict[str, tuple[str, ...]] = {
    "binary_conv": ("conv_words", "in_elems", "out_elems", "residual_elems", "weight_words"),
    "conv1x1": ("macs", "io_elems", "weight_elems"),
    "conv3x3": ("macs", "io_elems", "weight_elems"),
    "conv7x7": ("macs", "io_elems", "weight_elems"),
    "linear": ("macs", "io_elems"),
    "batchnorm": ("io_elems",),
    "relu": ("io_elems",),
    "add": ("io_elems",),
    "concat": ("io_elems",),
    "mean": ("io_elems",),
    "join_mean": ("io_elems",),
    "join_mean_strided": ("io_elems",),
    "maxpool": ("io_elems",),
    "avgpool": ("io_elems",),
    "elementwise": ("io_elems",),
    "layout_copy": ("io_elems",),
    "mixed_layout": ("io_elems",),
    "module_call": (),
}
SIDES = ("packed", "torch_fp32")

_FREE = {
    "view", "_unsafe_view", "slice", "t", "detach", "alias", "expand", "transpose", "permute",
    "as_strided", "as_strided_", "unsqueeze", "squeeze", "select", "empty", "empty_like",
    "empty_strided", "scalar_tensor", "lift_fresh",
}
_KIND_OF = {
    "native_batch_norm": "batchnorm", "_native_batch_norm_legit_no_training": "batchnorm",
    "relu": "relu", "relu_": "relu", "add": "add", "add_": "add", "cat": "concat",
    "stack": "concat", "mean": "mean", "max_pool2d_with_indices": "maxpool",
    "max_pool2d": "maxpool", "avg_pool2d": "avgpool", "addmm": "linear", "mm": "linear",
    "linear": "linear", "clone": "layout_copy", "copy_": "layout_copy",
    "_to_copy": "layout_copy",
}


@dataclass(frozen=True)
class Op:
    """One costed operation: its kind, the layer (module path) running it, its work."""

    layer: str
    kind: str
    work: tuple[float, ...]  # aligned with FEATURES[kind]
    in_channels: int = 0  # binary conv only: for the packed-word efficiency
    words_per_pixel: int = 0

    @property
    def word_efficiency(self) -> float | None:
        """channels / (64 x words per pixel): the share of packed bits that carry a sign."""
        if not self.words_per_pixel:
            return None
        return self.in_channels / (WORD_BITS * self.words_per_pixel)


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def _layout(t: torch.Tensor) -> str | None:
    """"nchw", "cl", "other", or None where both fit (one channel, one pixel)."""
    nchw, cl = t.is_contiguous(), t.dim() == 4 and t.is_contiguous(
        memory_format=torch.channels_last)
    if nchw and cl:
        return None
    return "nchw" if nchw else "cl" if cl else "other"


def _mixed(tensors: list[torch.Tensor]) -> bool:
    """Whether 4-d inputs come in more than one memory layout."""
    return len({_layout(t) for t in tensors if t.dim() == 4} - {None}) > 1


def conv_kind(kernel: int, in_channels: int) -> str:
    """The fp conv kind timed closest to this conv: ``conv7x7`` is the image stem (a large
    kernel over a few input channels, fitted on stems only); every other conv of more than
    1x1 goes to ``conv3x3``, fitted over many channel counts and sizes (a 6x6 "dense" conv
    with 37M weights extrapolated from stems came out 25x too slow)."""
    if kernel <= 2:
        return "conv1x1"
    return "conv7x7" if kernel >= 6 and in_channels <= 4 else "conv3x3"


class _OpRecorder(TorchDispatchMode):
    """Records (op name, module stack, args, output) of every ATen op, and each module call."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[nn.Module] = []
        self.calls: list[tuple[str, tuple[nn.Module, ...], Any, Any]] = []
        self.module_calls: list[nn.Module] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name == "convolution" and (_channels_last(args[0]) or _channels_last(args[1])):
            # on the CPU a conv with a channels-last input or weight writes channels-last;
            # the meta kernel writes NCHW, which would hide the layouts the engine sees
            out = torch.empty(out.shape, dtype=out.dtype, device=out.device,
                              memory_format=torch.channels_last)
        self.calls.append((name, tuple(self.stack), args, out))
        return out


def _fused_bn(module: nn.Module, parent: nn.Module | None) -> bool:
    """A BN that ``pack_model`` folds into the packed conv before it (a Bi-Real unit's)."""
    return (type(parent) is BinaryConvUnit and module is parent.bn
            and is_binary_layer(parent.conv) and type(module) is nn.BatchNorm2d
            and module.running_mean is not None)


def _binary_conv(layer: str, args: Any, out: torch.Tensor, residual: bool) -> Op:
    x, weight = args[0], args[1]
    cin, k = int(weight.shape[1]), int(weight.shape[2])
    words = -(-cin // WORD_BITS)
    out_elems = _numel(out.shape)
    conv_words = out_elems * k * k * words
    weight_words = int(weight.shape[0]) * k * k * words
    work = (conv_words, _numel(x.shape), out_elems, out_elems if residual else 0, weight_words)
    return Op(layer, "binary_conv", tuple(float(w) for w in work), cin, words)


def _torch_op(layer: str, name: str, args: Any, out: Any) -> Op | None:
    outs = _tensors(out)
    if name in _FREE or not outs:
        return None
    io = sum(_numel(t.shape) for t in _tensors(args)) + sum(_numel(t.shape) for t in outs)
    if name == "convolution":
        weight = args[1]
        k = int(weight.shape[2])
        macs = _numel(outs[0].shape) * _numel(weight.shape[1:])
        ins = _numel(args[0].shape) + _numel(outs[0].shape)
        kind = conv_kind(k, int(weight.shape[1]))
        return Op(layer, kind, (float(macs), float(ins), float(_numel(weight.shape))))
    kind = _KIND_OF.get(name, "elementwise")
    if kind in ("add", "concat", "elementwise") and _mixed(_tensors(args)):
        kind = "mixed_layout"
    if kind == "mean" and list(args[1]) == [0]:
        # the mean of stacked branches: fast over NCHW tensors (packed convs' outputs), a
        # strided reduction over channels-last ones (torch's)
        kind = "join_mean" if args[0].is_contiguous() else "join_mean_strided"
    if kind == "linear":
        a = _tensors(args)[-2]  # addmm(bias, input, weight.t()) / mm(input, weight.t())
        macs = _numel(outs[0].shape) * int(a.shape[-1])
        return Op(layer, kind, (float(macs), float(_numel(a.shape) + _numel(outs[0].shape))))
    if kind == "batchnorm":  # input and output; the statistics are per channel
        io = _numel(args[0].shape) + _numel(outs[0].shape)
    return Op(layer, kind, (float(io),))


def _check_packable(module: nn.Module, name: str) -> None:
    """Refuse what the packed engine does not run (its own rules): no prediction for it."""
    from sofar_cost.kernels.conv import check_module  # numba: load on demand

    why = None
    if not isinstance(module, nn.Conv2d):
        why = "only binary Conv2d layers run on the packed kernels"
    elif not has_binary_input(module):
        why = "its input is real-valued (binary weights only), which the packed kernels do not run"
    else:
        try:
            check_module(module, name)
        except ValueError as error:
            why = str(error)
    if why is not None:
        raise SofarError(f"no packed latency for layer {name} ({type(module).__name__}): {why}")


def _copy_op(layer: str, tensor: torch.Tensor) -> Op:
    return Op(layer, "layout_copy", (2.0 * _numel(tensor.shape),))


def _nchw(t: torch.Tensor) -> bool:
    return t.is_contiguous()


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)


def _packed_output(module: nn.Module) -> bool:
    """Whether ``pack_model`` runs this module on the packed kernels (output: NCHW)."""
    if type(module) is BinaryConvUnit:
        return is_binary_layer(module.conv) and _fused_bn(module.bn, module)
    return is_binary_layer(module)


def engine_ops(model: nn.Module, input_shape: tuple[int, ...], side: str, *,
               channels_last_input: bool = True) -> list[Op]:
    """The operations ``side`` ("packed" or "torch_fp32") runs for one forward pass.

    ``model`` should live on the meta device (it is traced, never timed, and left as it is):
    a copy is traced in channels-last memory, as both engines run it; for "torch_fp32" the
    copy's toolkit binary layers are switched to float. ``channels_last_input=False`` feeds
    an NCHW input (calibration samples of ops that read a packed conv's output).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    packed = side == "packed"
    model = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    if not packed:  # the same net with binarization off, as the fp32 baseline
        set_binarization(model, False)
    names = {id(m): n or "(model)" for n, m in model.named_modules()}
    parents = {id(child): m for m in model.modules() for child in m.children()}
    recorder = _OpRecorder()

    def enter(module: nn.Module, _inputs: Any) -> None:
        recorder.stack.append(module)
        recorder.module_calls.append(module)

    def leave(module: nn.Module, _inputs: Any, output: Any) -> Any:
        recorder.stack.pop()
        if packed and isinstance(output, torch.Tensor) and _packed_output(module):
            return torch.empty(output.shape, device=output.device)  # the kernel writes NCHW
        return None

    device = next((p.device for p in model.parameters()), torch.device("meta"))
    pre = nn.modules.module.register_module_forward_pre_hook(enter)
    post = nn.modules.module.register_module_forward_hook(leave)
    try:
        x = torch.zeros(input_shape, device=device)
        if x.dim() == 4 and channels_last_input:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), recorder:
            model(x)
    finally:
        pre.remove()
        post.remove()
    ops: list[Op] = []
    for module in recorder.module_calls:
        if not (packed and _fused_bn(module, parents.get(id(module)))):
            ops.append(Op(names.get(id(module), type(module).__name__), "module_call", ()))
    for name, stack, args, out in recorder.calls:
        module = stack[-1] if stack else model
        layer = names.get(id(module), type(module).__name__)
        owner = next((m for m in reversed(stack) if is_binary_layer(m)), None) if packed else None
        if owner is not None:
            _check_packable(owner, names.get(id(owner), layer))
            if name == "convolution":  # sign / weight scale around it: folded away
                parent = parents.get(id(owner))
                unit = type(parent) is BinaryConvUnit and parent.shortcut is not None
                owner_name = names.get(id(owner), layer)
                if not (_nchw(args[0]) or _channels_last(args[0])):
                    ops.append(_copy_op(owner_name, args[0]))
                ops.append(_binary_conv(owner_name, args, out, unit))
            continue
        if packed and _fused_bn(module, parents.get(id(module))):
            continue
        if packed and name == "add" and _packed_output(module):
            if not _nchw(args[1]):  # the residual, made NCHW for the fused affine pass
                ops.append(_copy_op(layer, args[1]))
            continue  # the shortcut add itself is fused into the packed conv's affine pass
        if name == "convolution" and args[0].dim() == 4 and not _channels_last(args[0]):
            ops.append(_copy_op(layer, args[0]))  # torch converts its input to channels-last
        op = _torch_op(layer, name, args, out)
        if op is not None:
            ops.append(op)
    return ops
