"""Evaluation of single orbits, directions and fused detections on one footing.

Population: the *evaluation corridors* = every corridor that is in neither the training nor the
validation set of the experiment's split (the test corridors and those never in the pool): no
CNN weight, threshold or stacker coefficient was chosen on them.

- **Unit level** (any study): the labelled units (``units.UnitTable``, all orbits) of the
  evaluation corridors that some orbit observed. A method claims a unit when the unit lies in one
  of its detection windows (``methods.unit_decisions``); accuracy, precision, recall, F1 of
  those claims against the unit labels; recall per aspect octant of the deposition zone. A
  single orbit neither claims what it does not observe nor resolves its window: both cost it.
- **Event level** (synthetic studies, ``truth.csv``): the truth events of the evaluation corridors
  whose date lies in a unit some orbit observed. An event is detected when one of the method's
  detection windows of its corridor contains its date (so a window narrowed past the true date
  misses it); a detection whose window holds no event of its corridor is a false alarm.
  POD = TP / (TP + FN), FAR = FP / (TP + FP) (Eckerstorfer et al. 2019); POD on east-facing
  deposits (aspect in (0, 180) degrees, the report's definition) and per aspect octant.
- **Window widths** of the true detections (their window holds an event): median and quartiles, days.
- **Geometric floor** (``geometric_floor``): per evaluated event, the width of the unit (elementary
  interval of all the orbits' acquisitions) that holds its true date: the narrowest window any
  fusion of these acquisitions can give it; median and quartiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from avalanche_hpc.fuse.methods import unit_decisions
from avalanche_hpc.fuse.units import UnitTable

OCTANTS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
EVAL_COLUMNS = ["method", "orbits", "kind", "threshold", "units", "accuracy", "precision", "recall", "f1",
                "events", "detected", "pod", "pod_east", "detections", "false_alarms", "far",
                "width_median", "width_q1", "width_q3", "n_true_detections",
                *[f"pod_{o}" for o in OCTANTS], *[f"recall_{o}" for o in OCTANTS]]


def read_truth_events(path: Path) -> pd.DataFrame:
    t = pd.read_csv(path, dtype={"event_id": str, "path_id": str, "date": str})
    return t[["event_id", "path_id", "date", "aspect", "deposit_area_m2"]]


def _octant(aspect) -> np.ndarray:
    """Index 0..7 into OCTANTS (N = 337.5..22.5 degrees), -1 when missing (as ``report.analysis.octant_of``,
    without importing the report's plotting stack)."""
    a = np.asarray(aspect, dtype=float)
    return np.where(np.isfinite(a), np.floor(((a + 22.5) % 360.0) / 45.0), -1).astype(int)


def observed_events(truth: pd.DataFrame, units: UnitTable, corridors: set[str]) -> pd.DataFrame:
    """Truth events of ``corridors`` whose date lies in a unit some orbit observed."""
    ev = truth[truth["path_id"].isin(corridors)]
    f = units.frame
    obs = f.loc[f["observed"].to_numpy(dtype=bool), ["path_id", "unit_start", "unit_end"]]
    m = ev.merge(obs, on="path_id", how="inner")
    m = m[(m["unit_start"] < m["date"]) & (m["date"] <= m["unit_end"])]
    return ev[ev["event_id"].isin(set(m["event_id"]))].reset_index(drop=True)


def geometric_floor(events: pd.DataFrame, units: UnitTable) -> dict:
    """Median and quartiles (days) of the width of the unit holding each event's true date, and the count per width."""
    f = units.frame[["path_id", "unit_start", "unit_end"]].drop_duplicates()
    m = events[["event_id", "path_id", "date"]].merge(f, on="path_id", how="inner")
    m = m[(m["unit_start"] < m["date"]) & (m["date"] <= m["unit_end"])].drop_duplicates("event_id")
    w = (pd.to_datetime(m["unit_end"]) - pd.to_datetime(m["unit_start"])).dt.days.to_numpy(dtype=float)
    counts = pd.Series(w).value_counts().sort_index()
    return {"events": len(w), "median": float(np.median(w)) if len(w) else None,
            "q1": float(np.quantile(w, 0.25)) if len(w) else None, "q3": float(np.quantile(w, 0.75)) if len(w) else None,
            "events_per_width_days": {str(int(k)): int(v) for k, v in counts.items()},
            "definition": "per evaluated event, the width of the elementary unit (consecutive acquisitions of any "
                          "orbit) holding its true date: the narrowest window any fusion of these acquisitions gives"}


def event_scores(events: pd.DataFrame, truth: pd.DataFrame, dets: pd.DataFrame) -> dict:
    """POD over ``events``, FAR over ``dets`` (whose corridors are the evaluation's), window widths."""
    m = events.merge(dets[["path_id", "start", "end"]], on="path_id", how="inner")
    hit = set(m.loc[(m["start"] < m["date"]) & (m["date"] <= m["end"]), "event_id"])
    detected = events["event_id"].isin(hit).to_numpy()
    d = dets.reset_index(drop=True).reset_index()
    md = d.merge(truth[["path_id", "date"]], on="path_id", how="inner")
    true_rows = set(md.loc[(md["start"] < md["date"]) & (md["date"] <= md["end"]), "index"])
    is_true = d["index"].isin(true_rows).to_numpy()
    aspect = events["aspect"].to_numpy(dtype=float)
    east = np.isfinite(aspect) & (np.mod(aspect, 360.0) > 0) & (np.mod(aspect, 360.0) < 180)
    octs = _octant(aspect)
    widths = d.loc[is_true, "width_days"].to_numpy(dtype=float)
    out = {"events": len(events), "detected": int(detected.sum()),
           "pod": float(detected.mean()) if len(events) else np.nan,
           "pod_east": float(detected[east].mean()) if east.any() else np.nan,
           "detections": len(d), "false_alarms": int((~is_true).sum()),
           "far": float((~is_true).mean()) if len(d) else np.nan, "n_true_detections": int(is_true.sum()),
           "width_median": float(np.median(widths)) if len(widths) else np.nan,
           "width_q1": float(np.quantile(widths, 0.25)) if len(widths) else np.nan,
           "width_q3": float(np.quantile(widths, 0.75)) if len(widths) else np.nan}
    for i, o in enumerate(OCTANTS):
        sel = octs == i
        out[f"pod_{o}"] = float(detected[sel].mean()) if sel.any() else np.nan
    return out


def unit_scores(units: UnitTable, dets: pd.DataFrame, mask: np.ndarray) -> dict:
    """Accuracy, precision, recall, F1 of the units claimed by ``dets``, over labelled observed units in ``mask``."""
    f = units.frame
    claim = unit_decisions(units, dets)
    label = f["unit_label"].to_numpy()
    use = mask & (label >= 0) & f["observed"].to_numpy(dtype=bool)
    d, y = claim[use], label[use] == 1
    tp, fp = int((d & y).sum()), int((d & ~y).sum())
    fn, tn = int((~d & y).sum()), int((~d & ~y).sum())
    out = {"units": int(use.sum()), "accuracy": (tp + tn) / use.sum() if use.sum() else np.nan,
           "precision": tp / (tp + fp) if tp + fp else np.nan, "recall": tp / (tp + fn) if tp + fn else np.nan,
           "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan}
    octs = _octant(f["aspect"].to_numpy(dtype=float))[use]
    for i, o in enumerate(OCTANTS):
        sel = y & (octs == i)
        out[f"recall_{o}"] = float(d[sel].mean()) if sel.any() else np.nan
    return out
