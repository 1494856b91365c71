"""The decision threshold of a detector, chosen on the validation rows of the split.

Rule (the same for the CNN and the baseline): among the distinct validation scores ``t``
(decision ``score >= t``), take the one that maximises F1 on the validation rows of
``split.csv``, each validation negative counting ``neg_weight`` times; ties go to the higher
threshold (fewer alarms).

Why a weight: the validation set is drawn from the balanced pool (as many negatives as
positives, ``learn/splits.py``) while detection meets the store's prevalence (most corridors
on most dates have no avalanche). ``neg_weight`` = negatives / positives among the labelled
store rows of the *training and validation corridors* (label counts only, never a model output
and never a test corridor), so F1 is measured at the prevalence the detector will meet.
With ``neg_weight = 1`` this is plain F1 on the validation set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from avalanche_hpc.errors import MissingInputError

RULE = ("maximise F1 on the validation rows of split.csv (decision: score >= threshold), each validation "
        "negative weighted by the negative:positive ratio of the labelled store rows of the training and "
        "validation corridors; ties -> the higher threshold")


def weighted_f1_curve(scores: np.ndarray, labels: np.ndarray, neg_weight: float = 1.0) -> pd.DataFrame:
    """F1 (negatives weighted) for every candidate threshold: columns threshold, tp, fp, fn, f1."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=int)
    cands = np.unique(scores)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    # for threshold t: predicted positive = scores >= t; cumulative counts over descending scores
    tp_cum = np.cumsum(y == 1)
    fp_cum = np.cumsum(y == 0)
    last = np.searchsorted(-s, -cands, side="right") - 1  # index of the last score >= t
    tp = tp_cum[last].astype(float)
    fp = fp_cum[last].astype(float) * neg_weight
    fn = float((y == 1).sum()) - tp
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return pd.DataFrame({"threshold": cands, "tp": tp, "fp": fp, "fn": fn, "f1": f1})


def choose_threshold(scores: np.ndarray, labels: np.ndarray, neg_weight: float = 1.0,
                     what: str = "validation set") -> dict:
    """The threshold by ``RULE``: {"threshold", "val_f1", "val_precision", "val_recall", "n_val", ...}."""
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0 or (labels == 1).sum() == 0 or (labels == 0).sum() == 0:
        raise MissingInputError(f"{what}: no validation rows holding both classes ({int((labels == 1).sum())} positive, "
                                f"{int((labels == 0).sum())} negative) -> the decision threshold is chosen on the "
                                f"validation set; retrain the experiment on a split with a validation set")
    curve = weighted_f1_curve(scores, labels, neg_weight)
    best = curve.iloc[np.lexsort((curve["threshold"].to_numpy(), curve["f1"].to_numpy()))[-1]]
    tp, fp, fn = float(best["tp"]), float(best["fp"]), float(best["fn"])
    return {
        "threshold": float(best["threshold"]), "val_f1": float(best["f1"]),
        "val_precision": tp / (tp + fp) if tp + fp else None, "val_recall": tp / (tp + fn) if tp + fn else None,
        "n_val": len(labels), "n_val_positive": int((labels == 1).sum()), "neg_weight": float(neg_weight),
        "rule": RULE,
    }
