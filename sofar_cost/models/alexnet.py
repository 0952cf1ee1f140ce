"""AlexNet-style binary networks of larq-zoo 2.4.0: Binary AlexNet and XNOR-Net.

Re-expressed from ``larq_zoo.literature.BinaryAlexNet`` (Hubara et al. 2016) and
``larq_zoo.literature.XNORNet`` (Rastegari et al. 2016). Keras "same" padding becomes
symmetric padding (k - 1) / 2, which gives the same output sizes; the fully connected layers
that larq-zoo writes as 1x1 convs on a 1x1 map are linear layers here (same weights, same
MACs). Both return logits (larq-zoo ends in a softmax).
"""

from __future__ import annotations

from torch import nn

from sofar_cost.binary import BinaryConv2d, BinaryLinear
from sofar_cost.models.layers import DatasetSpec, imagenet_only

ALEXNET_CONVS = (64, 192, 384, 384, 256)  # Binary AlexNet's conv widths; XNOR-Net: 96 first
XNORNET_CONVS = (96, 256, 384, 384, 256)
HIDDEN = 4096


def _scaled(channels: tuple[int, ...], width: int) -> list[int]:
    """Conv widths scaled so that the first conv has ``width`` channels."""
    return [c * width // channels[0] for c in channels]


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, stride=2)  # Keras "valid": 56 -> 27 -> 13 -> 6


def binary_alexnet(width: int, dataset: DatasetSpec) -> nn.Sequential:
    """Every conv and dense layer binary with plain sign(W) (larq's ``ste_sign``), each
    followed by a BN (after the max-pool where there is one); the first conv reads the image
    unbinarized (binary weights, real-valued input)."""
    imagenet_only("binary-alexnet", dataset)
    c1, c2, c3, c4, c5 = _scaled(ALEXNET_CONVS, width)

    def conv(cin: int, cout: int, k: int, **kw) -> BinaryConv2d:
        return BinaryConv2d(cin, cout, k, padding=(k - 1) // 2, scale_weights=False, **kw)

    def dense(cin: int, cout: int) -> list[nn.Module]:
        return [BinaryLinear(cin, cout, scale_weights=False), nn.BatchNorm1d(cout)]

    return nn.Sequential(
        conv(3, c1, 11, stride=4, binary_input=False), _pool(), nn.BatchNorm2d(c1),
        conv(c1, c2, 5), _pool(), nn.BatchNorm2d(c2),
        conv(c2, c3, 3), nn.BatchNorm2d(c3),
        conv(c3, c4, 3), nn.BatchNorm2d(c4),
        conv(c4, c5, 3), _pool(), nn.BatchNorm2d(c5),
        nn.Flatten(),
        *dense(c5 * 6 * 6, HIDDEN),
        *dense(HIDDEN, HIDDEN),
        *dense(HIDDEN, dataset.num_classes),
    )  # fmt: skip


def xnornet(width: int, dataset: DatasetSpec) -> nn.Sequential:
    """Full-precision first conv and classifier; binary convs with E * sign(W) (XNOR-Net's
    per-filter mean |W|, our default scaling) in between, the 6x6 one acting as a dense
    layer on the 6x6 map."""
    imagenet_only("xnornet", dataset)
    c1, c2, c3, c4, c5 = _scaled(XNORNET_CONVS, width)

    def conv(cin: int, cout: int, k: int, padding: int | None = None) -> BinaryConv2d:
        return BinaryConv2d(cin, cout, k, padding=(k - 1) // 2 if padding is None else padding)

    return nn.Sequential(
        nn.Conv2d(3, c1, 11, stride=4, padding=5, bias=False), nn.BatchNorm2d(c1, eps=1e-5),
        nn.ReLU(), _pool(), nn.BatchNorm2d(c1, eps=1e-4),
        conv(c1, c2, 5), _pool(), nn.BatchNorm2d(c2, eps=1e-4),
        conv(c2, c3, 3), nn.BatchNorm2d(c3, eps=1e-4),
        conv(c3, c4, 3), nn.BatchNorm2d(c4, eps=1e-4),
        conv(c4, c5, 3), _pool(), nn.BatchNorm2d(c5, eps=1e-4),
        conv(c5, HIDDEN, 6, padding=0), nn.BatchNorm2d(HIDDEN, eps=1e-4),
        conv(HIDDEN, HIDDEN, 1), nn.BatchNorm2d(HIDDEN, eps=1e-3), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(HIDDEN, dataset.num_classes, bias=False),
    )  # fmt: skip
