"""The change-detection thresholding baseline, on the same splits as the CNN.

For each patch (its centre ``crop x crop`` window, the CNN's evaluation view) a per-pixel
change image in dB is thresholded and the pixels above the threshold are counted; the patch is
called positive when the count reaches a count threshold. Change images:

- ``VVdiff`` = ``VV* - VV*_old`` (the VV change since the previous acquisition),
- ``VHdiff`` (the store's third channel, ``VH* - VH*_old``).

Invalid pixels (NaN in the store) count as 0 dB (no change). The channel, the pixel threshold
(dB, on ``PIXEL_THRESHOLDS_DB``: 0.5 to 12 dB by 0.25) and the count threshold (pixels, every value that separates two
validation patches) are tuned together for accuracy on the validation set (ties: higher F1,
then the lower thresholds), as the paper tunes "the number of positive threshold pixels per
image that gave the best result on the validation set"; the test set is only predicted.

Outputs (``Study.runs(experiment).baseline(split)``: ``runs/{experiment}/{split}/baseline/``): ``params.json`` (chosen channel, pixel
threshold in dB, count threshold in pixels, validation scores, tuning curves),
``predictions.csv`` and ``metrics.json`` in the CNN's schemas; ``prob`` is the share of
above-threshold pixels in the window (0..1), ``pred`` = count >= count threshold.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from avalanche_hpc.atomic import write_json, write_text
from avalanche_hpc.cleanup import clean_study_tmp
from avalanche_hpc.errors import ConfigError
from avalanche_hpc.learn.metrics import focus_massif_of, metrics_report
from avalanche_hpc.learn.splits import make_split, validate_split
from avalanche_hpc.learn.train import RunData, load_run_data, predictions_table
from avalanche_hpc.study import Study

log = logging.getLogger(__name__)

CHANGE_CHANNELS = ("VVdiff", "VHdiff")
PIXEL_THRESHOLDS_DB = tuple(float(t) for t in np.round(np.arange(0.5, 12.01, 0.25), 2))


def change_images(patches: np.ndarray, crop: int = 50) -> dict[str, np.ndarray]:
    """Per-pixel change (dB) of the centre window: {'VVdiff': (n, c, c), 'VHdiff': (n, c, c)}."""
    p = patches.shape[-1]
    if not 1 <= crop <= p:
        raise ConfigError(f"crop {crop} px must be between 1 and the patch size {p}")
    o = (p - crop) // 2
    w = np.nan_to_num(patches[:, :, o:o + crop, o:o + crop].astype(np.float32), nan=0.0)
    return {"VVdiff": w[:, 0] - w[:, 1], "VHdiff": w[:, 2]}


def pixel_counts(change: np.ndarray, threshold_db: float) -> np.ndarray:
    """Number of pixels of each patch whose change exceeds ``threshold_db``."""
    return (change > threshold_db).reshape(len(change), -1).sum(axis=1)


def tune_count_threshold(counts: np.ndarray, labels: np.ndarray) -> tuple[int, float, float, list[list[float]]]:
    """Best count threshold t (pred = count >= t) on (counts, labels): (t, accuracy, f1, curve).

    Candidates are 0, every distinct count and max + 1 (all negative); ties are broken by F1,
    then by the lower threshold. ``curve`` lists [t, accuracy] for every candidate.
    """
    labels = np.asarray(labels, dtype=np.int64)
    cands = np.unique(np.concatenate([[0], counts, [counts.max(initial=0) + 1]]))
    best = (-1.0, -1.0, 0)
    curve = []
    for t in cands:
        pred = (counts >= t).astype(np.int64)
        acc = float((pred == labels).mean()) if len(labels) else 0.0
        tp = int(((pred == 1) & (labels == 1)).sum())
        f1 = 2 * tp / max(int(pred.sum()) + int(labels.sum()), 1)
        curve.append([int(t), acc])
        if (acc, f1) > best[:2]:
            best = (acc, f1, int(t))
    return best[2], best[0], best[1], curve


def tune_baseline(patches: np.ndarray, labels: np.ndarray, crop: int = 50,
                  thresholds_db: tuple[float, ...] = PIXEL_THRESHOLDS_DB) -> dict:
    """Tune channel, pixel threshold and count threshold on (patches, labels): the params dict."""
    if len(labels) == 0 or len(np.unique(labels)) < 2:
        raise ConfigError("the baseline is tuned on a validation set holding both classes; this one does not "
                          "-> use a larger store or another split")
    changes = change_images(patches, crop)
    grid = []
    best = None
    for ch in CHANGE_CHANNELS:
        for thr in thresholds_db:
            t, acc, f1, curve = tune_count_threshold(pixel_counts(changes[ch], thr), labels)
            grid.append({"channel": ch, "pixel_threshold_db": thr, "count_threshold": t, "val_accuracy": acc,
                         "val_f1": f1})
            key = (acc, f1)
            if best is None or key > best[0]:
                best = (key, ch, thr, t, curve)
    if best is None:
        raise ConfigError("the baseline needs at least one change channel and one pixel threshold to tune")
    (acc, f1), ch, thr, t, curve = best
    return {
        "channel": ch, "pixel_threshold_db": thr, "count_threshold": t, "crop": crop,
        "n_pixels": crop * crop, "val_accuracy": acc, "val_f1": f1, "pixel_thresholds_db": list(thresholds_db),
        "units": {"pixel_threshold_db": "dB", "count_threshold": "pixels"},
        "tuning_grid": grid, "count_curve": curve,
        "rule": "positive when the number of pixels with change > pixel_threshold_db is >= count_threshold",
    }


def apply_baseline(patches: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """(prob = share of above-threshold pixels, pred) of patches under tuned ``params``."""
    change = change_images(patches, params["crop"])[params["channel"]]
    counts = pixel_counts(change, params["pixel_threshold_db"])
    return counts / float(params["n_pixels"]), (counts >= params["count_threshold"]).astype(int)


def _is_current(params_path: Path, data: RunData, crop: int, split_seed: int) -> bool:
    """Whether ``params.json`` was tuned on this data (digest) with these settings."""
    try:
        old = json.loads(params_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (old.get("data_sha256") == data.digest and old.get("crop") == crop and old.get("split_seed") == split_seed
            and old.get("pixel_thresholds_db") == list(PIXEL_THRESHOLDS_DB))


def baseline_is_complete(root: Path, experiment: str, split: str = "random", *, split_seed: int = 0,
                         crop: int = 50) -> bool:
    """Whether the split's baseline has finished with these settings on this data (the check
    ``baseline_run`` itself makes before skipping)."""
    study = Study.load(root)
    runs = study.runs(experiment)
    files = runs.baseline(split)
    if not (files.metrics.is_file() and files.params.is_file() and runs.split_csv(split).is_file()):
        return False
    return _is_current(files.params, load_run_data(study, runs.split_csv(split)), crop, split_seed)


def baseline_run(root: Path, experiment: str, split: str = "random", *, split_seed: int = 0, crop: int = 50,
                 force: bool = False) -> Path:
    """Tune the baseline on the split's validation set, predict, write metrics; returns its directory."""
    root = Path(root)
    study = Study.load(root)
    validate_split(split, study.config.massifs)
    clean_study_tmp(study.runs_dir(experiment))
    split_csv = make_split(root, experiment, split, split_seed)
    files = study.runs(experiment).baseline(split)
    data = load_run_data(study, split_csv)
    if files.metrics.is_file() and not force and _is_current(files.params, data, crop, split_seed):
        log.info("baseline %s is complete: skipped (use --force to redo it)", files.dir)
        return files.dir
    sets = data.table["set"].to_numpy()
    labels = data.table["label"].to_numpy(dtype=np.int64)
    val = sets == "val"
    params = tune_baseline(data.patches[val], labels[val], crop)
    params.update(data_sha256=data.digest, split=split, split_seed=split_seed, experiment=experiment)
    prob, pred = apply_baseline(data.patches, params)
    table = predictions_table(data.table, prob, pred)
    focus = focus_massif_of(study.config.focus_massif)
    metrics = metrics_report(table, focus, best_epoch=None)
    write_json(files.params, params)
    write_text(files.predictions, table.to_csv(index=False))
    write_json(files.metrics, metrics)
    log.info("baseline %s: %s > %.2f dB on >= %d px; test accuracy %s, F1 %s", split, params["channel"],
             params["pixel_threshold_db"], params["count_threshold"], metrics["all"]["accuracy"], metrics["all"]["f1"])
    return files.dir
