"""What counts, and the two formulas that turn counts into Params (Mbit) and Flops.

Kept apart from :mod:`.counting` (the per-op rules, which need torch) so that the command
line can parse ``--count`` and a config can be validated without importing torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sofar_cost.errors import unknown_name_error

# ``--count NAME`` -> the CountOptions field it switches on.
COUNT_FLAGS = {
    "batchnorm": "batchnorm",
    "pooling": "pooling",
    "elementwise": "elementwise",
    "bias": "bias_params",
    "bn-params": "batchnorm_params",
}

# What a budget may constrain (``solve --on``, ``on`` in a config) -> the metrics it checks:
# the two quantities the formulas below compute.
METRICS = {"params": ("params",), "flops": ("flops",), "both": ("params", "flops"),
           "latency": ("latency",)}  # predicted packed latency (docs/latency.md)


@dataclass(frozen=True)
class CountOptions:
    """What counts. The defaults are the convention that reproduces the SoFAR tables.

    - Flops = full-precision multiplications + binary multiplications / ``binary_divisor``.
    - Only convolutions and matrix products count by default. BatchNorm (one multiply per
      element once folded), pooling, and element-wise work (residual additions, the join's
      mean, activations) are optional categories.
    - Params: conv/linear weights always count; biases and BatchNorm affine parameters are
      optional. Buffers (BatchNorm running statistics) never count.
    """

    batchnorm: bool = False
    pooling: bool = False
    elementwise: bool = False
    bias_params: bool = False
    batchnorm_params: bool = False
    binary_divisor: int = 64
    fp_bits: int = 32
    binary_bits: int = 1

    @classmethod
    def from_flags(cls, names: Iterable[str] | None) -> CountOptions:
        """Options from ``--count`` values: names, or comma-separated lists of them."""
        flags = {}
        for item in names or []:
            for name in filter(None, (part.strip() for part in item.split(","))):
                if name not in COUNT_FLAGS:
                    raise unknown_name_error("--count category", name, COUNT_FLAGS)
                flags[COUNT_FLAGS[name]] = True
        return cls(**flags)

    def counts(self, category: str) -> bool:
        return category == "matmul" or getattr(self, category, False)

    def params_mbit(self, fp_params: int, binary_params: int) -> float:
        """Parameter storage: ``fp_bits`` per float parameter, ``binary_bits`` per binary one."""
        return (fp_params * self.fp_bits + binary_params * self.binary_bits) / 1e6

    def flops(self, fp_macs: int = 0, fp_other_ops: int = 0, binary_macs: int = 0) -> float:
        """The papers' Flops: float work plus binary MACs / ``binary_divisor``."""
        return fp_macs + fp_other_ops + binary_macs / self.binary_divisor
