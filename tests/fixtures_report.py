"""Fixtures of the report tests: a tiny study with a real patch store and hand-made runs.

The runs follow docs/architecture.md "Runs layout". Splits come from the real
``avalanche_hpc.learn.splits.make_split`` over a real HDF5 store; predictions are drawn from a
seeded RNG (the CNN is better than the baseline and misses east-facing deposits more, as in
the paper), and ``metrics.json`` is written from them, except one deliberately wrong value
that the report must flag.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avalanche_hpc.learn.metrics import metrics_report
from avalanche_hpc.learn.splits import make_split, read_split
from avalanche_hpc.store.layout import read_meta, write_patches
from avalanche_hpc.study import OrbitConfig, SeasonConfig, Study, StudyConfig

MASSIFS = ["Haute-Maurienne", "Vanoise", "Belledonne"]
FOCUS = "Haute-Maurienne"
ORBITS = ["D139", "A161"]
N_PATHS = 60
N_DATES = 7
WRONG_METRIC = ("random", 1, "all", "accuracy")  # split, seed, scope, key written wrong in metrics.json


def _write_study(root: Path, rng: np.random.Generator) -> None:
    cfg = StudyConfig(
        name="report-fixture", crs_epsg=32632, pixel_size_m=20.0, massifs=MASSIFS, focus_massif=FOCUS,
        patch_size=16,
        orbits=[OrbitConfig(id="D139", direction="descending", relative_orbit=139),
                OrbitConfig(id="A161", direction="ascending", relative_orbit=161)],
        seasons=[SeasonConfig(id="2017-2018", start=dt.date(2017, 12, 1), end=dt.date(2018, 4, 30),
                              summer={"D139": [dt.date(2017, 8, 24)], "A161": [dt.date(2017, 8, 25)]})],
    )
    root.mkdir(parents=True, exist_ok=True)
    Study.write_config(root, cfg)
    paths = [f"P{i:03d}" for i in range(N_PATHS)]
    massif_of = {p: MASSIFS[0] if i < N_PATHS // 2 else MASSIFS[1 + i % 2] for i, p in enumerate(paths)}
    aspect_of = {p: float(rng.uniform(0, 360)) for p in paths}
    slope_of = {p: float(rng.uniform(5, 45)) for p in paths}
    rows, events = [], []
    for o_idx, orbit in enumerate(ORBITS):
        dates = [dt.date(2017, 12, 10 + o_idx) + dt.timedelta(days=18 * k) for k in range(N_DATES)]
        for k in range(1, N_DATES):
            t0, t1 = dates[k - 1], dates[k]
            for p in paths:
                u = rng.uniform()
                label = 1 if u < 0.3 else (-1 if u > 0.9 else 0)
                event_id, area = "", np.nan
                if label == 1:
                    event_id = f"E{len(events):04d}"
                    area = float(np.exp(rng.uniform(np.log(20), np.log(30000))))
                    d = t0 + dt.timedelta(days=int(rng.integers(1, (t1 - t0).days + 1)))
                    events.append((event_id, p, d.isoformat(), d.isoformat(), area))
                rows.append({"path_id": p, "massif": massif_of[p], "season": "2017-2018", "orbit": orbit,
                             "date": t1.isoformat(), "prev_date": t0.isoformat(), "label": label,
                             "event_id": event_id, "deposit_area_m2": area, "elevation": 1500.0 + 10 * int(p[1:]),
                             "slope": slope_of[p], "aspect": aspect_of[p], "valid_fraction": 1.0,
                             "x": 1000.0 * int(p[1:]), "y": 0.0})
    # events the labelling could not use: windows wider than the revisit interval
    for j in range(5):
        events.append((f"W{j:03d}", paths[j], "2018-01-01", "2018-02-15", 500.0))
    meta = pd.DataFrame(rows)
    patches = np.zeros((len(meta), 3, 16, 16), dtype=np.float32)
    study = Study.load(root)
    write_patches(study.store_path, patches, meta, {"study": "report-fixture", "digest": "fixture-digest-0001"})
    pd.DataFrame(events, columns=["event_id", "path_id", "date_min", "date_max", "deposit_area_m2"]).to_csv(
        study.inventory_path, index=False)


def _predictions(split: pd.DataFrame, meta: pd.DataFrame, rng: np.random.Generator, strength: float,
                 east_penalty: float, baseline: bool) -> pd.DataFrame:
    m = meta.iloc[split["store_row"].to_numpy()].reset_index(drop=True)
    y = split["label"].to_numpy()
    east = (m["aspect"].to_numpy() > 0) & (m["aspect"].to_numpy() < 180)
    logit = rng.normal(0, 1.0, len(y)) + (2 * y - 1) * strength - east_penalty * (y == 1) * east
    prob = 1 / (1 + np.exp(-logit))
    pred = (prob >= (0.6 if baseline else 0.5)).astype(int)
    out = split[["store_row", "season", "orbit", "date", "path_id", "massif", "set", "label"]].copy()
    out["prob"], out["pred"] = prob, pred
    for c in ("deposit_area_m2", "aspect", "slope", "elevation"):
        out[c] = m[c].to_numpy()
    return out


def write_fake_experiment(root: Path, experiment: str, *, strength: float, seeds: tuple[int, ...] = (0, 1, 2),
                          splits: tuple[str, ...] = ("random", "holdout-vanoise"), seed: int = 0) -> Path:
    """A complete fake experiment under ``STUDY/runs/{experiment}``; returns that directory."""
    study = Study.load(root)
    meta = read_meta(study.store_path)
    rng = np.random.default_rng([seed, len(experiment)])
    exp_dir = study.runs_dir(experiment)
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "experiment.json").write_text(json.dumps({"seeds": list(seeds), "splits": list(splits),
                                                          "weights": "fixture", "strength": strength}))
    for split in splits:
        table = read_split(make_split(root, experiment, split, seed=0))
        for s in seeds:
            d = exp_dir / split / "cnn" / f"seed{s}"
            d.mkdir(parents=True, exist_ok=True)
            pred = _predictions(table, meta, rng, strength, east_penalty=1.5, baseline=False)
            pred.to_csv(d / "predictions.csv", index=False)
            epochs = np.arange(1, 21)
            pd.DataFrame({"epoch": epochs, "train_loss": 0.7 * np.exp(-epochs / 8) + 0.2,
                          "val_loss": 0.7 * np.exp(-epochs / 10) + 0.3 + rng.normal(0, 0.01, 20),
                          "val_accuracy": 0.5 + 0.25 * (1 - np.exp(-epochs / 6))}).to_csv(d / "history.csv", index=False)
            metrics = metrics_report(pred, FOCUS, best_epoch=12)
            if (split, s) == WRONG_METRIC[:2]:
                metrics[WRONG_METRIC[2]][WRONG_METRIC[3]] = 0.999
            (d / "metrics.json").write_text(json.dumps(metrics))
            (d / "config.json").write_text(json.dumps({
                "seed": s, "split": split, "settings": {"lr": 1e-3, "max_epochs": 250},
                "weights": {"kind": "none", "requested": "auto"},
                "weights_warning": "ImageNet weights unavailable (see https://example.invalid/vgg16.pth)"}))
        b = exp_dir / split / "baseline"
        b.mkdir(parents=True, exist_ok=True)
        pred = _predictions(table, meta, rng, strength / 4, east_penalty=0.0, baseline=True)
        pred.to_csv(b / "predictions.csv", index=False)
        (b / "metrics.json").write_text(json.dumps(metrics_report(pred, FOCUS)))
        (b / "params.json").write_text(json.dumps({"pixel_threshold_db": 1.5, "count_threshold": 40,
                                                    "tuning_curve": [[10, 0.5], [40, 0.6]]}))
    # the tuned baseline variant (its own generator: the draws above stay as they were)
    trng = np.random.default_rng(7)
    for split in splits:
        table = read_split(make_split(root, experiment, split, seed=0))
        b = exp_dir / split / "baseline-tuned"
        b.mkdir(parents=True, exist_ok=True)
        pred = _predictions(table, meta, trng, strength / 2, east_penalty=0.0, baseline=True)
        pred.to_csv(b / "predictions.csv", index=False)
        (b / "metrics.json").write_text(json.dumps(metrics_report(pred, FOCUS)))
        (b / "params.json").write_text(json.dumps({"variant": "tuned", "channel": "VVdiff", "pixel_threshold_db": 1.0,
                                                    "count_threshold": 30}))
    return exp_dir


@pytest.fixture(scope="session")
def report_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study with a patch store, inventory and two fake experiments: ``exp_a`` and ``exp_b``."""
    root = tmp_path_factory.mktemp("report") / "study"
    _write_study(root, np.random.default_rng(7))
    write_fake_experiment(root, "exp_a", strength=1.2)
    write_fake_experiment(root, "exp_b", strength=0.6, seeds=(0, 1))
    return root
