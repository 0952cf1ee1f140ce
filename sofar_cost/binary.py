"""Binarization as in the SoFAR paper, and the marker that tells the tracer a layer is binary.

A convolution or linear layer is *binary* when both its input and its weight are binarized.
The tracer recognises such layers by (in this order):

1. the ``sofar_binary`` attribute (the documented marker: any module may set it to ``True``),
2. a class registered with :func:`register_binary_layer`,
3. the toolkit's own :class:`BinaryConv2d` / :class:`BinaryLinear`, whose ``sofar_binary``
   follows their ``binarize`` switch.

It never guesses from the graph: a binarizer written as ``x + (sign(x) - x).detach()`` hides
the sign op, so spotting ``sign`` would miss it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_REGISTERED_BINARY_LAYERS: set[type[nn.Module]] = set()


def register_binary_layer(cls: type[nn.Module]) -> type[nn.Module]:
    """Declare a user layer class binary (usable as a class decorator)."""
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"register_binary_layer expects an nn.Module subclass, got {cls!r}")
    _REGISTERED_BINARY_LAYERS.add(cls)
    return cls


def is_binary_layer(module: nn.Module) -> bool:
    """True when the tracer should count this module's conv/linear work as binary."""
    marker = getattr(module, "sofar_binary", None)
    if marker is not None:
        return bool(marker)
    return type(module) in _REGISTERED_BINARY_LAYERS


def sign(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, so every value maps to exactly one bit (the kernels agree)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class SignApproxSTE(torch.autograd.Function):
    """Activation binarization, eq. 2: forward sign, backward the piecewise polynomial."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        grad = torch.where(x < 0, 2 + 2 * x, 2 - 2 * x)
        grad = torch.where(x.abs() < 1, grad, torch.zeros_like(grad))
        return grad_output * grad


def binarize_activation(x: torch.Tensor) -> torch.Tensor:
    return SignApproxSTE.apply(x)


def binarize_weight(w: torch.Tensor) -> torch.Tensor:
    """Eq. 1: W_b = E * sign(W), E = mean |W| per output channel; dL/dW ~= E * dL/dW_b."""
    scale = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True).detach()
    return scale * (w + (sign(w) - w).detach())


class _BinarySwitch:
    """Shared switch: ``binarize=False`` turns the layer back into its float twin."""

    binarize: bool

    @property
    def sofar_binary(self) -> bool:
        return self.binarize

    def _inputs(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.binarize:
            return x, w
        # On the meta device (cost tracing) the weight's values do not exist and binarizing
        # it changes no shape, so skip that work: tracing deep nets gets ~2x faster.
        return binarize_activation(x), w if w.is_meta else binarize_weight(w)


class BinaryConv2d(_BinarySwitch, nn.Conv2d):
    """Conv2d whose input activations and weights are binarized (no bias by default)."""

    def __init__(self, *args, bias: bool = False, binarize: bool = True, **kwargs) -> None:
        super().__init__(*args, bias=bias, **kwargs)
        self.binarize = binarize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self._inputs(x, self.weight)
        return self._conv_forward(x, w, self.bias)


class BinaryLinear(_BinarySwitch, nn.Linear):
    """Linear layer with binarized inputs and weights."""

    def __init__(self, *args, bias: bool = False, binarize: bool = True, **kwargs) -> None:
        super().__init__(*args, bias=bias, **kwargs)
        self.binarize = binarize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self._inputs(x, self.weight)
        return F.linear(x, w, self.bias)


def set_binarization(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every toolkit binary layer of ``model`` on or off (for float baselines)."""
    for module in model.modules():
        if isinstance(module, _BinarySwitch):
            module.binarize = enabled
    return model
