"""The activity table: per massif, season, orbit and date, what was observed, detected and inventoried.

Columns (``ACTIVITY_COLUMNS``; one row per massif and (season, orbit, date) of a part):

- ``corridors``: corridors of the massif in the store on that date; ``observed``: those with a
  valid-pixel share >= ``min_valid`` (scored, and in the GeoPackage);
- ``cnn_detections``, ``baseline_detections``: observed corridors each detector calls positive;
- ``inventory_positive``: observed corridors labelled positive (an inventoried event inside the
  window ``(prev_date, date]``); ``inventory_events``: the inventory events behind them;
  ``inventory_unknown``: observed corridors whose label is unknown (unmonitored, or an event
  window wider than the acquisition gap).

Sums over the table equal the counts over the GeoPackage's rows (tested).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ACTIVITY_KEYS = ["season", "orbit", "date", "prev_date", "massif"]
ACTIVITY_COLUMNS = [*ACTIVITY_KEYS, "corridors", "observed", "cnn_detections", "baseline_detections",
                    "inventory_positive", "inventory_events", "inventory_unknown"]


def activity_rows(part: pd.DataFrame) -> pd.DataFrame:
    """Activity rows of one part table (``scoring.PART_COLUMNS``)."""
    obs = part["observed"].to_numpy(dtype=bool)
    label = part["label"].to_numpy()
    events = part["event_id"].fillna("").astype(str)
    n_events = np.where(obs & (label == 1), events.map(lambda s: len([e for e in s.split(";") if e])), 0)
    t = part[ACTIVITY_KEYS].copy()
    t["corridors"] = 1
    t["observed"] = obs.astype(int)
    t["cnn_detections"] = part["cnn_detected"].to_numpy(dtype=bool).astype(int)
    t["baseline_detections"] = part["baseline_detected"].to_numpy(dtype=bool).astype(int)
    t["inventory_positive"] = (obs & (label == 1)).astype(int)
    t["inventory_events"] = n_events
    t["inventory_unknown"] = (obs & (label == -1)).astype(int)
    return t.groupby(ACTIVITY_KEYS, as_index=False, sort=True).sum()[ACTIVITY_COLUMNS]


def read_activity(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"season": str, "orbit": str, "date": str, "prev_date": str, "massif": str})
