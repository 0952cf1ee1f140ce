"""Accuracy-vs-cost figures: the Pareto helper, the plotted points, the files, bad arguments."""

import math

import pytest

from sofar_cost.costs import model_cost
from sofar_cost.errors import SofarError
from sofar_cost.plots import accuracy_points, pareto_front, plot_accuracy
from sofar_cost.published import load_published


def test_pareto_front_keeps_lowest_error_at_each_cost():
    costs = [3.0, 1.0, 2.0, 2.0, 4.0, 5.0]
    errors = [30.0, 40.0, 35.0, 38.0, 30.0, 20.0]
    # 1 (cheapest), 2 (beats 3 at equal cost), 0 (30 < 35), 5; 4 ties 0's error at more cost
    assert pareto_front(costs, errors) == [1, 2, 0, 5]


def test_pareto_front_edge_cases():
    assert pareto_front([], []) == []
    assert pareto_front([1.0, math.nan, 2.0], [5.0, 1.0, 4.0]) == [0, 2]
    assert pareto_front([1.0, 1.0], [3.0, 3.0]) == [0]  # duplicates count once


@pytest.mark.slow  # costs every Table 1 model
def test_imagenet_points_cover_table1_at_computed_flops():
    points = accuracy_points("flops", "imagenet")
    table1 = load_published("sofar", "imagenet")
    table1 = table1[(table1["table"] == 1) & (table1["bits"] == 1) & table1["preset"].notna()]
    assert len(table1) == 11
    for row in table1.itertuples():
        match = points[(points["preset"] == row.preset) & (points["top1_error"] == row.top1_error)]
        assert len(match) == 1, row.model_printed
        expected = model_cost(row.preset, "imagenet", int(row.width)).flops
        assert match["cost"].item() == expected
        assert match["paper_cost"].item() == row.flops
    assert points["on_front"].any()
    assert (points["family"].notna()).all()


@pytest.mark.slow  # ~2.3 s warm: every preset's costs
def test_larq_zoo_points_beside_sofar_at_our_counts():
    points = accuracy_points("flops", "imagenet", "sofar", include=["larq-zoo"])
    larq = points[points["source"] == "larq-zoo"]
    assert len(larq) == 9 and set(larq["family"]) == {"larq-zoo"}
    assert (points["source"] == "sofar").sum() == len(accuracy_points("flops", "imagenet"))
    quicknet = larq[larq["preset"] == "quicknet"].iloc[0]
    assert quicknet["cost"] == model_cost("quicknet").flops
    assert quicknet["top1_error"] == pytest.approx(100 - 63.3)
    assert quicknet["on_front"]  # cheaper and more accurate than every SoFAR ImageNet model


@pytest.mark.slow  # ~2.3 s warm: every preset's costs
def test_params_points_use_computed_mbit():
    points = accuracy_points("params", "cifar100")
    row = points[points["preset"] == "bireal18"].iloc[0]
    assert row["cost"] == model_cost("bireal18", "cifar100", 64).params_mbit
    assert row["cost"] == pytest.approx(18.18, abs=0.005)


@pytest.mark.parametrize("metric", ["flops", "params"])
def test_plot_files_written(tmp_path, metric):
    paths = plot_accuracy(metric, "imagenet", tmp_path / "fig.png", show_paper_costs=True)
    assert [p.name for p in paths] == ["fig.png", "fig.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths[1].read_text()[:500]


@pytest.mark.parametrize(
    ("kwargs", "valid"),
    [
        ({"metric": "flop"}, "flops, params"),
        ({"dataset": "cifar10"}, "imagenet, cifar100"),
        ({"source": "bethge"}, "sofar, binarydensenet, igp, larq-zoo"),
        ({"include": ["larq"]}, "sofar, binarydensenet, igp, larq-zoo"),
    ],
)
def test_bad_arguments(kwargs, valid):
    with pytest.raises(SofarError, match=valid) as info:
        accuracy_points(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_output_suffix(tmp_path):
    with pytest.raises(SofarError, match=r"\.png or \.svg"):
        plot_accuracy(out=tmp_path / "fig.pdf")
