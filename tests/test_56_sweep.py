"""Batched sweeps (learn/sweep.py): equivalence with train_run, per-run early stopping, layout, resume."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from avalanche_hpc.errors import ConfigError
from avalanche_hpc.learn.model import init_head
from avalanche_hpc.learn.sweep import StackedHeads, train_sweep
from avalanche_hpc.learn.train import train_run
from tests.fixtures_learn import make_learning_study

FAST = {"max_epochs": 3, "n_views": 2, "patience": 10, "progress": False, "batch_size": 16}
LOSS_TOL = 1e-4  # bmm vs mm: float summation order differs (~1e-7 relative per step)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_learning_study(tmp_path_factory.mktemp("sweep") / "study", paths_per_massif=6, n_dates=5)


def _run(study, experiment, split, seed):
    return study / "runs" / experiment / split / "cnn" / f"seed{seed}"


def _same_run(a, b, exact: bool = False) -> None:
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    assert ha["epoch"].tolist() == hb["epoch"].tolist()
    assert ha["val_accuracy"].tolist() == hb["val_accuracy"].tolist()
    assert ha["best"].tolist() == hb["best"].tolist()
    diff = (ha[["train_loss", "val_loss"]] - hb[["train_loss", "val_loss"]]).abs().to_numpy().max()
    assert diff == 0.0 if exact else diff < LOSS_TOL, diff
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["best_epoch"] == mb["best_epoch"]
    assert ma["all"]["confusion"] == mb["all"]["confusion"]
    pa, pb = pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv")
    assert (pa["pred"] == pb["pred"]).all()
    assert np.abs(pa["prob"] - pb["prob"]).max() < (0 if exact else 1e-4) + 1e-12


def test_fused_adam_of_the_stack_is_torch_adam():
    """The stacked update is torch.optim.Adam(fused=True) applied to each slot, bit for bit."""
    torch.manual_seed(0)
    head = init_head(torch.nn.Module(), 0, pretrained_fc=False)
    heads = StackedHeads(2, torch.device("cpu"), 4096, 512, 2)
    heads.load(0, head)
    heads.load(1, init_head(torch.nn.Module(), 1, pretrained_fc=False))
    opt = torch.optim.Adam(head.param_groups(1e-5), fused=True)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in head.parameters()]
        for p, g in zip(head.parameters(), grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for k, g in enumerate(grads):
            heads.g[k][0].copy_(g)
            heads.g[k][1].copy_(g)
        heads._adam(2, 1e-5)
    for k, p in enumerate(head.parameters()):
        assert torch.equal(heads.p[k][0], p.detach())
    state = heads.optimizer_state(0, 1e-5)
    ref = opt.state_dict()
    for k in range(6):
        assert torch.equal(state["state"][k]["exp_avg_sq"], ref["state"][k]["exp_avg_sq"])
        assert float(state["state"][k]["step"]) == float(ref["state"][k]["step"]) == 3
    torch.optim.Adam(head.param_groups(1e-5), fused=True).load_state_dict(state)  # loadable as is


def test_sweep_matches_runs_trained_alone(study):
    runs = [("random", 0), ("holdout-vanoise", 1)]
    for split, seed in runs:
        train_run(study, "alone", split=split, seed=seed, weights="none", **FAST)
    outs = train_sweep(study, "batched", ["random", "holdout-vanoise"], [0, 1], weights="none", **FAST)
    assert sorted(outs) == sorted(_run(study, "batched", s, n) for s in ("random", "holdout-vanoise") for n in (0, 1))
    for split, seed in runs:
        _same_run(_run(study, "alone", split, seed), _run(study, "batched", split, seed))
    # the layout and settings record of train_run: train_run sees the sweep's runs as complete
    out = _run(study, "batched", "random", 0)
    for name in ("config.json", "history.csv", "checkpoint.pt", "best.pt", "predictions.csv", "metrics.json"):
        assert (out / name).is_file(), name
    ca = json.loads((_run(study, "alone", "random", 0) / "config.json").read_text())
    cb = json.loads((out / "config.json").read_text())
    for key in ("settings", "model", "weights", "data_sha256", "split", "seed", "split_seed"):
        assert ca[key] == cb[key], key
    assert cb["trainer"] == "sweep"
    mtime = (out / "metrics.json").stat().st_mtime_ns
    train_run(study, "batched", split="random", seed=0, weights="none", **FAST)
    assert (out / "metrics.json").stat().st_mtime_ns == mtime
    # and a complete sweep is skipped
    train_sweep(study, "batched", ["random", "holdout-vanoise"], [0, 1], weights="none", **FAST)
    assert (out / "metrics.json").stat().st_mtime_ns == mtime


def test_train_run_is_a_sweep_of_one_bit_for_bit(study):
    """train_run steps the head with the sweep's own step (learn/step.py) on the same padded batch:
    alone or as a one-slot sweep, the same run is bit-identical on any number of threads (the
    short last batch, 40 = 16 + 16 + 8 rows or so, is padded the same way in both)."""
    kw = {**FAST, "max_epochs": 4}
    train_run(study, "bit-alone", split="holdout-vanoise", seed=3, weights="none", **kw)
    train_sweep(study, "bit-sweep", ["holdout-vanoise"], [3], weights="none", slots=1, **kw)
    _same_run(_run(study, "bit-alone", "holdout-vanoise", 3), _run(study, "bit-sweep", "holdout-vanoise", 3),
              exact=True)
    ba, bb = (torch.load(_run(study, n, "holdout-vanoise", 3) / "checkpoint.pt", weights_only=False)
              for n in ("bit-alone", "bit-sweep"))
    for name, t in ba["head"].items():
        assert torch.equal(t, bb["head"][name]), name


def test_same_run_in_batches_of_any_size(study):
    """One slot or three: the same run, the same metrics; bit for bit on one thread.

    On 2 threads MKL splits a single product across the threads but gives whole products of a
    batch to each thread, so the summation order (and the last bits) depend on the batch size.
    """
    threads = torch.get_num_threads()
    for n_threads, tag in ((1, "t1"), (threads, "tn")):
        torch.set_num_threads(n_threads)
        try:
            train_sweep(study, f"one-{tag}", ["random"], [2], weights="none", **FAST)
            train_sweep(study, f"many-{tag}", ["random", "holdout-belledonne"], [2, 3], weights="none", slots=3, **FAST)
        finally:
            torch.set_num_threads(threads)
        _same_run(_run(study, f"one-{tag}", "random", 2), _run(study, f"many-{tag}", "random", 2), exact=n_threads == 1)


@pytest.fixture(scope="module")
def noise_study(tmp_path_factory):
    """No signal: the validation loss stops improving after a few epochs, at a different one per run."""
    return make_learning_study(tmp_path_factory.mktemp("noise") / "study", paths_per_massif=6, n_dates=5,
                               signal_db=0.0)


def test_early_stopping_per_run(noise_study):
    """patience 1: runs stop at their own epoch, leave the batch, and match their runs alone."""
    study = noise_study
    kw = {**FAST, "max_epochs": 12, "patience": 1, "batch_size": 32}
    pairs = [("random", 4), ("holdout-haute-maurienne", 5), ("holdout-vanoise", 4)]
    train_sweep(study, "es", [s for s, _ in pairs], [4, 5], weights="none", slots=2, **kw)
    lengths = set()
    for split in ("random", "holdout-haute-maurienne", "holdout-vanoise"):
        for seed in (4, 5):
            hist = pd.read_csv(_run(study, "es", split, seed) / "history.csv")
            metrics = json.loads((_run(study, "es", split, seed) / "metrics.json").read_text())
            stopped = len(hist) < kw["max_epochs"]
            if stopped:  # stopped one epoch after its best (patience 1)
                assert len(hist) == metrics["best_epoch"] + 2
            lengths.add(len(hist))
    for split, seed in pairs:
        train_run(study, "es-alone", split=split, seed=seed, weights="none", **kw)
        _same_run(_run(study, "es-alone", split, seed), _run(study, "es", split, seed))
    assert min(lengths) < kw["max_epochs"] and len(lengths) > 1, f"epochs per run {lengths}: test is weak"


def test_sweep_resumes_exactly(study):
    train_sweep(study, "full", ["random"], [6, 7], weights="none", **FAST)
    train_sweep(study, "part", ["random"], [6, 7], weights="none", stop_after_epochs=1, **FAST)
    part = _run(study, "part", "random", 6)
    assert not (part / "metrics.json").exists() and len(pd.read_csv(part / "history.csv")) == 1
    train_sweep(study, "part", ["random"], [6, 7], weights="none", **FAST)
    for seed in (6, 7):
        _same_run(_run(study, "full", "random", seed), _run(study, "part", "random", seed), exact=True)


def test_bad_sweep_arguments(study):
    with pytest.raises(ConfigError, match="at least one split"):
        train_sweep(study, "bad", [], [0], weights="none", **FAST)
    with pytest.raises(ConfigError, match="slots"):
        train_sweep(study, "bad", ["random"], [0], weights="none", slots=0, **FAST)


def test_job_with_sweep_is_one_train_task(study):
    """train.sweep = true: the train stage is one task (one bank) that trains every split x seed."""
    from avalanche_hpc.hpc.jobspec import parse_job
    from avalanche_hpc.hpc.stages import is_complete, list_stage_tasks, run_task

    job = parse_job({"name": "sw", "experiment": "job-sweep", "stages": ["train"], "study": {"path": str(study)},
                     "train": {"sweep": True, "seeds": [0, 1], "holdouts": ["Vanoise"], "weights": "none",
                               "max_epochs": 2, "n_views": 2, "batch_size": 16, "slots": 3}}, study)
    task, = list_stage_tasks(job, "train")
    assert task.key == "sweep" and task.args[1] == ("random", "holdout-vanoise") and task.args[2] == (0, 1)
    assert not is_complete(job, task)
    run_task(job, task)
    assert is_complete(job, task)
    for split in ("random", "holdout-vanoise"):
        for seed in (0, 1):
            assert len(pd.read_csv(_run(study, "job-sweep", split, seed) / "history.csv")) == 2
