"""Thresholding baseline: tuning on hand-built patches, and a full run on a store (same splits)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from avalanche_hpc.cli.main import app
from avalanche_hpc.learn.baseline import (
    PAPER_RULE,
    apply_baseline,
    baseline_is_complete,
    baseline_run,
    tune_baseline,
    tune_count_threshold,
)
from avalanche_hpc.learn.splits import read_split
from avalanche_hpc.store.layout import read_patches
from tests.fixtures_learn import perturb_test_rows


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
    assert {"channel", "pixel_threshold_db", "count_threshold", "count_curve", "units"} <= set(params)
    assert metrics["focus_massif"] == "Haute-Maurienne"
    assert set(metrics["all"]) == {"n", "accuracy", "precision", "recall", "f1", "roc_auc", "confusion"}
    assert params["variant"] == "paper"
    assert (params["channel"], params["pixel_threshold_db"]) == ("VHdiff", 3.0)  # fixed a priori
    # recompute the decisions independently from the store: pixels of VHdiff > 3 dB in the centre 50x50
    patches = read_patches(learning_study / "work" / "patches.h5", pred["store_row"].to_numpy())
    centre = np.nan_to_num(patches[:, 2, 7:57, 7:57], nan=0.0)
    counts = (centre > 3.0).sum(axis=(1, 2))
    assert (pred["pred"].to_numpy() == (counts >= params["count_threshold"])).all()
    assert np.allclose(pred["prob"].to_numpy(), counts / 2500.0)
    # the count threshold is the best on validation: no other threshold scores higher there
    val = (pred["set"] == "val").to_numpy()
    best = max(float(((counts[val] >= t) == pred["label"].to_numpy()[val]).mean()) for t in range(0, 2502))
    assert params["val_accuracy"] == best
    test = (pred["set"] == "test").to_numpy()
    assert metrics["all"]["accuracy"] == float((pred["pred"].to_numpy()[test] == pred["label"].to_numpy()[test]).mean())
    # the tuned variant goes to its own folder and is at least as good on validation
    res = CliRunner().invoke(app, ["baseline", str(learning_study), "--experiment", "b", "--variant", "tuned"])
    assert res.exit_code == 0, res.output
    tuned = json.loads((out.parent / "baseline-tuned" / "params.json").read_text())
    assert tuned["variant"] == "tuned" and tuned["val_accuracy"] >= params["val_accuracy"]
    res = CliRunner().invoke(app, ["baseline", str(learning_study), "--experiment", "b", "--variant", "best"])
    assert res.exit_code != 0 and "paper, tuned" in str(res.exception)
    # idempotent: a second run is skipped
    mtime = (out / "metrics.json").stat().st_mtime_ns
    assert baseline_run(learning_study, "b") == out
    assert (out / "metrics.json").stat().st_mtime_ns == mtime
    # the executors' completeness is the same digest check: other settings are not complete
    assert baseline_is_complete(learning_study, "b", "random")
    assert not baseline_is_complete(learning_study, "b", "random", crop=40)
    assert not baseline_is_complete(learning_study, "b", "random", split_seed=1)
    assert baseline_is_complete(learning_study, "b", "random", variant="tuned")  # ran above (--variant tuned)
    res = CliRunner().invoke(app, ["baseline", str(learning_study), "--experiment", "b", "--holdout", "Nowhere"])
    assert res.exit_code != 0


def test_paper_variant_keeps_its_pixel_rule():
    """Only the count threshold is tuned: a VV-only change (invisible to VHdiff) cannot be picked up."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    counts = [0, 5, 20, 40, 60, 100, 300, 900]
    vv = _hand_patches(counts, 3.0, channel=0)
    params = tune_baseline(vv, labels, variant="paper")
    assert (params["channel"], params["pixel_threshold_db"]) == (PAPER_RULE["channel"], PAPER_RULE["pixel_threshold_db"])
    assert params["val_accuracy"] == 0.5  # VHdiff is flat: nothing to count
    vh = _hand_patches(counts, 4.0, channel=2)  # above the fixed 3 dB: separable by the count alone
    params = tune_baseline(vh, labels, variant="paper")
    assert params["val_accuracy"] == 1.0 and 41 <= params["count_threshold"] <= 60
    vh_weak = _hand_patches(counts, 2.0, channel=2)  # below the fixed 3 dB: the tuned variant adapts, paper does not
    assert tune_baseline(vh_weak, labels, variant="paper")["val_accuracy"] == 0.5
    assert tune_baseline(vh_weak, labels, variant="tuned")["val_accuracy"] == 1.0


def test_test_rows_cannot_move_baseline_parameters(learning_study, tmp_path):
    """Perturbing only the test rows' patches leaves every tuned parameter and every validation decision."""
    outs = {v: baseline_run(learning_study, "leak", variant=v) for v in ("paper", "tuned")}
    split_csv = learning_study / "runs" / "leak" / "random" / "split.csv"
    other = tmp_path / "perturbed"
    test_rows = perturb_test_rows(learning_study, other, split_csv)
    assert len(test_rows) > 0
    for v, out in outs.items():
        out2 = baseline_run(other, "leak", variant=v)
        a, b = json.loads((out / "params.json").read_text()), json.loads((out2 / "params.json").read_text())
        assert a["data_sha256"] != b["data_sha256"]  # the data did change
        for key in ("channel", "pixel_threshold_db", "count_threshold", "val_accuracy", "val_f1", "count_curve"):
            assert a[key] == b[key], (v, key)
        pa, pb = pd.read_csv(out / "predictions.csv"), pd.read_csv(out2 / "predictions.csv")
        keep = pa["set"] != "test"
        pd.testing.assert_frame_equal(pa[keep], pb[keep])
        assert not pa.loc[~keep, "prob"].equals(pb.loc[~keep, "prob"])  # the perturbation reached the test rows
