"""Bit-packed XNOR/XOR-popcount binary convolution kernels (Numba, multithreaded).

Sign convention: ``sign(v) = +1 if v >= 0 else -1``; results equal torch's conv2d/linear
on such sign tensors exactly (int32), zero padding included. See :mod:`.conv`.
"""

from .conv import PackedBinaryConv2d, PackedBinaryLinear, binary_conv2d, binary_linear
from .packing import (
    PackedActivations,
    PackedWeights,
    n_words,
    pack_activations,
    pack_weights,
)
from .popcount import (
    cpu_features,
    kernel_variant,
    measure_popcount_ceiling,
    popcount_ceilings,
    runnable_variants,
)

__all__ = [
    "PackedActivations",
    "PackedBinaryConv2d",
    "PackedBinaryLinear",
    "PackedWeights",
    "binary_conv2d",
    "binary_linear",
    "cpu_features",
    "kernel_variant",
    "measure_popcount_ceiling",
    "n_words",
    "pack_activations",
    "pack_weights",
    "popcount_ceilings",
    "runnable_variants",
]
