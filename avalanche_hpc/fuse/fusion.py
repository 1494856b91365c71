"""Orbit fusion of a published detection product: configurations, methods, evaluation, the fused layer.

``fuse_parts(study, parts, record, split_csv)`` (called by ``detect.publish`` when the study has
more than one orbit) runs, on the detection rows of every orbit:

- configurations: all orbits, and each direction alone when it has two or more orbits;
- per configuration, the unit table (``units``), the methods (``methods``: ``max``,
  ``noisy_or``, ``stacker``, each with its threshold chosen on the validation corridors; ``or``, the
  union of the orbits' own decisions, and ``or_appear``, the union of the orbits' appearance windows,
  with none), and their fused detections over every corridor;
- the single orbits as they are (their positive windows, the detector's threshold), and each with
  appearance dating (only the first window of each run of positives: ``appearance``);
- the evaluation of all of them on the evaluation corridors (``evaluation``);
- the geometric floor: per evaluation event, the width of the unit holding its true date (the
  narrowest window any fusion of these acquisitions can give);
- the *product* method, chosen on the validation corridors by the goal (``selection``, decided before
  seeds 5-7, docs/fusion.md; without truth: the all-orbit ``or_appear`` rule); its detections, and the
  other methods', form the GeoPackage's ``fused`` layer, each labelled from the inventory with the
  per-orbit rule over its window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avalanche_hpc.fuse import evaluation as ev
from avalanche_hpc.fuse.methods import (
    EVIDENCE,
    METHODS,
    NO_FITTED_THRESHOLD,
    OR_THRESHOLD,
    choose_fused_threshold,
    detections,
    orbit_detections,
    rule_scores,
)
from avalanche_hpc.fuse.selection import RULE as SELECTION_RULE
from avalanche_hpc.fuse.selection import select_product
from avalanche_hpc.fuse.stacker import Stacker
from avalanche_hpc.fuse.units import PART_USE, UnitTable, build_units
from avalanche_hpc.learn.splits import read_split
from avalanche_hpc.preprocess.labels import label_map
from avalanche_hpc.study import Study

log = logging.getLogger(__name__)

FUSION_VERSION = 4
PRODUCT_METHOD = "or_appear"  # the product when the study has no truth to choose on (selection below)
PRODUCT_RULE = ("no truth.csv: the all-orbit 'or_appear' rule, fixed a priori before seed 4 (any orbit that saw the "
                "deposit appear; fused window = intersection of the appearance windows)")
ALL = "all orbits"
FUSED_COLUMNS = ["method", "product", "season", "path_id", "massif", "start", "end", "width_days", "score", "orbits",
                 "n_orbits", "label", "event_id"]


@dataclass
class FusionResult:
    detections: pd.DataFrame                    # FUSED_COLUMNS, all-orbit methods, every corridor
    evaluation: pd.DataFrame                    # evaluation.EVAL_COLUMNS
    model: dict[str, Any] = field(default_factory=dict)


def configurations(study: Study, orbits: list[str]) -> list[tuple[str, list[str]]]:
    out = [(ALL, orbits)]
    for direction in ("ascending", "descending"):
        sub = [o for o in orbits if study.config.orbit(o).direction == direction]
        if 2 <= len(sub) < len(orbits):
            out.append((direction, sub))
    return out


def corridor_sets(split_csv: Path) -> tuple[set[str], set[str]]:
    """(training corridors, validation corridors) of the split."""
    s = read_split(split_csv)
    return set(s.loc[s["set"] == "train", "path_id"].astype(str)), set(s.loc[s["set"] == "val", "path_id"].astype(str))


def label_windows(dets: pd.DataFrame, inventory: pd.DataFrame, corridors: pd.DataFrame) -> pd.DataFrame:
    """``label`` (1/0/NULL) and ``event_id`` of each detection's window, by the per-orbit label rule."""
    dets = dets.copy()
    dets["label"] = pd.array([pd.NA] * len(dets), dtype="Int16")
    dets["event_id"] = None
    for (a, b), idx in dets.groupby(["start", "end"]).groups.items():
        lm = label_map(inventory, corridors, pd.Timestamp(a).date(), pd.Timestamp(b).date()).set_index("path_id")
        sub = lm.reindex(dets.loc[idx, "path_id"])
        lab = sub["label"].to_numpy()
        dets.loc[idx, "label"] = pd.array(np.where(lab >= 0, lab, 0), dtype="Int16")
        dets.loc[idx[lab < 0], "label"] = pd.NA
        evs = sub["event_id"].fillna("").to_numpy()
        dets.loc[idx, "event_id"] = [e if e else None for e in evs]
    return dets


def validation_selection(rows: list[dict[str, Any]], truth: pd.DataFrame, all_units: UnitTable,
                         val: set[str]) -> dict[str, Any]:
    """Event POD/FAR on the validation corridors of the all-orbit methods and single orbits (raw) in ``rows``
    (their ``_dets`` over every corridor), and the product by ``selection.select_product``."""
    events = ev.observed_events(truth, all_units, val)
    val_truth = truth[truth["path_id"].isin(val)]
    keep = ("pod", "pod_east", "far", "detections", "detected", "events")

    def scores(dets: pd.DataFrame) -> dict[str, Any]:
        s = ev.event_scores(events, val_truth, dets[dets["path_id"].isin(val)])
        return {k: (None if isinstance(s[k], float) and not np.isfinite(s[k]) else s[k]) for k in keep}

    methods = {r["method"]: scores(r["_dets"]) for r in rows if r["kind"] == "fused" and r["orbits"] == ALL}
    orbits = {r["orbits"]: scores(r["_dets"]) for r in rows if r["kind"] == "orbit" and r["method"] == "single orbit"}
    choice = select_product(methods, orbits, METHODS)
    return {**choice, "population": "validation corridors of the split (truth events in observed units)",
            "validation_events": len(events), "methods": methods, "single_orbits": orbits}


def fuse_parts(study: Study, parts: pd.DataFrame, record: dict, split_csv: Path) -> FusionResult | None:
    """Fusion of the detection rows ``parts`` (every orbit; ``units.PART_USE`` columns); None with one orbit."""
    orbits = [o.id for o in study.config.orbits if o.id in set(parts["orbit"])]
    if len(orbits) < 2:
        return None
    parts = parts[PART_USE]
    threshold = float(record["cnn"]["threshold"]["threshold"])
    thresholds = {o: threshold for o in orbits}
    train, val = corridor_sets(split_csv)
    all_paths = set(parts["path_id"])
    eval_paths = all_paths - train - val
    dates = {(s.id, o): study.winter_dates(s.id, o) for s in study.config.seasons for o in orbits}
    inventory = study.read_inventory() if study.inventory_path.is_file() else None
    corridors = study.read_corridors()
    truth = ev.read_truth_events(study.truth_path) if study.truth_path.is_file() else None

    tables: dict[str, UnitTable] = {}
    rows: list[dict[str, Any]] = []
    model: dict[str, Any] = {"version": FUSION_VERSION, "orbit_threshold": threshold, "configurations": {},
                             "corridors": {"train": len(train & all_paths), "validation": len(val & all_paths),
                                           "evaluation": len(eval_paths)}}
    fused: list[pd.DataFrame] = []
    for name, sub in configurations(study, orbits):
        units = build_units(parts, study.config, dates, sub, thresholds, inventory, corridors)
        tables[name] = units
        val_mask = units.frame["path_id"].isin(val).to_numpy()
        cfg: dict[str, Any] = {"orbits": sub, "n_units": len(units.frame), "methods": {}}
        for method in METHODS:
            if method == "stacker":
                try:
                    stacker = Stacker().fit(units, val_mask)
                except Exception as e:  # too few validation labels: the rules still run
                    cfg["methods"][method] = {"skipped": str(e)}
                    log.warning("fusion (%s): stacker skipped: %s", name, e)
                    continue
                score = stacker.predict(units)
                info: dict[str, Any] = {"stacker": stacker.describe()}
            else:
                score = rule_scores(units, method)
                info = {}
            evidence = EVIDENCE.get(method, "det")
            if method in NO_FITTED_THRESHOLD:  # the orbits' own thresholds: none fitted here (validation F1 for information)
                info["threshold"] = choose_fused_threshold(units, score, val_mask, candidates=np.array([OR_THRESHOLD]),
                                                           evidence=evidence)
            else:
                info["threshold"] = choose_fused_threshold(units, score, val_mask)
            cfg["methods"][method] = info
            dets = detections(units, score, info["threshold"]["threshold"], evidence)
            if name == ALL:
                fused.append(dets.assign(method=method))
            rows.append({"method": method, "orbits": name, "kind": "fused", "threshold": info["threshold"]["threshold"],
                         "_dets": dets})
        model["configurations"][name] = cfg
    for o in orbits:
        rows.append({"method": "single orbit", "orbits": o, "kind": "orbit", "threshold": threshold,
                     "_dets": orbit_detections(parts, o, threshold)})
        rows.append({"method": "appearance", "orbits": o, "kind": "orbit", "threshold": threshold,
                     "_dets": orbit_detections(parts, o, threshold, appearance=True)})
    model["validation_f1"] = {m: i["threshold"]["val_f1"] for m, i in model["configurations"][ALL]["methods"].items()
                              if "threshold" in i}
    all_units = tables[ALL]
    # the product: chosen on the validation corridors by the goal (event POD and FAR; ``selection``), decided
    # before seeds 5-7; the evaluation corridors are not read here
    product, model["product_rule"] = PRODUCT_METHOD, PRODUCT_RULE
    if truth is not None:
        selection = validation_selection(rows, truth, all_units, val)
        product, model["product_rule"] = selection["method"], SELECTION_RULE
        model["product_selection"] = selection
    model["product_method"] = product

    # evaluation, on the evaluation corridors only
    eval_mask = all_units.frame["path_id"].isin(eval_paths).to_numpy()
    events = ev.observed_events(truth, all_units, eval_paths) if truth is not None else None
    if events is not None:
        model["geometric_floor"] = ev.geometric_floor(events, all_units)
    out_rows = []
    for r in rows:
        dets = r.pop("_dets")
        dets_eval = dets[dets["path_id"].isin(eval_paths)]
        row = {**r, **ev.unit_scores(all_units, dets_eval, eval_mask)}
        if events is not None and truth is not None:
            row.update(ev.event_scores(events, truth[truth["path_id"].isin(eval_paths)], dets_eval))
        else:  # windows of detections labelled positive by the inventory
            w = dets_eval["width_days"].to_numpy(dtype=float)
            row.update({"width_median": float(np.median(w)) if len(w) else np.nan,
                        "width_q1": float(np.quantile(w, 0.25)) if len(w) else np.nan,
                        "width_q3": float(np.quantile(w, 0.75)) if len(w) else np.nan, "detections": len(dets_eval)})
        out_rows.append(row)
    evaluation = pd.DataFrame(out_rows).reindex(columns=ev.EVAL_COLUMNS)
    det_all = pd.concat(fused, ignore_index=True) if fused else pd.DataFrame(columns=[*FUSED_COLUMNS])
    if inventory is not None and len(det_all):
        det_all = label_windows(det_all, inventory, corridors)
    else:
        det_all["label"] = pd.array([pd.NA] * len(det_all), dtype="Int16")
        det_all["event_id"] = None
    det_all["product"] = det_all["method"] == product
    model["evaluation_corridors"] = "corridors in neither the training nor the validation set of the split"
    log.info("orbit fusion: %d orbits, product method %s, %d fused detections", len(orbits), product,
             int(det_all["product"].sum()))
    return FusionResult(det_all[FUSED_COLUMNS].reset_index(drop=True), evaluation, model)
