"""Scoring: one task per (season, orbit, date) scores every corridor of that date -> one part file.

A task reads its date's rows in chunks of ``batch_size`` patches (memory: one chunk, the model
and one row per corridor; flat in the number of dates) from the date's shard
``work/shards/{season}/{orbit}/{YYYYMMDD}.h5`` - the source the store's rows of that date were
merged from (same rows, same bytes), so a new acquisition is scored right after its
preprocess task, without re-merging the store. When the shard is gone (a consolidated store
outlives its shards) the rows are read from the store.

Every row is kept in the part (``observed`` = valid fraction >= ``min_valid``; only observed
rows are scored, the others count in the activity table as not observed). The part's first line
records the digest of what it depends on: the source (the shard's own input digest, or the
store's), the model (``model.model_digest``), ``min_valid`` and the code version. A task whose
part has the current digest is skipped; a changed date or model is scored again; a killed task
leaves no part (atomic rename) and is redone by a re-run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from avalanche_hpc.atomic import atomic_path
from avalanche_hpc.detect.model import DETECT_VERSION, current_record, get_detector, prepare_model
from avalanche_hpc.digest import digest_json
from avalanche_hpc.errors import ConfigError, MissingInputError
from avalanche_hpc.progress import progress_bar
from avalanche_hpc.store.layout import open_h5, read_attrs, read_meta
from avalanche_hpc.study import Acquisition, Study, fmt_yyyymmdd

log = logging.getLogger(__name__)

PART_HEADER = "# avalanche-hpc detections "
PART_COLUMNS = ["path_id", "massif", "season", "orbit", "prev_date", "date", "observed", "valid_fraction",
                "cnn_prob", "baseline_prob", "cnn_detected", "baseline_detected", "label", "event_id",
                "deposit_area_m2", "elevation", "slope", "aspect", "x", "y"]


@dataclass(frozen=True)
class DetectSettings:
    """What detection is asked to do (recorded with the outputs)."""

    split: str = "random"  # the split whose CNN seeds and baseline are used (the main split by default)
    min_valid: float | None = None  # rows with a smaller valid-pixel share are not observed (not scored);
    # None: the study's min_valid_fraction (study.toml, default 0.5), the same filter as learning's
    precision: str = "auto"  # auto | fp32 | bf16 (see model.py)
    batch_size: int = 128  # patches per chunk read and scored

    def for_study(self, study: Study) -> DetectSettings:
        """These settings with ``min_valid`` filled from the study when unset."""
        if self.min_valid is not None:
            return self
        return replace(self, min_valid=float(study.config.min_valid_fraction))

    def validate(self) -> None:
        if self.min_valid is not None and not 0.0 <= self.min_valid <= 1.0:
            raise ConfigError(f"min_valid={self.min_valid}: a share of valid pixels, between 0 and 1")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1")


def list_detect_tasks(study: Study, season: str | None = None, orbit: str | None = None,
                      date: dt.date | None = None) -> list[Acquisition]:
    """Every (season, orbit, date) with a previous acquisition (the ones with patches)."""
    return [a for a in study.acquisitions(season, orbit, include_first=False) if date is None or a.date == date]


@dataclass(frozen=True)
class Source:
    path: Path
    start: int
    stop: int
    digest: str


def task_source(study: Study, acq: Acquisition) -> Source:
    """Where the rows of ``acq`` are read: its shard, else its block of the store."""
    shard = study.shard_path(acq.season, acq.orbit, acq.date)
    if shard.is_file():
        attrs = read_attrs(shard)
        if attrs.get("complete"):
            with open_h5(shard) as f:
                n = int(f["patches"].shape[0])
            return Source(shard, 0, n, f"shard:{attrs.get('digest')}")
    store = study.store_path
    if store.is_file():
        meta = read_meta(store)
        rows = np.flatnonzero((meta["season"] == acq.season).to_numpy() & (meta["orbit"] == acq.orbit).to_numpy()
                              & (meta["date"] == acq.date.isoformat()).to_numpy())
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
            return Source(store, int(rows[0]), int(rows[-1]) + 1,
                          f"store:{read_attrs(store).get('digest')}:{acq.key}")
    raise MissingInputError(f"no patches for {acq.key}: neither its shard {shard} nor the store {store} holds them -> "
                            f"'avalanche-hpc preprocess {study.root} --season {acq.season} --orbit {acq.orbit} "
                            f"--date {fmt_yyyymmdd(acq.date)}'")


def task_digest(source: Source, record: dict, settings: DetectSettings) -> str:
    return digest_json({"source": source.digest, "model": record["model_digest"], "min_valid": settings.min_valid,
                        "version": DETECT_VERSION})


def read_part_header(path: Path) -> dict | None:
    """The JSON header of a part file (None when absent or unreadable)."""
    try:
        with open(path, encoding="utf-8") as fh:
            line = fh.readline()
    except OSError:
        return None
    if not line.startswith(PART_HEADER):
        return None
    try:
        return json.loads(line[len(PART_HEADER):])
    except ValueError:
        return None


def read_part(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, skiprows=1, dtype={"path_id": str, "massif": str, "season": str, "orbit": str,
                                                 "prev_date": str, "date": str, "event_id": str},
                       keep_default_na=False, na_values={c: [""] for c in PART_COLUMNS if c not in
                                                         ("path_id", "massif", "season", "orbit", "event_id")})


def task_is_current(study: Study, experiment: str, acq: Acquisition, settings: DetectSettings) -> bool:
    """Whether the part of ``acq`` exists and matches the current source and model (cheap)."""
    settings = settings.for_study(study)
    record = current_record(study, experiment, settings.split, settings.precision)
    if record is None:
        return False
    header = read_part_header(study.detection_paths(experiment).part(acq.season, acq.orbit, acq.date))
    if header is None:
        return False
    try:
        return header.get("digest") == task_digest(task_source(study, acq), record, settings)
    except MissingInputError:
        return False


def score_rows(detector, path: Path, start: int, stop: int, min_valid: float, batch_size: int,
               progress=None) -> pd.DataFrame:
    """The part table of rows ``[start, stop)`` of a shard or store, read and scored chunk by chunk."""
    meta = read_meta(path).iloc[start:stop].reset_index(drop=True)
    observed = meta["valid_fraction"].to_numpy(dtype=float) >= min_valid
    cnn = np.full(len(meta), np.nan)
    base = np.full(len(meta), np.nan)
    with open_h5(path) as f:
        ds = f["patches"]
        for a in range(0, len(meta), batch_size):
            b = min(a + batch_size, len(meta))
            sel = np.flatnonzero(observed[a:b])
            if len(sel):
                patches = ds[start + a:start + b][sel]
                cnn[a + sel] = detector.cnn_prob(patches)
                base[a + sel] = detector.baseline_prob(patches)
            if progress is not None:
                progress(b - a)
    thr_c = detector.record["cnn"]["threshold"]["threshold"]
    thr_b = detector.record["baseline"]["threshold"]["threshold"]
    out = meta[["path_id", "massif", "season", "orbit", "prev_date", "date"]].copy()
    out["observed"] = observed
    out["valid_fraction"] = meta["valid_fraction"].to_numpy(dtype=float)
    out["cnn_prob"] = cnn
    out["baseline_prob"] = base
    out["cnn_detected"] = observed & (np.nan_to_num(cnn, nan=-1.0) >= thr_c)
    out["baseline_detected"] = observed & (np.nan_to_num(base, nan=-1.0) >= thr_b)
    for c in ("label", "event_id", "deposit_area_m2", "elevation", "slope", "aspect", "x", "y"):
        out[c] = meta[c].to_numpy()
    return out[PART_COLUMNS]


def write_part(path: Path, table: pd.DataFrame, header: dict) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(PART_HEADER + json.dumps(header, sort_keys=True) + "\n")
            table.to_csv(fh, index=False, lineterminator="\n")


def detect_task(root: Path, experiment: str, season: str, orbit: str, date: dt.date,
                settings: DetectSettings | None = None, force: bool = False, progress: bool = False) -> Path:
    """Score one (season, orbit, date) -> its part file (skipped when current); returns the part's path."""
    settings = settings or DetectSettings()
    settings.validate()
    study = Study.load(root)
    settings = settings.for_study(study)
    acqs = list_detect_tasks(study, season, orbit, date)
    if not acqs:
        raise ConfigError(f"{season}/{orbit}/{fmt_yyyymmdd(date)} is not an acquisition with a previous one in "
                          f"{study.root}; 'avalanche-hpc detect --help' lists how tasks are chosen")
    return _run(study, experiment, acqs[0], settings, prepare_model(study, experiment, settings.split,
                                                                     settings.precision), force, progress)


def _run(study: Study, experiment: str, acq: Acquisition, settings: DetectSettings, record: dict, force: bool,
         progress: bool) -> Path:
    settings = settings.for_study(study)
    assert settings.min_valid is not None
    paths = study.detection_paths(experiment)
    part = paths.part(acq.season, acq.orbit, acq.date)
    source = task_source(study, acq)
    digest = task_digest(source, record, settings)
    header = read_part_header(part)
    if not force and header is not None and header.get("digest") == digest:
        log.debug("detections of %s are current: skipped", acq.key)
        return part
    detector = get_detector(record, study.root)
    if progress:
        with progress_bar(transient=True) as bar:
            tid = bar.add_task(f"detect {acq.key}", total=source.stop - source.start, detail="")
            table = score_rows(detector, source.path, source.start, source.stop, settings.min_valid,
                               settings.batch_size, lambda n: bar.advance(tid, n))
    else:
        table = score_rows(detector, source.path, source.start, source.stop, settings.min_valid, settings.batch_size)
    write_part(part, table, {
        "digest": digest, "task": acq.key, "source": str(source.path.relative_to(study.root)),
        "source_digest": source.digest, "model_digest": record["model_digest"], "min_valid": settings.min_valid,
        "n_rows": len(table), "n_observed": int(table["observed"].sum()),
        "cnn_detections": int(table["cnn_detected"].sum()), "baseline_detections": int(table["baseline_detected"].sum()),
        "precision": detector.mode, "written_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    log.info("detect %s: %d corridors, %d observed, %d CNN / %d baseline detections", acq.key, len(table),
             int(table["observed"].sum()), int(table["cnn_detected"].sum()), int(table["baseline_detected"].sum()))
    return part
