"""What the commands return: result objects that own their columns and their JSON contract.

Each result offers

- ``to_dict()``: the ``--format json`` contract (add keys, never rename them; tests pin them),
- ``sections()``: the tables the text formats show, as :class:`Section` (rows, columns, title),
- ``notes()``: lines printed after the tables in the ``table`` format,
- ``warnings()``: what the costs leave out (uncounted ops that can multiply, sign-fed layers
  not marked binary), printed on stderr in every format,
- ``formats``: the output formats the result supports.

:func:`sofar_cost.formatting.show` prints any result in any format, so the command line, the
reports and the benchmarks share the columns declared here once. This module needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from sofar_cost.formatting import FORMATS, Column

if TYPE_CHECKING:
    from sofar_cost.latency import LatencyPrediction
    from sofar_cost.tracer import CostReport

TABLE_OR_JSON = ("table", "json")


@dataclass(frozen=True)
class Section:
    """One table of a result: its rows, the columns to show, a title."""

    rows: Sequence[dict[str, Any]]
    columns: Sequence[Column]
    title: str = ""


class Result:
    """Base of every command's result (see the module docstring)."""

    formats: ClassVar[tuple[str, ...]] = FORMATS

    def to_dict(self) -> Any:
        raise NotImplementedError

    def sections(self) -> list[Section]:
        raise NotImplementedError

    def notes(self) -> list[str]:
        return []

    def warnings(self) -> list[str]:
        return []


# The cost of one model, and of one layer: every command that shows costs uses these.
COST_COLUMNS = [
    Column("model", "model"), Column("dataset", "dataset"), Column("width", "width", "d"),
    Column("params_mbit", "Params (Mbit)", ".2f"), Column("flops", "Flops", ".3e"),
    Column("binary_params", "binary params", ",d"), Column("fp_params", "FP params", ",d"),
    Column("binary_macs", "binary MACs", ",d"), Column("fp_macs", "FP MACs", ",d"),
]  # fmt: skip
LAYER_COLUMNS = [
    Column("name", "layer"), Column("kind", "type"), Column("binary", "binary"),
    Column("output_shape", "output"), *COST_COLUMNS[5:], Column("flops", "Flops", ".3e"),
]  # fmt: skip
# Predicted latency (``--latency``, docs/latency.md): per model and per layer.
LATENCY_COLUMNS = [
    Column("ms_packed_predicted", "ms packed (pred.)", ".2f"),
    Column("ms_torch_fp32_predicted", "ms torch fp32 (pred.)", ".2f"),
    Column("word_efficiency", "word eff.", ".2f"),
]
LATENCY_LAYER_COLUMNS = [
    Column("name", "layer"),
    Column("latency_kinds", "ops"),
    Column("ms_packed", "ms packed (pred.)", ".3f"),
    Column("ms_torch_fp32", "ms torch fp32 (pred.)", ".3f"),
    Column("words_per_pixel", "words/pixel", "d"),
    Column("word_efficiency", "word eff.", ".2f"),
]
COSTED = ("fp_params", "binary_params", "fp_macs", "binary_macs", "fp_other_ops")


def _percent(ratio: float | None) -> float | None:
    return None if ratio is None else 100 * ratio


@dataclass
class PresetList(Result):
    """``sofar-cost list``: presets with their aliases, paper names, widths and baselines."""

    rows: list[dict[str, Any]]
    KEYS: ClassVar[tuple[str, ...]] = (
        "model", "alias", "paper_name", "imagenet_width", "cifar100_width", "baseline",
    )  # fmt: skip

    def to_dict(self) -> list[dict[str, Any]]:
        return self.rows

    def sections(self) -> list[Section]:
        columns = [Column(k, k.replace("_", " ")) for k in self.KEYS]
        return [Section(self.rows, columns, "sofar-cost models")]


@dataclass
class Comparison(Result):
    """``sofar-cost compare``: cost reports side by side; the last one is the baseline."""

    reports: Sequence[CostReport]
    dataset: str
    per_layer: bool = False
    latency: Sequence[LatencyPrediction] | None = None  # with --latency, one per report
    uncounted: list[str] = field(default_factory=list)  # lines for warnings()

    def warnings(self) -> list[str]:
        return self.uncounted

    @property
    def baseline(self) -> CostReport:
        return self.reports[-1]

    def to_dict(self) -> list[dict[str, Any]]:
        base = self.baseline
        rows = []
        for index, report in enumerate(self.reports):
            row = report.summary()
            row["baseline"] = base.model
            row["params_ratio"] = report.params_mbit / base.params_mbit
            row["flops_ratio"] = report.flops / base.flops
            row["peak_activation_mb"] = report.peak_activation_bytes / 1e6
            if self.per_layer:
                row["layers"] = [r for r in report.layer_rows() if any(r[k] for k in COSTED)]
            if self.latency is not None:
                prediction, base_ms = self.latency[index], self.latency[-1].ms_packed
                row.update(prediction.summary())
                row["ms_packed_ratio"] = prediction.ms_packed / base_ms
                if self.per_layer:
                    row["latency_layers"] = prediction.layers
            rows.append(row)
        return rows

    def sections(self) -> list[Section]:
        rows = self.to_dict()
        for row in rows:
            row["params_pct"] = _percent(row["params_ratio"])
            row["flops_pct"] = _percent(row["flops_ratio"])
        base = self.baseline.model
        columns = [
            *COST_COLUMNS[:5],
            Column("params_pct", f"% {base} Mbit", ".1f"),
            Column("flops_pct", f"% {base} Flops", ".1f"),
            *COST_COLUMNS[5:],
            Column("peak_activation_mb", "peak act. (MB)", ".2f"),
        ]
        layers = [Section(r["layers"], LAYER_COLUMNS, f"{r['model']} per layer")
                  for r in rows if self.per_layer]  # fmt: skip
        if self.latency is not None:
            for row in rows:
                row["ms_packed_pct"] = _percent(row["ms_packed_ratio"])
            columns[7:7] = [*LATENCY_COLUMNS[:1],
                            Column("ms_packed_pct", f"% {base} ms", ".1f"), *LATENCY_COLUMNS[1:]]
            layers += [Section(r["latency_layers"], LATENCY_LAYER_COLUMNS,
                               f"{r['model']} predicted latency per layer")
                       for r in rows if self.per_layer]  # fmt: skip
        return [*layers, Section(rows, columns, f"costs on {self.dataset} (baseline: {base})")]


# The columns every rendering of a rebuilt SoFAR table shows (CLI and reports/tables alike).
PAPER_TABLE_COLUMNS = [
    Column("paper_model", "model"), Column("width", "width", "d"),
    Column("top1_error", "top-1 error (%)", ".2f"),
    Column("params_mbit", "Params (ours, Mbit)", ".2f"),
    Column("paper_params_mbit", "Params (paper)", ".2f"),
    Column("params_diff_mbit", "diff", "+.2f"), Column("flops", "Flops (ours)", ".3e"),
    Column("paper_flops", "Flops (paper)", ".3e"), Column("flops_diff_pct", "diff %", "+.1f"),
    Column("match", "reproduced"), Column("note", "note"),
]  # fmt: skip


@dataclass
class PaperTable(Result):
    """``sofar-cost table``: one SoFAR table rebuilt, our counts beside the paper's."""

    name: str
    rows: list[dict[str, Any]]

    def to_dict(self) -> list[dict[str, Any]]:
        return self.rows

    def sections(self) -> list[Section]:
        return [Section(self.rows, PAPER_TABLE_COLUMNS, f"SoFAR table: {self.name}")]


@dataclass
class WidthSolve(Result):
    """``sofar-cost solve``: the largest width within a budget; fields in JSON order."""

    formats: ClassVar[tuple[str, ...]] = TABLE_OR_JSON

    model: str
    baseline: str | None
    dataset: str
    on: str
    multiple_of: int
    columns: int | None
    width: int
    params_mbit: float
    flops: float
    baseline_params_mbit: float | None
    baseline_flops: float | None
    params_ratio: float | None
    flops_ratio: float | None
    paper_width: int | None
    note: str
    candidates: list[dict[str, Any]]
    # Shown in the table, not part of the JSON: the baseline's own cost summary.
    baseline_row: dict[str, Any] | None = field(default=None, metadata={"json": False})
    # --on latency: predicted packed ms at the solved width and of the budget (docs/latency.md)
    ms_packed_predicted: float | None = None
    baseline_ms_packed_predicted: float | None = None
    calibration: str | None = None
    uncounted: list[str] = field(default_factory=list, metadata={"json": False})

    def warnings(self) -> list[str]:
        return self.uncounted

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("json", 1)}

    def sections(self) -> list[Section]:
        if self.baseline_row is not None:
            last = {"label": f"baseline {self.baseline}", **self.baseline_row}
        else:
            last = {"label": "budget", "params_mbit": self.baseline_params_mbit,
                    "flops": self.baseline_flops}  # fmt: skip
        last["ms_packed_predicted"] = self.baseline_ms_packed_predicted
        title = f"{self.model} on {self.dataset}: largest width within budget ({self.on})"
        columns = [Column("label", ""), *COST_COLUMNS[3:5]]
        if self.on == "latency":
            columns.append(LATENCY_COLUMNS[0])
        return [Section([*self.candidates, last], columns, title)]

    def notes(self) -> list[str]:
        lines = [f"[bold]{self.model}[/bold] width = [bold green]{self.width}[/bold green]"]
        if self.ms_packed_predicted is not None:
            against = (f"the baseline {self.baseline}'s" if self.baseline else "the budget's")
            lines.append(f"predicted packed latency {self.ms_packed_predicted:.2f} ms against "
                         f"{against} {self.baseline_ms_packed_predicted:.2f} ms "
                         f"(calibration {self.calibration})")
        if self.paper_width is not None and self.paper_width != self.width:
            lines.append(f"the paper uses width {self.paper_width}: {self.note}")
        return lines


@dataclass
class FamilySolve(Result):
    """``sofar-cost solve --columns``: one :class:`WidthSolve` per column count."""

    formats: ClassVar[tuple[str, ...]] = TABLE_OR_JSON

    solves: list[WidthSolve]
    COLUMNS: ClassVar[list[Column]] = [
        Column("columns", "C", "d"), Column("model", "model"), Column("depth", "depth", "d"),
        Column("width", "width", "d"), Column("params_mbit", "Params (Mbit)", ".2f"),
        Column("flops", "Flops", ".3e"), Column("params_pct", "% budget Mbit", ".1f"),
        Column("flops_pct", "% budget Flops", ".1f"),
    ]  # fmt: skip

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.solves]

    def warnings(self) -> list[str]:
        return list(dict.fromkeys(line for s in self.solves for line in s.warnings()))

    def sections(self) -> list[Section]:
        rows = [
            {**row, "depth": int(row["model"].rsplit("-", 1)[1]),
             "params_pct": _percent(row["params_ratio"]),
             "flops_pct": _percent(row["flops_ratio"])}
            for row in self.to_dict()
        ]  # fmt: skip
        first = self.solves[0]
        return [Section(rows, self.COLUMNS, f"widths within budget on {first.dataset} "
                                            f"({first.on})")]  # fmt: skip


@dataclass
class Check:
    """One limit of one model: ``value <= limit`` passes."""

    metric: str
    value: float
    limit: float
    source: str  # "absolute" or the baseline's name

    @property
    def passed(self) -> bool:
        return self.value <= self.limit

    @property
    def excess(self) -> float:
        return max(0.0, self.value - self.limit)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "excess": self.excess}


@dataclass
class ModelResult:
    """One ``[[model]]`` of a config, costed, with each of its checks."""

    file: str
    label: str
    model: str
    dataset: str
    width: int
    params_mbit: float
    flops: float
    checks: list[Check] = field(default_factory=list)
    ms_packed_predicted: float | None = None  # with a latency budget (docs/latency.md)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "name": self.label,
            "model": self.model,
            "dataset": self.dataset,
            "width": self.width,
            "params_mbit": self.params_mbit,
            "flops": self.flops,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
            "ms_packed_predicted": self.ms_packed_predicted,
        }


@dataclass
class CheckReport(Result):
    """``sofar-cost check``: every model of every config, and the malformed files.

    Exit policy: 2 when any config is malformed, else 1 when any budget is exceeded, else 0.
    """

    formats: ClassVar[tuple[str, ...]] = TABLE_OR_JSON

    results: list[ModelResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    uncounted: list[str] = field(default_factory=list)  # warnings (strict ones are errors)
    COLUMNS: ClassVar[list[Column]] = [
        Column("file", "file"), Column("name", "model"), Column("dataset", "dataset"),
        Column("width", "width", "d"), Column("metric", "metric"), Column("value", "value", ".6g"),
        Column("limit", "limit", ".6g"), Column("source", "budget"), Column("status", "status"),
        Column("excess", "excess", ".4g"),
    ]  # fmt: skip

    @property
    def passed(self) -> bool:
        return not self.errors and all(r.passed for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 2
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "errors": self.errors,
            "models": [r.to_dict() for r in self.results],
        }

    def sections(self) -> list[Section]:
        rows = [
            {"file": r.file, "name": r.label, "dataset": r.dataset, "width": r.width,
             **asdict(c), "status": "[green]pass[/green]" if c.passed else "[red]OVER[/red]",
             "excess": None if c.passed else c.excess}
            for r in self.results
            for c in r.checks
        ]  # fmt: skip
        return [Section(rows, self.COLUMNS, "budget check")]

    def messages(self) -> list[str]:
        """One line per malformed file, per exceeded limit and per warning, for stderr."""
        lines = [f"error: {message}" for message in self.errors]
        lines += [f"warning: {message}" for message in self.uncounted]
        for r in self.results:
            for c in r.checks:
                if not c.passed:
                    unit = {"params": " Mbit", "latency": " ms (predicted)"}.get(c.metric,
                                                                                " Flops")
                    lines.append(f"over budget: {r.label} ({r.file}): {c.metric} {c.value:.6g} > "
                                 f"{c.limit:.6g} ({c.source}) by {c.excess:.6g}{unit}")
        return lines


@dataclass
class CalibrationRun(Result):
    """``sofar-cost calibrate``: the file written, what it is valid for, how each kind fits."""

    formats: ClassVar[tuple[str, ...]] = TABLE_OR_JSON

    path: str
    key: dict[str, Any]
    wall_s: float
    kinds: list[dict[str, Any]]  # kind, samples, per_call_us, median_abs_pct_error
    COLUMNS: ClassVar[list[Column]] = [
        Column("kind", "kind"), Column("samples", "samples", "d"),
        Column("per_call_us", "us per call", ".1f"),
        Column("median_abs_pct_error", "median |fit error| %", ".1f"),
    ]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sections(self) -> list[Section]:
        k = self.key
        title = (f"latency calibration: {k['cpu']}, {k['kernel_variant']}, {k['threads']} "
                 f"thread(s), sofar-cost {k['package_version']}")  # fmt: skip
        return [Section(self.kinds, self.COLUMNS, title)]

    def notes(self) -> list[str]:
        return [f"wrote {self.path} in {self.wall_s:.0f} s"]


@dataclass
class LayerBench(Result):
    """``sofar-cost bench``: every binary conv layer timed, packed kernel vs torch float32."""

    formats: ClassVar[tuple[str, ...]] = TABLE_OR_JSON

    model: str
    dataset: str
    threads: int
    kernel_variant: str
    popcount_ceiling_gmacs_per_s: float
    popcount_ceilings: dict[str, float]  # every variant this compile target runs, G/s per core
    rounds: int
    layers: list[dict[str, Any]]
    total_binary_macs: int
    total_ms_xnor: float
    total_ms_torch_fp32: float
    total_speedup: float
    worst_speedup: float
    COLUMNS: ClassVar[list[Column]] = [
        Column("name", "layer"), Column("in_channels", "in", "d"),
        Column("out_channels", "out", "d"), Column("height", "H", "d"),
        Column("stride", "stride", "d"), Column("binary_macs", "binary MACs", ",d"),
        Column("flops", "Flops", ".3g"), Column("ms_xnor", "ms XNOR", ".3f"),
        Column("ms_torch_fp32", "ms torch fp32", ".3f"), Column("speedup", "speed-up", ".1f"),
        Column("gmacs_per_s", "G bMAC/s", ".0f"), Column("ceiling_fraction", "of ceiling", ".0%"),
    ]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sections(self) -> list[Section]:
        title = (f"{self.model} on {self.dataset}, {self.threads} thread(s), "
                 f"kernel {self.kernel_variant}")  # fmt: skip
        return [Section(self.layers, self.COLUMNS, title)]

    def notes(self) -> list[str]:
        return [
            f"total: XNOR {self.total_ms_xnor:.2f} ms, torch fp32 "
            f"{self.total_ms_torch_fp32:.2f} ms, speed-up {self.total_speedup:.1f}x "
            f"(worst layer {self.worst_speedup:.1f}x); popcount ceilings (G binary MACs/s "
            "per core): " + ", ".join(f"{v} {g:.0f}" for v, g in self.popcount_ceilings.items())
        ]


@dataclass
class EndToEnd(Result):
    """``sofar-cost bench --end-to-end``: one image through the packed and torch models.

    ``data`` is :func:`sofar_cost.engine.benchmark_end_to_end`'s dict, the JSON contract.
    """

    formats: ClassVar[tuple[str, ...]] = TABLE_OR_JSON

    data: dict[str, Any]
    COLUMNS: ClassVar[list[Column]] = [
        Column("model", "model"), Column("flops", "Flops", ".3e"),
        Column("ms_packed", "ms packed", ".2f"), Column("ms_torch_fp32", "ms torch fp32", ".2f"),
        Column("ms_torch_binary_sim", "ms sim", ".1f"),
        Column("speedup_vs_fp32", "speed-up", ".2f"),
        Column("speedup_range", "speed-up IQR"),
        Column("ms_per_gflop", "ms per GFlop", ".1f"),
    ]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def row(self) -> dict[str, Any]:
        """The data plus ``speedup_range``: quartiles of the per-round speed-ups (paired
        rounds), blank for results written before paired timing."""
        quartiles = self.data.get("speedup_vs_fp32_quartiles")
        spread = f"{quartiles[0]:.2f}-{quartiles[1]:.2f}x" if quartiles else ""
        return {**self.data, "speedup_range": spread}

    def sections(self) -> list[Section]:
        d = self.data
        title = (f"{d['model']} on {d['dataset']}, end to end, {d['threads']} thread(s), "
                 f"kernel {d['kernel_variant']}")  # fmt: skip
        return [Section([self.row()], self.COLUMNS, title)]
