"""The report stage: an experiment's runs -> Table I, per-massif tables, figures, the paper's analysis.

``build_report(root, experiment)`` writes ``STUDY/reports/{experiment}/``::

    index.html      self-contained (inline CSS, figures as data: URIs)
    report.md       the same tables; figures linked from figures/
    summary.json    every number of the report (full precision) + provenance
    figures/*.png   confusion matrices, ROC/PR, learning curves, hold-outs, aspect polar, classes

``compare_experiments(root, exp_a, exp_b)`` writes ``STUDY/reports/compare-{a}-vs-{b}/`` the same way.
Every metric is recomputed from the runs' ``predictions.csv`` (see ``collect``).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from avalanche_hpc import __version__
from avalanche_hpc.atomic import write_json, write_text
from avalanche_hpc.errors import ConfigError
from avalanche_hpc.report import figures as fig
from avalanche_hpc.report.activity import activity_section
from avalanche_hpc.report.analysis import analyse_misses, summarise_dataset
from avalanche_hpc.report.collect import (
    METRIC_LABELS,
    METRICS,
    Experiment,
    Stat,
    Table,
    load_experiment,
    split_stats,
    table_holdouts,
    table_one,
    table_one_stats,
    table_per_massif,
    table_per_orbit,
    table_per_season,
    table_season_splits,
)
from avalanche_hpc.report.fusion import fusion_section
from avalanche_hpc.report.provenance import (
    DIGEST_META,
    collect_provenance,
    provenance_rows,
    report_inputs_digest,
    report_is_current,
)
from avalanche_hpc.report.render import Figure, Section, render_html, render_markdown

__all__ = ["build_report", "compare_experiments", "load_experiment", "report_is_current", "report_summary"]

log = logging.getLogger(__name__)
INDEX, MARKDOWN, SUMMARY, FIGURES = "index.html", "report.md", "summary.json", "figures"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _stats_json(st: dict[str, dict[str, dict[str, Stat]]]) -> dict[str, Any]:
    return {scope: {model: {k: s.to_json() for k, s in m.items()} for model, m in d.items()} for scope, d in st.items()}


def _write_outputs(folder: Path, title: str, subtitle: str, sections: list[Section], notes: list[str],
                   summary: dict[str, Any], written: list[Path], meta: dict[str, str] | None = None) -> Path:
    """Markdown and JSON first, index.html last (its presence means a complete report); stale figures go."""
    figdir = folder / FIGURES
    if figdir.is_dir():
        for old in figdir.glob("*.png"):
            if old not in written:
                old.unlink()
    write_text(folder / MARKDOWN, render_markdown(title, subtitle, sections, notes, folder))
    write_json(folder / SUMMARY, summary)
    index = folder / INDEX
    write_text(index, render_html(title, subtitle, sections, notes, meta))
    log.info("report written: %s", index)
    return index


def at_a_glance(exp: Experiment, miss: dict[str, Any]) -> list[str]:
    """Plain sentences: CNN vs baseline, and which avalanches the CNN misses."""
    st = table_one_stats(exp)
    out = []
    for scope, name in (("all", "all massifs"), ("focus", exp.focus_massif)):
        c, b = st[scope]["cnn"], st[scope]["baseline"]
        if c["n"].mean:
            line = (f"{name}: CNN accuracy {c['accuracy'].text()} vs paper baseline {b['accuracy'].text()}, "
                    f"F1 {c['f1'].text()} vs {b['f1'].text()} ({c['n'].text()} test patches)")
            t = st[scope].get("baseline_tuned")
            if t and t["n"].mean:
                line += f"; tuned baseline accuracy {t['accuracy'].text()}, F1 {t['f1'].text()}"
            out.append(line + ".")
    pos = miss.get("aspect") or miss.get("size") or {}
    tp, fn = pos.get("tp_total", 0), pos.get("fn_total", 0)
    if tp + fn:
        out.append(f"The CNN misses {fn} of {tp + fn} positive test patches ({100 * fn / (tp + fn):.0f} %, "
                   f"pooled over seeds).")
    small = (miss.get("size") or {}).get("small_missed_share")
    if small is not None:
        out.append(f"Small deposits (< 70 m²): {100 * small:.0f} % missed (paper: 40 %).")
    asp = miss.get("aspect") or {}
    if asp.get("east_fn_share") is not None and asp.get("east_tp_share") is not None:
        out.append(f"East-facing deposits: {100 * asp['east_fn_share']:.0f} % of misses vs "
                   f"{100 * asp['east_tp_share']:.0f} % of detections, all orbits (paper, descending orbit: "
                   f"69 % vs 44 %).")
    for label, d in (miss.get("aspect_by_orbit") or {}).items():
        if d.get("east_fn_share") is not None and d.get("east_tp_share") is not None:
            out.append(f"Orbit {label}: east-facing {100 * d['east_fn_share']:.0f} % of misses vs "
                       f"{100 * d['east_tp_share']:.0f} % of detections.")
    kinds = sorted({str((r.config.get("weights") or {}).get("kind", "")) for s in exp.splits for r in s.cnn} - {""})
    warned = any(r.config.get("weights_warning") or (r.config.get("weights") or {}).get("warning")
                 for s in exp.splits for r in s.cnn)
    if kinds:
        out.append(f"CNN backbone weights: {', '.join(kinds)}."
                   + (" Training warned that ImageNet weights were unavailable: these CNN results are not "
                      "comparable to the paper's (full warning in summary.json)." if warned else ""))
    return out or ["No finished run with test predictions."]


def build_report(root: Path, experiment: str) -> Path:
    """Write the report of ``STUDY/runs/{experiment}`` to ``STUDY/reports/{experiment}/``; return index.html."""
    exp = load_experiment(Path(root), experiment)
    folder = exp.study.reports_dir(experiment)
    figdir = folder / FIGURES
    from avalanche_hpc.cleanup import clean_study_tmp

    clean_study_tmp(folder)  # temporary files of killed report writers (cleanup.py)
    inputs_digest = report_inputs_digest(exp.study, experiment)

    results = [t for t in (table_one(exp), table_per_massif(exp), table_holdouts(exp), table_per_orbit(exp),
                           table_per_season(exp), table_season_splits(exp)) if t]
    miss_tables, miss_data = analyse_misses(exp)
    ds_tables, ds_data = summarise_dataset(exp)
    prov = collect_provenance(exp)

    made: dict[str, Path | None] = {
        "confusion": fig.plot_confusion(exp, figdir / "confusion.png"),
        "roc_pr": fig.plot_roc_pr(exp, figdir / "roc_pr.png"),
        "learning": fig.plot_learning_curves(exp, figdir / "learning_curves.png"),
        "holdouts": fig.plot_holdouts(exp, figdir / "holdouts.png"),
        "aspect": fig.plot_aspect_polar(miss_data.get("aspect", {}), figdir / "aspect_polar.png"),
        "classes": fig.plot_class_bars(miss_data, figdir / "tp_fn_classes.png"),
    }
    captions = {
        "confusion": "Confusion matrices on the test set (rows: label, columns: prediction).",
        "roc_pr": "ROC and precision-recall curves of each CNN seed and of the baseline (test set).",
        "learning": "Learning curves from history.csv (one colour per seed).",
        "holdouts": "Accuracy on each held-out massif (CNN: mean ± std over seeds).",
        "aspect": "Share of true positives and false negatives per aspect octant (north up, clockwise).",
        "classes": "True positives vs false negatives by deposit size class, month and local slope.",
    }
    figs = {k: Figure(p, captions[k]) for k, p in made.items() if p is not None}
    activity, activity_data, activity_figs = activity_section(exp.study, experiment, figdir)
    fusion, fusion_data = fusion_section(exp.study, experiment)

    main = exp.main_split
    sections = [
        Section("glance", "At a glance", at_a_glance(exp, miss_data), bullets=True),
        Section("results", "Results", [results[0]] + [f for k, f in figs.items() if k in ("confusion", "roc_pr")]),
        Section("breakdown", "Per massif, hold-out and orbit",
                results[1:] + [f for k, f in figs.items() if k == "holdouts"]),
        Section("training", "Training", [f for k, f in figs.items() if k == "learning"]
                or ["No history.csv in the CNN runs."]),
        Section("analysis", "Which avalanches are missed",
                [f for k, f in figs.items() if k == "aspect"] + miss_tables
                + [f for k, f in figs.items() if k == "classes"] or ["No positive test patch in the CNN runs."]),
        Section("dataset", "Dataset", ds_tables or ["No patch store and no split.csv found."]),
        activity,
        *([fusion] if fusion is not None else []),
        Section("provenance", "Settings, code version and inputs",
                [Table("provenance", "Provenance", ["Item", "Value"], provenance_rows(prov),
                       "Complete settings of every run (config.json / params.json) are in summary.json.", style="kv")]),
    ]
    title = f"avalanche-hpc report: experiment {experiment}"
    subtitle = (f"Study '{exp.study.config.name}', main split '{main.name}' ({len(main.cnn)} CNN seed(s), "
                f"{'a' if main.baseline else 'no'} baseline), {len(exp.splits)} split(s). Generated {_now()} by "
                f"avalanche-hpc {__version__}.")
    all_tables = [t for s in sections for t in s.items if isinstance(t, Table)]
    summary = {
        "experiment": experiment, "study": str(exp.study.root.resolve()), "focus_massif": exp.focus_massif,
        "main_split": main.name, "generated_utc": _now(), "table1": _stats_json(table_one_stats(exp)),
        "tables": {t.id: t.to_json() for t in all_tables}, "analysis": miss_data, "dataset": ds_data,
        "figures": [p.relative_to(folder).as_posix() for p in [*made.values(), *activity_figs] if p],
        "notes": exp.notes, "provenance": prov, "activity": activity_data, "fusion": fusion_data,
        "inputs_digest": inputs_digest,
    }
    return _write_outputs(folder, title, subtitle, sections, exp.notes, summary,
                          [p for p in [*made.values(), *activity_figs] if p], {DIGEST_META: inputs_digest})


def _delta(a: Stat, b: Stat) -> str:
    if a.mean is None or b.mean is None:
        return "n/a"
    d = b.mean - a.mean
    return f"{d:+.0f}" if a.integer and float(d).is_integer() else f"{d:+.3f}"


def compare_experiments(root: Path, exp_a: str, exp_b: str) -> Path:
    """Table I and hold-outs of two experiments side by side (B - A); return the comparison's index.html."""
    if exp_a == exp_b:
        raise ConfigError(f"compare needs two different experiments, got {exp_a!r} twice")
    a, b = load_experiment(Path(root), exp_a), load_experiment(Path(root), exp_b)
    sa, sb = table_one_stats(a), table_one_stats(b)
    folder = a.study.reports_dir(f"compare-{exp_a}-vs-{exp_b}")
    tables = []
    for scope, label in (("focus", a.focus_massif), ("all", "all massifs")):
        cols = ["Metric", f"CNN {exp_a}", f"CNN {exp_b}", "Δ CNN (B − A)", f"Baseline {exp_a}", f"Baseline {exp_b}",
                "Δ baseline (B − A)"]
        rows = []
        for k in (*METRICS, "n"):
            ca, cb = sa[scope]["cnn"][k], sb[scope]["cnn"][k]
            ba, bb = sa[scope]["baseline"][k], sb[scope]["baseline"][k]
            rows.append([METRIC_LABELS[k], ca, cb, _delta(ca, cb), ba, bb, _delta(ba, bb)])
        tables.append(Table(f"compare_{scope}", f"Table I, {label}: {exp_a} (A) vs {exp_b} (B)", cols, rows,
                            f"Main splits: A '{a.main_split.name}', B '{b.main_split.name}'; test sets; "
                            f"CNN mean ± sample std over seeds."))
    common = [(s, other) for s in a.holdouts if (other := b.split(s.name)) is not None]
    if common:
        rows = []
        for sa_, sb_ in common:
            x, y = split_stats(sa_), split_stats(sb_)
            rows.append([sa_.held_out(a.study.config.massifs), x["cnn"]["accuracy"], y["cnn"]["accuracy"],
                         _delta(x["cnn"]["accuracy"], y["cnn"]["accuracy"]), x["baseline"]["accuracy"],
                         y["baseline"]["accuracy"], x["cnn"]["f1"], y["cnn"]["f1"], _delta(x["cnn"]["f1"], y["cnn"]["f1"])])
        tables.append(Table("compare_holdouts", "Hold-out massifs in both experiments",
                            ["Held-out massif", f"Accuracy CNN {exp_a}", f"Accuracy CNN {exp_b}", "Δ accuracy",
                             f"Accuracy baseline {exp_a}", f"Accuracy baseline {exp_b}", f"F1 CNN {exp_a}",
                             f"F1 CNN {exp_b}", "Δ F1"], rows))
    keys = sorted(set(a.settings) | set(b.settings))
    diff = [[k, str(a.settings.get(k, "(unset)")), str(b.settings.get(k, "(unset)"))] for k in keys
            if a.settings.get(k) != b.settings.get(k)]
    tables.append(Table("compare_settings", "Experiment settings that differ (experiment.json)",
                        ["Setting", exp_a, exp_b], diff or [["(none)", "", ""]]))
    sections = [Section("comparison", "Comparison", tables)]
    notes = [f"{exp_a}: {n}" for n in a.notes] + [f"{exp_b}: {n}" for n in b.notes]
    title = f"avalanche-hpc comparison: {exp_a} vs {exp_b}"
    subtitle = f"Study '{a.study.config.name}'. Generated {_now()} by avalanche-hpc {__version__}."
    summary = {"experiments": [exp_a, exp_b], "study": str(a.study.root.resolve()), "generated_utc": _now(),
               "table1": {exp_a: _stats_json(sa), exp_b: _stats_json(sb)},
               "tables": {t.id: t.to_json() for t in tables}, "notes": notes,
               "provenance": {exp_a: collect_provenance(a), exp_b: collect_provenance(b)}}
    return _write_outputs(folder, title, subtitle, sections, notes, summary, [])


def report_summary(index: Path) -> dict[str, Any]:
    """The summary.json written beside a report's index.html."""
    import json

    return json.loads((Path(index).parent / SUMMARY).read_text(encoding="utf-8"))

