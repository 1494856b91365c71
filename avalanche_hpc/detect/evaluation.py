"""Event-level evaluation of the detections against the synthetic truth (``truth.csv``).

Definitions (Eckerstorfer et al. 2019, as used in this field; /work/shared/research/literature.md):
``POD = TP / (TP + FN)`` (probability of detection, over events) and ``FAR = FP / (TP + FP)``
(false alarm *ratio*, over detections).

Matching, per orbit: a truth event (corridor ``path_id``, true ``date``) is *observed* by an
orbit when that orbit has an observed row of the corridor whose window ``(prev_date, date]``
contains the event's date. An observed event is detected (TP) when that row's decision is
positive, else missed (FN). A positive row is a true detection when its window holds at least
one event of the corridor, else a false alarm (FP); a detection in a later window (old debris
still visible) is therefore a false alarm, as it would double-count the avalanche. ``any
orbit``: an event is detected when one of the orbits that observed it detected it;
detections and false alarms are summed over the orbits.

Groups: every event; per deposit size class (``report.analysis.SIZE_CLASSES``, the paper's
classes); inventoried events (their ``event_id`` is in ``inventory.csv``) and events the
inventory never recorded (what a user discovers). POD is given per group; a false alarm has
no deposit, so FAR is given over all detections (per orbit), together with the *apparent* FAR a
user would compute against the inventory alone (detections without an inventoried event in
their window, i.e. rows not labelled positive).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DETECTORS = ("cnn", "baseline")
ANY_ORBIT = "any orbit"
ALL_EVENTS = "all events"
INVENTORIED, NEVER_RECORDED = "inventoried", "never recorded"
EVALUATION_COLUMNS = ["detector", "orbit", "group", "events", "observed", "detected", "missed", "pod",
                      "detections", "false_alarms", "far", "apparent_far_vs_inventory"]


def read_truth(truth_path: Path, inventory_path: Path | None) -> pd.DataFrame:
    """Truth events with ``inventoried`` (event id in the inventory) and ``size_class`` (index)."""
    from avalanche_hpc.report.analysis import size_class_of

    truth = pd.read_csv(truth_path, dtype={"event_id": str, "path_id": str, "date": str})
    inv_ids: set[str] = set()
    if inventory_path is not None and Path(inventory_path).is_file():
        inv_ids = set(pd.read_csv(inventory_path, dtype={"event_id": str}, usecols=["event_id"])["event_id"])
    truth["inventoried"] = truth["event_id"].isin(inv_ids)
    truth["size_class"] = size_class_of(truth["deposit_area_m2"])
    return truth[["event_id", "path_id", "date", "deposit_area_m2", "inventoried", "size_class"]]


class Evaluator:
    """Accumulates matches part by part (memory: the truth table and one row per observed event and orbit)."""

    def __init__(self, truth: pd.DataFrame):
        self.truth = truth
        self._by_path = truth[["event_id", "path_id", "date"]]
        self.matches: list[pd.DataFrame] = []  # event_id, orbit, cnn, baseline
        self.counts: dict[tuple[str, str], dict[str, int]] = {}  # (orbit, detector) -> detections, fp, not_inventory

    def add(self, part: pd.DataFrame) -> None:
        obs = part.loc[part["observed"].to_numpy(dtype=bool),
                       ["path_id", "orbit", "prev_date", "date", "cnn_detected", "baseline_detected", "label"]]
        obs = obs.reset_index(drop=True).rename(columns={"date": "win_date"})
        obs["row"] = np.arange(len(obs))
        m = obs.merge(self._by_path, on="path_id", how="inner")
        m = m[(m["prev_date"] < m["date"]) & (m["date"] <= m["win_date"])]
        self.matches.append(m[["event_id", "orbit", "cnn_detected", "baseline_detected"]].rename(
            columns={"cnn_detected": "cnn", "baseline_detected": "baseline"}))
        has_event = np.zeros(len(obs), dtype=bool)
        has_event[m["row"].to_numpy()] = True
        for orbit, idx in obs.groupby("orbit").indices.items():
            for det in DETECTORS:
                d = obs[f"{det}_detected"].to_numpy(dtype=bool)[idx]
                c = self.counts.setdefault((str(orbit), det), {"detections": 0, "false_alarms": 0, "not_inventory": 0})
                c["detections"] += int(d.sum())
                c["false_alarms"] += int((d & ~has_event[idx]).sum())
                c["not_inventory"] += int((d & (obs["label"].to_numpy()[idx] != 1)).sum())

    def results(self) -> pd.DataFrame:
        """One row per detector, orbit (and ``any orbit``) and group: ``EVALUATION_COLUMNS``."""
        from avalanche_hpc.report.analysis import SIZE_CLASSES

        matches = (pd.concat(self.matches, ignore_index=True) if self.matches
                   else pd.DataFrame(columns=["event_id", "orbit", "cnn", "baseline"]))
        orbits = sorted({o for o, _ in self.counts})
        per_event = matches.groupby("event_id")[["cnn", "baseline"]].any()
        groups: list[tuple[str, np.ndarray]] = [(ALL_EVENTS, np.ones(len(self.truth), dtype=bool))]
        sizes = self.truth["size_class"].to_numpy()
        groups += [(name, sizes == i) for i, name in enumerate(SIZE_CLASSES) if (sizes == i).any()]
        inv = self.truth["inventoried"].to_numpy(dtype=bool)
        groups += [(INVENTORIED, inv), (NEVER_RECORDED, ~inv)]
        rows = []
        for det in DETECTORS:
            for orbit in [*orbits, ANY_ORBIT]:
                if orbit == ANY_ORBIT:
                    seen = per_event[det]
                    counts = {k: sum(self.counts[(o, det)][k] for o in orbits)
                              for k in ("detections", "false_alarms", "not_inventory")}
                else:
                    seen = matches[matches["orbit"] == orbit].groupby("event_id")[det].any()
                    counts = self.counts[(orbit, det)]
                for group, mask in groups:
                    ids = self.truth.loc[mask, "event_id"]
                    hit = seen.reindex(ids)
                    observed = int(hit.notna().sum())
                    detected = int(hit.fillna(False).astype(bool).sum())
                    row = {"detector": det, "orbit": orbit, "group": group, "events": int(mask.sum()),
                           "observed": observed, "detected": detected, "missed": observed - detected,
                           "pod": detected / observed if observed else np.nan,
                           "detections": np.nan, "false_alarms": np.nan, "far": np.nan,
                           "apparent_far_vs_inventory": np.nan}
                    if group == ALL_EVENTS:
                        n = counts["detections"]
                        row.update(detections=n, false_alarms=counts["false_alarms"],
                                   far=counts["false_alarms"] / n if n else np.nan,
                                   apparent_far_vs_inventory=counts["not_inventory"] / n if n else np.nan)
                    rows.append(row)
        return pd.DataFrame(rows, columns=EVALUATION_COLUMNS)

