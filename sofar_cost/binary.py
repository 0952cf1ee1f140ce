"""Binarization as in the SoFAR paper, and the markers that tell the tracer a layer is binary.

A convolution or linear layer is *binary* when its weight is binarized. The tracer recognises
such layers by (in this order):

1. the ``sofar_binary`` attribute (the documented marker: any module may set it to ``True``),
2. a class registered with :func:`register_binary_layer`, or a subclass of one (``isinstance``,
   as larq's profile matches its quantized layer classes),
3. the toolkit's own :class:`BinaryConv2d` / :class:`BinaryLinear`, whose ``sofar_binary``
   follows their ``binarize`` switch.

Its input is binarized too unless the layer sets ``sofar_binary_input = False`` (default
``True``; any module may set it, and :class:`BinaryConv2d` / :class:`BinaryLinear` expose their
``binary_input`` switch through it). Such a layer -- larq's ``input_quantizer=None`` with a
binary kernel, e.g. Binary AlexNet's first conv -- stores 1-bit weights but multiplies
real-valued inputs: the tracer counts its parameters as binary and its MACs as
full-precision.

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
    """True when this module's conv/linear weights are binary (1-bit parameters)."""
    marker = getattr(module, "sofar_binary", None)
    if marker is not None:
        return bool(marker)
    return isinstance(module, tuple(_REGISTERED_BINARY_LAYERS))


def has_binary_input(module: nn.Module) -> bool:
    """False for a binary layer whose input stays real-valued: its MACs are full-precision."""
    return bool(getattr(module, "sofar_binary_input", True))


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


def binarize_weight(w: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """Eq. 1: W_b = E * sign(W), E = mean |W| per output channel; dL/dW ~= E * dL/dW_b.

    ``scale=False`` gives plain sign(W) with a straight-through gradient (larq's ``ste_sign``).
    """
    signs = w + (sign(w) - w).detach()
    if not scale:
        return signs
    return w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True).detach() * signs


class _BinarySwitch:
    """Shared switches of the toolkit's binary layers.

    - ``binarize=False`` turns the layer back into its float twin.
    - ``binary_input=False`` keeps the input real-valued and binarizes only the weights
      (larq's ``input_quantizer=None``): 1-bit parameters, full-precision MACs.
    - ``scale_weights=False`` uses plain sign(W) instead of E * sign(W) (larq's ``ste_sign``
      and ``SteSign(clip)`` kernels; ``magnitude_aware_sign`` and XNOR-Net's scaled sign are
      our default E = mean |W| per output channel).
    """

    binarize: bool
    binary_input: bool
    scale_weights: bool

    def __init__(
        self,
        *args,
        bias: bool = False,
        binarize: bool = True,
        binary_input: bool = True,
        scale_weights: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(*args, bias=bias, **kwargs)  # the nn layer's own constructor
        self.binarize = binarize
        self.binary_input = binary_input
        self.scale_weights = scale_weights

    @property
    def sofar_binary(self) -> bool:
        return self.binarize

    @property
    def sofar_binary_input(self) -> bool:
        return self.binary_input

    def _inputs(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.binarize:
            return x, w
        if self.binary_input:
            x = binarize_activation(x)
        # On the meta device (cost tracing) the weight's values do not exist and binarizing
        # it changes no shape, so skip that work: tracing deep nets gets ~2x faster.
        return x, w if w.is_meta else binarize_weight(w, self.scale_weights)

    def extra_repr(self) -> str:
        switches = [
            f"{name}=False" for name in ("binary_input", "scale_weights") if not getattr(self, name)
        ]
        return ", ".join([super().extra_repr(), *switches])  # type: ignore[misc]


class BinaryConv2d(_BinarySwitch, nn.Conv2d):
    """Conv2d whose input activations and weights are binarized (no bias by default).

    ``binary_input`` and ``scale_weights`` (both default ``True``) are described on
    :class:`_BinarySwitch`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self._inputs(x, self.weight)
        return self._conv_forward(x, w, self.bias)


class BinaryLinear(_BinarySwitch, nn.Linear):
    """Linear layer with binarized inputs and weights (switches as :class:`BinaryConv2d`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self._inputs(x, self.weight)
        return F.linear(x, w, self.bias)


def set_binarization(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch every toolkit binary layer of ``model`` on or off (for float baselines)."""
    for module in model.modules():
        if isinstance(module, _BinarySwitch):
            module.binarize = enabled
    return model
