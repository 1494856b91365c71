"""``detect_all``: every (selected) date scored, then the product published (what ``avalanche-hpc detect`` runs)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from avalanche_hpc.detect.model import prepare_model
from avalanche_hpc.detect.publish import publish_detections
from avalanche_hpc.detect.scoring import DetectSettings, _run, list_detect_tasks
from avalanche_hpc.errors import ConfigError
from avalanche_hpc.progress import progress_bar
from avalanche_hpc.study import Study


def detect_all(root: Path, experiment: str, settings: DetectSettings | None = None, *, season: str | None = None,
               orbit: str | None = None, date: dt.date | None = None, force: bool = False, progress: bool = True,
               publish: bool = True) -> Path:
    """Score every (selected) date, then publish the GeoPackage, activity table and evaluation.

    Returns the detections folder. Every check (runs, store, validation set) happens before
    anything is written; dates whose parts are current are skipped.
    """
    settings = settings or DetectSettings()
    settings.validate()
    study = Study.load(root)
    settings = settings.for_study(study)
    record = prepare_model(study, experiment, settings.split, settings.precision, force=force)
    acqs = list_detect_tasks(study, season, orbit, date)
    if not acqs:
        raise ConfigError(f"no acquisition matches season={season} orbit={orbit} date={date} in {study.root}")
    with progress_bar(enabled=progress) as bar:
        tid = bar.add_task("detect", total=len(acqs), detail="")
        for acq in acqs:
            bar.update(tid, detail=acq.key)
            _run(study, experiment, acq, settings, record, force, progress=False)
            bar.advance(tid)
    if publish:
        publish_detections(root, experiment, settings, progress=progress)
    return study.detection_paths(experiment).root
