"""End-to-end latency of every ImageNet preset on the packed kernels vs PyTorch, one thread.

Writes reports/latency_vs_flops.{md,json,png}: packed latency against analytic Flops, with
the float32 and simulated-binary PyTorch latencies of the same nets measured in the same run.

    python benchmarks/bench_end_to_end.py [--repeat 10] [--models bireal18 rf-c4d8-37]
        [--calibration FILE]   # also the latency model's predictions (docs/latency.md)
        [--from-json reports/latency_vs_flops.json]   # re-render, adding predictions, no timing
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sofar_cost.engine import benchmark_end_to_end
from sofar_cost.formatting import Column, markdown_table
from sofar_cost.models import PRESETS, list_models
from sofar_cost.results import EndToEnd

PREDICTED_COLUMNS = [Column("ms_packed_predicted", "ms packed predicted", ".2f")]

REPORTS = Path(__file__).resolve().parent.parent / "reports"


def correlation(rows: list[dict]) -> float:
    """Pearson r of packed latency against analytic Flops (nan for fewer than 3 models)."""
    if len(rows) < 3:
        return float("nan")
    flops = [r["flops"] for r in rows]
    ms = [r["ms_packed"] for r in rows]
    return float(np.corrcoef(flops, ms)[0, 1])


def markdown(rows: list[dict], r: float) -> str:
    first = rows[0]
    predicted = "ms_packed_predicted" in first
    lines = [
        "# End-to-end latency vs analytic Flops (ImageNet, one image)",
        "",
        f"{first['threads']} thread(s), kernel `{first['kernel_variant']}`, median of up to "
        f"{first['repeat']} rounds after warm-up; in every round each side runs once, in "
        "turns, so drift of the machine hits all alike (speed-up range: quartiles of the "
        "per-round speed-ups). Packed: binary convs on the XNOR kernels, the "
        "rest in PyTorch (channels-last). Torch fp32: same net with binarization off (better "
        "of NCHW and channels-last). Sim: the PyTorch simulated-binary model. Speed-up: torch "
        "fp32 / packed."
        + (f" Predicted: the latency model (docs/latency.md) with calibration "
           f"`{first['calibration']}`." if predicted else ""),
        "",
        markdown_table([EndToEnd(row).row() for row in rows],
                       [*EndToEnd.COLUMNS, *PREDICTED_COLUMNS] if predicted else EndToEnd.COLUMNS),
    ]
    lines += ["", f"Pearson correlation of packed latency with Flops: r = {r:.3f}"]
    if predicted:
        ms = [row["ms_packed"] for row in rows]
        pred = [row["ms_packed_predicted"] for row in rows]
        errors = np.abs(np.array(pred) / np.array(ms) - 1)
        lines += ["", f"Predicted against measured packed latency: r = "
                  f"{np.corrcoef(pred, ms)[0, 1]:.3f}, median absolute error "
                  f"{100 * np.median(errors):.1f}%"]
    lines.append("")
    return "\n".join(lines)


def scatter(rows: list[dict], r: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    flops = [row["flops"] for row in rows]
    ms = [row["ms_packed"] for row in rows]
    ax.scatter(flops, ms, label="measured")
    if "ms_packed_predicted" in rows[0]:
        ax.scatter(flops, [row["ms_packed_predicted"] for row in rows], facecolors="none",
                   edgecolors="C1", label="predicted (latency model)")
        ax.legend()
    for row in rows:
        ax.annotate(row["model"], (row["flops"], row["ms_packed"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("analytic Flops (FP MACs + binary MACs / 64)")
    ax.set_ylabel("packed end-to-end latency (ms, one image)")
    ax.set_title(f"ImageNet presets, {rows[0]['threads']} thread(s): r = {r:.3f}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per variant")
    parser.add_argument("--threads", type=int, default=1)
    # every preset with an ImageNet width, larq-zoo's too
    presets = [n for n in list_models() if PRESETS[n].has_default_width("imagenet")]
    parser.add_argument("--models", nargs="+", default=presets, help="presets to run")
    parser.add_argument("--out", type=Path, default=REPORTS / "latency_vs_flops",
                        help="output path without suffix")
    parser.add_argument("--calibration", type=Path,
                        help="add the latency model's predicted packed ms (docs/latency.md)")
    parser.add_argument("--from-json", type=Path,
                        help="re-render from an earlier run's JSON instead of timing")
    args = parser.parse_args()
    rows = json.loads(args.from_json.read_text())["results"] if args.from_json else []
    for name in [] if args.from_json else args.models:
        row = benchmark_end_to_end(name, "imagenet", args.threads, args.repeat)
        print(f"{row['model']:18s} {row['flops']:.3e} Flops  packed {row['ms_packed']:8.2f} ms"
              f"  fp32 {row['ms_torch_fp32']:8.2f} ms  sim {row['ms_torch_binary_sim']:8.1f} ms"
              f"  {row['speedup_vs_fp32']:.2f}x", flush=True)
        rows.append(row)
    if args.calibration:
        from sofar_cost.latency import load_calibration, predict_model

        cal = load_calibration(args.calibration, threads=args.threads)
        for row in rows:
            row["ms_packed_predicted"] = predict_model(row["model"], "imagenet", None,
                                                       cal).ms_packed
            row["calibration"] = str(args.calibration)
    r = correlation(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"pearson_r_ms_packed_vs_flops": r, "results": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows, r))
    scatter(rows, r, args.out.with_suffix(".png"))
    print(f"r = {r:.3f}; wrote {args.out}.{{md,json,png}}")


if __name__ == "__main__":
    main()
