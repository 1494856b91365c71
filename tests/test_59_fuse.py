"""Orbit fusion: window intersection, fused detections and windows, the stacker's data, the fused layer."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from avalanche_hpc.fuse import fuse_parts
from avalanche_hpc.fuse.appearance import appearance_flags
from avalanche_hpc.fuse.evaluation import event_scores, geometric_floor, unit_scores
from avalanche_hpc.fuse.geometry import cos_local_incidence, faces_sensor
from avalanche_hpc.fuse.methods import (
    EVIDENCE,
    METHODS,
    OR_THRESHOLD,
    detections,
    orbit_detections,
    rule_scores,
    unit_decisions,
)
from avalanche_hpc.fuse.selection import select_product
from avalanche_hpc.fuse.units import PART_USE, build_units
from avalanche_hpc.fuse.windows import (
    covering_window,
    elementary_intervals,
    intersect,
    orbit_offset_days,
    time_weighted_unit_widths,
)
from avalanche_hpc.study import OrbitConfig, SeasonConfig, StudyConfig

D = dt.date
S = "2017-2018"


def _config(orbits=("D", "A")) -> StudyConfig:
    oc = [OrbitConfig(id=o, direction="descending" if o.startswith("D") else "ascending", relative_orbit=1 + i)
          for i, o in enumerate(orbits)]
    return StudyConfig(name="t", crs_epsg=32632, pixel_size_m=20, massifs=["M"], orbits=oc,
                       seasons=[SeasonConfig(id=S, start=D(2017, 11, 1), end=D(2018, 5, 1),
                                             summer={o: [D(2017, 8, 1)] for o in orbits})])


def _parts(dates: dict[str, list[dt.date]], scores: dict[tuple[str, str, dt.date], float],
           paths=("P1",), unobserved=()) -> pd.DataFrame:
    """Part rows of every (orbit, window, corridor): score 0.1 unless given; ``unobserved``: (orbit, path, date)."""
    rows = []
    for o, ds in dates.items():
        for a, b in itertools.pairwise(ds):
            for p in paths:
                obs = (o, p, b) not in unobserved
                rows.append({"path_id": p, "massif": "M", "season": S, "orbit": o, "prev_date": a.isoformat(),
                             "date": b.isoformat(), "observed": obs, "valid_fraction": 0.9 if obs else 0.1,
                             "cnn_prob": scores.get((o, p, b), 0.1) if obs else np.nan, "label": -1,
                             "event_id": "", "slope": 30.0, "aspect": 90.0})
    return pd.DataFrame(rows, columns=PART_USE)


def _fuse(dates, scores, rule="max", threshold=0.5, **kw):
    parts = _parts(dates, scores, **kw)
    units = build_units(parts, _config(tuple(dates)), {(S, o): d for o, d in dates.items()}, list(dates),
                        {o: threshold for o in dates}, None, None)
    return units, detections(units, rule_scores(units, rule), threshold, EVIDENCE.get(rule, "det"))


# -- the four-orbit preset ----------------------------------------------------------------------------
def test_four_orbit_preset_geometry_dates_and_pass_times(tmp_path):
    from avalanche_hpc.study import Study
    from avalanche_hpc.synth import PRESETS, generate_study

    root = generate_study(tmp_path / "t4", "tiny4", seed=3)
    cfg = Study.load(root).config
    assert [(o.id, o.direction, o.relative_orbit) for o in cfg.orbits] == [
        ("D139", "descending", 139), ("D066", "descending", 66), ("A161", "ascending", 161), ("A088", "ascending", 88)]
    assert len({o.incidence_deg for o in cfg.orbits}) == 4  # each its own incidence
    assert {o.id: round(o.look_azimuth_deg) for o in cfg.orbits} == {"D139": 280, "D066": 280, "A161": 80, "A088": 80}
    preset = PRESETS["tiny4"]
    assert [o.dawn for o in preset.orbits] == [True, True, False, False]
    # Sentinel-1 cycle at 6 days: D139 day 0, D066 and A161 day 1, A088 day 2
    first = {o.id: cfg.seasons[0].dates[o.id][0] for o in cfg.orbits}
    assert [(first[o] - first["D139"]).days for o in ("D066", "A161", "A088")] == [1, 1, 2]
    # D066 (dawn) and A161 (dusk) image the same days: the dawn pass sees the snow refrozen (less wet, more crust)
    cond = pd.read_csv(root / "truth_conditions.csv")
    w = cond[cond["kind"] == "winter"].pivot(index="date", columns="orbit", values=["wet_fraction", "crust_fraction"])
    both = w.dropna(subset=[("wet_fraction", "D066"), ("wet_fraction", "A161")])
    assert len(both) == preset.n_dates
    assert (both[("wet_fraction", "D066")] <= both[("wet_fraction", "A161")]).all()
    assert (both[("crust_fraction", "D066")] >= both[("crust_fraction", "A161")]).all()
    truth = pd.read_csv(root / "truth.csv")
    assert {f"visibility_{o.id}" for o in cfg.orbits} <= set(truth.columns)


# -- windows ------------------------------------------------------------------------------------------
def test_window_intersection_edge_cases():
    assert intersect([(D(2018, 1, 1), D(2018, 1, 7)), (D(2018, 1, 3), D(2018, 1, 9))]) == (D(2018, 1, 3), D(2018, 1, 7))
    # touching windows share no day: (1, 7] and (7, 13]
    assert intersect([(D(2018, 1, 1), D(2018, 1, 7)), (D(2018, 1, 7), D(2018, 1, 13))]) is None
    assert intersect([(D(2018, 1, 1), D(2018, 1, 7))]) == (D(2018, 1, 1), D(2018, 1, 7))  # one orbit only
    assert intersect([]) is None
    units = elementary_intervals({"D": [D(2018, 1, 1), D(2018, 1, 7)], "A": [D(2018, 1, 3), D(2018, 1, 9)]})
    assert units == [(D(2018, 1, 1), D(2018, 1, 3)), (D(2018, 1, 3), D(2018, 1, 7)), (D(2018, 1, 7), D(2018, 1, 9))]
    # an orbit with a gap (its 2018-01-07 acquisition missing): one wide window covers both units
    gap = [D(2018, 1, 1), D(2018, 1, 13)]
    assert covering_window(gap, (D(2018, 1, 3), D(2018, 1, 7))) == (D(2018, 1, 1), D(2018, 1, 13))
    assert covering_window([D(2018, 1, 3), D(2018, 1, 9)], (D(2018, 1, 1), D(2018, 1, 3))) is None  # before it


def test_fused_window_is_the_intersection_of_the_orbits_that_saw_it():
    dates = {"D": [D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 13)], "A": [D(2018, 1, 3), D(2018, 1, 9), D(2018, 1, 15)]}
    # a deposit on day 5: D's (1, 7] and A's (3, 9] both see it -> one detection, window (3, 7]
    units, dets = _fuse(dates, {("D", "P1", D(2018, 1, 7)): 0.9, ("A", "P1", D(2018, 1, 9)): 0.8})
    assert len(dets) == 1
    d = dets.iloc[0]
    assert (d["start"], d["end"], d["width_days"], d["orbits"], d["n_orbits"]) == ("2018-01-03", "2018-01-07", 4,
                                                                                  "D;A", 2)
    assert d["score"] == pytest.approx(0.9)
    # the max rule scores every unit of either window high, yet the units claimed are the intersection's
    claimed = units.frame.loc[unit_decisions(units, dets), ["unit_start", "unit_end"]].to_numpy().tolist()
    assert claimed == [["2018-01-03", "2018-01-07"]]
    # one orbit only (A sees nothing): D's whole window
    _, dets = _fuse(dates, {("D", "P1", D(2018, 1, 7)): 0.9})
    assert dets[["start", "end", "orbits"]].to_numpy().tolist() == [["2018-01-01", "2018-01-07", "D"]]
    # A did not observe its window (layover, no data): the same, D alone
    _, dets = _fuse(dates, {("D", "P1", D(2018, 1, 7)): 0.9, ("A", "P1", D(2018, 1, 9)): 0.8},
                    unobserved={("A", "P1", D(2018, 1, 9))})
    assert dets[["start", "end", "orbits"]].to_numpy().tolist() == [["2018-01-01", "2018-01-07", "D"]]


def test_touching_windows_are_two_detections_and_gaps_widen_windows():
    # A's windows (1, 7] and (7, 13] touch D's (7, 13]: two deposits, one in each
    dates = {"D": [D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 13)], "A": [D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 13)]}
    _, dets = _fuse(dates, {("D", "P1", D(2018, 1, 7)): 0.9, ("A", "P1", D(2018, 1, 13)): 0.8})
    assert dets[["start", "end", "orbits"]].to_numpy().tolist() == [["2018-01-01", "2018-01-07", "D"],
                                                                      ["2018-01-07", "2018-01-13", "A"]]
    # an orbit with a gap: A misses 2018-01-09, its window (3, 15] still narrows D's (1, 7] to (3, 7]
    dates = {"D": [D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 13)], "A": [D(2018, 1, 3), D(2018, 1, 15)]}
    _, dets = _fuse(dates, {("D", "P1", D(2018, 1, 7)): 0.9, ("A", "P1", D(2018, 1, 15)): 0.7})
    assert dets[["start", "end", "orbits"]].to_numpy().tolist() == [["2018-01-03", "2018-01-07", "D;A"]]
    # noisy-OR combines two sub-threshold orbits into a detection; the window is then the best orbit's
    dates = {"D": [D(2018, 1, 1), D(2018, 1, 7)], "A": [D(2018, 1, 3), D(2018, 1, 9)]}
    _units, dets = _fuse(dates, {("D", "P1", D(2018, 1, 7)): 0.4, ("A", "P1", D(2018, 1, 9)): 0.35}, rule="noisy_or")
    assert dets[["start", "end", "orbits"]].to_numpy().tolist() == [["2018-01-01", "2018-01-07", "D"]]
    assert dets["score"].iloc[0] == pytest.approx(1 - 0.6 * 0.65)
    _, none = _fuse(dates, {("D", "P1", D(2018, 1, 7)): 0.4, ("A", "P1", D(2018, 1, 9)): 0.35}, rule="max")
    assert none.empty


def test_evaluation_counts_on_a_hand_made_case():
    dates = {"D": [D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 13)], "A": [D(2018, 1, 3), D(2018, 1, 9), D(2018, 1, 15)]}
    scores = {("D", "P1", D(2018, 1, 7)): 0.9, ("A", "P1", D(2018, 1, 9)): 0.8,  # E1 on day 5 (both)
              ("D", "P2", D(2018, 1, 13)): 0.9}  # P2: a false alarm of D
    parts = _parts(dates, scores, paths=("P1", "P2"))
    inv = pd.DataFrame({"event_id": ["E1"], "path_id": ["P1"], "date_min": [D(2018, 1, 5)], "date_max": [D(2018, 1, 5)],
                        "deposit_area_m2": [1000.0]})
    corridors = pd.DataFrame({"path_id": ["P1", "P2"], "monitored": [True, True]})
    units = build_units(parts, _config(), {(S, o): d for o, d in dates.items()}, ["D", "A"], {"D": 0.5, "A": 0.5},
                        inv, corridors)
    lab = units.frame.set_index(["path_id", "unit_start"])["unit_label"]
    assert lab[("P1", "2018-01-03")] == 1 and lab[("P1", "2018-01-01")] == 0 and lab[("P2", "2018-01-03")] == 0
    fused = detections(units, rule_scores(units, "max"), 0.5)
    single = orbit_detections(parts, "D", 0.5)
    truth = pd.DataFrame({"event_id": ["E1"], "path_id": ["P1"], "date": ["2018-01-05"], "aspect": [90.0],
                          "deposit_area_m2": [1000.0]})
    mask = np.ones(len(units.frame), dtype=bool)
    for dets, width, precision in ((fused, 4, 1 / 3), (single, 6, 1 / 4)):
        e = event_scores(truth, truth, dets)
        assert (e["events"], e["detected"], e["detections"], e["false_alarms"]) == (1, 1, 2, 1)
        assert e["pod_east"] == 1.0 and e["pod_E"] == 1.0 and e["width_median"] == width
        u = unit_scores(units, dets, mask)
        assert u["recall"] == 1.0 and u["precision"] == pytest.approx(precision)
    # fused: (3, 7] + P2s (7, 9], (9, 13]; D alone: (1, 3] (label 0), (3, 7] + the same two of P2


def test_or_rule_keeps_every_orbit_decision_and_intersects_the_positive_windows():
    dates = {"D": [D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 13)], "A": [D(2018, 1, 3), D(2018, 1, 9), D(2018, 1, 15)]}
    # P1: only D sees E1 (day 5; A's (3, 9] scores below A's threshold); P2: only A sees E2 (day 8);
    # P3: both see E3 (day 6); P4: a false alarm of D. Orbit thresholds 0.5 (the detector's, from validation)
    scores = {("D", "P1", D(2018, 1, 7)): 0.6, ("A", "P1", D(2018, 1, 9)): 0.45,
              ("A", "P2", D(2018, 1, 9)): 0.55,
              ("D", "P3", D(2018, 1, 7)): 0.7, ("A", "P3", D(2018, 1, 9)): 0.52,
              ("D", "P4", D(2018, 1, 13)): 0.8}
    paths = ("P1", "P2", "P3", "P4")
    parts = _parts(dates, scores, paths=paths)
    units = build_units(parts, _config(), {(S, o): d for o, d in dates.items()}, ["D", "A"], {"D": 0.5, "A": 0.5},
                        None, None)
    score = rule_scores(units, "or")
    assert set(np.unique(score[np.isfinite(score)])) == {0.0, 1.0}  # a decision, no score to threshold
    # a unit is positive exactly where some orbit's window reaches that orbit's own threshold
    assert (score == 1.0).tolist() == units.detected().any(axis=1).tolist()
    dets = detections(units, score, OR_THRESHOLD)
    got = dets.set_index("path_id")[["start", "end", "orbits"]].apply(tuple, axis=1).to_dict()
    assert got == {"P1": ("2018-01-01", "2018-01-07", "D"), "P2": ("2018-01-03", "2018-01-09", "A"),
                   "P3": ("2018-01-03", "2018-01-07", "D;A"), "P4": ("2018-01-07", "2018-01-13", "D")}
    truth = pd.DataFrame({"event_id": ["E1", "E2", "E3"], "path_id": ["P1", "P2", "P3"],
                          "date": ["2018-01-05", "2018-01-08", "2018-01-06"], "aspect": [90.0, 270.0, 90.0],
                          "deposit_area_m2": [1000.0] * 3})
    pod = {o: event_scores(truth, truth, orbit_detections(parts, o, 0.5))["pod"] for o in ("D", "A")}
    fused = event_scores(truth, truth, dets)
    assert fused["pod"] == 1.0 and pod == {"D": pytest.approx(2 / 3), "A": pytest.approx(2 / 3)}
    assert all(fused["pod"] >= v for v in pod.values())
    # the max rule at a threshold fitted high (as on few validation positives) loses the weak orbits' events
    assert event_scores(truth, truth, detections(units, rule_scores(units, "max"), 0.65))["pod"] < fused["pod"]
    # local: another corridor's rows (e.g. test rows) do not move a corridor's decision
    other = _parts(dates, {**scores, ("A", "P4", D(2018, 1, 9)): 0.99}, paths=paths)
    units2 = build_units(other, _config(), {(S, o): d for o, d in dates.items()}, ["D", "A"], {"D": 0.5, "A": 0.5},
                         None, None)
    keep = units.frame["path_id"].isin(["P1", "P2", "P3"]).to_numpy()
    assert rule_scores(units2, "or")[keep].tolist() == score[keep].tolist()
    # the limit of the guarantee: a run's window is that of its best unit, so another orbit's positive window
    # narrows it; an event on day 2 seen by D's (1, 7] alone is then missed when A's (3, 9] is (falsely) positive
    day2 = pd.DataFrame({"event_id": ["E"], "path_id": ["P3"], "date": ["2018-01-02"], "aspect": [90.0],
                         "deposit_area_m2": [1000.0]})
    assert event_scores(day2, day2, orbit_detections(parts, "D", 0.5))["pod"] == 1.0
    assert event_scores(day2, day2, dets)["pod"] == 0.0


def _appear(dates, scores, **kw):
    parts = _parts(dates, scores, **kw)
    flags = appearance_flags(parts, {o: 0.5 for o in dates})
    return [(r.orbit, r.date) for r, f in zip(parts.itertuples(), flags, strict=True) if f]


def test_appearance_is_the_first_window_of_a_run_of_positives():
    days = [D(2018, 1, 1 + 6 * k) for k in range(6)]  # windows ending 7, 13, 19, 25, 31
    dates = {"D": days}
    # a positive run of 3 windows (7, 13, 19) -> one appearance, at the first; a new run (31) -> a second one
    run = {("D", "P1", d): 0.9 for d in (days[1], days[2], days[3])} | {("D", "P1", days[5]): 0.8}
    assert _appear(dates, run) == [("D", "2018-01-07"), ("D", "2018-01-31")]
    # rows in any order: the same
    parts = _parts(dates, run).sample(frac=1.0, random_state=1)
    flags = appearance_flags(parts, {"D": 0.5})
    assert sorted(parts.loc[flags, "date"]) == ["2018-01-07", "2018-01-31"]
    # an unobserved (NaN) window inside the run is skipped when looking back: still one appearance
    assert _appear(dates, run, unobserved={("D", "P1", days[2])}) == [("D", "2018-01-07"), ("D", "2018-01-31")]
    # ... also when the negative window before a positive is unobserved: the look-back reaches the positive before
    gap = {("D", "P1", days[1]): 0.9, ("D", "P1", days[3]): 0.9}
    assert _appear(dates, gap, unobserved={("D", "P1", days[2])}) == [("D", "2018-01-07")]
    # the first window of the season positive: an appearance; per corridor and per orbit
    first = {("D", "P1", days[1]): 0.9, ("D", "P2", days[2]): 0.9, ("D", "P2", days[3]): 0.9}
    assert _appear(dates, first, paths=("P1", "P2")) == [("D", "2018-01-07"), ("D", "2018-01-13")]
    parts = _parts(dates, first, paths=("P1", "P2"))
    single = orbit_detections(parts, "D", 0.5, appearance=True)
    assert single[["path_id", "start", "end"]].to_numpy().tolist() == [["P1", "2018-01-01", "2018-01-07"],
                                                                       ["P2", "2018-01-07", "2018-01-13"]]
    assert len(orbit_detections(parts, "D", 0.5)) == 3  # raw: every positive window


def test_or_appear_intersects_appearance_windows_and_ignores_persisting_positives():
    dates = {"D": [D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 13), D(2018, 1, 19)],
             "A": [D(2018, 1, 3), D(2018, 1, 9), D(2018, 1, 15), D(2018, 1, 21)]}
    # two orbits whose appearance windows overlap: D (1, 7], A (3, 9]; both stay positive after -> one detection,
    # window (3, 7]; the persisting windows create no detection
    persist = {("D", "P1", D(2018, 1, 7)): 0.9, ("D", "P1", D(2018, 1, 13)): 0.9, ("D", "P1", D(2018, 1, 19)): 0.9,
               ("A", "P1", D(2018, 1, 9)): 0.8, ("A", "P1", D(2018, 1, 15)): 0.8, ("A", "P1", D(2018, 1, 21)): 0.8}
    units, dets = _fuse(dates, persist, rule="or_appear")
    assert dets[["start", "end", "orbits"]].to_numpy().tolist() == [["2018-01-03", "2018-01-07", "D;A"]]
    # appearance windows: D's (1, 7] over units (1, 3], (3, 7]; A's (3, 9] over (3, 7], (7, 9]; nothing after day 9
    assert units.appeared().tolist() == [[True, False], [True, True], [False, True]] + [[False, False]] * 4
    # the plain or rule: the persisting positives cut into touching intersections, one detection each (4 false alarms)
    _, raw = _fuse(dates, persist, rule="or")
    assert len(raw) == 5 and raw["width_days"].tolist() == [4, 2, 4, 2, 4]
    # a persisting positive of orbit B (here A: positive from (3, 9] on, its deposit of day 4-9) after orbit D's
    # appearance (D saw a new deposit appear in (13, 19]) does not narrow D's window: (13, 19], D alone
    late = {("A", "P1", D(2018, 1, 9)): 0.8, ("A", "P1", D(2018, 1, 15)): 0.8, ("A", "P1", D(2018, 1, 21)): 0.8,
            ("D", "P1", D(2018, 1, 19)): 0.9}
    _, dets = _fuse(dates, late, rule="or_appear")
    assert dets[["start", "end", "orbits"]].to_numpy().tolist() == [["2018-01-03", "2018-01-09", "A"],
                                                                      ["2018-01-13", "2018-01-19", "D"]]
    # the plain or rule: A's persisting (9, 15] and (15, 21] narrow D's window into two pieces named "D;A"
    _, raw = _fuse(dates, late, rule="or")
    got = raw[["start", "end", "orbits"]].to_numpy().tolist()
    assert ["2018-01-13", "2018-01-15", "D;A"] in got and ["2018-01-15", "2018-01-19", "D;A"] in got
    assert all(w < 6 for w in raw.loc[raw["orbits"].str.contains("D"), "width_days"])
    # an unobserved window of A inside its run: still one appearance, so still one detection
    _, dets = _fuse(dates, persist, rule="or_appear", unobserved={("A", "P1", D(2018, 1, 15))})
    assert dets[["start", "end"]].to_numpy().tolist() == [["2018-01-03", "2018-01-07"]]


def test_vote_appear_needs_two_orbits_whose_appearance_windows_intersect():
    dates = {"D": [D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 13), D(2018, 1, 19)],
             "A": [D(2018, 1, 3), D(2018, 1, 9), D(2018, 1, 15), D(2018, 1, 21)]}
    # two orbits agree (D (1, 7], A (3, 9]; both persist after): one detection, the intersection (3, 7]
    persist = {("D", "P1", D(2018, 1, 7)): 0.9, ("D", "P1", D(2018, 1, 13)): 0.9,
               ("A", "P1", D(2018, 1, 9)): 0.8, ("A", "P1", D(2018, 1, 15)): 0.8}
    units, dets = _fuse(dates, persist, rule="vote_appear")
    assert dets[["start", "end", "orbits", "n_orbits"]].to_numpy().tolist() == [["2018-01-03", "2018-01-07", "D;A", 2]]
    assert rule_scores(units, "vote_appear").tolist() == [0.0, 1.0] + [0.0] * 5  # only the unit both windows hold
    # one orbit alone saw it appear: nothing (or_appear: D's window)
    alone = {("D", "P1", D(2018, 1, 7)): 0.9, ("A", "P1", D(2018, 1, 15)): 0.8}  # A's appearance (9, 15]: disjoint
    assert _fuse(dates, alone, rule="vote_appear")[1].empty
    assert len(_fuse(dates, alone, rule="or_appear")[1]) == 2
    # ... nor does a persisting positive vote: A positive (3, 9] onwards, D appears (13, 19] -> no agreement there
    late = {("A", "P1", D(2018, 1, 9)): 0.8, ("A", "P1", D(2018, 1, 15)): 0.8, ("A", "P1", D(2018, 1, 21)): 0.8,
            ("D", "P1", D(2018, 1, 19)): 0.9}
    assert _fuse(dates, late, rule="vote_appear")[1].empty
    # three orbits, only two of whose appearance windows intersect: B appears in (11, 17], disjoint from D's and A's
    three = {**dates, "B": [D(2018, 1, 5), D(2018, 1, 11), D(2018, 1, 17)]}
    units, dets = _fuse(three, {**persist, ("B", "P1", D(2018, 1, 17)): 0.7}, rule="vote_appear")
    assert dets[["start", "end", "orbits"]].to_numpy().tolist() == [["2018-01-03", "2018-01-07", "D;A"]]
    # ... and when all three intersect (B appears in (5, 11]): the three-way intersection (5, 7]
    _, dets = _fuse(three, {**persist, ("B", "P1", D(2018, 1, 11)): 0.7}, rule="vote_appear")
    assert dets[["start", "end", "orbits", "n_orbits"]].to_numpy().tolist() == [["2018-01-05", "2018-01-07", "D;A;B", 3]]


def test_product_selection_rule():
    orbits = {"D": {"pod": 0.40, "far": 0.70}, "A": {"pod": 0.30, "far": 0.60}, "X": {"pod": 0.0, "far": None}}
    # qualifying (FAR <= 0.60, the lowest single-orbit FAR): max and vote_appear -> the higher POD
    methods = {"max": {"pod": 0.30, "far": 0.55}, "or_appear": {"pod": 0.50, "far": 0.80},
               "vote_appear": {"pod": 0.35, "far": 0.60}, "stacker": {"pod": 0.10, "far": 0.20}}
    got = select_product(methods, orbits, METHODS)
    assert (got["method"], got["far_bound"], got["far_bound_orbit"]) == ("vote_appear", 0.60, "A")
    assert set(got["qualifying"]) == {"max", "vote_appear", "stacker"}
    # POD tie -> the lower FAR
    methods["max"] = {"pod": 0.35, "far": 0.50}
    assert select_product(methods, orbits, METHODS)["method"] == "max"
    # none qualifies -> the lowest FAR (tie -> the higher POD); a method without detections (FAR None) never wins
    none = {"max": {"pod": 0.2, "far": 0.65}, "or": {"pod": 0.3, "far": 0.65}, "noisy_or": {"pod": 0.0, "far": None},
            "or_appear": {"pod": 0.5, "far": 0.9}}
    got = select_product(none, orbits, METHODS)
    assert got["method"] == "or" and got["qualifying"] == [] and "lowest validation FAR" in got["reason"]


def test_geometric_floor_of_the_window():
    dates = {"D": [D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 13)], "A": [D(2018, 1, 2), D(2018, 1, 8), D(2018, 1, 14)]}
    units, _ = _fuse(dates, {}, paths=("P1", "P2"))  # units (1,2], (2,7], (7,8], (8,13], (13,14]
    events = pd.DataFrame({"event_id": ["E1", "E2", "E3"], "path_id": ["P1", "P2", "P1"],
                           "date": ["2018-01-02", "2018-01-05", "2018-01-10"]})
    floor = geometric_floor(events, units)
    assert (floor["events"], floor["median"], floor["events_per_width_days"]) == (3, 5.0, {"1": 1, "5": 2})
    # Sentinel-1: 175 relative orbits in 12 days; the paper zone's four orbits, time-weighted unit widths
    off = [orbit_offset_days(n, 66) for n in (66, 139, 88, 161)]
    assert off == pytest.approx([0.0, 73 * 12 / 175, 22 * 12 / 175, 95 * 12 / 175])
    q1, med, q3 = time_weighted_unit_widths(off, 6.0)   # S1A + S1B: gaps 0.51, 0.99, 0.99, 3.50 days
    assert (q1, med, q3) == pytest.approx((0.994, 3.497, 3.497), abs=1e-3)
    assert time_weighted_unit_widths(off, 12.0) == pytest.approx([1.509, 3.497, 5.486], abs=1e-3)  # S1A only
    assert time_weighted_unit_widths([0, 1, 1, 2], 6.0) == [1, 4, 4]  # the demo4 dates: 1 + 1 + 4 days


def test_geometry_faces_and_local_incidence():
    # descending orbit looking west (280 deg): an east-facing slope faces the sensor, a west-facing one does not
    assert faces_sensor(90.0, 280.0) and not faces_sensor(270.0, 280.0)
    assert faces_sensor(270.0, 80.0)
    flat = cos_local_incidence(0.0, 90.0, 280.0, 39.0)
    assert flat == pytest.approx(np.cos(np.radians(39.0)))
    assert cos_local_incidence(30.0, 90.0, 280.0, 39.0) > flat > cos_local_incidence(30.0, 270.0, 280.0, 39.0)


# -- on the detected tiny study ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fused_study(detect_study):
    from avalanche_hpc.detect import DetectSettings, detect_all
    from tests.fixtures_detect import EXPERIMENT

    detect_all(detect_study, EXPERIMENT, DetectSettings(precision="fp32"), progress=False)
    return detect_study


def _parts_of(study, experiment):
    from avalanche_hpc.detect.scoring import read_part

    paths = study.detection_paths(experiment)
    return pd.concat([read_part(p)[PART_USE] for p in sorted(paths.parts_dir.rglob("*.csv"))], ignore_index=True)


def test_fused_layer_in_the_geopackage(fused_study):
    from avalanche_hpc.fuse.fusion import FUSED_COLUMNS
    from avalanche_hpc.fuse.product import FUSED_LAYER
    from avalanche_hpc.preprocess.labels import label_map
    from avalanche_hpc.study import Study
    from tests.fixtures_detect import EXPERIMENT

    study = Study.load(fused_study)
    paths = study.detection_paths(EXPERIMENT)
    layer = gpd.read_file(paths.geopackage, layer=FUSED_LAYER)
    assert list(layer.columns) == [*FUSED_COLUMNS, "geometry"] and layer.crs.to_epsg() == study.config.crs_epsg
    model = json.loads(paths.fusion_model.read_text())
    assert set(layer["method"]) <= set(METHODS) and len(layer) > 0
    assert (layer["product"] == (layer["method"] == model["product_method"])).all()
    corridors = study.read_corridors().set_index("path_id")
    assert all(g.equals(corridors.geometry[p]) for g, p in zip(layer.geometry[:20], layer["path_id"][:20], strict=True))
    # every fused window lies inside the windows of the orbits named, and its label follows the per-orbit rule
    parts = _parts_of(study, EXPERIMENT)
    inv = study.read_inventory()
    for _, r in layer.head(30).iterrows():
        start, end = r["start"].date(), r["end"].date()
        assert (end - start).days == r["width_days"] > 0
        for o in r["orbits"].split(";"):
            rows = parts[(parts["orbit"] == o) & (parts["path_id"] == r["path_id"])]
            inside = rows[(rows["prev_date"] <= start.isoformat()) & (rows["date"] >= end.isoformat())]
            assert len(inside) == 1
        lab = label_map(inv, corridors.reset_index(), start, end).set_index("path_id").loc[r["path_id"], "label"]
        assert (pd.isna(r["label"]) and lab == -1) or r["label"] == lab
    # the evaluation: every orbit alone and the fused methods, numbers in range
    ev = pd.read_csv(paths.fusion_evaluation)
    assert set(ev.loc[ev["kind"] == "orbit", "orbits"]) == {o.id for o in study.config.orbits}
    assert {"max", "noisy_or", "or", "or_appear", "vote_appear"} <= set(ev.loc[ev["kind"] == "fused", "method"])
    # each orbit twice: raw (the detect product) and with appearance dating, which keeps a subset of its windows
    single = ev[ev["kind"] == "orbit"]
    assert sorted(single["method"].value_counts().to_dict().items()) == [("appearance", len(study.config.orbits)),
                                                                         ("single orbit", len(study.config.orbits))]
    by = single.set_index(["orbits", "method"])["detections"]
    assert all(by[(o.id, "appearance")] <= by[(o.id, "single orbit")] for o in study.config.orbits)
    floor = model["geometric_floor"]
    assert floor["events"] == sum(floor["events_per_width_days"].values()) > 0 and floor["q1"] <= floor["median"]
    for c in ("accuracy", "recall", "pod", "far"):
        v = ev[c].dropna()
        assert ((v >= 0) & (v <= 1)).all(), c
    prov = json.loads(paths.provenance.read_text())
    assert prov["fusion"]["product_method"] == model["product_method"]


def test_stacker_and_thresholds_never_see_test_rows(fused_study):
    from avalanche_hpc.fuse.fusion import corridor_sets
    from avalanche_hpc.study import Study
    from tests.fixtures_detect import EXPERIMENT

    study = Study.load(fused_study)
    paths = study.detection_paths(EXPERIMENT)
    record = json.loads(paths.model.read_text())
    split_csv = study.runs_dir(EXPERIMENT) / record["split"] / "split.csv"
    parts = _parts_of(study, EXPERIMENT)
    base = fuse_parts(study, parts, record, split_csv)
    train, val = corridor_sets(split_csv)
    evaluation_rows = ~parts["path_id"].isin(train | val)
    assert evaluation_rows.any()
    perturbed = parts.copy()
    rng = np.random.default_rng(0)
    perturbed.loc[evaluation_rows, "cnn_prob"] = rng.random(int(evaluation_rows.sum()))
    again = fuse_parts(study, perturbed, record, split_csv)
    cfg, cfg2 = base.model["configurations"], again.model["configurations"]
    assert cfg == cfg2  # thresholds, stacker coefficients (when fitted) and validation F1: unchanged
    # the product is chosen on the validation corridors only: its figures and the choice do not move
    sel = base.model["product_selection"]
    assert sel == again.model["product_selection"] and sel["validation_events"] > 0
    assert base.model["product_method"] == again.model["product_method"] == sel["method"]
    assert set(sel["methods"]) == {m for m in METHODS if "skipped" not in cfg["all orbits"]["methods"][m]}
    assert set(sel["single_orbits"]) == {o.id for o in study.config.orbits}
    for name, c in cfg.items():  # the or rules fit no threshold: the orbits' own (validation) thresholds
        for m in ("or", "or_appear", "vote_appear"):
            assert c["methods"][m]["threshold"]["threshold"] == 0.5, (name, m)
    # ... while what is evaluated on those corridors did change
    assert not base.evaluation[["pod", "far", "f1"]].equals(again.evaluation[["pod", "far", "f1"]])
    # perturbing validation rows does change the fit
    val_rows = parts["path_id"].isin(val)
    perturbed = parts.copy()
    perturbed.loc[val_rows, "cnn_prob"] = rng.random(int(val_rows.sum()))
    moved = fuse_parts(study, perturbed, record, split_csv).model
    assert moved["configurations"] != cfg and moved["product_selection"]["methods"] != sel["methods"]


def test_report_section_orbit_fusion(fused_study):
    from avalanche_hpc.report.collect import Table
    from avalanche_hpc.report.fusion import fusion_section
    from avalanche_hpc.study import Study
    from tests.fixtures_detect import EXPERIMENT

    study = Study.load(fused_study)
    section, data = fusion_section(study, EXPERIMENT)
    assert section is not None and section.title == "Orbit fusion"
    tables = {t.id: t for t in section.items if isinstance(t, Table)}
    methods = tables["fusion_methods"]
    assert "POD east-facing" in methods.columns and "Window median (days)" in methods.columns
    assert len(methods.rows) == len(pd.read_csv(study.detection_paths(EXPERIMENT).fusion_evaluation))
    assert tables["fusion_octants"].columns[1:] == ["N", "NE", "E", "SE", "S", "SW", "W", "NW"]
    model = json.loads(study.detection_paths(EXPERIMENT).fusion_model.read_text())
    assert data["product_method"] == model["product_selection"]["method"] and data["evaluation"]
    from avalanche_hpc.report.fusion import METHOD_NAMES

    chosen = [r[0] for r in tables["fusion_selection"].rows if r[-1]]
    assert chosen == [f"all orbits: {METHOD_NAMES[model['product_method']]}"]
    assert "(appearance)" in " ".join(r[0] for r in methods.rows)
    assert any(isinstance(i, str) and i.startswith("Geometric floor of the window") for i in section.items)


def test_a_new_fusion_version_republishes(fused_study, monkeypatch):
    """The fused layer and files are redone when the fusion code changes (FUSION_VERSION), not kept stale."""
    from avalanche_hpc.detect import DetectSettings
    from avalanche_hpc.detect import publish as P
    from tests.fixtures_detect import EXPERIMENT

    settings = DetectSettings(precision="fp32")
    assert P.publication_is_current(fused_study, EXPERIMENT, settings)
    monkeypatch.setattr(P, "FUSION_VERSION", P.FUSION_VERSION + 1)
    assert not P.publication_is_current(fused_study, EXPERIMENT, settings)
