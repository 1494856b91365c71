"""Read an experiment's runs (docs/architecture.md, "Runs layout") into tables of metrics.

Metrics are always recomputed from ``predictions.csv`` (test set rows) with
``avalanche_hpc.learn.metrics.compute_metrics``; the ``metrics.json`` a run wrote is only compared
with the recomputation, and any disagreement is recorded in ``Experiment.notes`` (shown in
the report), never used.

Aggregation over seeds: mean and sample standard deviation (``ddof=1``) of the per-seed
values; one value gives a standard deviation of ``None`` (shown without "±").
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avalanche_hpc.errors import ConfigError, InputError, MissingInputError, Problem
from avalanche_hpc.learn.metrics import compute_metrics, focus_massif_of
from avalanche_hpc.learn.splits import HOLDOUT_PREFIX, is_season_split, read_split, seasons_of_split, slugify
from avalanche_hpc.study import RunFiles, Study

log = logging.getLogger(__name__)

METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
METRIC_LABELS = {"accuracy": "Accuracy", "precision": "Precision", "recall": "Recall", "f1": "F1-score",
                 "roc_auc": "ROC AUC", "n": "Test samples"}
PREDICTION_COLUMNS = ("store_row", "massif", "set", "label", "prob", "pred")
TEST_SET = "test"
RANDOM_SPLIT = "random"
AGREE_TOL = 1e-6  # |metrics.json - recomputed| above this is reported as a disagreement


@dataclass
class Stat:
    """Mean +- sample std of one quantity over seeds (``n`` values that were defined)."""

    mean: float | None
    std: float | None
    n: int
    integer: bool = False  # a count (shown without decimals when it is the same for every seed)

    @classmethod
    def of(cls, values: list[float | None], integer: bool = False) -> Stat:
        vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if not vals:
            return cls(None, None, 0, integer)
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        return cls(float(np.mean(vals)), std, len(vals), integer)

    def text(self, digits: int = 3) -> str:
        if self.mean is None:
            return "n/a"
        if self.integer and (self.std is None or self.std == 0) and float(self.mean).is_integer():
            return str(int(self.mean))
        s = f"{self.mean:.{digits}f}"
        if self.std is not None:
            s += f" ± {self.std:.{digits}f}"
        return s

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n_values": self.n, "integer": self.integer}


@dataclass
class Run:
    """One finished run: a CNN seed or the baseline of a split."""

    kind: str  # "cnn" | "baseline"
    seed: int | None
    dir: Path
    predictions: pd.DataFrame
    config: dict[str, Any]  # config.json (CNN) or params.json (baseline)
    saved_metrics: dict[str, Any] | None
    history: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        if self.kind == "cnn":
            return f"cnn seed {self.seed}"
        return "baseline (tuned)" if self.kind == "baseline-tuned" else "baseline (paper)"

    @property
    def files(self) -> RunFiles:
        return RunFiles(self.dir)

    @property
    def test(self) -> pd.DataFrame:
        p = self.predictions
        return p[p["set"] == TEST_SET] if "set" in p.columns else p


@dataclass
class SplitRuns:
    name: str
    dir: Path
    split_table: pd.DataFrame | None
    cnn: list[Run]
    baseline: Run | None           # the paper's baseline (baseline/)
    baseline_tuned: Run | None = None  # the three-parameter baseline (baseline-tuned/)

    @property
    def runs(self) -> list[Run]:
        return self.cnn + [b for b in (self.baseline, self.baseline_tuned) if b]

    def held_out(self, massifs: list[str]) -> str | None:
        """The massif a hold-out split tests on (from its test rows; else from the name)."""
        if not self.name.startswith(HOLDOUT_PREFIX):
            return None
        for run in self.runs:
            names = sorted(run.test["massif"].astype(str).unique())
            if len(names) == 1:
                return names[0]
        slug = self.name[len(HOLDOUT_PREFIX):]
        return next((m for m in massifs if slugify(m) == slug), slug)


@dataclass
class Experiment:
    name: str
    study: Study
    dir: Path
    settings: dict[str, Any]
    splits: list[SplitRuns]
    focus_massif: str
    notes: list[str] = field(default_factory=list)  # incomplete runs, metric disagreements

    def split(self, name: str) -> SplitRuns | None:
        return next((s for s in self.splits if s.name == name), None)

    @property
    def main_split(self) -> SplitRuns:
        """The split of Table I and of the analysis: ``random`` when present, else the first."""
        return self.split(RANDOM_SPLIT) or self.splits[0]

    @property
    def holdouts(self) -> list[SplitRuns]:
        return [s for s in self.splits if s.name.startswith(HOLDOUT_PREFIX)]

    @property
    def season_splits(self) -> list[SplitRuns]:
        """``season-<id>`` and ``forward-<id>`` splits (in the study's season order)."""
        order = {s.id: i for i, s in enumerate(sorted(self.study.config.seasons, key=lambda s: s.start))}
        found = [s for s in self.splits if is_season_split(s.name)]
        return sorted(found, key=lambda s: (s.name.startswith("forward-"), order.get(s.name.split("-", 1)[1], 99)))


# -- reading --------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(Problem(str(path), f"line {e.lineno}", f"not valid JSON: {e.msg}",
                                 "re-run the stage that wrote it (it is rewritten atomically)")) from e


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions.csv, checked for the columns the report needs."""
    df = pd.read_csv(path, dtype={"path_id": str, "season": str, "orbit": str, "date": str, "massif": str,
                                  "set": str})
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(Problem(str(path), "header", f"missing column(s) {missing}",
                                 "re-run the run that wrote it; docs/architecture.md 'Runs layout' lists the columns"))
    bad = df.index[~df["label"].isin([0, 1])]
    if len(bad):
        i = int(bad[0])
        raise InputError(Problem(str(path), f"row {i + 1}, label", f"label {df.at[i, 'label']!r} is not 0 or 1",
                                 "predictions hold labelled rows only; re-run the run"))
    df["label"] = df["label"].astype(int)
    df["pred"] = df["pred"].astype(int)
    df["prob"] = df["prob"].astype(float)
    return df


def _read_run(kind: str, seed: int | None, files: RunFiles, notes: list[str]) -> Run | None:
    if not files.predictions.is_file():
        notes.append(f"{files.dir}: no predictions.csv (run not finished?) - left out of the report")
        return None
    config = _read_json(files.config if kind == "cnn" else files.params) or {}
    history = None
    if files.history.is_file():
        history = pd.read_csv(files.history)
    return Run(kind, seed, files.dir, read_predictions(files.predictions), config, _read_json(files.metrics), history)


def missing_experiment_message(study: Study, experiment: str) -> str:
    exp_dir = study.runs_dir(experiment)
    what = (f"{exp_dir} holds no finished run (no {{split}}/cnn/seed{{N}}/predictions.csv nor "
            f"{{split}}/baseline/predictions.csv)" if exp_dir.is_dir() else f"{exp_dir} does not exist")
    return (f"experiment {experiment!r}: {what} -> create it with "
            f"'avalanche-hpc train {study.root} --experiment {experiment}' and "
            f"'avalanche-hpc baseline {study.root} --experiment {experiment}' (or 'avalanche-hpc run JOB.toml')")


def validate_experiment_name(experiment: str) -> str:
    """An experiment is a folder name under runs/ and reports/ (no path separators, no leading dot)."""
    from avalanche_hpc.ids import check_id

    return check_id(experiment, "experiment name")


def load_experiment(root: Path, experiment: str) -> Experiment:
    """Every finished run of ``STUDY/runs/{experiment}``; MissingInputError when there is none."""
    validate_experiment_name(experiment)
    study = Study.load(root)
    runs = study.runs(experiment)
    exp_dir = runs.root
    if not exp_dir.is_dir():
        raise MissingInputError(missing_experiment_message(study, experiment))
    notes: list[str] = []
    splits: list[SplitRuns] = []
    for name in runs.split_names():
        if not (name == RANDOM_SPLIT or name.startswith(HOLDOUT_PREFIX) or is_season_split(name)):
            continue  # features/, logs/, ...
        cnn: list[Run] = []
        for seed in runs.cnn_seeds(name):
            run = _read_run("cnn", seed, runs.cnn(name, seed), notes)
            if run:
                cnn.append(run)
        base = runs.baseline(name)
        baseline = _read_run("baseline", None, base, notes) if base.dir.is_dir() else None
        tuned_files = runs.baseline(name, "tuned")
        tuned = _read_run("baseline-tuned", None, tuned_files, notes) if tuned_files.dir.is_dir() else None
        split_table = None
        if runs.split_csv(name).is_file():
            split_table = read_split(runs.split_csv(name))
        if cnn or baseline or tuned:
            splits.append(SplitRuns(name, runs.split_dir(name), split_table, cnn, baseline, tuned))
    if not splits:
        raise MissingInputError(missing_experiment_message(study, experiment))
    splits.sort(key=lambda s: (s.name != RANDOM_SPLIT, s.name))
    settings = _read_json(runs.experiment_json) or {}
    saved_focus = next((r.saved_metrics.get("focus_massif") for s in splits for r in s.runs
                        if r.saved_metrics and r.saved_metrics.get("focus_massif")), None)
    focus = study.config.focus_massif or saved_focus or focus_massif_of(None)
    exp = Experiment(experiment, study, exp_dir, settings, splits, focus, notes)
    check_saved_metrics(exp)
    for n in notes:
        log.warning("%s", n)
    return exp


# -- metrics --------------------------------------------------------------------------------------
def metrics_of(rows: pd.DataFrame) -> dict[str, Any]:
    return compute_metrics(rows["label"].to_numpy(), rows["prob"].to_numpy(), rows["pred"].to_numpy())


def check_saved_metrics(exp: Experiment) -> None:
    """Compare each run's metrics.json with the recomputation; note every disagreement."""
    for split in exp.splits:
        for run in split.runs:
            saved = run.saved_metrics
            if saved is None:
                exp.notes.append(f"{run.dir}: no metrics.json (metrics recomputed from predictions.csv)")
                continue
            scopes = {"all": run.test, "focus": run.test[run.test["massif"] == exp.focus_massif]}
            for scope, rows in scopes.items():
                if scope not in saved or not isinstance(saved[scope], dict):
                    continue
                mine = metrics_of(rows)
                for key in ("n", *METRICS):
                    a, b = saved[scope].get(key), mine.get(key)
                    if a is None and b is None:
                        continue
                    if a is None or b is None or abs(float(a) - float(b)) > AGREE_TOL:
                        exp.notes.append(f"{run.files.metrics}: {scope}.{key} = {a} but predictions.csv "
                                         f"gives {b} (the report uses the recomputed value)")


def split_stats(split: SplitRuns, select=None) -> dict[str, dict[str, Stat]]:
    """{"cnn": {metric: Stat over seeds}, "baseline": {...}, "baseline_tuned": {...}} on the test rows
    ``select(test)`` keeps ("baseline" is the paper's variant)."""
    out: dict[str, dict[str, Stat]] = {}
    for model, runs in (("cnn", split.cnn), ("baseline", [split.baseline] if split.baseline else []),
                        ("baseline_tuned", [split.baseline_tuned] if split.baseline_tuned else [])):
        per_run = []
        for run in runs:
            rows = run.test if select is None else select(run.test)
            per_run.append(metrics_of(rows))
        out[model] = {k: Stat.of([m[k] for m in per_run], integer=(k == "n")) for k in ("n", *METRICS)}
    return out


@dataclass
class Table:
    """A table of the report: cells are strings or Stats (rendered the same in HTML, Markdown, terminal)."""

    id: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""
    style: str = ""  # "kv": key/value rows (left-aligned, wrapped, never scrolled)

    def to_json(self) -> dict[str, Any]:
        def cell(c):
            return (c.to_json() if isinstance(c, Stat) else c)
        return {"id": self.id, "title": self.title, "columns": self.columns, "rows": [[cell(c) for c in r] for r in self.rows],
                "note": self.note}


def cell_text(c: Any) -> str:
    if isinstance(c, Stat):
        return c.text()
    if c is None:
        return "n/a"
    if isinstance(c, float):
        return f"{c:.3f}"
    return str(c)


def table_one_stats(exp: Experiment) -> dict[str, dict[str, dict[str, Stat]]]:
    """{"focus"|"all": {"cnn"|"baseline": {metric: Stat}}} on the main split's test set."""
    split = exp.main_split
    return {"focus": split_stats(split, lambda t: t[t["massif"] == exp.focus_massif]), "all": split_stats(split)}


def table_one(exp: Experiment) -> Table:
    """The paper's Table I: focus massif and all massifs, CNN and baseline side by side."""
    split = exp.main_split
    st = table_one_stats(exp)
    focus, every = st["focus"], st["all"]
    tuned = split.baseline_tuned is not None
    cols = ["Metric", f"{exp.focus_massif} CNN", f"{exp.focus_massif} baseline (paper)", "All massifs CNN",
            "All massifs baseline (paper)"]
    rows = [[METRIC_LABELS[k], focus["cnn"][k], focus["baseline"][k], every["cnn"][k], every["baseline"][k]]
            for k in (*METRICS, "n")]
    if tuned:
        cols.insert(3, f"{exp.focus_massif} baseline (tuned)")
        cols.append("All massifs baseline (tuned)")
        for row, k in zip(rows, (*METRICS, "n"), strict=True):
            row.insert(3, focus["baseline_tuned"][k])
            row.append(every["baseline_tuned"][k])
    n_seeds = len(split.cnn)
    cnn = f"mean ± sample std over {n_seeds} seeds" if n_seeds > 1 else f"{n_seeds} seed (no spread to show)"
    note = (f"Split '{split.name}', test set. CNN: {cnn}; baselines: one deterministic run each. Baseline (paper): "
            f"per-pixel rule VHdiff > 3 dB fixed a priori, only the pixel-count threshold tuned on validation"
            + ("; baseline (tuned): channel, pixel and count thresholds tuned on validation" if tuned else "")
            + ". Recomputed from predictions.csv.")
    return Table("table1", "Table I: CNN vs baseline (test set)", cols, rows, note)


def _metric_row(label: list[Any], stats: dict[str, dict[str, Stat]]) -> list[Any]:
    c, b = stats["cnn"], stats["baseline"]
    return [*label, c["n"], c["accuracy"], b["accuracy"], c["precision"], b["precision"], c["recall"], b["recall"], c["f1"], b["f1"]]


METRIC_PAIR_COLUMNS = ["Test samples", "Accuracy CNN", "Accuracy baseline", "Precision CNN", "Precision baseline",
                       "Recall CNN", "Recall baseline", "F1 CNN", "F1 baseline"]


def table_per_massif(exp: Experiment) -> Table:
    split = exp.main_split
    massifs = sorted({m for r in split.runs for m in r.test["massif"].astype(str).unique()})
    rows = [_metric_row([m], split_stats(split, lambda t, m=m: t[t["massif"] == m])) for m in massifs]
    return Table("per_massif", f"Per massif (split '{split.name}', test set)", ["Massif", *METRIC_PAIR_COLUMNS], rows,
                 "Massifs with few test samples give unstable figures.")


def table_holdouts(exp: Experiment) -> Table | None:
    if not exp.holdouts:
        return None
    rows = [_metric_row([s.held_out(exp.study.config.massifs), s.name], split_stats(s)) for s in exp.holdouts]
    return Table("holdouts", "Per hold-out massif (trained on the others, tested on it)",
                 ["Held-out massif", "Split", *METRIC_PAIR_COLUMNS], rows)


def table_per_orbit(exp: Experiment) -> Table | None:
    split = exp.main_split
    if not split.runs or "orbit" not in split.runs[0].test.columns:
        return None
    orbits = sorted({o for r in split.runs for o in r.test["orbit"].astype(str).unique()})
    if len(orbits) < 2:
        return None
    rows = [_metric_row([o], split_stats(split, lambda t, o=o: t[t["orbit"].astype(str) == o])) for o in orbits]
    return Table("per_orbit", f"Per orbit (split '{split.name}', test set)", ["Orbit", *METRIC_PAIR_COLUMNS], rows)


def _season_order(exp: Experiment) -> list[str]:
    return [s.id for s in sorted(exp.study.config.seasons, key=lambda s: s.start)]


def table_per_season(exp: Experiment) -> Table | None:
    """Main split's test set, one row per season (only with several seasons)."""
    split = exp.main_split
    if not split.runs or "season" not in split.runs[0].test.columns:
        return None
    present = {str(x) for r in split.runs for x in r.test["season"].unique()}
    seasons = [s for s in _season_order(exp) if s in present]
    if len(seasons) < 2:
        return None
    rows = [_metric_row([s], split_stats(split, lambda t, s=s: t[t["season"].astype(str) == s])) for s in seasons]
    return Table("per_season", f"Per season (split '{split.name}', test set)", ["Season", *METRIC_PAIR_COLUMNS], rows,
                 "The split deals each corridor, with all its dates of every season, to one set; see the "
                 "season splits below for models tested on winters they never saw.")


def table_season_splits(exp: Experiment) -> Table | None:
    """One row per season hold-out / forward split: trained on some winters, tested on others."""
    splits = exp.season_splits
    if not splits:
        return None
    order = _season_order(exp)
    rows = []
    for s in splits:
        try:
            train, test = seasons_of_split(s.name, order)
        except ConfigError:
            train, test = ["?"], ["?"]
        kind = "hold-out" if s.name.startswith("season-") else "forward"
        rows.append(_metric_row([s.name, kind, ", ".join(train), ", ".join(test)], split_stats(s)))
    return Table("season_splits", "Across seasons: trained on some winters, tested on others",
                 ["Split", "Kind", "Trained on", "Tested on", *METRIC_PAIR_COLUMNS], rows,
                 "season-<id>: test on that winter, train and validate on the others; forward-<id>: train and "
                 "validate on the winters before it, test on it and the later ones.")


def pooled_table_one(exps: list[Experiment]) -> tuple[Table, dict[str, Any]]:
    """Table I pooled over study seeds: each study's main split, CNN over every (study, training seed) run,
    each baseline over the studies (one deterministic run per study). Returns the table and, for all
    massifs, the verdict data: whether the CNN beats the paper baseline by more than one standard
    deviation (the larger of the two pooled stds) on accuracy and F1."""
    if not exps:
        raise MissingInputError("no experiment to pool -> give at least one study with finished runs")
    focus = exps[0].focus_massif
    scopes = {"focus": lambda t: t[t["massif"] == focus], "all": lambda t: t}
    per: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for scope, sel in scopes.items():
        per[scope] = {"cnn": {}, "baseline": {}, "baseline_tuned": {}}
        for exp in exps:
            split = exp.main_split
            runs = {"cnn": split.cnn, "baseline": [split.baseline] if split.baseline else [],
                    "baseline_tuned": [split.baseline_tuned] if split.baseline_tuned else []}
            for model, rs in runs.items():
                for r in rs:
                    m = metrics_of(sel(r.test))
                    for k in ("n", *METRICS):
                        per[scope][model].setdefault(k, []).append(m[k])
    stats = {scope: {model: {k: Stat.of(v, integer=(k == "n")) for k, v in d.items()}
                     for model, d in models.items() if d} for scope, models in per.items()}
    cols = ["Metric", f"{focus} CNN", f"{focus} baseline (paper)", "All massifs CNN", "All massifs baseline (paper)"]
    tuned = "baseline_tuned" in stats["all"]
    if tuned:
        cols += ["All massifs baseline (tuned)"]
    rows = []
    for k in (*METRICS, "n"):
        row = [METRIC_LABELS[k], stats["focus"]["cnn"][k], stats["focus"].get("baseline", {}).get(k),
               stats["all"]["cnn"][k], stats["all"].get("baseline", {}).get(k)]
        if tuned:
            row.append(stats["all"]["baseline_tuned"][k])
        rows.append(row)
    n_cnn = stats["all"]["cnn"]["accuracy"].n
    verdict: dict[str, Any] = {"studies": [str(e.study.root) for e in exps], "cnn_runs": n_cnn}
    for k in ("accuracy", "f1"):
        c, b = stats["all"]["cnn"][k], stats["all"].get("baseline", {}).get(k)
        if c.mean is None or b is None or b.mean is None:
            continue
        sd = max(c.std or 0.0, b.std or 0.0)
        verdict[k] = {"cnn": c.to_json(), "baseline_paper": b.to_json(), "difference": c.mean - b.mean,
                      "one_std": sd, "cnn_wins_by_more_than_one_std": bool(c.mean - b.mean > sd)}
    note = (f"Pooled over {len(exps)} studies: CNN mean ± sample std over {n_cnn} runs (study seeds x training "
            f"seeds); baselines over the studies (one deterministic run each). Test sets of each study's "
            f"'{exps[0].main_split.name}' split; recomputed from predictions.csv.")
    return Table("table1_pooled", "Table I pooled over study seeds (test sets)", cols, rows, note), verdict
