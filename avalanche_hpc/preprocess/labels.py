"""Label maps: for each acquisition, which corridors saw a new avalanche since the previous one.

The rule (DESIGN.md, the paper's "label maps"), with ``t0`` the previous acquisition of the same
orbit in the season and ``t1`` this one; an event's window ``[date_min, date_max]`` (inclusive
days) is the interval in which the inventory says it happened:

- **positive** (1): some event of the corridor has its window inside ``(t0, t1]``,
  i.e. ``t0 < date_min`` and ``date_max <= t1``;
- **unknown** (-1): no event inside, but some event's window intersects ``(t0, t1]`` without
  lying inside it (wider than the gap, or straddling ``t0`` or ``t1``): we cannot say whether
  the deposit was there at ``t1`` and new since ``t0``;
- **negative** (0): the corridor is monitored and no event window intersects ``(t0, t1]``;
- unmonitored corridors (column ``monitored`` False) are unknown on every date.

Dates are days: an acquisition on day ``t`` closes the window ``(t_prev, t]``, so an event
dated exactly ``t0`` belongs to the previous window and an event dated exactly ``t1`` to this
one. A positive wins over an unknown event of the same corridor (a deposit is new either way).
For positives, ``event_id`` lists the events inside the window (``;``-separated, in inventory
order) and ``deposit_area_m2`` is the sum of their known areas (NaN when none is known).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from avalanche_hpc.errors import ArgumentError, InputError, Problem
from avalanche_hpc.study import LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_UNKNOWN

__all__ = ["label_map", "monitored_flags"]

def monitored_flags(corridors: pd.DataFrame) -> pd.Series:
    """Boolean ``monitored`` per corridor row (True when the optional column is absent or empty)."""
    if "monitored" not in corridors.columns:
        return pd.Series(True, index=corridors.index)
    col = corridors["monitored"]
    text = [v for v in col if isinstance(v, str)]
    if text:  # 'false' would silently read as True
        raise InputError(Problem("corridors.gpkg", "column monitored", f"holds text ({text[0]!r})",
                                 "write booleans (or 0/1); 'false' would read as True"))
    return col.where(col.notna(), True).astype(bool)


def label_map(
    inventory: pd.DataFrame,
    corridors: pd.DataFrame,
    t0: dt.date,
    t1: dt.date,
) -> pd.DataFrame:
    """Labels of every corridor for the acquisition ``t1`` whose previous acquisition is ``t0``.

    Args:
        inventory: ``event_id, path_id, date_min, date_max, deposit_area_m2`` (dates as ``datetime.date``,
            as ``Study.read_inventory`` returns them).
        corridors: ``path_id`` [, ``monitored``] (a GeoDataFrame or any DataFrame).
    Returns:
        one row per corridor, in corridor order: ``path_id, label, event_id, deposit_area_m2``.
    """
    if not t0 < t1:
        raise ArgumentError(f"previous acquisition {t0} must be before this acquisition {t1}")
    paths = corridors["path_id"].astype(str).to_numpy()
    monitored = monitored_flags(corridors).to_numpy()
    out = pd.DataFrame({
        "path_id": paths,
        "label": np.where(monitored, LABEL_NEGATIVE, LABEL_UNKNOWN).astype(np.int8),
        "event_id": "",
        "deposit_area_m2": np.full(len(paths), np.nan, dtype=np.float32),
    })
    if len(inventory) == 0 or len(paths) == 0:
        return out
    inv = inventory[inventory["path_id"].astype(str).isin(set(paths))]
    dmin, dmax = inv["date_min"], inv["date_max"]
    intersects = (dmax > t0) & (dmin <= t1)
    inside = (dmin > t0) & (dmax <= t1)
    pos = inv[inside]
    unknown_paths = set(inv.loc[intersects & ~inside, "path_id"].astype(str))
    index = {p: i for i, p in enumerate(paths)}
    for p in unknown_paths:
        out.at[index[p], "label"] = LABEL_UNKNOWN
    for p, grp in pos.groupby(pos["path_id"].astype(str), sort=False):
        i = index[p]
        if not monitored[i]:
            continue
        out.at[i, "label"] = LABEL_POSITIVE
        out.at[i, "event_id"] = ";".join(grp["event_id"].astype(str))
        areas = pd.to_numeric(grp["deposit_area_m2"], errors="coerce")
        out.at[i, "deposit_area_m2"] = np.float32(areas.sum()) if areas.notna().any() else np.nan
    out["label"] = out["label"].astype(np.int8)
    return out
