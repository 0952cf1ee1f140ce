"""What the packed engine (and plain torch fp32) run for a model: a list of costed operations.

The packed side is read off the model :func:`sofar_cost.engine.pack_model` actually builds, so
it follows the engine as it changes: the packed model runs once (deterministic weights, one
image, not timed) while every module call and every ATen op is recorded. Engine modules that
call Numba kernels (invisible to torch) are costed by their type, from the shapes they see:

- ``binary_conv``: one packed binary conv (a :class:`~sofar_cost.engine.PackedConv`, each unit
  of a :class:`~sofar_cost.engine.PackedUnitRun`, each layer of a
  :class:`~sofar_cost.engine.PackedDenseRun`, a binary Linear): packing of its input (from
  floats, a BN-thresholded DenseNet buffer or the previous unit's output pass), the
  XNOR-popcount kernel, and the affine output pass with folded BN and fused residual;
- ``avgpool2`` (:class:`~sofar_cost.engine.AvgPool2`), ``relu_maxpool``
  (:class:`~sofar_cost.engine.ReluMaxPool`, the stem) and ``bn_maxpool_relu`` (the fused pass
  of a :class:`~sofar_cost.engine.PackedTransition`);
- ``classifier_head`` (:class:`~sofar_cost.engine.PackedHead`): [BN] [ReLU], global average
  pool and the float classifier in one call.

Every torch op the packed model still runs (float convs with BN folded, the pointwise convs as
``baddbmm`` (``pointwise_matmul``), layout copies, dilated/grouped or real-input binary layers
in :class:`~sofar_cost.engine.TorchBinaryLayer`, ...) is recorded as it runs, on real tensors,
so its layouts are the engine's own. The torch fp32 side is the same net with binarization
off in channels-last PyTorch, traced on the meta device (no weights, no time). Torch ops map
to kinds: ``conv1x1`` / ``conv3x3`` / ``conv7x7`` (fp32 convs by kernel class),
``conv_grouped`` (depthwise or grouped), ``linear``,
memory-bound ops (``batchnorm``, ``relu``, ``add``, ``concat``, ``mean`` over pixels,
``join_mean`` / ``join_mean_strided`` over stacked NCHW / channels-last tensors (a fractal
join), ``maxpool``, ``avgpool``, ``elementwise`` for anything else that writes a tensor),
``layout_copy`` (a change of memory layout, also the one a conv makes of an input not in
channels-last), ``mixed_layout`` (an element-wise op or concatenation over inputs in different
layouts, which torch runs strided) and ``module_call`` (the Python cost of entering a module).
View ops and allocations cost nothing.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sofar_cost.binary import set_binarization
from sofar_cost.errors import SofarError

WORD_BITS = 64

# Per kind: the work measures a calibration fits time against (besides one fixed cost per
# call). Binary conv words: out_pixels * out_channels * k * k * ceil(in_channels / 64),
# which sees the bits a width like 41 channels leaves unused in every word.
FEATURES: dict[str, tuple[str, ...]] = {
    "binary_conv": ("conv_words", "in_elems", "out_elems", "residual_elems", "weight_words"),
    "conv1x1": ("macs", "io_elems", "weight_elems"),
    "conv3x3": ("macs", "io_elems", "weight_elems"),
    "conv7x7": ("macs", "io_elems", "weight_elems"),
    "conv_grouped": ("macs", "io_elems", "weight_elems"),
    "linear": ("macs", "io_elems"),
    "pointwise_matmul": ("macs", "io_elems", "weight_elems"),
    "avgpool2": ("io_elems",),
    "relu_maxpool": ("io_elems",),
    "bn_maxpool_relu": ("io_elems",),
    "classifier_head": ("in_elems", "macs"),
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
# The packed side runs the packed model once, so its weights must fit in memory: 200M float
# weights (800 MB) is over 3x the largest preset's (binary-alexnet: 62M).
MAX_PACKED_PARAMETERS = 200_000_000


class TooLargeToPack(SofarError):
    """A model with more weights than the packed side's one run may allocate here."""

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
    "linear": "linear", "baddbmm": "pointwise_matmul", "clone": "layout_copy",
    "copy_": "layout_copy", "_to_copy": "layout_copy",
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
        if name == "convolution" and out.device.type == "meta" and (
                _channels_last(args[0]) or _channels_last(args[1])):
            # on the CPU a conv with a channels-last input or weight writes channels-last;
            # the meta kernel writes NCHW, which would hide the layouts the engine sees
            out = torch.empty(out.shape, dtype=out.dtype, device=out.device,
                              memory_format=torch.channels_last)
        self.calls.append((name, tuple(self.stack), args, out))
        return out




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
        # depthwise / grouped convs do little work per element: timed as their own kind
        kind = "conv_grouped" if int(args[8]) > 1 else conv_kind(k, int(weight.shape[1]))
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
    if kind == "pointwise_matmul":  # baddbmm(bias, weight [N, Cout, Cin], x [N, Cin, HW])
        weight, x = _tensors(args)[-2:]
        macs = _numel(outs[0].shape) * int(weight.shape[-1])
        return Op(layer, kind, (float(macs), float(_numel(x.shape) + _numel(outs[0].shape)),
                                float(_numel(weight.shape[1:]))))
    if kind == "batchnorm":  # input and output; the statistics are per channel
        io = _numel(args[0].shape) + _numel(outs[0].shape)
    return Op(layer, kind, (float(io),))


def _copy_op(layer: str, tensor: torch.Tensor) -> Op:
    return Op(layer, "layout_copy", (2.0 * _numel(tensor.shape),))


def _nchw(t: torch.Tensor) -> bool:
    return t.is_contiguous()


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)


def _binary_conv(layer: str, kernel: Any, in_shape: Sequence[int], residual: bool) -> Op:
    """One packed conv (a ``PackedBinaryConv2d``) reading ``in_shape`` [N, C, H, W]."""
    n, _, height, width = (int(v) for v in in_shape)
    kh, kw = kernel.weights.kernel_size
    words = -(-kernel.in_channels // WORD_BITS)
    out_elems = n * kernel.out_channels * math.prod(kernel.output_hw(height, width))
    work = (out_elems * kh * kw * words, _numel(in_shape), out_elems,
            out_elems if residual else 0, kernel.out_channels * kh * kw * words)
    return Op(layer, "binary_conv", tuple(float(w) for w in work), kernel.in_channels, words)


def _kernel_ops(module: nn.Module, layer: str, args: tuple[Any, ...], out: Any) -> list[Op]:
    """The Numba work of one engine module call (its torch ops are recorded as they run)."""
    from sofar_cost import engine  # numba: load on demand

    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if x is None:
        return []
    kind = type(module)
    if kind is engine.PackedConv:
        residual = len(args) > 1 and args[1] is not None
        shape = (*x.shape, 1, 1) if module.linear else x.shape
        ops = [] if module.linear or _nchw(x) or _channels_last(x) else [_copy_op(layer, x)]
        return [*ops, _binary_conv(module.kernel.name, module.kernel, shape, residual)]
    if x.dim() != 4:
        return []
    n, chans, height, width = x.shape
    if kind is engine.PackedUnitRun:  # a downsampling shortcut's pool is its own pass
        ops = []
        for unit, hw in zip(module.units, module._sizes(height, width), strict=True):
            chans_in = unit.conv.kernel.in_channels
            if engine.PackedUnitRun.pooled_shortcut(unit, hw) is not None:
                pooled = n * chans_in * (hw[0] // 2) * (hw[1] // 2)
                ops.append(Op(unit.conv.kernel.name, "avgpool2",
                              (float(n * chans_in * hw[0] * hw[1] + pooled),)))
            ops.append(_binary_conv(unit.conv.kernel.name, unit.conv.kernel,
                                    (n, chans_in, *hw), unit.shortcut is not None))
        return ops
    if kind is engine.PackedDenseRun:  # layer i packs the buffer's channels so far
        grown = itertools.accumulate([chans] + [c.kernel.out_channels for c in module.convs])
        return [_binary_conv(conv.kernel.name, conv.kernel, (n, c, height, width), False)
                for conv, c in zip(module.convs, grown, strict=False)]
    if kind is engine.PackedHead:  # its pre, if not fused, ran as torch ops before
        classes = module.weight.shape[0]
        return [Op(layer, "classifier_head", (float(_numel(x.shape)),
                                              float(n * chans * classes)))]
    passes = {engine.AvgPool2: "avgpool2", engine.ReluMaxPool: "relu_maxpool",
              engine.PackedTransition: "bn_maxpool_relu"}
    if kind not in passes:
        return []
    out_elems = _numel(out.shape) if kind is not engine.PackedTransition else (
        n * chans * (height // 2) * (width // 2))  # the pooled tensor it writes
    return [Op(layer, passes[kind], (float(_numel(x.shape) + out_elems),))]


def _materialized(model: nn.Module) -> nn.Module:
    """``model`` with real, deterministic tensors where it lives on the meta device: packing
    needs weights, though what it builds (and so the prediction) does not depend on them."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    if not any(t.is_meta for t in tensors):
        return model
    model = copy.deepcopy(model).to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
            if not t.is_floating_point():
                t.zero_()
            elif name.endswith("running_var"):
                t.fill_(1.0)
            else:
                t.normal_(generator=gen)
    return model


def packed_ops(packed: nn.Module, x: torch.Tensor) -> list[Op]:
    """The operations a packed model (``pack_model``'s) runs on ``x``: it is run once."""
    return _run_recorded(packed, x, packed=True)


def _run_recorded(model: nn.Module, x: torch.Tensor, packed: bool) -> list[Op]:
    """Run ``model`` on ``x`` recording module calls and ATen ops; the ops it ran."""
    names = {id(m): n or "(model)" for n, m in model.named_modules()}
    recorder = _OpRecorder()
    kernel_ops: list[Op] = []

    def enter(module: nn.Module, _inputs: Any) -> None:
        recorder.stack.append(module)
        recorder.module_calls.append(module)

    def leave(module: nn.Module, inputs: Any, output: Any) -> None:
        recorder.stack.pop()
        if packed:
            kernel_ops.extend(_kernel_ops(module, names.get(id(module), type(module).__name__),
                                          inputs, output))

    pre = nn.modules.module.register_module_forward_pre_hook(enter)
    post = nn.modules.module.register_module_forward_hook(leave)
    try:
        with torch.no_grad(), recorder:
            model(x)
    finally:
        pre.remove()
        post.remove()
    ops = [Op(names.get(id(m), type(m).__name__), "module_call", ()) for m in recorder.module_calls]
    for name, stack, args, out in recorder.calls:
        layer = names.get(id(stack[-1]), type(stack[-1]).__name__) if stack else "(model)"
        if name == "convolution" and args[0].dim() == 4 and not _channels_last(args[0]):
            ops.append(_copy_op(layer, args[0]))  # torch converts its input to channels-last
        op = _torch_op(layer, name, args, out)
        if op is not None:
            ops.append(op)
    return ops + kernel_ops


def engine_ops(model: nn.Module, input_shape: tuple[int, ...], side: str, *,
               channels_last_input: bool = True) -> list[Op]:
    """The operations ``side`` ("packed" or "torch_fp32") runs for one forward pass.

    "packed": the model ``pack_model`` builds from ``model`` (on the meta device or not;
    left as it is), run once on an NCHW image as the end-to-end benchmark feeds it.
    "torch_fp32": a channels-last copy with its toolkit binary layers switched to float,
    traced on the meta device; ``channels_last_input=False`` feeds it an NCHW input
    (calibration samples of ops that read NCHW memory).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if side == "packed":
        from sofar_cost.engine import pack_model  # numba: load on demand

        count = sum(p.numel() for p in model.parameters())
        if count > MAX_PACKED_PARAMETERS:
            raise TooLargeToPack(f"no packed latency for a model of {count:,} weights: the "
                                 f"prediction packs and runs it once, which allows up to "
                                 f"{MAX_PACKED_PARAMETERS:,}")

        packed = pack_model(_materialized(model))
        x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0))
        return packed_ops(packed, x)
    with torch.device("meta"):
        model = copy.deepcopy(model).to("meta").eval().to(memory_format=torch.channels_last)
        set_binarization(model, False)
        x = torch.zeros(input_shape)
    if x.dim() == 4 and channels_last_input:
        x = x.contiguous(memory_format=torch.channels_last)
    return _run_recorded(model, x, packed=False)
