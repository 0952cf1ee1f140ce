"""sofar-cost's packed engine against Larq Compute Engine (LCE) end to end, in alternating blocks.

Larq-zoo BiRealNet and BinaryDenseNet28 (random weights) are converted with LCE, and their
float twins (QuantConv2D/QuantDense -> Conv2D/Dense, no quantizers) with the TFLite
converter. Two long-lived workers, one in a TensorFlow environment and one in this project's,
take turns in short timing blocks (which one goes first alternates), so both see the same
machine state; only the per-block ratios are compared. One binary layer with the same
weights is run by both systems first, to check that they compute the same thing.

    nox -s bench_lce        # builds its own TF + LCE virtualenv, then runs this script
    python benchmarks/bench_vs_lce.py --tf-python /path/to/tf-env/bin/python [--blocks 7]

Writes reports/vs_lce.{md,json}. TensorFlow is never a dependency of sofar-cost itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
# (larq-zoo model, sofar-cost preset of the same architecture)
WORKLOADS = [("BiRealNet", "bireal18"), ("BinaryDenseNet28", "binarydensenet28")]
TF_SYSTEMS = ["lce_indirect", "lce_default", "tflite_float"]
# (input height/width, channels in, channels out, stride) of the layer both systems run; the
# stride-2 input is odd because TF's "same" padding is then symmetric, as torch's padding=1
CHECK_LAYERS = [(14, 64, 32, 1), (15, 64, 32, 2)]


# --------------------------------------------------------------------------- workers


def block_median_ms(fn: Any, seconds: float, min_runs: int = 3) -> float:
    """Median wall time (ms) of ``fn()`` run repeatedly for about ``seconds``."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


class TfWorker:
    """The TensorFlow side: LCE (indirect bgemm and default kernels) and the float TFLite twin."""

    def __init__(self, cache: Path) -> None:
        import larq_compute_engine as lce
        import larq_zoo
        import tensorflow as tf

        self.tf, self.lce, self.zoo = tf, lce, larq_zoo
        self.cache = cache
        self.runs: dict[str, Any] = {}

    def versions(self) -> dict[str, str]:
        import larq

        return {"tensorflow": self.tf.__version__, "larq": larq.__version__,
                "larq_zoo": _dist_version("larq-zoo"),
                "larq_compute_engine": _dist_version("larq-compute-engine")}

    def _float_twin(self, model: Any) -> Any:
        """The same graph with QuantConv2D/QuantDense as Conv2D/Dense and no quantizers."""
        import larq as lq

        keras = self.tf.keras
        drop = ("input_quantizer", "kernel_quantizer", "depthwise_quantizer", "pad_values",
                "kernel_constraint", "metrics")

        def clone(layer: Any) -> Any:
            kinds = {lq.layers.QuantConv2D: keras.layers.Conv2D,
                     lq.layers.QuantDense: keras.layers.Dense}
            for quant, plain in kinds.items():
                if type(layer) is quant:
                    config = {k: v for k, v in layer.get_config().items() if k not in drop}
                    return plain.from_config(config)
            return layer.__class__.from_config(layer.get_config())

        return keras.models.clone_model(model, clone_function=clone)

    def _flatbuffers(self, name: str) -> tuple[bytes, bytes]:
        """(LCE model, float TFLite twin) of a larq-zoo model, converted once and cached."""
        lce_path = self.cache / f"{name}_lce.tflite"
        float_path = self.cache / f"{name}_float.tflite"
        if not (lce_path.exists() and float_path.exists()):
            model = getattr(self.zoo.literature, name)(weights=None)
            lce_path.write_bytes(self.lce.convert_keras_model(model))
            twin = self.tf.lite.TFLiteConverter.from_keras_model(self._float_twin(model))
            float_path.write_bytes(twin.convert())
        return lce_path.read_bytes(), float_path.read_bytes()

    def load(self, model: str, threads: int) -> dict[str, Any]:
        from larq_compute_engine.tflite.python.interpreter import Interpreter

        lce_buf, float_buf = self._flatbuffers(model)
        x = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype(np.float32)
        lite = self.tf.lite.Interpreter(model_content=float_buf, num_threads=threads)
        lite.allocate_tensors()
        index = lite.get_input_details()[0]["index"]
        out_index = lite.get_output_details()[0]["index"]

        def run_float() -> None:
            lite.set_tensor(index, x)
            lite.invoke()
            lite.get_tensor(out_index)

        indirect = Interpreter(lce_buf, num_threads=threads, use_indirect_bgemm=True)
        default = Interpreter(lce_buf, num_threads=threads)
        self.runs = {"lce_indirect": lambda: indirect.predict(x),
                     "lce_default": lambda: default.predict(x),
                     "tflite_float": run_float}
        for fn in self.runs.values():  # warm-up
            fn()
        return {"systems": list(self.runs)}

    def time(self, system: str, seconds: float) -> dict[str, Any]:
        return {"ms": block_median_ms(self.runs[system], seconds)}

    def layer(self, size: int, cin: int, cout: int, stride: int, path: str) -> dict[str, Any]:
        """Run one binary 3x3 conv (zero padding) through LCE and save input, weights, output."""
        import larq as lq
        from larq_compute_engine.tflite.python.interpreter import Interpreter

        keras = self.tf.keras
        rng = np.random.default_rng(size * cin + stride)
        inp = keras.Input((size, size, cin))
        conv = lq.layers.QuantConv2D(cout, 3, strides=stride, padding="same", pad_values=0.0,
                                     input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                     use_bias=False)
        model = keras.Model(inp, conv(inp))
        kernel = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)
        conv.set_weights([kernel])
        x = rng.standard_normal((1, size, size, cin)).astype(np.float32)
        out = Interpreter(self.lce.convert_keras_model(model),
                          use_indirect_bgemm=True).predict(x)
        np.savez(path, x=x, kernel=kernel, lce=out, keras=model(x).numpy())
        return {"lce_equals_keras": bool(np.array_equal(out, model(x).numpy()))}


class SofarWorker:
    """The sofar-cost side: a packed preset at a thread count."""

    def __init__(self) -> None:
        self.run: Any = None

    def versions(self) -> dict[str, str]:
        from sofar_cost.kernels import cpu_features, kernel_variant

        return {"kernel_variant": kernel_variant(), "cpu_features": str(cpu_features())}

    def load(self, model: str, threads: int) -> dict[str, Any]:
        import numba
        import torch

        from sofar_cost.engine import pack_model
        from sofar_cost.models import create_model

        numba.set_num_threads(threads)
        torch.set_num_threads(threads)
        torch.set_grad_enabled(False)
        packed = pack_model(create_model(model, "imagenet").eval())
        x = torch.randn(1, 3, 224, 224, generator=torch.manual_seed(0))
        self.run = lambda: packed(x)
        for _ in range(2):  # warm-up (compiles)
            self.run()
        return {"systems": ["packed"]}

    def time(self, system: str, seconds: float) -> dict[str, Any]:
        return {"ms": block_median_ms(self.run, seconds)}

    def layer(self, size: int, cin: int, cout: int, stride: int, path: str) -> dict[str, Any]:
        """The packed conv on the saved input and weights, against LCE's output."""
        from sofar_cost.kernels import PackedBinaryConv2d

        data = np.load(path)
        weight = data["kernel"].transpose(3, 2, 0, 1)  # HWIO -> OIHW
        layer = PackedBinaryConv2d.from_weight(weight, stride=stride, padding=1)
        ours = np.ascontiguousarray(layer(data["x"].transpose(0, 3, 1, 2))).transpose(0, 2, 3, 1)
        lce = data["lce"]
        same_shape = ours.shape == lce.shape
        return {"equal": bool(same_shape and np.array_equal(ours, lce)),
                "max_abs_diff": float(np.abs(ours - lce).max()) if same_shape else None}


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def serve(kind: str, cache: Path) -> None:
    """Answer one JSON request per stdin line on the original stdout; everything the
    libraries print goes to stderr, so it cannot corrupt the protocol."""
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    worker: Any = TfWorker(cache) if kind == "tf" else SofarWorker()
    reply.write(json.dumps({"ready": True}) + "\n")
    reply.flush()
    for line in sys.stdin:
        request = json.loads(line)
        command = request.pop("cmd")
        try:
            answer = getattr(worker, command)(**request)
        except Exception as error:  # reported to the parent, which stops with the message
            answer = {"error": f"{type(error).__name__}: {error}"}
        reply.write(json.dumps(answer) + "\n")
        reply.flush()


# --------------------------------------------------------------------------- parent


class Worker:
    """A worker process driven over pipes."""

    def __init__(self, python: str, kind: str, cache: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.kind = kind
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--worker", kind, "--cache-dir", str(cache)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.kind} worker exited (see its messages above)")
        answer = json.loads(line)
        if "error" in answer:
            raise SystemExit(f"{self.kind} worker: {answer['error']}")
        return answer

    def ask(self, cmd: str, **args: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def cpu_info() -> dict[str, Any]:
    """CPU model and the instruction-set flags that matter for these kernels."""
    model, flags = platform.processor(), []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", "x86_64"):
                model = value.strip()
            if key.strip() == "flags" and not flags:
                flags = value.split()
    wanted = ("popcnt", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vpopcntdq",
              "avx512_bitalg", "avx512_vnni")
    return {"model": model, "cores": os.cpu_count(),
            "flags": [f for f in wanted if f in flags]}


def check_layers(tf: Worker, sofar: Worker, scratch: Path) -> list[dict[str, Any]]:
    """One binary layer, same weights and input, through LCE and the packed kernel."""
    rows = []
    for size, cin, cout, stride in CHECK_LAYERS:
        path = str(scratch / f"layer_{size}_{cin}_{cout}_{stride}.npz")
        args = {"size": size, "cin": cin, "cout": cout, "stride": stride, "path": path}
        rows.append({**args, **tf.ask("layer", **args), **sofar.ask("layer", **args)})
        rows[-1].pop("path")
    return rows


def paired_blocks(tf: Worker, sofar: Worker, blocks: int, seconds: float,
                  progress: Any, task: Any) -> dict[str, list[float]]:
    """Per block, each system's median; the worker that goes first alternates by block."""
    times: dict[str, list[float]] = {name: [] for name in ["packed", *TF_SYSTEMS]}
    for block in range(blocks):
        turns = [(sofar, ["packed"]), (tf, TF_SYSTEMS)]
        for worker, systems in turns[:: 1 if block % 2 == 0 else -1]:
            for system in systems:
                times[system].append(worker.ask("time", system=system, seconds=seconds)["ms"])
        progress.advance(task)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, Any]:
    """Per TF system: its time over packed per block (> 1: packed is faster), and the median."""
    packed = np.array(times["packed"])
    out: dict[str, Any] = {"ms_per_block": times,
                           "ms_median": {k: float(np.median(v)) for k, v in times.items()}}
    for system in TF_SYSTEMS:
        ratios = np.array(times[system]) / packed
        out[f"speedup_vs_{system}_per_block"] = ratios.round(4).tolist()
        out[f"speedup_vs_{system}"] = float(np.median(ratios))
        out[f"speedup_vs_{system}_range"] = [float(ratios.min()), float(ratios.max())]
    return out


def markdown(report: dict[str, Any]) -> str:
    cpu = report["cpu"]
    lines = [
        "# sofar-cost packed engine vs Larq Compute Engine (end to end, batch 1)",
        "",
        f"CPU: {cpu['model']} ({cpu['cores']} logical cores), flags: "
        f"{', '.join(cpu['flags'])}. sofar-cost kernel variant: `{report['kernel_variant']}`. "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        "",
        f"{report['blocks']} alternating blocks of about {report['block_seconds']} s per "
        "system; a block's value is that system's median. Speed-up = other system's time / "
        "packed time, per block; the table gives the median over blocks (and the range). "
        "Models have random weights (larq-zoo `weights=None`, sofar-cost presets).",
        "",
        "| larq-zoo model | sofar-cost preset | threads | ms packed | ms LCE indirect | "
        "ms LCE default | ms float TFLite | vs LCE indirect | vs LCE default | "
        "vs float TFLite |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        ms = row["ms_median"]
        cells = [f"{row[f'speedup_vs_{s}']:.2f}x ({row[f'speedup_vs_{s}_range'][0]:.2f}-"
                 f"{row[f'speedup_vs_{s}_range'][1]:.2f})" for s in TF_SYSTEMS]
        lines.append(f"| {row['larq_zoo']} | {row['preset']} | {row['threads']} | "
                     f"{ms['packed']:.2f} | {ms['lce_indirect']:.2f} | {ms['lce_default']:.2f} | "
                     f"{ms['tflite_float']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Per-block speed-ups (vs LCE indirect):", ""]
    for row in report["results"]:
        per_block = ", ".join(f"{r:.2f}" for r in row["speedup_vs_lce_indirect_per_block"])
        lines.append(f"- {row['preset']}, {row['threads']} thread(s): {per_block}")
    lines += ["", "Same-layer check (3x3 binary conv, zero padding, same weights and input; "
              "LCE output against the packed kernel's int32 output):", ""]
    for row in report["layer_checks"]:
        lines.append(f"- {row['size']}x{row['size']}x{row['cin']} -> {row['cout']}, stride "
                     f"{row['stride']}: equal = {row['equal']} (max |diff| "
                     f"{row['max_abs_diff']}); LCE equals Keras: {row['lce_equals_keras']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=["tf", "sofar"], help=argparse.SUPPRESS)
    parser.add_argument("--tf-python", default=os.environ.get("LCE_PYTHON"),
                        help="python of an env with tensorflow-cpu, larq-zoo and "
                             "larq-compute-engine (or set LCE_PYTHON)")
    parser.add_argument("--blocks", type=int, default=7, help="alternating blocks per row")
    parser.add_argument("--block-seconds", type=float, default=0.5,
                        help="timing per system per block")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--models", nargs="+", default=[w[0] for w in WORKLOADS],
                        choices=[w[0] for w in WORKLOADS])
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "sofar_cost_lce",
                        help="converted .tflite models are kept here")
    parser.add_argument("--out", type=Path, default=REPORTS / "vs_lce",
                        help="output path without suffix")
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    if args.worker:
        serve(args.worker, args.cache_dir)
        return
    if not args.tf_python:
        parser.error("--tf-python (or LCE_PYTHON) is required: run `nox -s bench_lce`, "
                     "which builds that environment")
    from rich.progress import Progress

    tf = Worker(args.tf_python, "tf", args.cache_dir)
    sofar = Worker(sys.executable, "sofar", args.cache_dir)
    versions = {**tf.ask("versions")}
    kernel = sofar.ask("versions")
    layer_rows = check_layers(tf, sofar, args.cache_dir)
    results = []
    presets = dict(WORKLOADS)
    with Progress() as progress:
        for name in args.models:
            for threads in args.threads:
                task = progress.add_task(f"{name} / {presets[name]}, {threads} thread(s)",
                                         total=args.blocks)
                tf.ask("load", model=name, threads=threads)
                sofar.ask("load", model=presets[name], threads=threads)
                times = paired_blocks(tf, sofar, args.blocks, args.block_seconds, progress, task)
                results.append({"larq_zoo": name, "preset": presets[name], "threads": threads,
                                **summarise(times)})
    tf.close()
    sofar.close()
    report = {"cpu": cpu_info(), "kernel_variant": kernel["kernel_variant"],
              "cpu_features": kernel["cpu_features"], "versions": versions,
              "blocks": args.blocks, "block_seconds": args.block_seconds,
              "layer_checks": layer_rows, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out}.{{md,json}}")


if __name__ == "__main__":
    main()
