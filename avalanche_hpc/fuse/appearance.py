"""Appearance dating: the window in which an orbit saw a deposit *appear*, not merely persist.

The CNN compares each winter image with a summer reference, so debris stays "positive" in every
window of an orbit after it appeared (until it is buried or melts). Per orbit and corridor, a
window is an *appearance* window when the orbit is positive there (at its own threshold, the
detector's) and its previous *observed* window of the same season and corridor was negative:
the first window of each run of positives. Unobserved windows (layover, shadow, no data: NaN
probability) are skipped when looking back, so a gap inside a run does not start a new one; the
first observed window of the season counts as an appearance when it is positive.

One function (``appeared``) over a per-orbit decision table; used by the fusion table
(``units.build_units``: ``app_o``), by the ``or_appear`` rule (``methods``) and by the single-orbit
appearance variant (``methods.orbit_detections(..., appearance=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

DECISION_KEY = ["season", "path_id", "orbit"]


def positive(rows: pd.DataFrame, thresholds: Mapping[str, float]) -> np.ndarray:
    """Per detection row (``orbit``, ``observed``, ``cnn_prob``): observed and at or above its orbit's threshold."""
    p = rows["cnn_prob"].to_numpy(dtype=float)
    t = rows["orbit"].map(thresholds).to_numpy(dtype=float)
    return observed(rows) & (np.nan_to_num(p, nan=-np.inf) >= t)


def observed(rows: pd.DataFrame) -> np.ndarray:
    return rows["observed"].to_numpy(dtype=bool) & np.isfinite(rows["cnn_prob"].to_numpy(dtype=float))


def appeared(rows: pd.DataFrame, positive_flags: np.ndarray, observed_flags: np.ndarray) -> np.ndarray:
    """Whether each row (one orbit's window ``(prev_date, date]`` over one corridor) is an appearance window.

    ``rows``: columns ``season``, ``path_id``, ``orbit``, ``date`` (ISO, any order);
    ``positive_flags``/``observed_flags``: per row. A row appears when it is positive and the
    previous observed row of its (season, corridor, orbit), by date, is negative or absent.
    Unobserved rows never appear. Returns a bool array aligned with ``rows``.
    """
    n = len(rows)
    out = np.zeros(n, dtype=bool)
    obs = np.asarray(observed_flags, dtype=bool)
    pos = np.asarray(positive_flags, dtype=bool) & obs
    if n == 0 or not obs.any():
        return out
    idx = np.flatnonzero(obs)
    sub = rows.iloc[idx]
    group = sub.groupby(DECISION_KEY, sort=False).ngroup().to_numpy()
    order = np.lexsort((sub["date"].astype(str).to_numpy(), group))
    keys = group[order]
    p = pos[idx][order]
    first = np.r_[True, keys[1:] != keys[:-1]]
    prev_pos = np.r_[False, p[:-1]] & ~first
    out[idx[order]] = p & ~prev_pos
    return out


def appearance_flags(rows: pd.DataFrame, thresholds: Mapping[str, float]) -> np.ndarray:
    """``appeared`` of detection rows (``units.PART_USE`` columns) at each orbit's own threshold."""
    return appeared(rows, positive(rows, thresholds), observed(rows))
