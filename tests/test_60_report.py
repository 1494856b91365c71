"""Report stage: tables equal the numbers recomputed from predictions.csv, figures decode, the
HTML is self-contained, errors are clear, both CLI forms work.

The runs are hand-made (tests/fixtures_report.py) over a real HDF5 store and real splits.
Expected values here are recomputed independently with scikit-learn, not with the report's code.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from typer.testing import CliRunner

from avalanche_hpc.cli.main import app
from avalanche_hpc.errors import MissingInputError
from avalanche_hpc.report import build_report, compare_experiments
from avalanche_hpc.store.layout import read_meta
from avalanche_hpc.study import Study
from tests.fixtures_report import FOCUS, WRONG_METRIC, write_fake_experiment

TOL = 0.0005 + 1e-9  # tables show 3 decimals


class _Tables(HTMLParser):
    """Cells of every <table id=...>, and every src/href attribute and inline style of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.refs: list[str] = []
        self._id: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href", "srcset", "data", "action") and v is not None]
        if tag == "table":
            self._id = a.get("id", "")
            self.tables[self._id] = []
        elif tag == "tr" and self._id is not None:
            self.tables[self._id].append([])
        elif tag in ("td", "th") and self._id is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._id][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._id = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_html(path: Path) -> _Tables:
    p = _Tables()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def parse_md_table(text: str, title_start: str) -> list[list[str]]:
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("### " + title_start))
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        if re.fullmatch(r"\|(---\|)+", line):
            continue
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def num(cell: str) -> tuple[float | None, float | None]:
    if cell == "n/a":
        return None, None
    parts = cell.split(" ± ")
    return float(parts[0]), (float(parts[1]) if len(parts) > 1 else None)


def sk_metrics(df: pd.DataFrame) -> dict[str, float]:
    y, p, yhat = df["label"], df["prob"], df["pred"]
    return {"Accuracy": accuracy_score(y, yhat), "Precision": precision_score(y, yhat, zero_division=np.nan),
            "Recall": recall_score(y, yhat), "F1-score": f1_score(y, yhat), "ROC AUC": roc_auc_score(y, p),
            "Test samples": len(df)}


def expected(root: Path, experiment: str, split: str, select) -> dict[str, dict[str, tuple[float, float | None]]]:
    """{model: {metric: (mean, std or None)}} recomputed with scikit-learn from the saved predictions."""
    d = Study.load(root).runs_dir(experiment) / split
    out = {}
    for model, files in (("cnn", sorted((d / "cnn").glob("seed*/predictions.csv"))),
                         ("baseline", [d / "baseline" / "predictions.csv"]),
                         ("baseline_tuned", [d / "baseline-tuned" / "predictions.csv"])):
        per = [sk_metrics(select(t[t["set"] == "test"])) for t in (pd.read_csv(f) for f in files)]
        out[model] = {k: (float(np.mean([m[k] for m in per])),
                          float(np.std([m[k] for m in per], ddof=1)) if len(per) > 1 else None) for k in per[0]}
    return out


def assert_cell(cell: str, want: tuple[float, float | None], what: str) -> None:
    mean, std = num(cell)
    assert mean is not None and abs(mean - want[0]) <= TOL, f"{what}: table {cell!r}, recomputed {want}"
    if want[1] is not None and want[0] != int(want[0]):
        assert std is not None and abs(std - want[1]) <= TOL, f"{what}: table {cell!r}, recomputed std {want[1]}"


@pytest.fixture(scope="module")
def report(report_study: Path) -> Path:
    return build_report(report_study, "exp_a")


def test_table1_in_html_and_markdown_equals_recomputed(report_study: Path, report: Path) -> None:
    html_rows = parse_html(report).tables["table1"]
    md_rows = parse_md_table((report.parent / "report.md").read_text(encoding="utf-8"), "Table I")
    assert html_rows[0] == md_rows[0] == ["Metric", f"{FOCUS} CNN", f"{FOCUS} baseline (paper)",
                                          f"{FOCUS} baseline (tuned)", "All massifs CNN",
                                          "All massifs baseline (paper)", "All massifs baseline (tuned)"]
    assert html_rows[1:] == md_rows[1:]
    focus = expected(report_study, "exp_a", "random", lambda t: t[t["massif"] == FOCUS])
    every = expected(report_study, "exp_a", "random", lambda t: t)
    body = {r[0]: r[1:] for r in html_rows[1:]}
    assert set(body) == {"Accuracy", "Precision", "Recall", "F1-score", "ROC AUC", "Test samples"}
    for metric, cells in body.items():
        for cell, (exp_, model) in zip(cells, [(focus, "cnn"), (focus, "baseline"), (focus, "baseline_tuned"),
                                               (every, "cnn"), (every, "baseline"), (every, "baseline_tuned")],
                                       strict=True):
            assert_cell(cell, exp_[model][metric], f"{metric} {model}")
    assert "±" in body["Accuracy"][3] and "±" not in body["Accuracy"][4]  # seeds vs one baseline run
    assert body["Test samples"][3] == str(int(every["cnn"]["Test samples"][0]))


def test_per_massif_holdout_and_orbit_tables_equal_recomputed(report_study: Path, report: Path) -> None:
    tables = parse_html(report).tables
    head = tables["per_massif"][0]
    for row in tables["per_massif"][1:]:
        want = expected(report_study, "exp_a", "random", lambda t, m=row[0]: t[t["massif"] == m])
        cells = dict(zip(head, row, strict=False))
        assert_cell(cells["Test samples"], want["cnn"]["Test samples"], f"{row[0]} n")
        assert_cell(cells["Accuracy CNN"], want["cnn"]["Accuracy"], f"{row[0]} accuracy CNN")
        assert_cell(cells["F1 baseline"], want["baseline"]["F1-score"], f"{row[0]} F1 baseline")
    (ho,) = tables["holdouts"][1:]
    cells = dict(zip(tables["holdouts"][0], ho, strict=False))
    assert cells["Held-out massif"] == "Vanoise" and cells["Split"] == "holdout-vanoise"
    want = expected(report_study, "exp_a", "holdout-vanoise", lambda t: t)
    assert_cell(cells["Recall CNN"], want["cnn"]["Recall"], "hold-out recall")
    assert_cell(cells["Accuracy baseline"], want["baseline"]["Accuracy"], "hold-out baseline accuracy")
    orbits = [r[0] for r in tables["per_orbit"][1:]]
    assert orbits == ["A161", "D139"]


def test_analysis_counts_equal_pooled_predictions(report_study: Path, report: Path) -> None:
    d = Study.load(report_study).runs_dir("exp_a") / "random" / "cnn"
    pos = pd.concat([pd.read_csv(f) for f in sorted(d.glob("seed*/predictions.csv"))])
    pos = pos[(pos["set"] == "test") & (pos["label"] == 1)]
    tables = parse_html(report).tables
    octant = np.floor(((pos["aspect"] + 22.5) % 360) / 45).astype(int)
    rows = {r[0]: r for r in tables["aspect"][1:]}
    for k, name in enumerate(["N", "NE", "E", "SE", "S", "SW", "W", "NW"]):
        sel = pos[octant == k]
        assert int(rows[name][1]) == int((sel["pred"] == 1).sum()) and int(rows[name][2]) == int((sel["pred"] == 0).sum())
    small = pos[pos["deposit_area_m2"] < 70]
    size_rows = {r[0]: r for r in tables["size"][1:]}
    assert int(size_rows["< 70 m²"][1]) == int((small["pred"] == 1).sum())
    assert int(size_rows["< 70 m²"][2]) == int((small["pred"] == 0).sum())
    months = {r[0]: int(r[1]) + int(r[2]) for r in tables["month"][1:]}
    assert sum(months.values()) == len(pos)
    summary = json.loads((report.parent / "summary.json").read_text())
    east = (pos["aspect"] > 0) & (pos["aspect"] < 180)
    fn = pos["pred"] == 0
    assert summary["analysis"]["aspect"]["east_fn_share"] == pytest.approx((east & fn).sum() / fn.sum())
    # per orbit (the paper's east-facing finding is for the descending orbit): tables and shares
    by_orbit = summary["analysis"]["aspect_by_orbit"]
    assert set(by_orbit) == {"A161 (ascending)", "D139 (descending)"}
    for orbit, label in (("A161", "A161 (ascending)"), ("D139", "D139 (descending)")):
        po = pos[pos["orbit"] == orbit]
        e, f = (po["aspect"] > 0) & (po["aspect"] < 180), po["pred"] == 0
        assert by_orbit[label]["east_fn_share"] == pytest.approx((e & f).sum() / f.sum())
        assert by_orbit[label]["east_tp_share"] == pytest.approx((e & ~f).sum() / (~f).sum())
        orows = {r[0]: r for r in tables[f"aspect_{orbit}"][1:]}
        assert sum(int(r[1]) + int(r[2]) for r in orows.values()) == len(po)
        srows = {r[0]: r for r in tables[f"size_{orbit}"][1:]}
        small_o = po[po["deposit_area_m2"] < 70]
        if len(small_o):
            assert int(srows["< 70 m²"][2]) == int((small_o["pred"] == 0).sum())
    assert summary["analysis"]["size"]["small_positives"] == len(small)


def test_dataset_summary_counts_the_store(report_study: Path, report: Path) -> None:
    meta = read_meta(Study.load(report_study).store_path)
    tables = parse_html(report).tables
    head = tables["ds_massif"][0]
    for row in tables["ds_massif"][1:]:
        cells = dict(zip(head, row, strict=False))
        m = meta[meta["massif"] == row[0]]
        assert int(cells["positive"]) == int((m["label"] == 1).sum())
        assert int(cells["unknown"]) == int((m["label"] == -1).sum())
        assert int(cells["total"]) == len(m)
    inv = {r[0]: int(r[1]) for r in tables["inventory"][1:]}
    assert inv["inventory events (total)"] == len(pd.read_csv(Study.load(report_study).inventory_path))
    wide = next(v for k, v in inv.items() if k.startswith("not used: date window wider"))
    assert wide == 5  # the fixture's five events with 46-day windows


def test_figures_decode_and_html_is_self_contained(report: Path) -> None:
    folder = report.parent
    pngs = sorted((folder / "figures").glob("*.png"))
    assert {p.name for p in pngs} == {"confusion.png", "roc_pr.png", "learning_curves.png", "holdouts.png",
                                      "aspect_polar.png", "tp_fn_classes.png"}
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
    text = report.read_text(encoding="utf-8")
    page = parse_html(report)
    outside_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert not re.search(r"https?:|file:|//", outside_images, re.I)
    assert "url(" not in text and "@import" not in text
    assert "CNN backbone weights: none" in text  # the runs' warning is summarised, its address is not copied
    images = [r for r in page.refs if r.startswith("data:")]
    assert len(images) == len(pngs)
    for r in page.refs:
        assert r.startswith(("data:image/png;base64,", "#")), r
    for r in images:
        with Image.open(io.BytesIO(base64.b64decode(r.split(",", 1)[1]))) as im:
            im.verify()
    md = (folder / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(pngs)
    for link in links:
        assert not link.startswith("/") and ".." not in link and "://" not in link
        assert (folder / link).is_file()


def test_metrics_json_disagreement_is_flagged(report: Path) -> None:
    split, seed, scope, key = WRONG_METRIC
    checks = parse_html(report)
    text = report.read_text(encoding="utf-8")
    assert f"{split}/cnn/seed{seed}/metrics.json: {scope}.{key} = 0.999" in text
    notes = json.loads((report.parent / "summary.json").read_text())["notes"]
    assert sum("0.999" in n for n in notes) == 1
    assert checks.tables["table1"]  # the report was still written, with recomputed values


def test_incomplete_run_is_left_out_and_noted(report_study: Path) -> None:
    write_fake_experiment(report_study, "exp_c", strength=1.0, seeds=(0,), splits=("random",))
    (Study.load(report_study).runs_dir("exp_c") / "random" / "cnn" / "seed5").mkdir()
    index = build_report(report_study, "exp_c")
    summary = json.loads((index.parent / "summary.json").read_text())
    assert any("seed5: no predictions.csv" in n for n in summary["notes"])
    assert summary["table1"]["all"]["cnn"]["accuracy"]["n_values"] == 1


def test_missing_experiment_names_directory_and_command(report_study: Path) -> None:
    with pytest.raises(MissingInputError) as e:
        build_report(report_study, "never_trained")
    msg = str(e.value)
    assert str(report_study / "runs" / "never_trained") in msg and "avalanche-hpc train" in msg
    out = subprocess.run([sys.executable, "-m", "avalanche_hpc", "report", str(report_study), "-e", "never_trained"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "never_trained" in out.stderr and "avalanche-hpc train" in out.stderr
    assert not (report_study / "reports" / "never_trained" / "index.html").exists()


def test_cli_plain_form_prints_table_and_path(report_study: Path) -> None:
    res = CliRunner().invoke(app, ["report", str(report_study), "--experiment", "exp_b"])
    assert res.exit_code == 0, res.output
    index = report_study / "reports" / "exp_b" / "index.html"
    assert "Table I" in res.output
    assert res.output.strip().splitlines()[-1].strip() == str(index)
    assert index.is_file()
    res = CliRunner().invoke(app, ["report", "--help"])
    assert res.exit_code == 0 and "compare" in res.output and "build" in res.output


def test_compare_cli_and_deltas(report_study: Path) -> None:
    res = CliRunner().invoke(app, ["report", "compare", str(report_study), "exp_a", "exp_b"])
    assert res.exit_code == 0, res.output
    index = compare_experiments(report_study, "exp_a", "exp_b")
    assert res.output.strip().splitlines()[-1].strip() == str(index)
    rows = parse_html(index).tables["compare_all"]
    acc = dict(zip(rows[0], next(r for r in rows if r[0] == "Accuracy"), strict=False))
    a = expected(report_study, "exp_a", "random", lambda t: t)["cnn"]["Accuracy"]
    b = expected(report_study, "exp_b", "random", lambda t: t)["cnn"]["Accuracy"]
    assert_cell(acc["CNN exp_a"], a, "A accuracy")
    assert_cell(acc["CNN exp_b"], b, "B accuracy")
    assert abs(float(acc["Δ CNN (B − A)"]) - (b[0] - a[0])) <= 0.001
    settings = {r[0]: r[1:] for r in parse_html(index).tables["compare_settings"][1:]}
    assert settings["strength"] == ["1.2", "0.6"]


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", ".hidden", ""])
def test_experiment_name_must_be_a_folder_name(report_study: Path, name: str) -> None:
    from avalanche_hpc.errors import ConfigError

    with pytest.raises(ConfigError, match="not allowed as a folder name"):
        build_report(report_study, name)


@pytest.mark.skipif(__import__("shutil").which("chromium") is None, reason="Debian's chromium is not installed")
def test_screenshot_script_renders_the_report(report: Path, repo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "shot.png"
    res = subprocess.run(["bash", str(repo_root / "scripts" / "screenshot_report.sh"), str(report), str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    with Image.open(out) as im:
        assert im.size == (1400, 3000)
        colours = im.convert("L").resize((140, 300)).getextrema()
    assert colours[1] - colours[0] > 100  # not a blank page
    res = subprocess.run(["bash", str(repo_root / "scripts" / "screenshot_report.sh"), str(tmp_path / "none.html"),
                          str(out)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "avalanche-hpc report" in res.stderr


def test_pooled_table_one_over_studies(report_study: Path, report: Path, tmp_path: Path) -> None:
    """Pooling two studies: CNN over every (study, seed) run, the paper baseline over the studies."""
    out = tmp_path / "pooled.json"
    res = CliRunner().invoke(app, ["report", "pooled", str(report_study), str(report_study), "--experiment", "exp_a",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    d = Study.load(report_study).runs_dir("exp_a") / "random"
    cnn = [sk_metrics(t[t["set"] == "test"]) for t in (pd.read_csv(f) for f in sorted(d.glob("cnn/seed*/predictions.csv")))]
    accs = [m["Accuracy"] for m in cnn] * 2
    v = got["verdict"]["accuracy"]
    assert got["verdict"]["cnn_runs"] == len(accs)
    assert v["cnn"]["mean"] == pytest.approx(np.mean(accs)) and v["cnn"]["std"] == pytest.approx(np.std(accs, ddof=1))
    base = pd.read_csv(d / "baseline" / "predictions.csv")
    b_acc = sk_metrics(base[base["set"] == "test"])["Accuracy"]
    assert v["baseline_paper"]["mean"] == pytest.approx(b_acc) and v["baseline_paper"]["std"] == pytest.approx(0.0)
    assert v["cnn_wins_by_more_than_one_std"] == bool(np.mean(accs) - b_acc > np.std(accs, ddof=1))
    assert "CNN wins by more than one std" in " ".join(res.output.split())
