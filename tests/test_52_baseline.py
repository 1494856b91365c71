"""Thresholding baseline: tuning on hand-built patches, and a full run on a store (same splits)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from avalanche_hpc.cli.main import app
from avalanche_hpc.learn.baseline import (
    apply_baseline,
    baseline_is_complete,
    baseline_run,
    tune_baseline,
    tune_count_threshold,
)
from avalanche_hpc.learn.splits import read_split


def _hand_patches(counts: list[int], change_db: float, channel: int) -> np.ndarray:
    """Patches (n, 3, 64, 64) at 0 dB with ``counts[i]`` pixels of +change_db in the centre 50x50."""
    p = np.zeros((len(counts), 3, 64, 64), dtype=np.float32)
    for i, k in enumerate(counts):
        flat = np.zeros(50 * 50, dtype=np.float32)
        flat[:k] = change_db
        p[i, channel, 7:57, 7:57] = flat.reshape(50, 50)
    p[:, :, :7, :] = 9.0  # outside the centre window: must be ignored
    return p


def test_count_threshold_tuning():
    t, acc, f1, curve = tune_count_threshold(np.array([0, 1, 2, 10, 12, 15]), np.array([0, 0, 0, 1, 1, 1]))
    assert (t, acc, f1) == (10, 1.0, 1.0)  # lowest threshold separating the classes
    assert [10, 1.0] in curve and [0, 0.5] in curve


def test_baseline_tuning_on_hand_built_patches():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    counts = [0, 5, 20, 40, 60, 100, 300, 900]  # negatives have a few changed pixels
    patches = _hand_patches(counts, 4.0, channel=2)  # VHdiff carries the change
    # an NaN pixel counts as no change
    patches[7, 2, 30, 30] = np.nan
    params = tune_baseline(patches, labels)
    assert params["channel"] == "VHdiff"
    assert 41 <= params["count_threshold"] <= 60
    assert params["pixel_threshold_db"] < 4.0
    assert params["val_accuracy"] == 1.0
    prob, pred = apply_baseline(patches, params)
    assert pred.tolist() == labels.tolist()
    assert np.isclose(prob[4], 60 / 2500)

    # VV change: VV* rises, VV*_old does not
    vv = _hand_patches(counts, 3.0, channel=0)
    params = tune_baseline(vv, labels)
    assert params["channel"] == "VVdiff" and params["val_accuracy"] == 1.0


def test_baseline_run_and_cli(learning_study):
    res = CliRunner().invoke(app, ["baseline", str(learning_study), "--experiment", "b"])
    assert res.exit_code == 0, res.output
    out = learning_study / "runs" / "b" / "random" / "baseline"
    params = json.loads((out / "params.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    pred = pd.read_csv(out / "predictions.csv")
    split = read_split(learning_study / "runs" / "b" / "random" / "split.csv")
    assert pred["store_row"].tolist() == split["store_row"].tolist()  # the same split as the CNN
    assert {"channel", "pixel_threshold_db", "count_threshold", "tuning_grid", "units"} <= set(params)
    assert metrics["focus_massif"] == "Haute-Maurienne"
    assert set(metrics["all"]) == {"n", "accuracy", "precision", "recall", "f1", "roc_auc", "confusion"}
    assert metrics["all"]["n"] == (split["set"] == "test").sum()
    assert metrics["all"]["accuracy"] > 0.8  # the fixture's deposits are +3 dB in VV* and VHdiff
    assert ((pred["prob"] >= 0) & (pred["prob"] <= 1)).all()
    # idempotent: a second run is skipped
    mtime = (out / "metrics.json").stat().st_mtime_ns
    assert baseline_run(learning_study, "b") == out
    assert (out / "metrics.json").stat().st_mtime_ns == mtime
    # the executors' completeness is the same digest check: other settings are not complete
    assert baseline_is_complete(learning_study, "b", "random")
    assert not baseline_is_complete(learning_study, "b", "random", crop=40)
    assert not baseline_is_complete(learning_study, "b", "random", split_seed=1)
    res = CliRunner().invoke(app, ["baseline", str(learning_study), "--experiment", "b", "--holdout", "Nowhere"])
    assert res.exit_code != 0
