"""The fusion table: one row per (season, corridor, unit), with every orbit's evidence for that unit.

A *unit* is an elementary interval of the union of the orbits' acquisition dates
(``windows.elementary_intervals``): the finest release window the acquisitions resolve. For each
orbit, the unit lies in exactly one of its windows ``(prev_date, date]`` (or in none, before its
first acquisition or after its last one); that window's detection row (a part row of
``detect/``) is the orbit's evidence for the unit. Per orbit ``o`` the table has:

- ``s_o``: the CNN probability of the window (NaN when the orbit has no observed row there);
- ``det_o``: that probability reaches the orbit's own threshold (the detector's, chosen on validation);
- ``app_o``: the window is one where the orbit saw the deposit *appear* (``appearance``: positive, and its
  previous observed window of the corridor negative), not one where a positive merely persists;
- ``ws_o``, ``we_o``: the window's start and end (dates); ``width_o`` its width in days;
- ``age_o``: days from the unit's end to the orbit's acquisition (how long the debris aged
  before this orbit saw it); ``masked_o``: layover/shadow/no-data share of the patch
  (``1 - valid_fraction``);
- ``cosloc_o``, ``faces_o``: the orbit's local incidence and whether the slope faces the sensor
  (``geometry``), from the deposition zone's slope and aspect.

Each unit is labelled from the inventory with the per-orbit rule (``preprocess.labels.label_map``
over the unit's interval): 1 an event inside, 0 monitored and nothing intersecting, -1 unknown.
Memory: one row per corridor and unit (for ``alps``, 3,000 corridors x ~130 units of four orbits).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from avalanche_hpc.fuse.appearance import appearance_flags
from avalanche_hpc.fuse.geometry import cos_local_incidence, faces_sensor
from avalanche_hpc.fuse.windows import covering_window, elementary_intervals
from avalanche_hpc.preprocess.labels import label_map
from avalanche_hpc.study import StudyConfig

PART_USE = ["path_id", "massif", "season", "orbit", "prev_date", "date", "observed", "valid_fraction", "cnn_prob",
            "label", "event_id", "slope", "aspect"]


EPOCH = np.datetime64("1970-01-01", "D")
NO_DAY = -(10**6)  # no window: sorts before every real day


def days(col: pd.Series) -> np.ndarray:
    """ISO dates (or None) -> days since 1970-01-01 (int64; ``NO_DAY`` for missing)."""
    d = pd.to_datetime(col, format="%Y-%m-%d").to_numpy("datetime64[D]")
    return np.where(np.isnat(d), NO_DAY, (d - EPOCH).astype(np.int64))


@dataclass
class UnitTable:
    """The fusion table of a set of orbits (``frame``: one row per season, corridor and unit, sorted so).

    The arrays below are computed once (the threshold search builds detections many times).
    """

    orbits: list[str]
    frame: pd.DataFrame

    def __post_init__(self) -> None:
        f = self.frame
        self._cache: dict[str, np.ndarray] = {}
        if f.empty:
            return
        key = f["season"].astype(str) + "\x00" + f["path_id"].astype(str)
        self.group_codes = {k: i for i, k in enumerate(pd.unique(key))}
        self._cache["group"] = key.map(self.group_codes).to_numpy(dtype=np.int64)
        self._cache["ustart"] = days(f["unit_start"])
        self._cache["uend"] = days(f["unit_end"])
        self._cache["s"] = f[[f"s_{o}" for o in self.orbits]].to_numpy(dtype=float)
        self._cache["det"] = f[[f"det_{o}" for o in self.orbits]].to_numpy(dtype=bool) & np.isfinite(self._cache["s"])
        self._cache["app"] = f[[f"app_{o}" for o in self.orbits]].to_numpy(dtype=bool) & self._cache["det"]
        self._cache["ws"] = np.column_stack([days(f[f"ws_{o}"]) for o in self.orbits])
        self._cache["we"] = np.column_stack([days(f[f"we_{o}"]) for o in self.orbits])

    def array(self, name: str) -> np.ndarray:
        return self._cache[name]

    def scores(self) -> np.ndarray:
        return self._cache["s"] if "s" in self._cache else np.zeros((0, len(self.orbits)))

    def detected(self) -> np.ndarray:
        return self._cache["det"] if "det" in self._cache else np.zeros((0, len(self.orbits)), dtype=bool)

    def appeared(self) -> np.ndarray:
        """Per unit and orbit: the orbit's window over the unit is an appearance window (``appearance``)."""
        return self._cache["app"] if "app" in self._cache else np.zeros((0, len(self.orbits)), dtype=bool)

    def subset(self, mask: np.ndarray) -> UnitTable:
        return UnitTable(self.orbits, self.frame[mask].reset_index(drop=True))


def _iso(d: dt.date) -> str:
    return d.isoformat()


def build_units(parts: pd.DataFrame, config: StudyConfig, dates: Mapping[tuple[str, str], Sequence[dt.date]],
                orbits: Sequence[str], thresholds: dict[str, float], inventory: pd.DataFrame | None,
                corridors: pd.DataFrame | None) -> UnitTable:
    """The unit table of ``orbits`` from the detection rows ``parts`` (columns ``PART_USE``).

    ``dates[(season, orbit)]``: the orbit's acquisition dates in the season (its first one
    included); ``thresholds[orbit]``: its decision threshold; ``inventory``/``corridors`` (as
    ``Study.read_inventory``/``read_corridors``) label the units (None: every label -1).
    """
    orbits = list(orbits)
    rows = parts[parts["orbit"].isin(orbits)]
    rows = rows.assign(appeared=appearance_flags(rows, thresholds))
    frames = []
    for season in sorted(rows["season"].unique()):
        by_orbit = {o: sorted(dates.get((season, o), [])) for o in orbits}
        units = elementary_intervals({o: d for o, d in by_orbit.items() if d})
        if not units:
            continue
        srows = rows[rows["season"] == season]
        static = srows.drop_duplicates("path_id").set_index("path_id")[["massif", "slope", "aspect"]]
        u = pd.DataFrame({"unit_start": [_iso(a) for a, _ in units], "unit_end": [_iso(b) for _, b in units]})
        base = static.reset_index().merge(u, how="cross")
        base.insert(0, "season", season)
        if inventory is not None and corridors is not None:
            labels = []
            for a, b in units:
                lm = label_map(inventory, corridors, a, b)[["path_id", "label", "event_id"]]
                labels.append(lm.assign(unit_start=_iso(a), unit_end=_iso(b)))
            lab = pd.concat(labels, ignore_index=True).rename(columns={"label": "unit_label", "event_id": "unit_events"})
            base = base.merge(lab, on=["path_id", "unit_start", "unit_end"], how="left")
            base["unit_label"] = base["unit_label"].fillna(-1).astype(int)
            base["unit_events"] = base["unit_events"].fillna("")
        else:
            base["unit_label"] = -1
            base["unit_events"] = ""
        for o in orbits:
            oc = config.orbit(o)
            cover = [covering_window(by_orbit[o], w) for w in units]
            m = pd.DataFrame({"unit_start": u["unit_start"], "unit_end": u["unit_end"],
                              f"ws_{o}": [_iso(c[0]) if c else None for c in cover],
                              f"we_{o}": [_iso(c[1]) if c else None for c in cover]})
            base = base.merge(m, on=["unit_start", "unit_end"], how="left")
            r = srows[(srows["orbit"] == o) & srows["observed"].astype(bool)][
                ["path_id", "date", "cnn_prob", "valid_fraction", "appeared"]].rename(
                columns={"date": f"we_{o}", "cnn_prob": f"s_{o}", "valid_fraction": f"vf_{o}", "appeared": f"app_{o}"})
            base = base.merge(r, on=["path_id", f"we_{o}"], how="left")
            s = base[f"s_{o}"].to_numpy(dtype=float)
            base[f"det_{o}"] = np.nan_to_num(s, nan=-1.0) >= thresholds[o]
            base[f"app_{o}"] = base[f"app_{o}"].eq(True) & base[f"det_{o}"]
            we = pd.to_datetime(base[f"we_{o}"])
            base[f"width_{o}"] = (we - pd.to_datetime(base[f"ws_{o}"])).dt.days
            base[f"age_{o}"] = (we - pd.to_datetime(base["unit_end"])).dt.days
            base[f"masked_{o}"] = 1.0 - base.pop(f"vf_{o}")
            base[f"cosloc_{o}"] = cos_local_incidence(base["slope"], base["aspect"], oc.look_azimuth_deg,
                                                      oc.incidence_deg)
            base[f"faces_{o}"] = faces_sensor(base["aspect"], oc.look_azimuth_deg)
        frames.append(base)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(frame):
        frame["observed"] = np.isfinite(frame[[f"s_{o}" for o in orbits]].to_numpy(dtype=float)).any(axis=1)
        frame = frame.sort_values(["season", "path_id", "unit_start"], kind="stable").reset_index(drop=True)
    return UnitTable(orbits, frame)
