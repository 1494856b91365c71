"""Fusion methods: a unit score, fused detections with their release window, the threshold rule.

**Unit scores** (``UnitTable`` rows, orbits without an observed window ignored):

- ``max``: the largest orbit probability; ``noisy_or``: ``1 - prod(1 - p_o)``;
- ``or``: 1 when some orbit's window reaches that orbit's own threshold (the detector's, chosen on
  validation: ``det_o`` of the unit table), else 0: the union of the orbits' own decisions. It
  fits no threshold of its own (``OR_THRESHOLD`` only separates 1 from 0), so it keeps every
  orbit's validated operating point: every unit inside a single orbit's positive window is
  positive for ``or``. (At event level a fused window can still be narrowed past an event that
  only one orbit saw, when another orbit's positive window in the same run is the reference:
  ``detections`` below.)
- ``or_appear``: 1 when some orbit saw the deposit *appear* over the unit (``appearance``: that orbit's
  window is positive at its own threshold and its previous observed window of the corridor was
  negative), else 0. Positives that merely persist (the CNN compares each image with a summer
  reference, so debris stays positive after it appeared) neither create detections nor narrow
  windows: the orbits that saw the deposit appear are, for this rule, those whose window over the
  unit is an *appearance* window. No threshold of its own, as ``or``.
- ``stacker``: a logistic regression (``stacker.Stacker``) trained on the validation corridors'
  labelled units, which also sees each orbit's viewing geometry and the age of its window.

**Fused detections** (``detections``): per corridor and season, the units whose score reaches the
method's threshold form runs of consecutive units (a run is also cut between two units whose
reference windows, below, share no day); each run is one fused detection. Its unit of
reference is the run's best unit (highest score, then most orbits detecting it, then their
summed probability). The orbits that *saw the deposit appear* are those whose window over that
unit reaches their own threshold (the detector's); when none does (evidence combined below the
single-orbit thresholds) the orbit with the highest probability. The fused release window is the
intersection of those orbits' windows (never empty: they all hold the reference unit). For
``or_appear`` (``EVIDENCE``) they are the orbits whose window over the reference unit is an
appearance window, so a later orbit's persisting positive does not narrow the window past the event.

**Unit decisions** (``unit_decisions``): a unit is claimed positive when it lies inside one of the
method's detection windows (for a single orbit: inside one of its positive windows), so a wide
window costs precision on the units it wrongly claims.

**Threshold** (``choose_fused_threshold``): the candidate (quantiles of the validation units'
scores) that maximises F1 of the unit decisions on the validation corridors' labelled units; ties
-> the higher threshold. Units are at the study's own prevalence, so no re-weighting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from avalanche_hpc.fuse.appearance import appearance_flags, positive
from avalanche_hpc.fuse.units import EPOCH, NO_DAY, UnitTable, days

VOTE_K = 2  # vote_appear: orbits whose appearance windows must intersect over a unit
# rules on the appearance windows: the least number of orbits that saw the deposit appear over a unit
APPEAR_VOTES = {"or_appear": 1, "vote_appear": VOTE_K}
RULES = ("max", "noisy_or", "or", *APPEAR_VOTES)
METHODS = ("max", "noisy_or", "stacker", "or", *APPEAR_VOTES)
NO_FITTED_THRESHOLD = ("or", *APPEAR_VOTES)  # decisions of the orbits' own (validation) thresholds
# which orbits "saw the deposit appear" at a unit, per method: their own decision (det), or an appearance (app)
EVIDENCE = dict.fromkeys(APPEAR_VOTES, "app")
OR_THRESHOLD = 0.5  # the ``or`` score is 0 or 1: no threshold is chosen for it
DETECTION_COLUMNS = ["season", "path_id", "massif", "start", "end", "width_days", "score", "orbits", "n_orbits"]


def rule_scores(units: UnitTable, rule: str) -> np.ndarray:
    s = units.scores()
    if rule == "max":
        with np.errstate(all="ignore"):
            out = np.nanmax(np.where(np.isfinite(s), s, -np.inf), axis=1)
        return np.where(np.isfinite(out), out, np.nan)
    if rule == "noisy_or":
        q = np.where(np.isfinite(s), 1.0 - np.clip(s, 0.0, 1.0), 1.0)
        out = 1.0 - q.prod(axis=1)
        return np.where(np.isfinite(s).any(axis=1), out, np.nan)
    if rule == "or":
        return np.where(np.isfinite(s).any(axis=1), units.detected().any(axis=1).astype(float), np.nan)
    if rule in APPEAR_VOTES:  # at least k orbits' appearance windows hold the unit (so they intersect there)
        votes = units.appeared().sum(axis=1)
        return np.where(np.isfinite(s).any(axis=1), (votes >= APPEAR_VOTES[rule]).astype(float), np.nan)
    raise ValueError(f"unknown fusion rule {rule!r}: one of {RULES}")


def _reference(units: UnitTable, evidence: str = "det") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per unit: (start, end) in days of the intersection of the windows of the orbits that saw the deposit
    appear there, and those orbits (bool, units x orbits). ``evidence``: ``det`` (an orbit's own decision)
    or ``app`` (an appearance window of the orbit). Cached on the table."""
    key = f"ref_start_{evidence}"
    if key not in units._cache:
        s = units.scores()
        det = units.appeared() if evidence == "app" else units.detected()
        fin = np.isfinite(s)
        best = np.argmax(np.where(fin, s, -np.inf), axis=1)
        chosen = det.copy()
        none = np.flatnonzero(~det.any(axis=1))
        chosen[none, best[none]] = fin[none, best[none]]
        units._cache[f"ref_chosen_{evidence}"] = chosen
        units._cache[key] = np.where(chosen, units.array("ws"), NO_DAY).max(axis=1)
        units._cache[f"ref_end_{evidence}"] = np.where(chosen, units.array("we"), -NO_DAY).min(axis=1)
        units._cache[f"n_det_{evidence}"] = det.sum(axis=1)
        units._cache[f"sum_det_{evidence}"] = np.where(det, s, 0.0).sum(axis=1)
    return units.array(key), units.array(f"ref_end_{evidence}"), units.array(f"ref_chosen_{evidence}")


def detection_refs(units: UnitTable, score: np.ndarray, threshold: float, evidence: str = "det") -> np.ndarray:
    """Index of the reference unit of each fused detection (runs of units scoring >= ``threshold``)."""
    if units.frame.empty:
        return np.zeros(0, dtype=np.int64)
    start, end, _ = _reference(units, evidence)
    pos = np.nan_to_num(score, nan=-np.inf) >= threshold
    group = units.array("group")
    new_group = np.r_[True, group[1:] != group[:-1]]
    # a run also ends where two neighbouring units' reference windows share no day (touching windows of two
    # orbits that each saw a deposit are two avalanches, not one)
    disjoint = np.r_[True, end[:-1] <= start[1:]]
    run_start = pos & (new_group | ~np.r_[False, pos[:-1]] | disjoint)
    run_id = np.cumsum(run_start) - 1
    idx = np.flatnonzero(pos)
    if len(idx) == 0:
        return idx
    order = np.lexsort((-units.array(f"sum_det_{evidence}")[idx], -units.array(f"n_det_{evidence}")[idx], -score[idx],
                        run_id[idx]))
    ref = idx[order]
    return ref[np.r_[True, run_id[ref][1:] != run_id[ref][:-1]]]


def detections(units: UnitTable, score: np.ndarray, threshold: float, evidence: str = "det") -> pd.DataFrame:
    """The fused detections (``DETECTION_COLUMNS``) of a unit score at ``threshold`` (``evidence``: ``_reference``)."""
    ref = detection_refs(units, score, threshold, evidence)
    if len(ref) == 0:
        return pd.DataFrame(columns=DETECTION_COLUMNS)
    start, end, chosen = _reference(units, evidence)
    f = units.frame
    names = np.array(units.orbits)
    out = pd.DataFrame({
        "season": f["season"].to_numpy()[ref], "path_id": f["path_id"].to_numpy()[ref],
        "massif": f["massif"].to_numpy()[ref],
        "start": pd.to_datetime(start[ref] + EPOCH).strftime("%Y-%m-%d"),
        "end": pd.to_datetime(end[ref] + EPOCH).strftime("%Y-%m-%d"),
        "width_days": (end[ref] - start[ref]).astype(int), "score": score[ref],
        "orbits": [";".join(names[chosen[i]]) for i in ref], "n_orbits": chosen[ref].sum(axis=1)})
    return out[DETECTION_COLUMNS]


def orbit_detections(parts: pd.DataFrame, orbit: str, threshold: float, appearance: bool = False) -> pd.DataFrame:
    """A single orbit's detections in the same form: its positive windows (``appearance``: only its appearance
    windows, the first of each run of positives, ``appearance.appeared``)."""
    r = parts[parts["orbit"] == orbit]
    keep = positive(r, {orbit: threshold})
    if appearance:
        keep = appearance_flags(r, {orbit: threshold})
    r = r[keep]
    out = pd.DataFrame({"season": r["season"], "path_id": r["path_id"], "massif": r["massif"],
                        "start": r["prev_date"], "end": r["date"], "score": r["cnn_prob"].astype(float),
                        "orbits": orbit, "n_orbits": 1})
    out["width_days"] = (pd.to_datetime(out["end"]) - pd.to_datetime(out["start"])).dt.days
    return out[DETECTION_COLUMNS].reset_index(drop=True)


def _mark(units: UnitTable, group: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Units of ``group`` lying inside ``(start, end]`` (days), for each window; units are sorted by group and day."""
    n = len(units.frame)
    out = np.zeros(n + 1, dtype=np.int64)
    if n == 0 or len(group) == 0:
        return out[:n].astype(bool)
    k = 10**7
    g = units.array("group")
    lo = np.searchsorted(g * k + units.array("ustart"), group * k + start, side="left")
    hi = np.searchsorted(g * k + units.array("uend"), group * k + end, side="right")
    ok = hi > lo
    np.add.at(out, lo[ok], 1)
    np.add.at(out, hi[ok], -1)
    return np.cumsum(out)[:n] > 0


def unit_decisions(units: UnitTable, dets: pd.DataFrame) -> np.ndarray:
    """Whether each unit lies inside one of ``dets``' windows (same season and corridor)."""
    if units.frame.empty or dets.empty:
        return np.zeros(len(units.frame), dtype=bool)
    key = (dets["season"].astype(str) + "\x00" + dets["path_id"].astype(str)).map(units.group_codes)
    keep = key.notna().to_numpy()
    return _mark(units, key.to_numpy()[keep].astype(np.int64), days(dets["start"])[keep], days(dets["end"])[keep])


def f1_of(decision: np.ndarray, label: np.ndarray) -> float:
    lab = label >= 0
    d, y = decision[lab], label[lab] == 1
    tp = float((d & y).sum())
    denom = 2 * tp + float((d & ~y).sum()) + float((~d & y).sum())
    return 2 * tp / denom if denom else 0.0


def choose_fused_threshold(units: UnitTable, score: np.ndarray, mask: np.ndarray, n_candidates: int = 60,
                           candidates: np.ndarray | None = None, evidence: str = "det") -> dict:
    """The threshold by the module's rule, on the units selected by ``mask`` (the validation corridors).

    ``candidates``: the thresholds to try (default: quantiles of the validation scores); a single
    one (the ``or`` rule's ``OR_THRESHOLD``) only reports its validation F1.
    """
    val = mask & np.isfinite(score)
    label = units.frame["unit_label"].to_numpy()
    if candidates is not None:
        cands = np.asarray(candidates, dtype=float)
    else:
        cands = np.unique(np.quantile(score[val], np.linspace(0.5, 1.0, n_candidates))) if val.any() else np.array([0.5])
    sub = units.subset(mask)
    sub_score = score[mask]
    start, end, _ = _reference(sub, evidence)
    group = sub.array("group") if len(sub.frame) else np.zeros(0, dtype=np.int64)
    best = (-1.0, 0.0)
    for t in cands:
        ref = detection_refs(sub, sub_score, float(t), evidence)
        d = _mark(sub, group[ref], start[ref], end[ref])
        f1 = f1_of(d, label[mask])
        if (f1, t) > best:
            best = (f1, float(t))
    return {"threshold": best[1], "val_f1": best[0], "n_val_units": int((label[mask] >= 0).sum()),
            "n_val_positive": int((label[mask] == 1).sum()), "n_candidates": len(cands)}
