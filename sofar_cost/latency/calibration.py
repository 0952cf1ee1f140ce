"""Calibration: per-kind latency coefficients measured on this CPU, kernel variant and thread count.

Each *sample* is a small module (one packed binary conv, one fp conv, one BN, a join, ...)
timed as the engine runs it (:func:`sofar_cost.engine.pack_model` for the packed side,
channels-last torch for the float ops). Its operations come from the same
:func:`~sofar_cost.latency.ops.engine_ops` that costs whole models, so calibration and
prediction can never disagree about what an op's work is. Per kind, time is fitted as
``per_call + sum(coefficient * work)`` by non-negative least squares on relative error
(docs/latency.md says why a fitted per-kind model rather than grid interpolation).

Timing is paired where there are two sides of one shape: the packed binary conv and the
torch fp32 conv of the same shape are run interleaved, round by round, and each keeps its
median, so load on a shared machine disturbs both alike. At one thread the clock is the
process's CPU time (:func:`clock_for`).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from sofar_cost import __version__
from sofar_cost.binary import BinaryLinear, set_binarization
from sofar_cost.errors import SofarError
from sofar_cost.latency.ops import FEATURES, SIDES, Op, engine_ops, packed_ops
from sofar_cost.models import create_model
from sofar_cost.models.densenet import DenseLayer, Transition
from sofar_cost.models.layers import BinaryConvUnit, ClassifierHead, Join
from sofar_cost.results import CalibrationRun

FORMAT = "sofar-cost-latency-calibration"
FORMAT_VERSION = 1
# Whole networks of the calibration (network_samples): one per family, unusual widths.
# The deep rf-c5d16-149 pins the cost per op (fitted on five nets of similar op counts it
# came out 5-13 us and solves on latency went wrong); the dilated BinaryDenseNet brings the
# binary layers that run in torch.
NETWORKS = (("bireal18", 40), ("binarydensenet28", 40), ("rf-c3d4-21", 32),
            ("drf-c2d2-51", 32), ("quicknet-small", 24), ("rf-c5d16-149", 24),
            ("binarydensenet37-dilated", 40))
NETWORK_SIZE = 192
# Seconds per whole-network sample. All of them are timed in the same interleaved rounds, as
# many as fit (at most 31): timed pair by pair in 5-6 rounds each, the VM's drift between
# pairs moved the network fit (its cost per op came out 2-13 us on one machine).
NETWORK_BUDGET_S = 2.0
COLD_BYTES = 64 << 20  # more than the last-level cache of the CPUs this runs on
KEY_FIELDS = ("cpu", "kernel_variant", "threads", "package_version")
# Kinds are fitted in this order; a sample's ops of kinds fitted earlier are subtracted first.
FIT_ORDER = ("module_call", "layout_copy", "relu", "elementwise", "add", "batchnorm", "concat",
             "mean", "join_mean", "join_mean_strided", "mixed_layout", "maxpool", "avgpool",
             "avgpool2", "relu_maxpool", "linear", "pointwise_matmul", "bn_maxpool_relu",
             "classifier_head",
             "conv1x1", "conv7x7", "conv3x3", "conv_grouped", "binary_conv")


def cpu_name() -> str:
    """The CPU model with its family/model/stepping ("AMD EPYC" alone names many chips)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    ids = [f"{k.split()[-1]} {fields[k]}" for k in ("cpu family", "model", "stepping")
           if k in fields]
    return f"{name} ({', '.join(ids)})" if ids else name


def machine_key(threads: int) -> dict[str, Any]:
    """What a calibration is only valid for: CPU, kernel variant, threads, package version."""
    from sofar_cost.kernels import kernel_variant  # numba: load on demand

    return {"cpu": cpu_name(), "kernel_variant": kernel_variant(), "threads": threads,
            "package_version": __version__}


def slug(key: dict[str, Any]) -> str:
    """``amd-epyc-25-17-1-avx512-vpopcntdq-t1``: a file name for a calibration key."""
    text = f"{key['cpu']}-{key['kernel_variant']}-t{key['threads']}".lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def default_path(threads: int = 1) -> Path:
    """Where ``calibrate`` writes by default: the user's cache directory."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "sofar-cost" / f"{slug(machine_key(threads))}.json"


@dataclass
class Calibration:
    """Fitted coefficients per kind (ms per call and ms per unit of each work measure)."""

    key: dict[str, Any]
    coefficients: dict[str, dict[str, float]]
    samples: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def op_ms(self, op: Op) -> float:
        """The op alone, as its kind's samples were timed."""
        coef = self.coefficients[op.kind]
        return coef["per_call"] + sum(coef[f] * w for f, w in zip(FEATURES[op.kind], op.work,
                                                                 strict=True))

    def network_op_ms(self, op: Op, side: str) -> float:
        """The op inside a whole network on ``side``: ``scale * op_ms + per_op`` (the
        ``network`` coefficients; 1 and 0 in a calibration without them). See
        :func:`fit_network`."""
        net = self.coefficients.get("network", {})
        return net.get(f"{side}_scale", 1.0) * self.op_ms(op) + net.get(f"{side}_per_op", 0.0)

    def summary(self) -> CalibrationRun:
        """What ``sofar-cost calibrate`` prints: per kind, its samples and how well it fits."""
        kinds = []
        for kind, coef in self.coefficients.items():
            rows = [r for r in self.samples if r["kind"] == kind and "predicted_ms" in r]
            errors = [abs(r["predicted_ms"] / r["ms"] - 1) for r in rows]
            per_call = coef.get("per_call")  # none for "network" (a scale and a cost per op)
            kinds.append({"kind": kind, "samples": len(rows),
                          "per_call_us": None if per_call is None else 1e3 * per_call,
                          "median_abs_pct_error": 100 * float(np.median(errors)) if errors
                          else None})
        return CalibrationRun(str(self.path), self.key, float(self.info.get("wall_s", 0.0)), kinds)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "key": self.key,
                "coefficients": self.coefficients, "info": self.info, "samples": self.samples}


# ---------------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """A module timed on real tensors; its ops (traced on meta) say what it costs."""

    label: str
    kind: str  # the kind this sample calibrates
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    side: str = "torch_fp32"  # "packed": run through pack_model
    pair: str = ""  # label of the sample timed interleaved with this one
    channels_last: bool = True  # input layout (False: NCHW, as a packed layer writes it)


class _Add(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


class _Mul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class _ToNCHW(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous()


class _MixedAdd(nn.Module):
    """A channels-last tensor plus an NCHW one (a torch output plus a packed conv's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.zeros(x.shape, dtype=x.dtype, device=x.device)


class _MixedCat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.zeros(x.shape, dtype=x.dtype, device=x.device)], dim=1)


class _Cat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], dim=1)


class _JoinOf(nn.Module):
    """A fractal join of ``n`` copies of the input (concat + mean)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.join = n, Join()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join([x] * self.n)


class _Identities(nn.Sequential):
    def __init__(self, n: int) -> None:
        super().__init__(*[nn.Identity() for _ in range(n)])


def _binary_unit(cin: int, cout: int, stride: int, residual: bool) -> Callable[[], nn.Module]:
    return lambda: BinaryConvUnit(cin, cout, stride, residual)


def samples() -> list[Sample]:
    """The calibration grid: shapes like those the presets run, odd widths included."""
    out: list[Sample] = [Sample(f"{n} module calls", "module_call", lambda n=n: _Identities(n),
                                (1, 8, 4, 4)) for n in (16, 64)]
    # binary 3x3 convs: the residual stages (C -> C at H), strided and dense-layer shapes
    stages = {56: (24, 32, 41, 53, 64, 96), 28: (48, 64, 82, 106, 128, 192),
              14: (96, 128, 164, 212, 256, 384), 7: (192, 256, 328, 424, 512, 768)}
    for h, widths in stages.items():
        for c in widths:
            out.append(Sample(f"bconv {c}->{c} {h}x{h} +res", "binary_conv",
                              _binary_unit(c, c, 1, True), (1, c, h, h), "packed",
                              channels_last=False))
    for h, c in ((56, 32), (56, 64), (28, 64), (28, 128), (14, 256)):
        out.append(Sample(f"bconv {c}->{2 * c} {h}x{h} s2", "binary_conv",
                          _binary_unit(c, 2 * c, 2, False), (1, c, h, h), "packed",
                          channels_last=False))
    for h, cin, cout in ((56, 160, 32), (28, 288, 64), (14, 448, 32), (7, 736, 64),
                         (56, 96, 64), (14, 320, 128)):
        out.append(Sample(f"bconv {cin}->{cout} {h}x{h}", "binary_conv",
                          _binary_unit(cin, cout, 1, False), (1, cin, h, h), "packed",
                          channels_last=False))
    # the same shapes in torch fp32 (paired with the packed ones when timed)
    out += [Sample(s.label.replace("bconv", "conv3x3").replace(" +res", ""), "conv3x3",
                   lambda s=s: _fp_conv_of(s.build()), s.shape, pair=s.label,
                   channels_last=True)
            for s in out if s.kind == "binary_conv"]
    # what the engine builds beyond single units: unit chains (each unit's output pass packs
    # the next one's bits), DenseNet runs on one buffer, binary Linear layers
    for c, h in ((64, 56), (41, 56), (128, 28), (256, 14), (512, 7)):
        out.append(Sample(f"bconv chain 3x {c}->{c} {h}x{h} +res", "binary_conv",
                          lambda c=c: nn.Sequential(*[BinaryConvUnit(c, c) for _ in range(3)]),
                          (1, c, h, h), "packed", channels_last=False))
    for c, growth, h in ((64, 64, 56), (160, 64, 28), (288, 64, 14), (96, 32, 28)):
        out.append(Sample(f"dense run 4x {c}+{growth} {h}x{h}", "binary_conv",
                          lambda c=c, g=growth: nn.Sequential(
                              *[DenseLayer(c + i * g, g) for i in range(4)]),
                          (1, c, h, h), "packed", channels_last=False))
    for cin, cout in ((512, 1000), (2048, 1000), (4096, 4096), (9216, 4096)):
        out.append(Sample(f"binary linear {cin}->{cout}", "binary_conv",
                          lambda cin=cin, cout=cout: BinaryLinear(cin, cout), (1, cin), "packed"))
    # the engine's own passes: stem ReLU + max-pool, Bi-Real's 2x2 average pool, 1x1 float
    # convs as a matrix product (BN folded), DenseNet transitions (one pass, then the product)
    for c in (24, 32, 64, 96):
        out.append(Sample(f"relu+maxpool {c}x112x112", "relu_maxpool",
                          lambda: nn.Sequential(nn.ReLU(), nn.MaxPool2d(3, 2, 1)),
                          (1, c, 112, 112), "packed"))
    for c, h in ((64, 56), (128, 28), (256, 14), (41, 56), (96, 56)):
        out.append(Sample(f"avgpool2 {c}x{h}x{h}", "avgpool2",
                          lambda: nn.Sequential(nn.AvgPool2d(2)), (1, c, h, h), "packed",
                          channels_last=False))
    for cin, cout, h in ((64, 128, 28), (128, 256, 14), (256, 512, 7), (41, 82, 28),
                         (256, 128, 28), (512, 256, 14), (384, 160, 7)):
        out.append(Sample(f"pointwise {cin}->{cout} {h}x{h}", "pointwise_matmul",
                          lambda cin=cin, cout=cout: nn.Sequential(
                              nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)),
                          (1, cin, h, h), "packed", channels_last=False))
    for cin, cout, h in ((320, 160, 56), (416, 208, 28), (608, 304, 14), (192, 96, 56)):
        out.append(Sample(f"transition {cin}->{cout} {h}x{h}", "bn_maxpool_relu",
                          lambda cin=cin, cout=cout: Transition(cin, cout),
                          (1, cin, h, h), "packed", channels_last=False))
    for c, h, pre in ((256, 7, "none"), (328, 7, "none"), (512, 7, "none"), (1024, 7, "relu"),
                      (576, 7, "bn+relu"), (1024, 7, "bn+relu"), (512, 14, "relu")):
        out.append(Sample(f"classifier head {pre} {c}x{h}x{h}->1000", "classifier_head",
                          lambda c=c, pre=pre: ClassifierHead(c, 1000, pre=_head_pre(pre, c)),
                          (1, c, h, h), "packed", channels_last=False))
    for cin, cout, h in ((32, 64, 28), (64, 128, 14), (128, 256, 7), (256, 512, 4),
                         (41, 82, 28), (164, 328, 7), (256, 128, 56), (512, 256, 28),
                         (640, 320, 14), (448, 166, 28)):
        out.append(Sample(f"conv1x1 {cin}->{cout} {h}x{h}", "conv1x1",
                          lambda cin=cin, cout=cout: nn.Conv2d(cin, cout, 1, bias=False),
                          (1, cin, h, h)))
    for cout in (24, 41, 64, 96):
        out.append(Sample(f"conv7x7 3->{cout} 224 s2", "conv7x7",
                          lambda c=cout: nn.Conv2d(3, c, 7, 2, 3, bias=False), (1, 3, 224, 224)))
    for c, groups, h in ((32, 32, 112), (64, 64, 56), (128, 128, 28), (256, 256, 14),
                         (512, 512, 7), (128, 4, 28), (256, 4, 14)):
        out.append(Sample(f"conv3x3 {c} groups {groups} {h}x{h} s2", "conv_grouped",
                          lambda c=c, g=groups: nn.Conv2d(c, c, 3, 2, 1, groups=g, bias=False),
                          (1, c, h, h)))
    for cin in (256, 512, 1024, 2048):
        out.append(Sample(f"linear {cin}->1000", "linear", lambda c=cin: nn.Linear(c, 1000),
                          (1, cin)))
    sizes = ((32, 56), (64, 56), (128, 28), (256, 14), (512, 7), (64, 112), (400, 28))
    elementwise: list[tuple[str, Callable[[int], nn.Module]]] = [
        ("relu", lambda c: nn.ReLU()), ("add", lambda c: _Add()),
        ("batchnorm", lambda c: nn.BatchNorm2d(c)), ("concat", lambda c: _Cat()),
        ("elementwise", lambda c: _Mul()), ("maxpool", lambda c: nn.MaxPool2d(3, 2, 1)),
        ("avgpool", lambda c: nn.AvgPool2d(2)), ("layout_copy", lambda c: _ToNCHW()),
        ("mixed_layout", lambda c: _MixedAdd()),
    ]
    for kind, make in elementwise:
        out += [Sample(f"{kind} {c}x{h}x{h}", kind, lambda make=make, c=c: make(c), (1, c, h, h))
                for c, h in sizes]
    out += [Sample(f"mixed cat {c}x{h}x{h}", "mixed_layout", _MixedCat, (1, c, h, h))
            for c, h in sizes[:5]]
    out += [Sample(f"maxpool2 {c}x{h}x{h}", "maxpool", lambda: nn.MaxPool2d(2), (1, c, h, h))
            for c, h in sizes[:4]]
    out += [Sample(f"join{n} {c}x{h}x{h} {layout}", kind, lambda n=n: _JoinOf(n), (1, c, h, h),
                   channels_last=layout == "channels-last")
            for kind, layout in (("join_mean", "NCHW"), ("join_mean_strided", "channels-last"))
            for n in (2, 4) for c, h in sizes[:5]]
    out += [Sample(f"global mean {c}x7x7", "mean", lambda: nn.AdaptiveAvgPool2d(1), (1, c, 7, 7))
            for c in (256, 512, 1024)]
    return out + network_samples()


def network_samples() -> list[Sample]:
    """Whole networks (kind ``network``), packed and torch fp32, all timed in the same
    interleaved rounds: what single ops timed in a loop miss inside a net (Python between
    the ops, caches that other layers have used). They are presets at widths and an input
    size no preset is benchmarked at (``benchmarks/bench_latency_model.py`` measures the
    paper widths at 224x224)."""

    def build(name: str, width: int, side: str) -> nn.Module:
        return set_binarization(create_model(name, "imagenet", width), side == "packed")

    return [Sample(f"network {name} width {width} {NETWORK_SIZE}px {side}", "network",
                   lambda name=name, width=width, side=side: build(name, width, side),
                   (1, 3, NETWORK_SIZE, NETWORK_SIZE), side, pair="networks")
            for name, width in NETWORKS for side in SIDES]


def _head_pre(pre: str, channels: int) -> nn.Module:
    """A classifier head's pre as the presets build them: none, ReLU, or BN -> ReLU."""
    return {"none": nn.Identity(), "relu": nn.ReLU(),
            "bn+relu": nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())}[pre]


def _fp_conv_of(unit: nn.Module) -> nn.Module:
    conv = unit.conv
    return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                     conv.padding, bias=False)


def sample_ops(sample: Sample) -> list[Op]:
    if sample.side == "packed":
        return packed_ops(*_packed_sample(sample))
    with torch.device("meta"):
        module = sample.build()
    return engine_ops(module, sample.shape, sample.side,
                      channels_last_input=sample.channels_last)


# ----------------------------------------------------------------------------------- timing


def _built(sample: Sample) -> tuple[nn.Module, torch.Tensor]:
    """The sample's module (eval, BN with non-trivial statistics) and its input."""
    gen = torch.Generator().manual_seed(0)
    module = sample.build().eval().requires_grad_(False)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):  # as a trained net has
            m.running_mean.normal_(generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    x = torch.randn(sample.shape, generator=gen)
    if x.dim() == 4 and sample.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return module, x


def _packed_sample(sample: Sample) -> tuple[nn.Module, torch.Tensor]:
    """What ``pack_model`` builds of the sample, and its input. A sample whose input is NCHW
    stands for layers reading a packed layer's NCHW output inside a model, so its packed root
    keeps that layout: the root's channels-last conversion (a whole model's input) is left out.
    """
    from sofar_cost.engine import pack_model  # numba: load on demand

    module, x = _built(sample)
    packed = pack_model(module)
    if not sample.channels_last:
        packed._forward_pre_hooks.clear()
    return packed, x


def runnable_sample(sample: Sample) -> Callable[[], object]:
    """The sample as the engine runs it: packed (eval, BN folded) or channels-last torch."""
    if sample.side == "packed":
        module, x = _packed_sample(sample)
        return lambda: module(x)
    module, x = _built(sample)
    if x.dim() == 4:
        module = module.to(memory_format=torch.channels_last)
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    if weight_bytes == 0:
        return lambda: module(x)
    # Float weights of a whole net (85 MB for bireal34) stream from memory on each pass; a
    # layer called again and again would find its weights in cache. So its calls cycle
    # through copies holding COLD_BYTES together. Packed weights are 32x smaller and a whole
    # packed net's fit in cache, so the packed side keeps one copy.
    copies = [module] + [copy.deepcopy(module)
                         for _ in range(min(63, COLD_BYTES // weight_bytes))]
    turn = itertools.cycle(copies)
    return lambda: next(turn)(x)


def clock_for(threads: int) -> Callable[[], float]:
    """The clock that times ``threads`` threads: at one thread the process's CPU time, which
    on a quiet machine equals wall time and on a shared one leaves out the time other
    processes held the core (measured here: 12.6 ms CPU against 31-48 ms wall for bireal18
    at load 8 on 2 cores; 11.7 ms wall when quiet); with more threads, wall time."""
    return time.process_time if threads == 1 else time.perf_counter


def interleaved_ms(fns: list[Callable[[], object]], budget_s: float, threads: int = 1,
                   most: int = 31, least: int = 5) -> list[float]:
    """Median ms of each function, timed in interleaved rounds (one call of each per round),
    so load on the machine disturbs all sides alike; clock: :func:`clock_for`.

    The number of rounds fits ``budget_s`` (between ``least`` and ``most``), so small ops get
    many rounds and big ones few.
    """
    clock = clock_for(threads)
    once = 0.0
    for fn in fns:  # warm-up: plan caches, allocator, first-call compilation
        fn()
        start = clock()
        fn()
        once += clock() - start
    rounds = max(least, min(most, int(budget_s / max(once, 1e-9))))
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, bucket in zip(fns, times, strict=True):
            start = clock()
            fn()
            bucket.append(clock() - start)
    return [1e3 * float(np.median(t)) for t in times]


def _groups(all_samples: list[Sample]) -> Iterator[list[Sample]]:
    """Pairs (packed binary conv, torch conv of the same shape) and single samples."""
    groups: dict[str, list[Sample]] = {}
    for s in all_samples:
        groups.setdefault(s.pair or s.label, []).append(s)
    yield from groups.values()


def measure(all_samples: list[Sample], threads: int, progress: bool,
            budget_s: float = 0.3) -> list[dict[str, Any]]:
    """Time every sample (pairs interleaved) under ``threads`` threads, with a progress bar."""
    from sofar_cost.kernels.bench import thread_count  # numba: load on demand

    rows: list[dict[str, Any]] = []
    groups = list(_groups(all_samples))
    columns = [TextColumn("calibrating {task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn()]
    with thread_count(threads), torch.inference_mode(), \
            Progress(*columns, transient=True, disable=not progress) as bar:
        task = bar.add_task("", total=len(all_samples))
        for group in groups:
            bar.update(task, description=group[0].label)
            budget = NETWORK_BUDGET_S if group[0].kind == "network" else budget_s
            times = interleaved_ms([runnable_sample(s) for s in group], budget * len(group),
                                   threads)
            for s, ms in zip(group, times, strict=True):
                rows.append({"label": s.label, "kind": s.kind, "side": s.side, "ms": ms})
            bar.advance(task, len(group))
    return rows


# ------------------------------------------------------------------------------------ fit


def _design(ops: list[Op], kind: str) -> np.ndarray:
    """One row: [number of ops of ``kind``, summed work per feature]."""
    mine = [op for op in ops if op.kind == kind]
    work = np.array([op.work for op in mine], dtype=float).reshape(len(mine), -1)
    return np.concatenate([[len(mine)], work.sum(axis=0)])


def nonnegative_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with coefficients >= 0 (drop the most negative and refit): a cost per
    unit of work is never negative, and a negative one would extrapolate badly."""
    active = list(range(a.shape[1]))
    while True:
        x = np.zeros(a.shape[1])
        if active:
            x[active] = np.linalg.lstsq(a[:, active], b, rcond=None)[0]
        if (x >= 0).all():
            return x
        active.remove(int(np.argmin(x)))


def fit(all_samples: list[Sample], rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per kind, in :data:`FIT_ORDER`: coefficients on relative error, earlier kinds known."""
    ops_of = {s.label: sample_ops(s) for s in all_samples}
    coefficients: dict[str, dict[str, float]] = {}
    known = Calibration({}, coefficients)
    for kind in FIT_ORDER:
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            raise SofarError(f"calibration has no sample of kind {kind!r}")
        a, b = [], []
        for r in mine:
            ops = ops_of[r["label"]]
            rest = sum(known.op_ms(op) for op in ops if op.kind != kind)
            scale = 1 / max(r["ms"], 1e-6)  # relative error: small ops count as much
            a.append(_design(ops, kind) * scale)
            b.append((r["ms"] - rest) * scale)
        a_arr = np.array(a)
        norm = np.maximum(np.abs(a_arr).max(axis=0), 1e-30)  # condition: columns ~ 1
        x = nonnegative_lstsq(a_arr / norm, np.array(b)) / norm
        coefficients[kind] = dict(zip(("per_call", *FEATURES[kind]), map(float, x), strict=True))
    side_of = {s.label: s.side for s in all_samples}
    network = [r for r in rows if r["kind"] == "network"]
    if network:
        coefficients["network"] = fit_network(known, network, ops_of, side_of)
    for r in rows:
        ops, side = ops_of[r["label"]], side_of[r["label"]]
        r["predicted_ms"] = (sum(known.network_op_ms(op, side) for op in ops)
                             if r["kind"] == "network" else sum(map(known.op_ms, ops)))
    return coefficients


def fit_network(known: Calibration, rows: list[dict[str, Any]], ops_of: dict[str, list[Op]],
                side_of: dict[str, str]) -> dict[str, float]:
    """Per side, ``measured = scale * sum(op_ms) + per_op * ops`` over the whole-network
    samples (non-negative least squares on relative error): the ops' own costs, timed alone,
    scaled to a network's, plus the Python cost between two ops."""
    found: dict[str, float] = {}
    for side in SIDES:
        mine = [r for r in rows if side_of[r["label"]] == side]
        if not mine:
            continue
        a = np.array([[sum(known.op_ms(op) for op in ops_of[r["label"]]) / r["ms"],
                       len(ops_of[r["label"]]) / r["ms"]] for r in mine])
        scale, per_op = nonnegative_lstsq(a, np.ones(len(mine)))
        found[f"{side}_scale"], found[f"{side}_per_op"] = float(scale), float(per_op)
    return found


def calibrate(threads: int = 1, out: Path | None = None, progress: bool = True) -> Calibration:
    """Measure this machine's per-kind latency model and write it as JSON (returns it)."""
    if threads < 1:
        raise SofarError(f"--threads must be at least 1, got {threads}")
    start = time.perf_counter()
    grid = samples()
    rows = measure(grid, threads, progress)
    coefficients = fit(grid, rows)
    errors = [abs(r["predicted_ms"] / r["ms"] - 1) for r in rows]
    info = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "wall_s": time.perf_counter() - start,
        "samples_median_abs_pct_error": 100 * float(np.median(errors)),
        "model": "per kind: ms = per_call + sum(coefficient * work), non-negative least "
                 "squares on relative error (docs/latency.md)",
    }
    calibration = Calibration(machine_key(threads), coefficients, rows, info)
    path = out or default_path(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_json(), indent=1) + "\n", encoding="utf-8")
    calibration.path = path
    return calibration


# ------------------------------------------------------------------------------ load/check


def load_calibration(path: Path | None = None, *, threads: int = 1,
                     allow_mismatch: bool = False) -> Calibration:
    """Read a calibration and check it was made for this CPU, kernel variant and threads.

    Without ``path``, the default one for this machine and ``threads``. A mismatch raises
    :class:`SofarError` unless ``allow_mismatch`` (the user's explicit choice).
    """
    if path is None:
        path = default_path(threads)
        if not path.is_file():
            raise SofarError(f"no latency calibration for this machine at {path}; run "
                             f"'sofar-cost calibrate --threads {threads}' or pass --calibration")
    calibration = read_calibration(path)
    if not allow_mismatch:
        here = machine_key(threads)
        wrong = [f"{k} {calibration.key[k]!r} (here: {here[k]!r})" for k in KEY_FIELDS
                 if calibration.key[k] != here[k]]
        if wrong:
            raise SofarError(f"{path}: calibration made for another setup: {'; '.join(wrong)}; "
                             "recalibrate with 'sofar-cost calibrate', or use it anyway with "
                             "--force-calibration")
    return calibration


def config_calibration(config: Path, value: object) -> Calibration:
    """The calibration a budget config states (``calibration = "path"``, relative to the config
    file), read as stated data: no check against this machine, so a CI runner with another
    CPU reaches the same verdict (docs/latency.md). Missing or malformed: SofarError."""
    if not isinstance(value, str) or not value:
        raise SofarError("calibration must be a path to a calibration file (a string)")
    path = Path(value)
    return read_calibration(path if path.is_absolute() else config.parent / path)


def _non_negative(value: object) -> bool:
    """A finite number >= 0 (not a bool)."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def read_calibration(path: Path) -> Calibration:
    """Parse and validate a calibration file (no machine check): clear errors when malformed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SofarError(f"{path}: no such calibration file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SofarError(f"{path}: not a calibration file (invalid JSON: {error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SofarError(f"{path}: not a calibration file (expected \"format\": \"{FORMAT}\"; "
                         "make one with 'sofar-cost calibrate')")
    if data.get("format_version") != FORMAT_VERSION:
        raise SofarError(f"{path}: calibration format version {data.get('format_version')!r}, "
                         f"this sofar-cost reads {FORMAT_VERSION}; recalibrate")
    key, coefficients = data.get("key"), data.get("coefficients")
    if not isinstance(key, dict) or any(k not in key for k in KEY_FIELDS):
        raise SofarError(f"{path}: calibration 'key' must give {', '.join(KEY_FIELDS)}")
    if not isinstance(key["threads"], int) or key["threads"] < 1:
        raise SofarError(f"{path}: calibration threads must be a positive integer")
    if not isinstance(coefficients, dict):
        raise SofarError(f"{path}: calibration has no 'coefficients' table")
    for kind, features in FEATURES.items():
        coef = coefficients.get(kind)
        if coef is None:
            raise SofarError(f"{path}: calibration has no coefficients for {kind!r} (made by "
                             "an older sofar-cost); recalibrate with 'sofar-cost calibrate'")
        want = ("per_call", *features)
        if not isinstance(coef, dict) or not all(_non_negative(coef.get(f)) for f in want):
            raise SofarError(f"{path}: calibration coefficients for {kind!r} must give "
                             f"non-negative numbers for {', '.join(want)}")
    network = coefficients.get("network", {})  # optional: files made before it had none
    want = [f"{side}_{name}" for side in SIDES for name in ("scale", "per_op")]
    if not isinstance(network, dict) or not all(_non_negative(network.get(f, 0)) for f in want):
        raise SofarError(f"{path}: calibration 'network' coefficients must be non-negative "
                         f"numbers ({', '.join(want)})")
    return Calibration(key, {k: {f: float(v) for f, v in c.items()}
                             for k, c in coefficients.items() if k in FEATURES or k == "network"},
                       data.get("samples", []), data.get("info", {}), Path(path))
