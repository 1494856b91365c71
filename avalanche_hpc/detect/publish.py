"""Publish: merge the per-date parts into the products, atomically, part by part.

``publish_detections(root, experiment)`` reads every current part (``scoring``) once, in task
order, and writes under ``STUDY/detections/{experiment}/``:

- ``detections.gpkg`` (``geopackage``: layers ``corridors`` and ``deposition``);
- ``activity.csv`` (``activity``);
- ``evaluation.csv`` when the study has a ``truth.csv`` (``evaluation``);
- with several orbits, orbit fusion (``avalanche_hpc.fuse``): the GeoPackage's ``fused`` layer,
  ``fusion.csv`` (evaluation) and ``fusion.json`` (thresholds, stacker, product method);
- ``provenance.json`` last: the model record, the settings, every part used with its digest,
  the tasks left out (missing or stale parts) and the evaluation summary. Its ``parts_digest``
  makes a re-run with unchanged parts a no-op.

Each file is written to a temporary name and renamed, so a reader sees either the previous
complete product or the new one. Memory: one part at a time, the corridor geometries, the
truth table and the activity rows (one per massif and date).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from avalanche_hpc import __version__
from avalanche_hpc.atomic import write_json, write_text
from avalanche_hpc.detect.activity import ACTIVITY_COLUMNS, activity_rows
from avalanche_hpc.detect.evaluation import Evaluator, read_truth
from avalanche_hpc.detect.geopackage import append_part, gpkg_atomic_path
from avalanche_hpc.detect.model import load_record
from avalanche_hpc.detect.scoring import (
    DetectSettings,
    list_detect_tasks,
    read_part,
    read_part_header,
    task_digest,
    task_source,
)
from avalanche_hpc.digest import digest_json
from avalanche_hpc.errors import MissingInputError, StageError
from avalanche_hpc.fuse import fuse_parts
from avalanche_hpc.fuse.fusion import FUSION_VERSION
from avalanche_hpc.fuse.product import FUSED_LAYER, append_fused_layer, write_fusion_files
from avalanche_hpc.fuse.units import PART_USE
from avalanche_hpc.progress import progress_bar
from avalanche_hpc.study import Study

log = logging.getLogger(__name__)


def current_parts(study: Study, experiment: str, record: dict, settings: DetectSettings
                  ) -> tuple[list[tuple[str, Path, str]], list[str]]:
    """([(task key, part path, digest)] of current parts, [task keys missing or stale])."""
    paths = study.detection_paths(experiment)
    settings = settings.for_study(study)
    parts, left_out = [], []
    for acq in list_detect_tasks(study):
        part = paths.part(acq.season, acq.orbit, acq.date)
        header = read_part_header(part)
        try:
            want = task_digest(task_source(study, acq), record, settings)
        except MissingInputError:
            want = None
        if header is not None and want is not None and header.get("digest") == want:
            parts.append((acq.key, part, want))
        else:
            left_out.append(acq.key)
    return parts, left_out


def _parts_digest(parts: list[tuple[str, Path, str]], record: dict, has_truth: bool) -> str:
    return digest_json({"parts": [(k, d) for k, _, d in parts], "model": record["model_digest"], "truth": has_truth,
                        "version": __version__, "fusion_version": FUSION_VERSION})


def publication_is_current(root: Path, experiment: str, settings: DetectSettings | None = None) -> bool:
    """Whether ``provenance.json`` was written from the current parts (nothing to republish)."""
    settings = settings or DetectSettings()
    study = Study.load(root)
    paths = study.detection_paths(experiment)
    record = load_record(study, experiment)
    if record is None or not paths.provenance.is_file():
        return False
    if len(study.config.orbits) > 1 and not (paths.fusion_evaluation.is_file() and paths.fusion_model.is_file()):
        return False  # published before orbit fusion existed (or its files were removed)
    parts, _ = current_parts(study, experiment, record, settings)
    try:
        old = json.loads(paths.provenance.read_text(encoding="utf-8")).get("parts_digest")
    except ValueError:
        return False
    return bool(parts) and old == _parts_digest(parts, record, study.truth_path.is_file())


def publish_detections(root: Path, experiment: str, settings: DetectSettings | None = None,
                       force: bool = False, progress: bool = False) -> Path:
    """Write the GeoPackage, activity table, evaluation and provenance from the parts; returns provenance.json."""
    settings = settings or DetectSettings()
    study = Study.load(root)
    settings = settings.for_study(study)
    paths = study.detection_paths(experiment)
    record = load_record(study, experiment)
    if record is None:
        raise MissingInputError(f"{paths.model} is missing: nothing was scored for experiment {experiment!r} -> "
                                f"'avalanche-hpc detect {study.root} -e {experiment}'")
    parts, left_out = current_parts(study, experiment, record, settings)
    if not parts:
        raise StageError(f"no current detections for experiment {experiment!r} under {paths.parts_dir} -> "
                         f"'avalanche-hpc detect {study.root} -e {experiment}'")
    if left_out:
        log.warning("publishing %d of %d dates: %d missing or out of date (%s%s) -> 'avalanche-hpc detect %s -e %s'",
                    len(parts), len(parts) + len(left_out), len(left_out), ", ".join(left_out[:5]),
                    ", ..." if len(left_out) > 5 else "", study.root, experiment)
    has_truth = study.truth_path.is_file()
    parts_digest = _parts_digest(parts, record, has_truth)
    outputs = [paths.geopackage, paths.activity] + ([paths.evaluation] if has_truth else [])
    fusing = len(study.config.orbits) > 1  # orbit fusion (avalanche_hpc/fuse): a layer and two files more
    if fusing:
        outputs += [paths.fusion_evaluation, paths.fusion_model]
    if not force and paths.provenance.is_file() and all(p.is_file() for p in outputs):
        try:
            if json.loads(paths.provenance.read_text(encoding="utf-8")).get("parts_digest") == parts_digest:
                log.info("detections of %s are published and current: %s", experiment, paths.geopackage)
                return paths.provenance
        except ValueError:
            pass

    corridors = study.read_corridors()
    polygons = corridors.set_index("path_id").geometry
    evaluator = Evaluator(read_truth(study.truth_path, study.inventory_path)) if has_truth else None
    activity: list[pd.DataFrame] = []
    slim: list[pd.DataFrame] = []  # the columns fusion needs, every part (fusion is per corridor over all dates)
    fusion = None
    n_rows = n_observed = 0
    with gpkg_atomic_path(paths.geopackage) as tmp, progress_bar(enabled=progress, transient=True) as bar:
        tid = bar.add_task("publish", total=len(parts), detail="")
        for i, (key, part_path, _) in enumerate(parts):
            bar.update(tid, detail=key)
            part = read_part(part_path)
            n_observed += append_part(tmp, part, polygons, corridors.crs, first=i == 0)
            n_rows += len(part)
            activity.append(activity_rows(part))
            if evaluator is not None:
                evaluator.add(part)
            if fusing:
                slim.append(part[PART_USE])
            bar.advance(tid)
        if fusing:
            bar.update(tid, detail="orbit fusion")
            fusion = fuse_parts(study, pd.concat(slim, ignore_index=True), record,
                                study.runs_dir(experiment) / record["split"] / "split.csv")
            if fusion is not None:
                append_fused_layer(tmp, fusion, polygons, corridors.crs)
    table = pd.concat(activity, ignore_index=True)[ACTIVITY_COLUMNS]
    write_text(paths.activity, table.to_csv(index=False, lineterminator="\n"))
    evaluation: dict[str, Any] | None = None
    if evaluator is not None:
        ev = evaluator.results()
        write_text(paths.evaluation, ev.to_csv(index=False, lineterminator="\n"))
        evaluation = {"file": paths.evaluation.name, "definitions": "POD = TP / (TP + FN) over truth events; "
                      "FAR = FP / (TP + FP) over detections (Eckerstorfer et al. 2019); see detect/evaluation.py"}
    if fusion is not None:
        write_fusion_files(paths.fusion_evaluation, paths.fusion_model, fusion)
    prov = {
        "fusion": None if fusion is None else {"files": [paths.fusion_evaluation.name, paths.fusion_model.name],
                                               "layer": FUSED_LAYER, "product_method": fusion.model["product_method"],
                                               "n_fused": int(fusion.detections["product"].sum())},
        "experiment": experiment, "study": study.config.name, "parts_digest": parts_digest,
        "settings": {"split": settings.split, "min_valid": settings.min_valid, "precision": settings.precision},
        "model": {k: v for k, v in record.items() if k != "inputs_fingerprint"},
        "parts": [{"task": k, "file": str(p.relative_to(paths.root)), "digest": d} for k, p, d in parts],
        "left_out": left_out, "n_rows": n_rows, "n_observed": n_observed,
        "outputs": [p.name for p in outputs], "evaluation": evaluation, "code_version": __version__,
        "published_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    write_json(paths.provenance, prov)
    log.info("detections of %s: %d rows (%d observed) from %d dates -> %s", experiment, n_rows, n_observed, len(parts),
             paths.geopackage)
    return paths.provenance
