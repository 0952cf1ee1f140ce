"""Tests for the transcribed published results (expected values copied from the papers)."""

import math

import pandas as pd
import pytest

from sofar_cost.published import COLUMNS, load_published

PRESETS = {
    "bireal18",
    "bireal34",
    "binarydensenet28",
    "binarydensenet37",
    "binarydensenet45",
    "bdn51",
    "bdn69",
    "rf-c3d4-21",
    "rf-c4d8-37",
    "rf-c5d16-69",
    "rf-c3d4-41",
    "rf-c4d8-77",
    "rf-c5d16-149",
    "drf-c2d2-51",
    "drf-c2d2-69",
    "drf-c3d4-97",
    "drf-c3d4-133",
    "f-c3d4-21",
    "f-c3d4-41",
    "df-c2d2-51",
    "df-c2d2-69",
}
LARQ_ZOO = {
    "binary-alexnet",
    "xnornet",
    "binary-resnet-e18",
    "real-to-binary-net",
    "binarydensenet37-dilated",
    "meliusnet22",
    "quicknet-small",
    "quicknet",
    "quicknet-large",
}

ROW_COUNTS = {
    ("sofar", 1): 18,
    ("sofar", 2): 22,
    ("sofar", 3): 8,
    ("sofar", 4): 23,
    ("binarydensenet", 2): 8,
    ("binarydensenet", 3): 6,
    ("binarydensenet", 4): 4,
    ("binarydensenet", 5): 3,
    ("binarydensenet", 6): 12,
    ("igp", 1): 12,
    ("igp", 3): 11,
    ("igp", 4): 39,
    ("larq-zoo", None): 9,
}


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return load_published()


def _row(df, source, table, model, **extra):
    sel = (df.source == source) & (df.table == table) & (df.model_printed == model)
    for key, value in extra.items():
        sel &= df[key] == value
    rows = df[sel]
    assert len(rows) == 1, (source, table, model, extra, len(rows))
    return rows.iloc[0]


def _check(row, **expected):
    for key, value in expected.items():
        got = row[key]
        if isinstance(value, float):
            assert math.isclose(got, value, rel_tol=1e-9), (key, got, value)
        elif value is None:
            assert pd.isna(got), (key, got)
        else:
            assert got == value, (key, got, value)


def test_columns_and_dtypes(df):
    assert list(df.columns) == COLUMNS
    for col in [
        "width",
        "top1_error",
        "top5_error",
        "params_mbit",
        "flops",
        "memory_mb",
        "model_size_mb",
    ]:
        assert df[col].dtype == "float64", col
    assert df.table.dtype == "Int64"  # empty for larq-zoo's documentation
    assert df.bits.dtype == "int64"


def test_row_counts_per_table(df):
    counts = df.groupby(["source", "table"], dropna=False).size().to_dict()
    counts = {(src, None if pd.isna(t) else t): n for (src, t), n in counts.items()}
    assert counts == ROW_COUNTS


def test_presets_known(df):
    assert set(df.preset.dropna()) <= PRESETS | LARQ_ZOO


def test_errors_in_range(df):
    for col in ["top1_error", "top5_error"]:
        values = df[col].dropna()
        assert ((values >= 0) & (values <= 100)).all(), col
    assert df.top1_error.notna().all()
    assert (df.top5_error.dropna() <= df.top1_error[df.top5_error.notna()]).all()


def test_categoricals(df):
    assert set(df.source) == {"sofar", "binarydensenet", "igp", "larq-zoo"}
    assert set(df.dataset) <= {"imagenet", "cifar100", "cifar10"}
    assert set(df.bits) <= {1, 2, 32}
    assert not df.model_printed.str.contains(r"\*|#").any()


def test_sofar_table1_binary_rows_complete(df):
    t1 = df[(df.source == "sofar") & (df.table == 1) & (df.bits == 1)]
    assert len(t1) == 11
    assert t1.preset.notna().all()
    assert t1.params_mbit.notna().all()
    assert t1.flops.notna().all()


def test_filters():
    igp = load_published("igp", "imagenet")
    assert set(igp.source) == {"igp"} and set(igp.dataset) == {"imagenet"}
    assert len(igp) == 50
    assert len(load_published(dataset="cifar10")) == 4
    with pytest.raises(ValueError):
        load_published("nope")


# --- spot checks: at least one row per table, values from the paper text ---


def test_sofar_table1(df):
    _check(
        _row(df, "sofar", 1, "Bi-Real ResNet18(64)", bits=1),
        preset="bireal18",
        top1_error=40.42,
        top5_error=18.29,
        params_mbit=33.18,
        flops=1.64e8,
        width=64.0,
    )
    _check(
        _row(df, "sofar", 1, "RF-c4d8 ResNet37(41)", bits=32),
        top1_error=29.36,
        top5_error=10.31,
        params_mbit=None,
        flops=None,
    )
    _check(
        _row(df, "sofar", 1, "DRF-c2d2 DenseNet69(48)"),
        preset="drf-c2d2-69",
        top1_error=35.20,
        params_mbit=41.52,
        flops=3.06e8,
    )


def test_sofar_table2(df):
    _check(
        _row(df, "sofar", 2, "RF-c5d16 ResNet149(22)", bits=1),
        preset="rf-c5d16-149",
        dataset="cifar100",
        top1_error=26.38,
        top5_error=7.83,
        params_mbit=26.35,
        flops=2.08e7,
        width=22.0,
    )
    _check(
        _row(df, "sofar", 2, "DRF-c3d4 DenseNet133(36)"),
        preset="drf-c3d4-133",
        top1_error=27.25,
        top5_error=7.68,
        params_mbit=23.70,
        flops=6.02e7,
    )


def test_sofar_table3(df):
    _check(
        _row(df, "sofar", 3, "F-c3d4 ResNet41(45)"),
        preset="f-c3d4-41",
        top1_error=40.14,
        top5_error=15.19,
    )
    _check(
        _row(df, "sofar", 3, "DF-c2d2 DenseNet51(48)"),
        preset="df-c2d2-51",
        top1_error=27.19,
        top5_error=7.26,
    )


def test_sofar_table4(df):
    _check(
        _row(df, "sofar", 4, "RF-c4d8 ResNet18(41)"),
        preset="rf-c4d8-37",
        top1_error=37.13,
        top5_error=15.63,
    )
    _check(
        _row(df, "sofar", 4, "BinaryDenseNet51(32)", preset="binarydensenet28"),
        top1_error=39.30,
        top5_error=17.60,
    )
    _check(_row(df, "sofar", 4, "BinaryDenseNet69(32)", preset="bdn69"), top1_error=36.26)
    _check(_row(df, "sofar", 4, "Full-precision ResNet34"), bits=32, top1_error=26.80, preset=None)


def test_binarydensenet_table2(df):
    row = df[
        (df.source == "binarydensenet")
        & (df.table == 2)
        & (df.dataset == "imagenet")
        & (df.model_size_mb == 4.0)
        & df.note.str.contains("scaling of XNOR-Net: no")
    ]
    assert len(row) == 1
    _check(row.iloc[0], top1_error=43.30, top5_error=20.80)  # 56.7% / 79.2%


def test_binarydensenet_table3(df):
    _check(
        _row(df, "binarydensenet", 3, "ABC-Net (1/1)"), top1_error=57.30, top5_error=32.40
    )  # 42.7% / 67.6%
    _check(_row(df, "binarydensenet", 3, "ResNetE18", model_size_mb=4.0), top1_error=41.90)


def test_binarydensenet_tables4_5(df):
    _check(
        _row(
            df, "binarydensenet", 4, "BinaryDenseNet 32 blocks, growth-rate 64", model_size_mb=3.08
        ),
        top1_error=42.90,
        top5_error=20.00,
        width=64.0,
    )
    _check(
        _row(df, "binarydensenet", 5, "BinaryDenseNet 8 blocks, growth-rate 256"),
        top1_error=49.80,
        top5_error=26.30,
        model_size_mb=3.31,
        width=256.0,
    )


def test_binarydensenet_table6(df):
    _check(
        _row(df, "binarydensenet", 6, "BinaryDenseNet45"),
        preset="binarydensenet45",
        top1_error=36.30,
        top5_error=15.20,
        model_size_mb=7.4,
    )  # 63.7% / 84.8%
    _check(
        _row(df, "binarydensenet", 6, "BinaryDenseNet28"),
        preset="binarydensenet28",
        top1_error=39.30,
        top5_error=17.60,
    )
    _check(
        _row(df, "binarydensenet", 6, "Full-precision AlexNet"),
        bits=32,
        model_size_mb=249.0,
        top1_error=43.40,
    )


def test_igp_table1(df):
    _check(
        _row(df, "igp", 1, "EBinaryDenseNet51(32)", bits=2),
        top1_error=26.71,
        top5_error=7.60,
        preset=None,
        dataset="cifar100",
    )
    _check(
        _row(df, "igp", 1, "Bi-Real ResNet18(64)", bits=1),
        preset="bireal18",
        top1_error=28.48,
        top5_error=8.65,
    )


def test_igp_table3(df):
    _check(
        _row(df, "igp", 3, "IGP-ResNet37(41)"),
        preset="rf-c4d8-37",
        top1_error=37.13,
        params_mbit=32.24,
        flops=1.28e8,
        memory_mb=164.58,
    )
    _check(_row(df, "igp", 3, "BinaryDenseNet51(32)"), preset="bdn51", memory_mb=359.66)


def test_igp_table4(df):
    _check(
        _row(df, "igp", 4, "TBN-ResNet34"),
        top1_error=41.80,
        top5_error=19.00,
        params_mbit=38.0,
        flops=0.23e9,
    )
    _check(_row(df, "igp", 4, "ReActNet-ResNet18"), top1_error=34.10, top5_error=None)
    _check(_row(df, "igp", 4, "Full-precision ResNet18"), bits=32, params_mbit=374.1, flops=1.81e9)


def test_sofar_igp_tables_agree(df):
    """IGP Table 3 reprints SoFAR Table 1's binary rows under new names."""
    sofar = df[(df.source == "sofar") & (df.table == 1) & (df.bits == 1)]
    igp = df[(df.source == "igp") & (df.table == 3)]
    cols = ["preset", "top1_error", "top5_error", "params_mbit", "flops"]
    a = sofar[cols].sort_values("preset").reset_index(drop=True)
    b = igp[cols].sort_values("preset").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_larq_zoo_rows(df):
    """Accuracies of larq-zoo's documentation, stored as errors, one per larq-zoo preset."""
    rows = load_published("larq-zoo")
    assert set(rows.preset) == LARQ_ZOO and len(rows) == 9
    assert rows.table.isna().all() and (rows.bits == 1).all()
    assert rows.note.str.contains("larq-zoo 2.4.0 documentation").all()
    quicknet = rows[rows.model_printed == "QuickNet"].iloc[0]
    _check(quicknet, preset="quicknet", top1_error=36.7, top5_error=15.4, width=None)
    alexnet = rows[rows.model_printed == "BinaryAlexNet"].iloc[0]
    _check(alexnet, top1_error=63.7, top5_error=38.47)
    # the printed accuracy is quoted in the note: the stored error is its complement
    for row in rows.itertuples():
        printed = float(row.note.split("top-1 ")[1].split(" %")[0])
        assert math.isclose(row.top1_error, round(100 - printed, 2))
