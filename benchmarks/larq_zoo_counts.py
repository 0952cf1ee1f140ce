"""Pin larq's own counts of the larq-zoo models, for tests/test_larq_zoo.py.

Run in the TensorFlow peer environment (tensorflow-cpu 2.15.1, larq 0.14.0, larq-zoo 2.4.0):

    /work/tfenv/bin/python benchmarks/larq_zoo_counts.py

It builds each larq-zoo model (``weights=None``: no download, random weights; counts do not
depend on them) at 224x224x3 with 1000 classes and writes what ``larq.models.ModelProfile``
(the numbers ``larq.models.summary`` prints) reports: parameters by bit width and MACs by
precision. Never imported by the package: TensorFlow is no dependency of sofar-cost.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import larq as lq
import larq_zoo as lqz
import tensorflow as tf

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "larq_zoo_counts.json"

# Our preset name -> the larq-zoo constructor it mirrors.
MODELS = {
    "binary-alexnet": lqz.literature.BinaryAlexNet,
    "xnornet": lqz.literature.XNORNet,
    "binary-resnet-e18": lqz.literature.BinaryResNetE18,
    "real-to-binary-net": lqz.literature.RealToBinaryNet,
    "binarydensenet37-dilated": lqz.literature.BinaryDenseNet37Dilated,
    "meliusnet22": lqz.literature.MeliusNet22,
    "quicknet-small": lqz.sota.QuickNetSmall,
    "quicknet": lqz.sota.QuickNet,
    "quicknet-large": lqz.sota.QuickNetLarge,
    # Existing presets that must keep equalling larq's counts.
    "bireal18": lqz.literature.BiRealNet,
    "binarydensenet28": lqz.literature.BinaryDenseNet28,
    "binarydensenet37": lqz.literature.BinaryDenseNet37,
    "binarydensenet45": lqz.literature.BinaryDenseNet45,
}


def larq_counts(build) -> dict[str, object]:
    """larq's integers for one model, as its profile computes them."""
    tf.keras.backend.clear_session()
    model = build(input_shape=(224, 224, 3), weights=None, include_top=True, num_classes=1000)
    profile = lq.models.ModelProfile(model)
    return {
        "larq_name": model.name,
        "binary_params": profile.weight_count(bitwidth=1),
        "fp_params": profile.weight_count(bitwidth=32),
        "total_params": profile.weight_count(),
        "binary_macs": profile.op_count("mac", 1),
        "fp_macs": profile.op_count("mac", 32),
        "total_macs": profile.op_count("mac"),
    }


def main() -> None:
    models = {}
    for name, build in MODELS.items():
        models[name] = {"constructor": f"{build.__module__}.{build.__name__}", **larq_counts(build)}
        print(name, models[name], flush=True)
    data = {
        "command": "/work/tfenv/bin/python benchmarks/larq_zoo_counts.py",
        "versions": {pkg: metadata.version(pkg) for pkg in ("tensorflow-cpu", "larq", "larq-zoo")},
        "python": sys.version.split()[0],
        "input_shape": [224, 224, 3],
        "num_classes": 1000,
        "source": "larq.models.ModelProfile: weight_count(bitwidth) and op_count('mac', bits)",
        "models": models,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
