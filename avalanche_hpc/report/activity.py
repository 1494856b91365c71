"""The report's "Activity" section: the detection product of the experiment (``detect/``).

Read from ``STUDY/detections/{experiment}/`` as published (``provenance.json`` present):

- POD / FAR against the synthetic truth (``evaluation.csv``): per size class, inventoried vs
  never-recorded events, per orbit;
- the activity series per massif (``activity.csv``): CNN and baseline detections against the
  inventory's events, per date (figure ``activity_series.png``);
- a map of detections per corridor over each season (figure ``detection_map.png``, from the
  GeoPackage's attributes and ``corridors.gpkg``);
- the decision thresholds, their rule and the backbone precision (``model.json``).

Nothing here writes into ``detections/``: when the product is absent the section says how to
make it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avalanche_hpc.report.collect import Table
from avalanche_hpc.report.render import Figure, Section
from avalanche_hpc.study import Study

DETECTOR_NAMES = {"cnn": "CNN", "baseline": "Baseline"}


def _pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def evaluation_tables(ev: pd.DataFrame) -> list[Table]:
    """POD per group (any orbit) for both detectors, and POD/FAR per orbit."""
    from avalanche_hpc.detect.evaluation import ALL_EVENTS, ANY_ORBIT

    anyo = ev[ev["orbit"] == ANY_ORBIT]
    groups = list(dict.fromkeys(anyo["group"]))
    rows = []
    for g in groups:
        row: list[Any] = [g]
        for det in ("cnn", "baseline"):
            r = anyo[(anyo["group"] == g) & (anyo["detector"] == det)].iloc[0]
            row += [f"{int(r['detected'])} / {int(r['observed'])}", _pct(r["pod"])]
            if det == "cnn":
                row.insert(1, int(r["events"]))
        rows.append(row)
    t1 = Table("activity_pod", "Event-level POD against the synthetic truth (any orbit)",
               ["Events", "In truth.csv", "CNN detected / observed", "CNN POD", "Baseline detected / observed",
                "Baseline POD"], rows,
               "POD = TP / (TP + FN) over the events some orbit observed (Eckerstorfer et al. 2019). A false alarm "
               "has no deposit, so FAR is not defined per size class: see the next table. 'never recorded': events "
               "the inventory does not hold (what a user discovers).")
    rows2 = []
    for det in ("cnn", "baseline"):
        for _, r in ev[(ev["group"] == ALL_EVENTS) & (ev["detector"] == det)].iterrows():
            rows2.append([DETECTOR_NAMES[det], r["orbit"], f"{int(r['detected'])} / {int(r['observed'])}",
                          _pct(r["pod"]), int(r["detections"]), int(r["false_alarms"]), _pct(r["far"]),
                          _pct(r["apparent_far_vs_inventory"])])
    t2 = Table("activity_far", "POD and FAR per orbit (all events)",
               ["Detector", "Orbit", "Detected / observed", "POD", "Detections", "False alarms", "FAR",
                "Apparent FAR vs inventory"], rows2,
               "FAR = FP / (TP + FP): detections whose window (prev_date, date] holds no simulated deposit of the "
               "corridor. 'Apparent FAR vs inventory': the share of detections without an inventoried event, what a "
               "user would compute without the truth. Operational anchor (Eckerstorfer et al. 2019): POD 67 %, "
               "FAR 46 %.")
    return [t1, t2]


def activity_table(act: pd.DataFrame) -> Table:
    tot = act.groupby("massif")[["observed", "cnn_detections", "baseline_detections", "inventory_events"]].sum()
    rows = [[m, int(r["observed"]), int(r["cnn_detections"]), int(r["baseline_detections"]), int(r["inventory_events"])]
            for m, r in tot.iterrows()]
    s = tot.sum()
    rows.append(["all", int(s["observed"]), int(s["cnn_detections"]), int(s["baseline_detections"]),
                 int(s["inventory_events"])])
    return Table("activity_massif", "Activity per massif (all seasons, orbits and dates)",
                 ["Massif", "Corridor-dates observed", "CNN detections", "Baseline detections", "Inventory events"],
                 rows, "From activity.csv (one row per massif, season, orbit and date).")


def model_table(record: dict, prov: dict) -> Table:
    prec = record.get("precision", {})
    measured = []
    if "fp32_s" in prec:
        measured.append(f"float32 {prec['fp32_s']:.2f} s")
    if "bf16_s" in prec:
        measured.append(f"bfloat16 {prec['bf16_s']:.2f} s (max |dp| {prec.get('bf16_max_abs_dprob', float('nan')):.4f}, "
                        f"decisions agreeing {100 * prec.get('bf16_decision_agreement', float('nan')):.1f} %)")
    rows = [
        ["CNN", f"mean over {len(record['cnn']['runs'])} seed(s) of split {record['split']}: "
                f"prob >= {record['cnn']['threshold']['threshold']:.4f}"],
        ["Baseline", f"{record['baseline']['params']['channel']} > {record['baseline']['params']['pixel_threshold_db']} dB "
                     f"share >= {record['baseline']['threshold']['threshold']:.4f}"],
        ["Threshold rule", record["cnn"]["threshold"]["rule"]
         + f" (negative weight {record['prevalence']['neg_weight']:.2f})"],
        ["Backbone precision", f"{prec.get('mode', '?')} on {prec.get('device', '?')}; measured on "
                               f"{prec.get('n_rows', 0)} validation rows: {'; '.join(measured) or 'n/a'}"],
        ["Rows", f"{prov.get('n_observed', 0)} observed of {prov.get('n_rows', 0)} (min valid fraction "
                 f"{prov.get('settings', {}).get('min_valid')}); {len(prov.get('parts', []))} dates, "
                 f"{len(prov.get('left_out', []))} left out"],
    ]
    return Table("activity_model", "Detector", ["Item", "Value"], rows, style="kv")


def plot_activity_series(act: pd.DataFrame, path: Path) -> Path | None:
    """Per massif: CNN and baseline detections and inventory events per acquisition date (orbits summed)."""
    from avalanche_hpc.report.figures import BASE_COLOR, CNN_COLOR, _save, plt

    if act.empty:
        return None
    massifs = sorted(act["massif"].unique())
    ncol = min(3, len(massifs))
    nrow = int(np.ceil(len(massifs) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 2.6 * nrow), squeeze=False, sharex=True)
    for ax, m in zip(axes.ravel(), massifs, strict=False):
        d = act[act["massif"] == m].groupby("date")[["cnn_detections", "baseline_detections", "inventory_events"]].sum()
        x = pd.to_datetime(d.index)
        ax.bar(x, d["inventory_events"], width=2.5, color="#9aa5b1", label="inventory events")
        ax.plot(x, d["cnn_detections"], "o-", ms=3, color=CNN_COLOR, label="CNN detections")
        ax.plot(x, d["baseline_detections"], "s--", ms=3, color=BASE_COLOR, label="baseline detections")
        ax.set_title(m, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.tick_params(axis="x", rotation=45, labelbottom=True)  # every panel dated (sharex hides inner ones)
    for ax in axes.ravel()[len(massifs):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=7)
    fig.supylabel("corridors per date (orbits summed)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_detection_map(study: Study, gpkg: Path, path: Path) -> Path | None:
    """Per season: corridors coloured by their number of CNN detections over the season."""
    import pyogrio

    from avalanche_hpc.report.figures import _save, plt

    attrs = pyogrio.read_dataframe(gpkg, layer="deposition", columns=["path_id", "season", "cnn_detected"],
                                   read_geometry=False)
    if attrs.empty:
        return None
    counts = attrs.groupby(["season", "path_id"])["cnn_detected"].sum()
    corridors = study.read_corridors()
    seasons = sorted(attrs["season"].unique())
    fig, axes = plt.subplots(1, len(seasons), figsize=(6.5 * len(seasons), 6), squeeze=False)
    vmax = max(1, int(counts.max()))
    for ax, s in zip(axes[0], seasons, strict=False):
        c = corridors.assign(n=corridors["path_id"].map(counts.loc[s]).fillna(0).to_numpy())
        corridors.boundary.plot(ax=ax, color="#c8cdd3", linewidth=0.3)
        c[c["n"] > 0].plot(ax=ax, column="n", cmap="viridis", vmin=0, vmax=vmax, legend=True,
                           legend_kwds={"label": "CNN detections in the season", "shrink": 0.7})
        ax.set_title(f"season {s}: {int((counts.loc[s] > 0).sum())} corridors with detections", fontsize=9)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _save(fig, path)


def activity_section(study: Study, experiment: str, figdir: Path) -> tuple[Section, dict[str, Any], list[Path]]:
    """The section, its data for summary.json, and the figures written."""
    from avalanche_hpc.detect.activity import read_activity

    paths = study.detection_paths(experiment)
    if not paths.provenance.is_file():
        return (Section("activity", "Activity", [f"No published detections for this experiment -> 'avalanche-hpc "
                                                 f"detect {study.root} -e {experiment}'."]), {}, [])
    prov = json.loads(paths.provenance.read_text(encoding="utf-8"))
    record = prov["model"]
    act = read_activity(paths.activity)
    items: list[Table | Figure | str] = []
    data: dict[str, Any] = {"folder": str(paths.root.relative_to(study.root)), "geopackage": paths.geopackage.name,
                            "thresholds": {"cnn": record["cnn"]["threshold"], "baseline": record["baseline"]["threshold"]},
                            "precision": record.get("precision"), "n_rows": prov.get("n_rows"),
                            "n_observed": prov.get("n_observed"), "left_out": prov.get("left_out", []),
                            "parts_digest": prov.get("parts_digest")}
    made = []
    items.append(f"Every corridor on every date scored by the CNN and the baseline: "
                 f"{paths.geopackage.relative_to(study.root)} (layers 'corridors' and 'deposition', one feature per "
                 f"observed corridor and window), {paths.activity.relative_to(study.root)}.")
    if paths.evaluation.is_file():
        ev = pd.read_csv(paths.evaluation)
        items += evaluation_tables(ev)
        data["evaluation"] = ev.replace({np.nan: None}).to_dict(orient="records")
    else:
        items.append("No truth.csv in the study: no POD/FAR (real inventories record only part of the events).")
    items.append(activity_table(act))
    series = plot_activity_series(act, figdir / "activity_series.png")
    if series is not None:
        made.append(series)
        items.append(Figure(series, "Detections per date and massif (orbits summed) against the inventory's events "
                                    "in the same windows."))
    if paths.geopackage.is_file():
        m = plot_detection_map(study, paths.geopackage, figdir / "detection_map.png")
        if m is not None:
            made.append(m)
            items.append(Figure(m, "CNN detections per corridor over each season (grey outlines: corridors "
                                   "never detected)."))
    items.append(model_table(record, prov))
    if prov.get("left_out"):
        items.append(f"{len(prov['left_out'])} date(s) not in the product (missing or out-of-date parts): "
                     f"{', '.join(prov['left_out'][:10])}.")
    data["activity_totals"] = act[["observed", "cnn_detections", "baseline_detections", "inventory_events"]].sum().to_dict()
    return Section("activity", "Activity", items), data, made
