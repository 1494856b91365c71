"""Classification metrics of a run, for all test samples and for the focus massif.

The schema is fixed by docs/architecture.md ("Runs layout")::

    metrics.json = {"focus_massif": str, "all": M, "focus": M, "best_epoch": int | None, ...}
    M = {"n", "accuracy", "precision", "recall", "f1", "roc_auc", "confusion": [[tn, fp], [fn, tp]]}

Undefined values (no positive prediction for precision, a single class for ROC AUC, an empty
set) are ``None`` (JSON ``null``), never a made-up number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from avalanche_hpc.errors import ArgumentError

DEFAULT_FOCUS_MASSIF = "Haute-Maurienne"


def _ratio(num: int, den: int) -> float | None:
    return float(num) / float(den) if den else None


def compute_metrics(labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray,
                    preds: Sequence[int] | np.ndarray | None = None) -> dict:
    """Metrics of binary predictions; ``preds`` defaults to ``probs >= 0.5``."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    yhat = (p >= 0.5).astype(np.int64) if preds is None else np.asarray(preds, dtype=np.int64)
    if not (len(y) == len(p) == len(yhat)):
        raise ArgumentError(f"labels ({len(y)}), probs ({len(p)}) and preds ({len(yhat)}) differ in length")
    tp = int(((y == 1) & (yhat == 1)).sum())
    tn = int(((y == 0) & (yhat == 0)).sum())
    fp = int(((y == 0) & (yhat == 1)).sum())
    fn = int(((y == 1) & (yhat == 0)).sum())
    n = len(y)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = None
    if precision is not None and recall is not None:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    elif tp + fp + fn > 0:
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    roc_auc = None
    if n and 0 < y.sum() < n:
        from sklearn.metrics import roc_auc_score

        roc_auc = float(roc_auc_score(y, p))
    return {
        "n": n,
        "accuracy": _ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "roc_auc": roc_auc,
        "confusion": [[tn, fp], [fn, tp]],
    }


def metrics_report(predictions: pd.DataFrame, focus_massif: str, best_epoch: int | None = None,
                   test_set: str = "test") -> dict:
    """The metrics.json content from a predictions table (columns set, massif, label, prob, pred)."""
    test = predictions[predictions["set"] == test_set]
    focus = test[test["massif"] == focus_massif]
    return {
        "focus_massif": focus_massif,
        "all": compute_metrics(test["label"], test["prob"], test["pred"]),
        "focus": compute_metrics(focus["label"], focus["prob"], focus["pred"]),
        "best_epoch": best_epoch,
    }


def focus_massif_of(config_focus: str | None) -> str:
    """study.toml ``focus_massif``; else Haute-Maurienne; the name is kept even when absent."""
    return config_focus or DEFAULT_FOCUS_MASSIF
