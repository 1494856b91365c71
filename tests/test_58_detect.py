"""Detection: every corridor on every date scored -> GeoPackage, activity table, POD/FAR; incremental; bad input."""

from __future__ import annotations

import json
import os
import shutil

import geopandas as gpd
import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from avalanche_hpc.cli.main import app
from avalanche_hpc.detect import DetectSettings, detect_all, list_detect_tasks, publish_detections, task_is_current
from avalanche_hpc.detect.activity import ACTIVITY_COLUMNS, read_activity
from avalanche_hpc.detect.evaluation import ALL_EVENTS, ANY_ORBIT, INVENTORIED, NEVER_RECORDED, Evaluator
from avalanche_hpc.detect.geopackage import GPKG_COLUMNS, POINT_LAYER, POLYGON_LAYER
from avalanche_hpc.detect.scoring import PART_COLUMNS, read_part, read_part_header
from avalanche_hpc.detect.threshold import choose_threshold, weighted_f1_curve
from avalanche_hpc.digest import sha256_file
from avalanche_hpc.errors import MissingInputError, StageError
from avalanche_hpc.store.layout import read_meta
from avalanche_hpc.study import Study
from tests.fixtures_detect import EXPERIMENT

FP32 = DetectSettings(precision="fp32")


# -- the rules, on hand-made cases ------------------------------------------------------------------
def test_threshold_rule_weighs_negatives_by_prevalence():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3])
    labels = np.array([1, 1, 0, 1, 0, 0])
    # plain F1: t=0.6 -> tp 3, fp 1, fn 0 -> 6/7 (best); t=0.8 -> tp 2, fp 0, fn 1 -> 4/5
    plain = choose_threshold(scores, labels, 1.0)
    assert plain["threshold"] == 0.6 and plain["val_f1"] == pytest.approx(6 / 7)
    # negatives 4x as common as in the balanced set: t=0.6 -> 6/(6+4) = 0.6; t=0.8 -> 4/5 = 0.8
    weighted = choose_threshold(scores, labels, 4.0)
    assert weighted["threshold"] == 0.8 and weighted["val_f1"] == pytest.approx(0.8)
    curve = weighted_f1_curve(scores, labels, 4.0).set_index("threshold")
    assert curve.loc[0.3, "f1"] == pytest.approx(6 / (6 + 12))  # everything positive: fp = 3 x 4
    with pytest.raises(MissingInputError, match="no validation rows holding both classes"):
        choose_threshold(np.array([0.2, 0.9]), np.array([1, 1]))


def _part(rows):
    cols = ["path_id", "orbit", "prev_date", "date", "observed", "cnn_detected", "baseline_detected", "label"]
    return pd.DataFrame(rows, columns=cols)


def test_pod_far_hand_made_case():
    from avalanche_hpc.report.analysis import SIZE_CLASSES, size_class_of

    truth = pd.DataFrame({
        "event_id": ["E1", "E2", "E3", "E4"], "path_id": ["P1", "P2", "P1", "P4"],
        "date": ["2018-01-05", "2018-01-06", "2018-01-20", "2018-01-09"],
        "deposit_area_m2": [50.0, 5000.0, 5000.0, 50.0], "inventoried": [True, False, True, False]})
    truth["size_class"] = size_class_of(truth["deposit_area_m2"])
    ev = Evaluator(truth)
    # orbit D, window (01-01, 01-07]: E1 detected by both, E2 missed by the CNN, P3 a false alarm of the CNN
    ev.add(_part([("P1", "D", "2018-01-01", "2018-01-07", True, True, True, 1),
                  ("P2", "D", "2018-01-01", "2018-01-07", True, False, True, 0),
                  ("P3", "D", "2018-01-01", "2018-01-07", True, True, False, 0),
                  ("P4", "D", "2018-01-01", "2018-01-07", True, False, False, 0)]))
    # orbit D, window (01-07, 01-13]: P1's old debris detected again (a false alarm), P4 unobserved (E4 not seen)
    ev.add(_part([("P1", "D", "2018-01-07", "2018-01-13", True, True, False, -1),
                  ("P4", "D", "2018-01-07", "2018-01-13", False, False, False, 0)]))
    # orbit A, window (01-03, 01-15]: E4 detected by the CNN only; E2 detected by both
    ev.add(_part([("P4", "A", "2018-01-03", "2018-01-15", True, True, False, -1),
                  ("P2", "A", "2018-01-03", "2018-01-15", True, True, True, 0)]))
    res = ev.results().set_index(["detector", "orbit", "group"])
    d = res.loc[("cnn", "D", ALL_EVENTS)]
    assert (d["events"], d["observed"], d["detected"], d["missed"]) == (4, 2, 1, 1)  # E3 has no row, E4 unobserved
    assert d["pod"] == pytest.approx(1 / 2)
    assert (d["detections"], d["false_alarms"]) == (3, 2) and d["far"] == pytest.approx(2 / 3)
    assert d["apparent_far_vs_inventory"] == pytest.approx(2 / 3)  # P3 (label 0), P1 on 01-13 (label -1)
    a = res.loc[("cnn", "A", ALL_EVENTS)]
    assert (a["observed"], a["detected"], a["detections"], a["false_alarms"]) == (2, 2, 2, 0)
    any_ = res.loc[("cnn", ANY_ORBIT, ALL_EVENTS)]
    assert (any_["observed"], any_["detected"], any_["detections"], any_["false_alarms"]) == (3, 3, 5, 2)
    assert any_["far"] == pytest.approx(2 / 5)
    b = res.loc[("baseline", "D", ALL_EVENTS)]
    assert (b["detected"], b["detections"], b["false_alarms"]) == (2, 2, 0) and b["far"] == 0.0
    small = SIZE_CLASSES[0]
    assert res.loc[("cnn", "D", small), "observed"] == 1 and res.loc[("cnn", "D", small), "pod"] == 1.0
    assert res.loc[("cnn", ANY_ORBIT, small), "detected"] == 2  # E1 (D) and E4 (A)
    assert res.loc[("cnn", "D", NEVER_RECORDED), "pod"] == 0.0  # E2 missed by D's CNN
    assert res.loc[("cnn", ANY_ORBIT, NEVER_RECORDED), "pod"] == 1.0  # E2 and E4 found through A
    assert res.loc[("cnn", ANY_ORBIT, INVENTORIED), "events"] == 2
    assert np.isnan(res.loc[("cnn", "D", small), "far"])  # a false alarm has no size class


# -- end to end on a tiny study ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def detected(detect_study):
    res = CliRunner().invoke(app, ["detect", str(detect_study), "-e", EXPERIMENT, "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    return detect_study


def test_geopackage_rows_columns_and_sums(detected):
    study = Study.load(detected)
    paths = study.detection_paths(EXPERIMENT)
    meta = read_meta(study.store_path)
    enough = meta[meta["valid_fraction"] >= 0.5]
    pts = gpd.read_file(paths.geopackage, layer=POINT_LAYER)
    poly = gpd.read_file(paths.geopackage, layer=POLYGON_LAYER)
    assert len(pts) == len(poly) == len(enough) > 0
    for layer in (pts, poly):
        assert list(layer.columns) == [*GPKG_COLUMNS, "geometry"]
        assert layer.crs.to_epsg() == study.config.crs_epsg
    assert set(pts.geom_type) == {"Point"} and set(poly.geom_type) <= {"Polygon", "MultiPolygon"}
    # rows are the store's (key, attributes) with enough valid pixels
    key = ["season", "orbit", "date", "path_id"]
    got = pts.assign(date=pts["date"].dt.strftime("%Y-%m-%d"),
                     prev_date=pts["prev_date"].dt.strftime("%Y-%m-%d")).set_index(key).sort_index()
    want = enough.set_index(key).sort_index()
    assert got.index.equals(want.index)
    assert np.allclose(got["valid_fraction"], want["valid_fraction"])
    assert (got["prev_date"] == want["prev_date"]).all() and (got["massif"] == want["massif"]).all()
    assert (got["window_days"] == (pd.to_datetime(want.index.get_level_values("date"))
                                   - pd.to_datetime(want["prev_date"])).dt.days.to_numpy()).all()
    lab = want["label"].to_numpy()
    assert np.array_equal(got["label"].to_numpy()[lab >= 0], lab[lab >= 0]) and got["label"][lab < 0].isna().all()
    assert (got["event_id"].fillna("") == want["event_id"]).all()
    assert np.allclose(got.geometry.x, want["x"]) and np.allclose(got.geometry.y, want["y"])
    assert got["deposit_area_m2"].isna().equals(pd.Series(np.isnan(want["deposit_area_m2"]), index=got.index))
    # polygons are the corridors'
    corridors = study.read_corridors().set_index("path_id").geometry
    assert all(g.equals(corridors[p]) for g, p in zip(poly.geometry[:20], poly["path_id"][:20], strict=True))
    # probabilities and decisions against the recorded thresholds
    record = json.loads(paths.model.read_text())
    assert record["precision"]["mode"] == "fp32" and record["precision"]["requested"] == "fp32"
    for det in ("cnn", "baseline"):
        p = pts[f"{det}_prob"]
        assert p.between(0, 1).all()
        assert (pts[f"{det}_detected"] == (p >= record[det]["threshold"]["threshold"])).all()
    assert (pts["detected"] == pts["cnn_detected"]).all()
    # the CNN here is the trained one: on the split's rows it reproduces predictions.csv (mean over seeds)
    seeds = [pd.read_csv(d) for d in sorted((detected / "runs" / EXPERIMENT / "random" / "cnn").glob("seed*/predictions.csv"))]
    assert len(seeds) == 2
    mean = pd.concat(seeds).groupby(["season", "orbit", "date", "path_id"])["prob"].mean()
    joined = got.join(mean.rename("trained"), how="inner")
    assert len(joined) >= 40 and np.allclose(joined["cnn_prob"], joined["trained"], atol=1e-5)
    base = pd.read_csv(detected / "runs" / EXPERIMENT / "random" / "baseline" / "predictions.csv")
    joined = got.join(base.set_index(key)["prob"].rename("trained"), how="inner")
    assert np.allclose(joined["baseline_prob"], joined["trained"])
    # activity table: every column, sums equal the GeoPackage's counts per massif/date/orbit
    act = read_activity(paths.activity)
    assert list(act.columns) == ACTIVITY_COLUMNS
    k = ["season", "orbit", "date", "massif"]
    g = got.reset_index().groupby(k)
    counts = pd.DataFrame({"observed": g.size(), "cnn_detections": g["cnn_detected"].sum(),
                           "baseline_detections": g["baseline_detected"].sum(),
                           "inventory_positive": g["label"].apply(lambda s: int((s == 1).sum())),
                           "inventory_unknown": g["label"].apply(lambda s: int(s.isna().sum()))})
    a = act.set_index(k).loc[counts.index]
    for c in counts.columns:
        assert (a[c].to_numpy() == counts[c].to_numpy()).all(), c
    assert act["corridors"].sum() == len(meta) and act["observed"].sum() == len(pts)
    n_events = got["event_id"].dropna().map(lambda s: len(s.split(";"))).sum()
    assert act["inventory_events"].sum() == n_events
    # provenance names the runs used, with their sha256
    prov = json.loads(paths.provenance.read_text())
    shas = {r["best_pt_sha256"] for r in prov["model"]["cnn"]["runs"]}
    assert shas == {sha256_file(p) for p in (detected / "runs" / EXPERIMENT / "random" / "cnn").glob("seed*/best.pt")}
    assert prov["n_observed"] == len(pts) and prov["left_out"] == []
    assert len(prov["parts"]) == len(list_detect_tasks(study))
    # the evaluation is present, with both detectors, every orbit and "any orbit"
    ev = pd.read_csv(paths.evaluation)
    assert set(ev["detector"]) == {"cnn", "baseline"} and set(ev["orbit"]) == {"D139", "A161", ANY_ORBIT}
    assert ((ev["pod"].dropna() >= 0) & (ev["pod"].dropna() <= 1)).all()


def test_incremental_skip_and_rescore_one_date(detected):
    study = Study.load(detected)
    paths = study.detection_paths(EXPERIMENT)
    acqs = list_detect_tasks(study)
    parts = [paths.part(a.season, a.orbit, a.date) for a in acqs]
    before = {p: p.stat().st_mtime_ns for p in parts}
    prov_mtime = paths.provenance.stat().st_mtime_ns
    assert all(task_is_current(study, EXPERIMENT, a, FP32) for a in acqs)
    detect_all(detected, EXPERIMENT, FP32, progress=False)  # everything current: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in parts} == before
    assert paths.provenance.stat().st_mtime_ns == prov_mtime
    # touching a checkpoint rebuilds the record (its files changed) but not the model: still skipped
    best = next((detected / "runs" / EXPERIMENT / "random" / "cnn").glob("seed0/best.pt"))
    os.utime(best)
    detect_all(detected, EXPERIMENT, FP32, progress=False, publish=False)
    assert {p: p.stat().st_mtime_ns for p in parts} == before
    # one date's inputs change (its shard's digest) and another date is new (no part yet): only those are scored
    changed, new = acqs[1], acqs[-1]
    shard = study.shard_path(changed.season, changed.orbit, changed.date)
    with h5py.File(shard, "r+") as f:
        f.attrs["digest"] = "changed-inputs"
    parts[-1].unlink()
    assert not task_is_current(study, EXPERIMENT, changed, FP32) and not task_is_current(study, EXPERIMENT, new, FP32)
    detect_all(detected, EXPERIMENT, FP32, progress=False)
    after = {p: p.stat().st_mtime_ns for p in parts}
    rescored = sorted(str(p.relative_to(paths.root)) for p in parts if after[p] != before.get(p))
    assert rescored == sorted(str(paths.part(a.season, a.orbit, a.date).relative_to(paths.root)) for a in (changed, new))
    assert read_part_header(parts[1])["source_digest"] == "shard:changed-inputs"
    assert paths.provenance.stat().st_mtime_ns != prov_mtime  # republished
    assert list(read_part(parts[1]).columns) == PART_COLUMNS


def _bad_experiment(study_root, name="bad"):
    """A one-seed copy of the trained experiment (files hard-linked: cheap)."""
    src, dst = study_root / "runs" / EXPERIMENT, study_root / "runs" / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src / "random" / "baseline", dst / "random" / "baseline", copy_function=os.link)
    shutil.copytree(src / "random" / "cnn" / "seed0", dst / "random" / "cnn" / "seed0", copy_function=os.link)
    shutil.copy(src / "random" / "split.csv", dst / "random" / "split.csv")
    return name


def test_bad_inputs_clear_errors_nothing_written(detect_study):
    study = Study.load(detect_study)
    runner = CliRunner()
    # an experiment with no trained run
    res = runner.invoke(app, ["detect", str(detect_study), "-e", "never-trained"])
    assert res.exit_code != 0
    assert isinstance(res.exception, MissingInputError) and "has no runs" in str(res.exception)
    assert "avalanche-hpc train" in str(res.exception)
    assert not study.detection_paths("never-trained").root.exists()
    # a CNN folder without best.pt
    name = _bad_experiment(detect_study)
    (detect_study / "runs" / name / "random" / "cnn" / "seed0" / "best.pt").unlink()
    with pytest.raises(MissingInputError, match="no trained CNN run in split 'random'"):
        detect_all(detect_study, name, progress=False)
    assert not study.detection_paths(name).root.exists()
    # a missing validation set (split.csv)
    name = _bad_experiment(detect_study)
    (detect_study / "runs" / name / "random" / "split.csv").unlink()
    with pytest.raises(MissingInputError, match="no validation set to choose the decision threshold"):
        detect_all(detect_study, name, progress=False)
    assert not study.detection_paths(name).root.exists()
    # a store other than (older than) the model's: one training patch differs
    name = _bad_experiment(detect_study)
    store = study.store_path
    saved = store.with_name("patches.saved.h5")
    shutil.copy(store, saved)
    try:
        row = int(pd.read_csv(detect_study / "runs" / name / "random" / "split.csv")["store_row"].iloc[0])
        with h5py.File(store, "r+") as f:
            f["patches"][row] = f["patches"][row] + 1.0
        with pytest.raises(StageError, match="older than, or other than, the model's"):
            detect_all(detect_study, name, progress=False)
        assert not study.detection_paths(name).root.exists()
    finally:
        os.replace(saved, store)
    # publishing before anything was scored
    with pytest.raises(MissingInputError, match="nothing was scored"):
        publish_detections(detect_study, name)


def test_pipeline_stage_and_report_section(detected, tmp_path):
    from avalanche_hpc.hpc.jobspec import parse_job
    from avalanche_hpc.hpc.pipeline import run_job
    from avalanche_hpc.hpc.stages import STAGES, is_complete, list_stage_tasks
    from avalanche_hpc.report import report_summary

    job = parse_job({"name": "det", "experiment": EXPERIMENT, "stages": ["detect", "report"],
                     "study": {"path": str(detected)}, "detect": {"precision": "fp32"}}, tmp_path)
    tasks = list_stage_tasks(job, "detect")
    assert [t.key for t in tasks] == [a.key for a in list_detect_tasks(Study.load(detected))]
    ran = run_job(job, progress=False)
    assert ran["detect"] == []  # scored by the earlier tests with the same settings: all current
    assert all(is_complete(job, t) for t in tasks)
    index = Study.load(detected).reports_dir(EXPERIMENT) / "index.html"
    html = index.read_text()
    assert "Activity" in html and "Event-level POD against the synthetic truth" in html
    summary = report_summary(index)
    assert "figures/activity_series.png" in summary["figures"] and "figures/detection_map.png" in summary["figures"]
    assert summary["activity"]["n_observed"] > 0 and summary["activity"]["evaluation"]
    assert is_complete(job, list_stage_tasks(job, "report")[0])
    assert STAGES["detect"].depends == ("train", "baseline") and "detect" in STAGES["report"].depends
    # a report built from another publication of the detections is stale
    summary_path = index.parent / "summary.json"
    saved = summary_path.read_text()
    summary["activity"]["parts_digest"] = "an-older-publication"
    summary_path.write_text(json.dumps(summary))
    try:
        assert not is_complete(job, list_stage_tasks(job, "report")[0])
    finally:
        summary_path.write_text(saved)
