"""The change-detection thresholding baseline, on the same splits as the CNN.

For each patch (its centre ``crop x crop`` window, the CNN's evaluation view) a per-pixel
change image in dB is thresholded and the pixels above the threshold are counted; the patch is
called positive when the count reaches a count threshold. Change images:

- ``VVdiff`` = ``VV* - VV*_old`` (the VV change since the previous acquisition),
- ``VHdiff`` (the store's third channel, ``VH* - VH*_old``).

Invalid pixels (NaN in the store) count as 0 dB (no change). Two variants:

- ``paper`` (the default): the paper's baseline. The per-pixel rule is fixed a priori
  (``PAPER_RULE``: ``VHdiff > 3 dB``, see below) and only the count threshold is tuned on the
  validation set, as the paper does ("the number of positive threshold pixels per image that
  gave the best result on the validation set").
- ``tuned``: a stronger baseline than the paper's. The channel, the pixel threshold (dB, on
  ``PIXEL_THRESHOLDS_DB``: 0.5 to 12 dB by 0.25) and the count threshold (every value that
  separates two validation patches) are tuned together for accuracy on the validation set
  (ties: higher F1, then the lower thresholds).

The per-pixel rule of the paper's baseline: the paper compares with "the thresholding method
[3]" (Karbou et al. 2018, change detection of avalanche debris on Sentinel-1, French Alps) and
does not restate the rule. Fixed here without looking at any data: the cross-pol change
``VHdiff`` (the change channel the paper feeds its CNN and shows in its Fig. 1) above +3 dB
(a doubling of backscatter, the conventional change-detection level; debris raises
backscatter, so only increases count). docs/simulator.md records this choice and its source.
In both variants the test set is only predicted.

Outputs (``Study.runs(experiment).baseline(split, variant)``: ``runs/{experiment}/{split}/baseline/``
for ``paper``, ``.../baseline-tuned/`` for ``tuned``): ``params.json`` (variant, channel, pixel threshold in dB, count threshold in pixels,
validation scores, tuning curves), ``predictions.csv`` and ``metrics.json`` in the CNN's
schemas; ``prob`` is the share of above-threshold pixels in the window (0..1), ``pred`` =
count >= count threshold.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

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
VARIANTS = ("paper", "tuned")
PAPER_RULE: dict[str, Any] = {"channel": "VHdiff", "pixel_threshold_db": 3.0}
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


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown baseline variant {variant!r} -> choose one of {', '.join(VARIANTS)}")


def tune_baseline(patches: np.ndarray, labels: np.ndarray, crop: int = 50,
                  thresholds_db: tuple[float, ...] = PIXEL_THRESHOLDS_DB, variant: str = "tuned") -> dict:
    """Tune the baseline on (patches, labels): the params dict.

    ``tuned``: channel, pixel threshold and count threshold; ``paper``: the count threshold only,
    under ``PAPER_RULE``.
    """
    check_variant(variant)
    if len(labels) == 0 or len(np.unique(labels)) < 2:
        raise ConfigError("the baseline is tuned on a validation set holding both classes; this one does not "
                          "-> use a larger store or another split")
    changes = change_images(patches, crop)
    if variant == "paper":
        ch, thr = PAPER_RULE["channel"], float(PAPER_RULE["pixel_threshold_db"])
        t, acc, f1, curve = tune_count_threshold(pixel_counts(changes[ch], thr), labels)
        return {
            "variant": variant, "channel": ch, "pixel_threshold_db": thr, "count_threshold": t, "crop": crop,
            "n_pixels": crop * crop, "val_accuracy": acc, "val_f1": f1, "pixel_thresholds_db": [thr],
            "units": {"pixel_threshold_db": "dB", "count_threshold": "pixels"}, "count_curve": curve,
            "rule": "positive when the number of pixels with change > pixel_threshold_db is >= count_threshold",
            "fixed_a_priori": ["channel", "pixel_threshold_db"],
        }
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
        "variant": variant, "channel": ch, "pixel_threshold_db": thr, "count_threshold": t, "crop": crop,
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


def _pixel_grid(variant: str) -> list[float]:
    return [float(PAPER_RULE["pixel_threshold_db"])] if variant == "paper" else list(PIXEL_THRESHOLDS_DB)


def _is_current(params_path: Path, data: RunData, crop: int, split_seed: int, variant: str = "paper") -> bool:
    """Whether ``params.json`` was tuned on this data (digest) with these settings and this variant."""
    try:
        old = json.loads(params_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (old.get("data_sha256") == data.digest and old.get("crop") == crop and old.get("split_seed") == split_seed
            and old.get("pixel_thresholds_db") == _pixel_grid(variant) and old.get("variant", "tuned") == variant)


def baseline_is_complete(root: Path, experiment: str, split: str = "random", *, split_seed: int = 0,
                         crop: int = 50, variant: str = "paper") -> bool:
    """Whether the split's baseline (``variant``) has finished with these settings on this data (the
    check ``baseline_run`` itself makes before skipping)."""
    check_variant(variant)
    study = Study.load(root)
    runs = study.runs(experiment)
    files = runs.baseline(split, variant)
    if not (files.metrics.is_file() and files.params.is_file() and runs.split_csv(split).is_file()):
        return False
    return _is_current(files.params, load_run_data(study, runs.split_csv(split)), crop, split_seed, variant)


def baseline_run(root: Path, experiment: str, split: str = "random", *, split_seed: int = 0, crop: int = 50,
                 force: bool = False, variant: str = "paper") -> Path:
    """Tune the baseline on the split's validation set, predict, write metrics; returns its directory."""
    check_variant(variant)
    root = Path(root)
    study = Study.load(root)
    validate_split(split, study.config.massifs)
    clean_study_tmp(study.runs_dir(experiment))
    split_csv = make_split(root, experiment, split, split_seed)
    files = study.runs(experiment).baseline(split, variant)
    data = load_run_data(study, split_csv)
    if files.metrics.is_file() and not force and _is_current(files.params, data, crop, split_seed, variant):
        log.info("baseline %s is complete: skipped (use --force to redo it)", files.dir)
        return files.dir
    sets = data.table["set"].to_numpy()
    labels = data.table["label"].to_numpy(dtype=np.int64)
    val = sets == "val"
    params = tune_baseline(data.patches[val], labels[val], crop, variant=variant)
    params.update(data_sha256=data.digest, split=split, split_seed=split_seed, experiment=experiment)
    prob, pred = apply_baseline(data.patches, params)
    table = predictions_table(data.table, prob, pred)
    focus = focus_massif_of(study.config.focus_massif)
    metrics = metrics_report(table, focus, best_epoch=None)
    metrics["variant"] = variant
    write_json(files.params, params)
    write_text(files.predictions, table.to_csv(index=False))
    write_json(files.metrics, metrics)
    log.info("baseline (%s) %s: %s > %.2f dB on >= %d px; test accuracy %s, F1 %s", variant, split,
             params["channel"], params["pixel_threshold_db"], params["count_threshold"], metrics["all"]["accuracy"],
             metrics["all"]["f1"])
    return files.dir
