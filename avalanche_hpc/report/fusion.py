"""The report's "Orbit fusion" section (read-only over ``fusion.csv`` / ``fusion.json`` of the detections).

Tables: each orbit alone, each direction alone and all orbits fused (rules and stacker):
unit-level accuracy, precision, recall, F1; event-level POD (all, east-facing), FAR on synthetic
studies; release-window widths (median and quartiles); recall / POD per aspect octant; the
thresholds, the product method, the geometric floor of the window and the stacker's coefficients.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from avalanche_hpc.report.collect import Table
from avalanche_hpc.report.render import Section
from avalanche_hpc.study import Study

OCTANTS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
METHOD_NAMES = {"single orbit": "single orbit", "max": "max rule", "noisy_or": "noisy-OR rule", "stacker": "stacker",
                "or": "OR of the orbits' own decisions", "or_appear": "OR of the orbits' appearances",
                "vote_appear": "appearances of >= 2 orbits intersecting",
                "appearance": "appearance"}


def _pct(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def _days(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:g}"


def _name(r) -> str:
    if r["kind"] == "orbit":
        return f"{r['orbits']} (appearance)" if r["method"] == "appearance" else r["orbits"]
    return f"{r['orbits']}: {METHOD_NAMES.get(r['method'], r['method'])}"


def _selection_table(sel: dict[str, Any]) -> Table:
    rows = [[f"all orbits: {METHOD_NAMES.get(m, m)}", _pct(v.get("pod")), _pct(v.get("far")), v.get("detections"),
             "qualifies" if m in sel.get("qualifying", []) else "", "**product**" if m == sel["method"] else ""]
            for m, v in sel["methods"].items()]
    rows += [[o, _pct(v.get("pod")), _pct(v.get("far")), v.get("detections"), "", ""]
             for o, v in sel["single_orbits"].items()]
    bound = sel.get("far_bound")
    return Table("fusion_selection", "Product selection on the validation corridors (event level)",
                 ["Orbits: method", "Validation POD", "Validation FAR", "Detections", "FAR <= best orbit's", "Chosen"],
                 rows, f"Rule (decided before seeds 5-7): among the all-orbit methods whose validation FAR is <= the "
                       f"lowest single-orbit validation FAR ({_pct(bound)}, {sel.get('far_bound_orbit')}), the highest "
                       f"validation POD; if none, the lowest validation FAR. {sel.get('validation_events')} truth events "
                       f"of the validation corridors; the evaluation corridors are not read. Choice: {sel['reason']}. "
                       "The stacker is trained, and max / noisy-OR thresholds chosen, on these corridors (in-sample).")


def fusion_section(study: Study, experiment: str) -> tuple[Section | None, dict[str, Any]]:
    """The section and its data for summary.json; None when the study has one orbit or nothing is fused."""
    paths = study.detection_paths(experiment)
    if len(study.config.orbits) < 2:
        return None, {}
    if not (paths.fusion_evaluation.is_file() and paths.fusion_model.is_file()):
        return (Section("fusion", "Orbit fusion", [f"No fused detections for this experiment -> 'avalanche-hpc detect "
                                                   f"{study.root} -e {experiment}' (fusion runs when it publishes)."]),
                {})
    ev = pd.read_csv(paths.fusion_evaluation)
    model = json.loads(paths.fusion_model.read_text(encoding="utf-8"))
    has_events = "pod" in ev and ev["pod"].notna().any()
    rows = []
    for _, r in ev.iterrows():
        row: list[Any] = [_name(r), f"{r['threshold']:.3f}", int(r["units"]), _pct(r["accuracy"]), _pct(r["precision"]),
                          _pct(r["recall"]), _pct(r["f1"])]
        if has_events:
            row += [f"{int(r['detected'])} / {int(r['events'])}", _pct(r["pod"]), _pct(r["pod_east"]),
                    int(r["detections"]), _pct(r["far"])]
        row += [_days(r["width_median"]), f"{_days(r['width_q1'])}–{_days(r['width_q3'])}"]
        rows.append(row)
    cols = ["Orbits: method", "Threshold", "Units", "Accuracy", "Precision", "Recall", "F1"]
    if has_events:
        cols += ["Events detected", "POD", "POD east-facing", "Detections", "FAR"]
    cols += ["Window median (days)", "Window quartiles"]
    c = model.get("corridors", {})
    t1 = Table("fusion_methods", "Each orbit, each direction and all orbits fused (evaluation corridors)", cols, rows,
               f"Evaluation corridors: {c.get('evaluation')} (in neither the training ({c.get('train')}) nor the "
               f"validation ({c.get('validation')}) set of the split; every threshold and the stacker were chosen on "
               "the validation corridors). Units: the elementary intervals between consecutive acquisitions of any "
               "orbit, labelled from the inventory with the per-orbit rule; a method claims the units inside its "
               "detection windows (a single orbit's 6-12 day window claims several). POD/FAR: truth events whose "
               "date some orbit observed; an event counts as detected only when a window containing its true date "
               "was issued; FAR = FP / (TP + FP). Windows: widths of the true detections (days).")
    oct_rows = []
    key = "pod" if has_events else "recall"
    for _, r in ev.iterrows():
        oct_rows.append([_name(r), *[_pct(r[f"{key}_{o}"]) for o in OCTANTS]])
    t2 = Table("fusion_octants", f"{'Event POD' if has_events else 'Unit recall'} per aspect octant of the deposit",
               ["Orbits: method", *OCTANTS], oct_rows,
               "The paper's misses face east in the descending orbit (69 % of its false negatives): a descending "
               "orbit looks west, so east faces are foreshortened; the ascending orbits see them at a steeper "
               "local incidence.")
    sel = model.get("product_selection")
    how = ("chosen on the validation corridors, docs/fusion.md" if sel else "fixed a priori, docs/fusion.md")
    items: list[Any] = [f"Product method ({how}): "
                        f"{METHOD_NAMES.get(model.get('product_method'), model.get('product_method'))}; its detections "
                        f"and the other methods' are the GeoPackage's 'fused' layer. '(appearance)': an orbit's "
                        f"detections are only the first window of each run of positives (the deposit appeared there; "
                        f"the CNN compares each image with a summer reference, so debris stays positive after).", t1]
    if sel:
        items.append(_selection_table(sel))
    floor = model.get("geometric_floor")
    if floor and floor.get("events"):
        per = ", ".join(f"{k} d: {v}" for k, v in floor["events_per_width_days"].items())
        items.append(f"Geometric floor of the window: the unit (consecutive acquisitions of any orbit) holding each "
                     f"evaluated event's true date is {_days(floor['median'])} days wide at the median "
                     f"(quartiles {_days(floor['q1'])}–{_days(floor['q3'])}; {floor['events']} events; {per}): no "
                     f"fusion of these acquisitions can date an event more narrowly.")
    items.append(t2)
    st = model.get("configurations", {}).get("all orbits", {}).get("methods", {}).get("stacker", {}).get("stacker")
    if st:
        top = sorted(st["coefficients"].items(), key=lambda kv: -abs(kv[1]))[:8]
        items.append(Table("fusion_stacker", "Stacker: largest standardised coefficients (all orbits)",
                           ["Feature", "Coefficient"], [[k, f"{v:+.3f}"] for k, v in top],
                           f"{st['model']}, trained on {st['n_train_units']} validation units "
                           f"({st['n_train_positive']} positive). All coefficients: fusion.json."))
    return Section("fusion", "Orbit fusion", items), {"evaluation": ev.replace({np.nan: None}).to_dict(orient="records"),
                                                      "product_method": model.get("product_method")}
