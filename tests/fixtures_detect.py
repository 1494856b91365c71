"""Fixtures of the detect stage: a tiny synthetic study (rasters, shards, store, truth) with trained runs.

``detect_study``: the ``tiny`` preset (seed 0) preprocessed and merged, with experiment ``t``:
two CNN seeds (random backbone, 2 epochs, 1 view) and the baseline on split ``random``. The
checkpoints needed only for resuming (``checkpoint.pt``) are removed to keep copies cheap.
Module-scoped users treat it as read-only except under ``detections/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXPERIMENT = "t"
TRAIN = {"weights": "none", "max_epochs": 2, "n_views": 1, "patience": 5, "progress": False, "batch_size": 16,
         "checkpoint_interval_s": 1e9, "precision": "fp32"}  # fp32: the same scores on every machine


def make_detect_study(root: Path, seeds: tuple[int, ...] = (0, 1)) -> Path:
    from avalanche_hpc.learn.baseline import baseline_run
    from avalanche_hpc.learn.train import train_run
    from avalanche_hpc.preprocess.tasks import preprocess_all
    from avalanche_hpc.store.merge import merge_store

    preprocess_all(root, progress=False)
    merge_store(root)
    for s in seeds:
        train_run(root, EXPERIMENT, seed=s, **TRAIN)
    baseline_run(root, EXPERIMENT)
    for ck in (root / "runs").rglob("checkpoint.pt"):
        ck.unlink()
    return root


@pytest.fixture(scope="session")
def detect_study(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("detect") / "tiny"
    shutil.copytree(tiny_study, dst)
    return make_detect_study(dst)
