"""Avalanche events of the season and the (imperfect) inventory that records them.

Events cluster in natural cycles: one to three days after a snowfall of 20 cm or more (dry-snow
cycles) and during warm spells (wet-snow cycles, mostly in spring), plus a few isolated events.
Each corridor has its own activity (gamma-distributed around ``events_per_corridor``).

The inventory (as the EPA's) is incomplete and imprecise:

- only monitored corridors are recorded, and only ``recorded_fraction`` of their events;
- the date is a window ``[date_min, date_max]`` containing the true date, of width 0-1 day for
  most events, 2-5 days for some and 7-20 days (wider than one revisit) for about 15 %;
- the recorded area carries a ~30 % error (rounded to 10 m2, at least 10 m2).

Deposit areas: lognormal (median ``AREA_MEDIAN_M2``) for most events, and a share
``SMALL_FRACTION`` of small events (log-uniform over ``SMALL_RANGE_M2``).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from avalanche_hpc.synth.corridors import Corridor
from avalanche_hpc.synth.fields import rng_for
from avalanche_hpc.synth.snowpack import Weather

__all__ = ["AREA_MEDIAN_M2", "SMALL_FRACTION", "SMALL_RANGE_M2", "make_events", "make_inventory"]

AREA_MEDIAN_M2 = 14000.0
AREA_SIGMA = 0.9
AREA_RANGE_M2 = (600.0, 150000.0)
# small events (sluffs, size 1): a share of events with deposits log-uniform in SMALL_RANGE_M2, so the
# paper's "small avalanche (< 70 m2 in the EPA)" class exists; see docs/simulator.md
SMALL_FRACTION = 0.2
SMALL_RANGE_M2 = (20.0, 2000.0)


def make_events(corridors: list[Corridor], weather: Weather, first: dt.date, last: dt.date,
                events_per_corridor: float, seed: int, runout_m: dict[str, float]) -> pd.DataFrame:
    """Every simulated event: event_id, path_id, date (true), deposit_area_m2, cause.

    ``cause`` is ``wet`` when the runout (``runout_m``: elevation of the corridor's low end, m)
    lies below the freezing level of the day, else ``dry``.
    """
    rng = rng_for(seed, "events")
    days = [(d - weather.start).days for d in (first, last)]
    span = np.arange(max(days[0] - 8, 0), days[1] + 1)
    # cycle intensity per day: storms (lagged), warm spells
    w = np.full(len(weather.freezing_m), 0.15)
    for i in np.nonzero(weather.snowfall_cm >= 20.0)[0]:
        for lag, k in ((0, 0.5), (1, 1.0), (2, 0.6), (3, 0.3)):
            if i + lag < len(w):
                w[i + lag] += k * weather.snowfall_cm[i] / 30.0
    warm = np.clip((weather.freezing_m - 1800.0) / 800.0, 0, 1)
    w += 0.8 * warm * np.clip((weather.freezing_m - np.roll(weather.freezing_m, 3)) / 300.0 + 0.5, 0, 1)
    p_day = w[span] / w[span].sum()
    rows = []
    for c in corridors:
        rate = events_per_corridor * rng.gamma(1.2, 1 / 1.2)
        k = int(rng.poisson(rate))
        for _ in range(k):
            day = int(rng.choice(span, p=p_day))
            area = float(np.clip(rng.lognormal(np.log(AREA_MEDIAN_M2), AREA_SIGMA), *AREA_RANGE_M2))
            if rng.random() < SMALL_FRACTION:
                area = float(np.exp(rng.uniform(*np.log(SMALL_RANGE_M2))))
            rows.append({"path_id": c.path_id, "date": weather.start + dt.timedelta(days=day),
                         "deposit_area_m2": round(area, 1),
                         "cause": "wet" if weather.freezing_m[day] > runout_m[c.path_id] else "dry"})
    ev = pd.DataFrame(rows, columns=["path_id", "date", "deposit_area_m2", "cause"])
    # at most one event per corridor and day
    ev = ev.drop_duplicates(["path_id", "date"]).sort_values(["date", "path_id"], kind="stable")
    ev = ev.reset_index(drop=True)
    ev.insert(0, "event_id", [f"E{i + 1:05d}" for i in range(len(ev))])
    return ev


def make_inventory(events: pd.DataFrame, corridors: list[Corridor], recorded_fraction: float,
                   seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(inventory rows, events with recorded/date_min/date_max added)."""
    rng = rng_for(seed, "inventory")
    monitored = {c.path_id: c.monitored for c in corridors}
    out = events.copy()
    n = len(out)
    kind = rng.random(n)
    width = np.where(kind < 0.6, rng.integers(0, 2, n), np.where(kind < 0.85, rng.integers(2, 6, n),
                                                                    rng.integers(7, 21, n)))
    before = np.floor(rng.random(n) * (width + 1)).astype(int)
    out["date_min"] = [d - dt.timedelta(days=int(b)) for d, b in zip(out["date"], before, strict=False)]
    out["date_max"] = [d + dt.timedelta(days=int(wd - b)) for d, wd, b in zip(out["date"], width, before, strict=False)]
    out["monitored"] = [monitored[p] for p in out["path_id"]]
    out["recorded"] = out["monitored"] & (rng.random(n) < recorded_fraction)
    rec = out[out["recorded"]].copy()
    err = rng.lognormal(0.0, 0.3, len(rec))
    inv = pd.DataFrame({
        "event_id": rec["event_id"].to_numpy(),
        "path_id": rec["path_id"].to_numpy(),
        "date_min": [d.isoformat() for d in rec["date_min"]],
        "date_max": [d.isoformat() for d in rec["date_max"]],
        "deposit_area_m2": np.maximum(np.round(rec["deposit_area_m2"].to_numpy() * err, -1), 10.0),
        "cause": rec["cause"].to_numpy(),
    })
    return inv, out
