"""Predicted against measured latency of every ImageNet preset, right after a fresh calibration.

Calibrates this machine first (or reads ``--calibration``), then measures each preset end to
end: the packed engine and torch fp32 (channels-last, the layout the calibration timed) in
interleaved rounds, with the median and clock the calibration uses (process CPU time at one
thread: see ``clock_for``). Writes
reports/latency_model.{md,json,png}: Pearson r and median absolute percentage error of the
prediction, beside the r of analytic Flops, for both sides.

    python benchmarks/bench_latency_model.py [--quick] [--rounds 7] [--models bireal18 ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from rich.progress import Progress

from sofar_cost.binary import set_binarization
from sofar_cost.costs import input_shape, model_cost
from sofar_cost.engine import pack_model
from sofar_cost.errors import SofarError
from sofar_cost.kernels.bench import thread_count
from sofar_cost.latency import calibrate, load_calibration, predict_model, read_calibration
from sofar_cost.latency.calibration import (
    Calibration,
    cpu_name,
    interleaved_ms,
    network_samples,
    runnable_sample,
)
from sofar_cost.latency.ops import SIDES
from sofar_cost.models import PRESETS, create_model, list_models

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
QUICK_MODELS = ["bireal18", "bireal34", "binarydensenet28", "bdn51", "rf-c3d4-21", "rf-c4d8-37",
                "rf-c5d16-69", "drf-c2d2-51", "f-c3d4-21"]


def imagenet_presets() -> list[str]:
    """Every preset with an ImageNet width (larq-zoo's included: those whose layers the packed
    engine does not run are reported as skipped, with the reason)."""
    return [name for name in list_models() if PRESETS[name].has_default_width("imagenet")]


class Probe:
    """The machine's speed now against during calibration: the calibration's first whole-network
    sample pair (packed and torch fp32), timed in the same interleaved rounds as each preset.

    Why: these VMs drift by up to 1.8x within seconds to minutes, and a preset measured minutes
    after the calibration may meet another speed. A probe timed with it says by how much (its
    ms now / its ms in the calibration), so the report gives each error both raw and with the
    measured time divided by that factor."""

    def __init__(self, cal: Calibration) -> None:
        samples = {s.side: s for s in network_samples()[:2]}
        at_calibration = {r["label"]: r["ms"] for r in cal.samples}
        self.reference = {side: at_calibration.get(s.label) for side, s in samples.items()}
        with torch.inference_mode():
            self.runs = [runnable_sample(samples[side]) for side in SIDES]

    def factors(self, probe_ms: list[float]) -> dict[str, float]:
        """Per side: probe ms now / at calibration (1 if the calibration has no probe)."""
        return {side: ms / self.reference[side] if self.reference[side] else 1.0
                for side, ms in zip(SIDES, probe_ms, strict=True)}


def measure(name: str, threads: int, rounds: int, probe: Probe) -> dict[str, float]:
    """Packed and torch fp32 (channels-last) ms of one image, timed in interleaved rounds with
    the probe; ``speed_factor_*``: the probe's ms now / at calibration."""
    model = create_model(name, "imagenet").eval()
    packed = pack_model(model)
    fp32 = set_binarization(copy.deepcopy(model), False).to(memory_format=torch.channels_last)
    x = torch.randn(input_shape("imagenet"), generator=torch.manual_seed(0))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with thread_count(threads), torch.inference_mode():
        ms_packed, ms_fp32, *probe_ms = interleaved_ms(
            [lambda: packed(x), lambda: fp32(x_cl), *probe.runs], 0.0, threads,
            most=rounds, least=rounds)
    factor = probe.factors(probe_ms)
    return {"ms_packed": ms_packed, "ms_torch_fp32": ms_fp32,
            "speed_factor_packed": factor["packed"],
            "speed_factor_torch_fp32": factor["torch_fp32"]}


def stats(predicted: list[float], measured: list[float]) -> dict[str, float]:
    p, m = np.array(predicted), np.array(measured)
    return {"pearson_r": float(np.corrcoef(p, m)[0, 1]) if len(p) > 2 else float("nan"),
            "median_abs_pct_error": float(100 * np.median(np.abs(p / m - 1))),
            "max_abs_pct_error": float(100 * np.max(np.abs(p / m - 1)))}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per side: r and errors against the measured ms, and (``speed_corrected``) against the
    measured ms divided by the probe's speed factor (:class:`Probe`)."""
    summary = {}
    for side in ("packed", "torch_fp32"):
        measured = [r[f"ms_{side}"] for r in rows]
        predicted = [r[f"ms_{side}_predicted"] for r in rows]
        summary[side] = {**stats(predicted, measured),
                         "flops_pearson_r": stats([r["flops"] for r in rows], measured)[
                             "pearson_r"]}
        if all(f"speed_factor_{side}" in r for r in rows):
            corrected = [r[f"ms_{side}"] / r[f"speed_factor_{side}"] for r in rows]
            summary[side]["speed_corrected"] = stats(predicted, corrected)
    return summary


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "sofar_cost"], capture_output=True, text=True).stdout.strip()
        return out + (" (with uncommitted changes to sofar_cost/)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(result: dict[str, Any]) -> str:
    rows, s = result["results"], result["summary"]
    cal = result["calibration"]
    made = f"made in this run, {cal['wall_s']:.0f} s" if cal["fresh"] else "read from file"
    lines = [
        "# Latency model: predicted against measured (ImageNet presets, one image)",
        "",
        f"Commit `{result['commit']}`, CPU `{result['cpu']}`, kernel `{cal['kernel_variant']}`, "
        f"{result['threads']} thread(s). Calibration `{cal['path']}` "
        f"({made}), then each preset measured in {result['rounds']} interleaved rounds "
        "(packed, torch fp32 channels-last), median of the rounds on the calibration's clock "
        f"({result['clock']}). "
        + (f"Predicted again at `{result['predicted_at']}` with the same calibration. "
           if result.get("predicted_at") else "")
        + "Predictions: docs/latency.md. This VM's speed drifts (the speed factors below), so "
        "absolute times are noisy.",
        "",
        "| side | Pearson r (predicted vs measured) | median abs error | max abs error | "
        "r of Flops vs measured |",
        "|---|---:|---:|---:|---:|",
    ]
    for side in ("packed", "torch_fp32"):
        q = s[side]
        lines.append(f"| {side} | {q['pearson_r']:.3f} | {q['median_abs_pct_error']:.1f}% | "
                     f"{q['max_abs_pct_error']:.1f}% | {q['flops_pearson_r']:.3f} |")
    if all("speed_corrected" in s[side] for side in ("packed", "torch_fp32")):
        factors = [r[f"speed_factor_{side}"] for r in rows for side in ("packed", "torch_fp32")]
        lines += ["", "The same, with each measured time divided by the machine's speed factor "
                  "when it was measured: a probe (the calibration's first whole network, both "
                  "sides) timed in the same interleaved rounds, its ms then / its ms in the "
                  f"calibration (factors here {min(factors):.2f}-{max(factors):.2f}; 1 = the "
                  "calibration's speed):", "",
                  "| side | Pearson r | median abs error | max abs error |", "|---|---:|---:|---:|"]
        lines += [f"| {side} | {q['pearson_r']:.3f} | {q['median_abs_pct_error']:.1f}% | "
                  f"{q['max_abs_pct_error']:.1f}% |"
                  for side, q in ((side, s[side]["speed_corrected"])
                                  for side in ("packed", "torch_fp32"))]
    ref = result.get("reference")
    if ref:
        lines += ["", f"The same predictions against the {ref['models']} presets' latencies "
                  f"measured by an earlier `bench_end_to_end.py` run (`{ref['path']}`: wall "
                  "time, median, a quieter machine; torch fp32 channels-last):", "",
                  "| side | Pearson r | median abs error | max abs error |", "|---|---:|---:|---:|"]
        lines += [f"| {side} | {q['pearson_r']:.3f} | {q['median_abs_pct_error']:.1f}% | "
                  f"{q['max_abs_pct_error']:.1f}% |"
                  for side, q in ((side, ref[side]) for side in ("packed", "torch_fp32"))]
    lines += [f"- skipped {s_['model']}: {s_['reason']}" for s_ in result.get("skipped", [])]
    lines += [
        "",
        "| model | Flops | packed measured ms | packed predicted ms | error | fp32 measured ms | "
        "fp32 predicted ms | error | word efficiency | speed factor packed, fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        error = {side: 100 * (r[f"ms_{side}_predicted"] / r[f"ms_{side}"] - 1)
                 for side in ("packed", "torch_fp32")}
        lines.append(
            f"| {r['model']} | {r['flops']:.3e} | {r['ms_packed']:.2f} | "
            f"{r['ms_packed_predicted']:.2f} | {error['packed']:+.1f}% | "
            f"{r['ms_torch_fp32']:.2f} | {r['ms_torch_fp32_predicted']:.2f} | "
            f"{error['torch_fp32']:+.1f}% | {r['word_efficiency']:.2f} | "
            f"{r.get('speed_factor_packed', float('nan')):.2f}, "
            f"{r.get('speed_factor_torch_fp32', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def figure(result: dict[str, Any], path: Path) -> None:
    rows = result["results"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    for ax, side in zip(axes[:2], ("packed", "torch_fp32"), strict=True):
        measured = [r[f"ms_{side}"] for r in rows]
        predicted = [r[f"ms_{side}_predicted"] for r in rows]
        ax.scatter(measured, predicted)
        top = max(*measured, *predicted) * 1.05
        ax.plot([0, top], [0, top], color="grey", lw=0.8)
        for r, mx, py in zip(rows, measured, predicted, strict=True):
            ax.annotate(r["model"], (mx, py), fontsize=6, xytext=(2, 2), textcoords="offset points")
        q = result["summary"][side]
        ax.set_title(f"{side}: r = {q['pearson_r']:.3f}, median |error| = "
                     f"{q['median_abs_pct_error']:.1f}%")
        ax.set_xlabel("measured ms")
        ax.set_ylabel("predicted ms")
        ax.grid(alpha=0.3)
    ax = axes[2]
    flops = [r["flops"] for r in rows]
    ax.scatter(flops, [r["ms_packed"] for r in rows], label="packed measured")
    ax.scatter(flops, [r["ms_packed_predicted"] for r in rows], facecolors="none",
               edgecolors="C1", label="packed predicted")
    ax.set_xlabel("analytic Flops")
    ax.set_ylabel("packed ms")
    flops_r = result["summary"]["packed"]["flops_pearson_r"]
    ax.set_title(f"Flops vs packed latency: r = {flops_r:.3f}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{len(QUICK_MODELS)} presets and 3 rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per preset")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", help="presets (default: every ImageNet preset)")
    parser.add_argument("--calibration", type=Path,
                        help="use this calibration instead of calibrating first")
    parser.add_argument("--out", type=Path, default=REPORTS / "latency_model",
                        help="output path without suffix")
    parser.add_argument("--reference", type=Path,
                        help="also compare with the measurements of an earlier "
                             "bench_end_to_end.py run (e.g. reports/latency_vs_flops.json)")
    parser.add_argument("--from-json", type=Path,
                        help="re-render the report from this run's JSON (no timing)")
    parser.add_argument("--repredict", action="store_true",
                        help="with --from-json: predict again with the run's calibration")
    args = parser.parse_args()
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        if args.repredict:  # the same calibration and measurements, today's predictions
            cal = read_calibration(Path(result["calibration"]["path"]))
            for row in result["results"]:
                row.update(predict_model(row["model"], "imagenet", None, cal).summary())
            result["summary"] = summarize(result["results"])
            result["predicted_at"] = git_commit()
        if args.reference:
            result["reference"] = reference_stats(result["results"], args.reference)
        write(result, args.out)
        return
    commit = git_commit()  # what is measured: the tree as the run starts
    models = args.models or (QUICK_MODELS if args.quick else imagenet_presets())
    rounds = 3 if args.quick and args.rounds == 7 else args.rounds
    start = time.perf_counter()
    if args.calibration:
        cal = load_calibration(args.calibration, threads=args.threads)
    else:
        cal = calibrate(args.threads, args.out.with_name("latency_calibration.json"))
        print(f"calibrated in {cal.info['wall_s']:.0f} s -> {cal.path}", flush=True)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    probe = Probe(cal)
    with Progress(transient=True) as bar:
        task = bar.add_task("measuring", total=len(models))
        for name in models:
            bar.update(task, description=f"measuring {name}")
            try:
                prediction = predict_model(name, "imagenet", None, cal)
                row = {"model": name, "flops": model_cost(name, "imagenet").flops,
                       **measure(name, args.threads, rounds, probe), **prediction.summary()}
            except SofarError as error:  # a layer the packed engine does not run
                skipped.append({"model": name, "reason": str(error)})
                bar.console.print(f"{name:18s} skipped: {error}")
                bar.advance(task)
                continue
            bar.console.print(
                f"{name:18s} packed {row['ms_packed']:7.2f} ms (predicted "
                f"{row['ms_packed_predicted']:7.2f})  fp32 {row['ms_torch_fp32']:7.2f} ms "
                f"(predicted {row['ms_torch_fp32_predicted']:7.2f})")
            rows.append(row)
            bar.advance(task)
    summary = summarize(rows)
    result = {
        "commit": commit, "cpu": cpu_name(), "platform": platform.platform(),
        "threads": args.threads, "rounds": rounds, "wall_s": time.perf_counter() - start,
        "clock": "process CPU time" if args.threads == 1 else "wall time",
        "calibration": {**cal.key, "path": str(cal.path), "fresh": not args.calibration,
                        "wall_s": cal.info.get("wall_s")},
        "summary": summary, "results": rows, "skipped": skipped,
    }
    if args.reference:
        result["reference"] = reference_stats(rows, args.reference)
    write(result, args.out)


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    figure(result, out.with_suffix(".png"))
    for side, q in result["summary"].items():
        print(f"{side}: r = {q['pearson_r']:.3f}, median abs error "
              f"{q['median_abs_pct_error']:.1f}%, Flops r = {q['flops_pearson_r']:.3f}")
    print(f"wrote {out}.{{md,json,png}}")


def reference_stats(rows: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    """This run's predictions against another run's measured latencies (same presets)."""
    measured = {r["model"]: r for r in json.loads(path.read_text())["results"]}
    both = [r for r in rows if r["model"] in measured]
    keys = {"packed": "ms_packed", "torch_fp32": "ms_torch_fp32_channels_last"}
    return {"path": str(path), "models": len(both), **{
        side: stats([r[f"ms_{side}_predicted"] for r in both],
                    [measured[r["model"]][key] for r in both]) for side, key in keys.items()}}


if __name__ == "__main__":
    main()
