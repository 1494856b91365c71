"""Training end to end: the CLI, the runs layout, determinism, exact resume, skip, per-epoch mode."""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd
import pytest
import torch
import torch.hub
from typer.testing import CliRunner

from avalanche_hpc.cli.main import app
from avalanche_hpc.learn.train import RunRequest, TrainSettings, run_is_complete, train_run
from tests.fixtures_learn import make_learning_study, perturb_test_rows

FAST = {"max_epochs": 3, "n_views": 2, "patience": 10, "progress": False, "batch_size": 16}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_learning_study(tmp_path_factory.mktemp("train") / "study", paths_per_massif=6, n_dates=5)


def test_train_cli_end_to_end(study, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty-hub"))  # no ImageNet file: auto -> none
    monkeypatch.delenv("AVALANCHE_HPC_VGG16_WEIGHTS", raising=False)
    res = CliRunner().invoke(app, ["train", str(study), "--experiment", "cli", "--seed", "1", "--weights", "auto",
                                   "--max-epochs", "3", "--views", "2"])
    assert res.exit_code == 0, res.output
    out = study / "runs" / "cli" / "random" / "cnn" / "seed1"
    config = json.loads((out / "config.json").read_text())
    assert config["weights"]["kind"] == "none" and "RANDOMLY INITIALISED" in config["weights_warning"]
    assert config["seed"] == 1 and config["settings"]["max_epochs"] == 3 and len(config["data_sha256"]) == 64
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(history.columns)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"focus_massif", "all", "focus", "best_epoch"}
    # the predictions are those of best.pt's head on the bank's centre views, and best.pt is the
    # checkpoint of the lowest validation loss (recomputed here from the bank and the head)
    import h5py
    import numpy as np

    from avalanche_hpc.learn.model import Head
    bank = next((study / "runs" / "cli" / "features").glob("bank-*.h5"))
    with h5py.File(bank, "r") as f:
        rows, feats = f["rows"][()], f["feats"][:, 0]
    pred_t = pd.read_csv(out / "predictions.csv")
    head = Head()
    head.load_state_dict(torch.load(out / "best.pt", map_location="cpu", weights_only=True)["head"])
    head.eval()
    x = torch.from_numpy(feats[np.searchsorted(rows, pred_t["store_row"].to_numpy())])
    with torch.no_grad():
        logits = head(x)
    prob = torch.softmax(logits, 1)[:, 1].numpy()
    assert np.allclose(prob, pred_t["prob"].to_numpy(), atol=1e-5)
    val = torch.tensor((pred_t["set"] == "val").to_numpy())
    labels = torch.tensor(pred_t["label"].to_numpy())
    val_loss = float(torch.nn.functional.cross_entropy(logits[val], labels[val]))
    assert val_loss == pytest.approx(history["val_loss"].min(), rel=1e-4)
    assert history["val_loss"][metrics["best_epoch"]] == pytest.approx(val_loss, rel=1e-4)
    split = pd.read_csv(study / "runs" / "cli" / "random" / "split.csv")
    assert metrics["all"]["n"] == (split["set"] == "test").sum()
    assert metrics["focus"]["n"] == ((split["set"] == "test") & (split["massif"] == "Haute-Maurienne")).sum()
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns) == ["store_row", "season", "orbit", "date", "path_id", "massif", "set", "label",
                                  "prob", "pred", "deposit_area_m2", "aspect", "slope", "elevation"]
    assert pred["store_row"].tolist() == split["store_row"].tolist()
    assert ((pred["prob"] >= 0.5).astype(int) == pred["pred"]).all()
    for name in ("checkpoint.pt", "best.pt"):
        ck = torch.load(out / name, map_location="cpu", weights_only=True)
        assert "head" in ck
    assert len(list((study / "runs" / "cli" / "features").glob("bank-*.h5"))) == 1
    # the signal is learnable through the clutter (fixtures_learn): after 3 epochs the model beats chance
    assert metrics["all"]["accuracy"] >= 0.6


def test_deterministic_resumable_and_skipped(study):
    full = train_run(study, "det", seed=2, weights="none", **FAST)
    ref_hist = pd.read_csv(full / "history.csv")
    ref_metrics = json.loads((full / "metrics.json").read_text())
    # same seed from scratch (--force), stopped after 2 epochs as if killed, then re-run: it resumes
    # from the checkpoint and ends exactly as the uninterrupted run (determinism + exact resume)
    part = train_run(study, "det", seed=2, weights="none", force=True, stop_after_epochs=2, **FAST)
    assert len(pd.read_csv(part / "history.csv")) == 2
    pd.testing.assert_frame_equal(pd.read_csv(part / "history.csv"), ref_hist.iloc[:2])
    assert not (part / "metrics.json").exists()
    resumed = train_run(study, "det", seed=2, weights="none", **FAST)
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "history.csv"), ref_hist)
    assert json.loads((resumed / "metrics.json").read_text()) == ref_metrics
    # complete: skipped
    mtime = (resumed / "metrics.json").stat().st_mtime_ns
    train_run(study, "det", seed=2, weights="none", **FAST)
    assert (resumed / "metrics.json").stat().st_mtime_ns == mtime
    # the executors' completeness is the same settings + data digest check
    settings = TrainSettings(max_epochs=3, n_views=2, patience=10, batch_size=16)
    assert run_is_complete(study, RunRequest("det", "random", 2, weights="none", settings=settings))
    assert not run_is_complete(study, RunRequest("det", "random", 2, weights="none",
                                                 settings=replace(settings, lr=2e-5)))
    assert not run_is_complete(study, RunRequest("det", "random", 4, weights="none", settings=settings))
    # another seed gives another run
    other = train_run(study, "det", seed=3, weights="none", **{**FAST, "max_epochs": 1})
    assert pd.read_csv(other / "history.csv")["train_loss"][0] != ref_hist["train_loss"][0]


def test_test_rows_cannot_move_early_stopping(study, tmp_path):
    """Perturbing only the test rows' patches leaves the whole training history and the best epoch."""
    settings = {**FAST, "max_epochs": 8, "patience": 2}
    a = train_run(study, "leak", seed=0, weights="none", **settings)
    other = tmp_path / "perturbed"
    perturb_test_rows(study, other, study / "runs" / "leak" / "random" / "split.csv")
    b = train_run(other, "leak", seed=0, weights="none", **settings)
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    pd.testing.assert_frame_equal(ha.drop(columns=["seconds"], errors="ignore"),
                                  hb.drop(columns=["seconds"], errors="ignore"))
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    assert ma["best_epoch"] == mb["best_epoch"]
    pa, pb = pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv")
    keep = pa["set"] != "test"
    pd.testing.assert_frame_equal(pa[keep], pb[keep])
    assert not pa.loc[~keep, "prob"].equals(pb.loc[~keep, "prob"])  # the perturbation reached the test rows


def test_per_epoch_augmentation_and_holdout(study):
    out = train_run(study, "nob", split="holdout-vanoise", seed=0, weights="none", feature_bank=False,
                    **{**FAST, "max_epochs": 2})
    metrics = json.loads((out / "metrics.json").read_text())
    pred = pd.read_csv(out / "predictions.csv")
    assert set(pred.loc[pred["set"] == "test", "massif"]) == {"Vanoise"}
    assert metrics["focus"]["n"] == 0 and metrics["focus"]["accuracy"] is None  # focus massif not in the test set
    assert not (study / "runs" / "nob" / "features").exists()


def _ddp_worker(rank: int, world: int, root, init_file: str) -> None:
    import torch.distributed as dist

    from avalanche_hpc.learn.train import DistContext

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        train_run(root, "ddp", seed=0, weights="none", dist=DistContext(rank, world, "gloo"), **FAST)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_match_one_rank(study, tmp_path):
    """gloo DDP on 2 CPU processes: same batches, masks and summed gradients as 1 rank."""
    import torch.multiprocessing as mp

    one = train_run(study, "ddp1", seed=0, weights="none", **FAST)
    mp.spawn(_ddp_worker, args=(2, study, str(tmp_path / "init")), nprocs=2)
    two = study / "runs" / "ddp" / "random" / "cnn" / "seed0"
    a, b = pd.read_csv(one / "history.csv"), pd.read_csv(two / "history.csv")
    assert (a["val_accuracy"] == b["val_accuracy"]).all()
    assert (a[["train_loss", "val_loss"]] - b[["train_loss", "val_loss"]]).abs().to_numpy().max() < 1e-4
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert ma["all"]["confusion"] == mb["all"]["confusion"] and ma["best_epoch"] == mb["best_epoch"]
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
