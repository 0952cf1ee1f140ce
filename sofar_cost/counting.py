"""Counting rules keyed by ATen op, kept apart from the graph traversal (like fvcore's handles).

Each rule maps one op call to a number of multiplications (MACs for conv/matmul, one per
output element for element-wise work). Which *category* an op belongs to decides whether it
is counted at all: ``CountOptions`` (:mod:`.count_options`) switches the optional categories
on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sofar_cost.count_options import CountOptions as CountOptions  # its home

aten = torch.ops.aten

Rule = Callable[[Sequence[Any], Any], int]


# larq.models.summary's parameter convention, for comparing with larq: biases count, and so
# does each BatchNorm, with 2C parameters (larq counts its moving mean and variance; we count
# gamma and beta, the same number for every BatchNorm with affine parameters). MACs and binary
# parameters need no option: larq too counts only conv/dense MACs and kernel weights.
LARQ_COUNTING = CountOptions(bias_params=True, batchnorm_params=True)


def _numel(shape: Sequence[int]) -> int:
    return math.prod(int(s) for s in shape)


def conv_macs(args: Sequence[Any], out: Any) -> int:
    """aten.convolution(input, weight, bias, stride, padding, dilation, transposed, ...)."""
    x, weight, transposed = args[0], args[1], args[6]
    kernel = _numel(weight.shape[2:])
    if transposed:
        return x.numel() * weight.shape[1] * kernel
    return out.numel() * weight.shape[1] * kernel


def mm_macs(args: Sequence[Any], out: Any) -> int:
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * b.shape[1]


def addmm_macs(args: Sequence[Any], out: Any) -> int:
    return mm_macs(args[1:], out)


def bmm_macs(args: Sequence[Any], out: Any) -> int:
    a, b = args[0], args[1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def output_elements(args: Sequence[Any], out: Any) -> int:
    first = out[0] if isinstance(out, tuple | list) else out
    return first.numel()


def input_elements(args: Sequence[Any], out: Any) -> int:
    return args[0].numel()


# Matrix work: the only category the papers count.
MATMUL_RULES: dict[Any, Rule] = {
    aten.convolution: conv_macs,
    aten._convolution: conv_macs,
    aten.mm: mm_macs,
    aten.addmm: addmm_macs,
    aten.bmm: bmm_macs,
}

# Optional categories, keyed by op. Reductions count their inputs, the rest their outputs.
ELEMENTWISE_RULES: dict[Any, Rule] = {
    aten.add: output_elements,
    aten.add_: output_elements,
    aten.sub: output_elements,
    aten.mul: output_elements,
    aten.mul_: output_elements,
    aten.div: output_elements,
    aten.relu: output_elements,
    aten.relu_: output_elements,
    aten.mean: input_elements,
    aten.sum: input_elements,
}
BATCHNORM_RULES: dict[Any, Rule] = {
    aten.native_batch_norm: output_elements,
    aten._native_batch_norm_legit: output_elements,
    aten._native_batch_norm_legit_no_training: output_elements,
}
POOLING_RULES: dict[Any, Rule] = {
    aten.max_pool2d_with_indices: output_elements,
    aten.avg_pool2d: input_elements,
    aten._adaptive_avg_pool2d: input_elements,
    aten.mean: input_elements,
}

# Module types whose ops belong to a category whatever the op (AdaptiveAvgPool2d lowers to mean).
POOLING_MODULES = (
    torch.nn.MaxPool2d,
    torch.nn.AvgPool2d,
    torch.nn.AdaptiveAvgPool2d,
    torch.nn.AdaptiveMaxPool2d,
)
BATCHNORM_MODULES = (torch.nn.modules.batchnorm._BatchNorm,)


def categorize(op: Any, module: torch.nn.Module | None) -> tuple[str, Rule] | None:
    """The (category, rule) for one op call inside ``module``, or None when it never counts."""
    packet = getattr(op, "overloadpacket", op)
    if packet in MATMUL_RULES:
        return "matmul", MATMUL_RULES[packet]
    if isinstance(module, POOLING_MODULES) and packet in POOLING_RULES:
        return "pooling", POOLING_RULES[packet]
    if isinstance(module, BATCHNORM_MODULES) or packet in BATCHNORM_RULES:
        rule = BATCHNORM_RULES.get(packet)
        return ("batchnorm", rule) if rule else None
    if packet in POOLING_RULES and packet is not aten.mean:
        return "pooling", POOLING_RULES[packet]
    if packet in ELEMENTWISE_RULES:
        return "elementwise", ELEMENTWISE_RULES[packet]
    return None


# Ops that move, copy, allocate or fill memory and do no arithmetic: never "uncounted".
FREE_OPS = frozenset({
    "_local_scalar_dense", "_reshape_alias", "_to_copy", "_unsafe_view", "alias", "arange",
    "as_strided", "cat", "chunk", "clone", "constant_pad_nd", "contiguous", "copy", "copy_",
    "detach", "detach_", "dropout", "empty", "empty_like", "empty_strided", "expand",
    "expand_as", "feature_dropout", "fill", "fill_", "flatten", "flip", "full", "full_like",
    "index_select", "lift_fresh", "lift_fresh_copy", "narrow", "new_empty", "new_empty_strided",
    "new_full", "new_ones", "new_zeros", "ones", "ones_like", "permute", "pixel_shuffle",
    "pixel_unshuffle", "reflection_pad2d", "repeat", "replication_pad2d", "reshape",
    "resolve_conj", "resolve_neg", "roll", "scalar_tensor", "select", "slice", "split",
    "split_with_sizes", "squeeze", "squeeze_", "stack", "sym_size", "sym_stride", "t",
    "transpose", "unbind", "unflatten", "unfold", "unsqueeze", "unsqueeze_", "view",
    "view_as", "zero_", "zeros", "zeros_like",
})  # fmt: skip

# Op names that can hide multiplications (FFTs, convolution and matrix-product variants no
# rule covers, attention, linear algebra). Any op outside the aten/prims namespaces (a
# custom operator) is treated the same way.
_MAY_MULTIPLY = re.compile(
    r"fft|stft|conv|mm|matmul|dot|^mv$|addmv|einsum|linalg|attention|cdist|lstm|gru|rnn"
    r"|^bilinear$|kron|tensordot"
)
SIGN_OPS = frozenset({"sign", "sign_", "sgn", "sgn_"})


def op_name(op: Any) -> str:
    """'aten._fft_r2c' (namespace.name, no overload): the key of uncounted-op reports."""
    return str(getattr(op, "overloadpacket", op))


def is_free_op(op: Any) -> bool:
    """True for ops that only move or allocate memory (views, copies, fills, cat, ...)."""
    packet = getattr(op, "overloadpacket", op)
    return getattr(op, "namespace", "aten") == "aten" and packet.__name__ in FREE_OPS


def may_multiply(name: str) -> bool:
    """Whether an uncounted op (by :func:`op_name`) can carry multiplications."""
    namespace, _, op = name.partition(".")
    return namespace not in ("aten", "prims") or bool(_MAY_MULTIPLY.search(op))


def has_rule(op: Any) -> bool:
    """True when some counting rule knows this op (counted, or off by a CountOptions switch)."""
    packet = getattr(op, "overloadpacket", op)
    rules = (MATMUL_RULES, ELEMENTWISE_RULES, BATCHNORM_RULES, POOLING_RULES)
    return any(packet in table for table in rules)
