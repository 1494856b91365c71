"""The preprocess stage: one task per (season, orbit, date) -> one HDF5 shard of patches.

Per task (acquisition ``t1`` with previous acquisition ``t0`` of the same orbit and season):

1. deposition zones (``work/deposition.gpkg``, computed once per study) give one centre per corridor;
2. the summer reference of (orbit, season): per pixel, the mean **linear** power of the summer
   dates' valid pixels, for VV and VH, cached in ``work/summer/{season}/{orbit}.h5``. Only the
   ``P x P`` windows around the deposition centres are cached (cost ~ corridors, not scene area);
3. ``P x P`` windows (``patch_size``, 64) around each centre are read from VV, VH and
   ``layover_shadow`` of ``t1`` and ``t0`` (see ``raster.py``), converted to dB and marked once
   per date (a task's ``t1`` is the next task's ``t0``);
4. channels, in dB, as the paper (``channels.py``: the arithmetic, block by block)::

       VV*     = 10 log10(VV(t1) / VV_summer)
       VV*_old = 10 log10(VV(t0) / VV_summer)
       VHdiff  = VH*(t1) - VH*(t0),  VH* = 10 log10(VH / VH_summer)

   A pixel is valid when all six inputs are finite and positive and neither ``t1`` nor ``t0``
   marks it as layover/shadow; invalid pixels are NaN in all three channels, and
   ``valid_fraction`` is the share of valid pixels of the patch;
5. labels from ``labels.label_map`` (inventory windows against ``(t0, t1]``);
6. the shard is written atomically (``store.write_patches``: temp file + rename) with attributes
   recording the digest of its inputs and settings; a re-run skips a shard whose digest is
   current (``force=True`` redoes it). Two tasks writing the same shard each write their own
   temporary file; the last rename wins and both candidates are complete. ``preprocess_all``
   writes each shard in a background thread while it computes the next task.

The first acquisition of a season has no ``t0``: it produces no shard (logged).

Digests identify rasters by size + modification time (a task never reads a whole scene to
decide), and tables (inventory via the label map, corridors; the DEM up to 2 MiB) by content.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from avalanche_hpc import __version__
from avalanche_hpc.atomic import atomic_path
from avalanche_hpc.cleanup import clean_tmp
from avalanche_hpc.digest import digest_json, sha256_text
from avalanche_hpc.errors import ConfigError, InputError, MissingInputError, Problem
from avalanche_hpc.ids import check_id
from avalanche_hpc.inputs.grid import Grid
from avalanche_hpc.preprocess.channels import compute_channels_db, mark_invalid, to_db
from avalanche_hpc.preprocess.deposition import file_fingerprint, load_deposition
from avalanche_hpc.preprocess.labels import label_map
from avalanche_hpc.preprocess.raster import (
    dem_grid,
    read_db_windows,
    read_mask_windows,
    read_power_windows,
    window_origins,
)
from avalanche_hpc.progress import progress_bar
from avalanche_hpc.store.layout import CHANNELS, open_h5, read_attrs, write_patches
from avalanche_hpc.study import LAYOVER_SHADOW, Acquisition, Study, fmt_yyyymmdd

log = logging.getLogger(__name__)

__all__ = [
    "StudyInputs",
    "clear_process_inputs",
    "incomplete_tasks",
    "list_tasks",
    "prepare_references",
    "preprocess_all",
    "preprocess_task",
    "summer_reference",
    "task_is_complete",
]

PREPROCESS_VERSION = 2  # bump when the arithmetic or the shard content changes (2: channels as dB differences)


# -- study inputs shared by the tasks of one process ---------------------------------------------
@dataclass
class StudyInputs:
    """What every task of a study needs, loaded once per process."""

    study: Study
    deposition: pd.DataFrame
    inventory: pd.DataFrame
    grid: Grid
    _summer_digest: dict = field(default_factory=dict)
    _summer: dict = field(default_factory=dict)  # (season, orbit) -> (digest, {"VV", "VH"} windows)
    _summer_db: dict = field(default_factory=dict)  # (season, orbit) -> (digest, marked dB windows)
    _labels: dict = field(default_factory=dict)  # (prev_date, date) -> label map (inventory + deposition only)
    _last_date: tuple | None = None  # ((orbit, date, scene fingerprints), (vv, vh) marked): t1 of a task is t0 of the next

    @classmethod
    def load(cls, root: Path) -> StudyInputs:
        study = Study.load(root)
        dep = load_deposition(root)
        inv = study.read_inventory()
        return cls(study, dep, inv, dem_grid(study.dem_path))

    @property
    def patch_size(self) -> int:
        return self.study.config.patch_size

    def origins(self) -> tuple[np.ndarray, np.ndarray]:
        return window_origins(self.deposition["row"].to_numpy(), self.deposition["col"].to_numpy(), self.patch_size)

    def settings(self) -> dict:
        cfg = self.study.config
        out = {"version": PREPROCESS_VERSION, "patch_size": cfg.patch_size, "units": cfg.units,
               "channels": list(CHANNELS), "deposition": self.deposition.attrs.get("digest")}
        if cfg.patch_dtype != "float32":  # float32 shards keep their digests
            out["patch_dtype"] = cfg.patch_dtype
        return out

    def scene_fingerprints(self, orbit: str, date: dt.date) -> dict[str, str]:
        out = {}
        for band in ("VV", "VH", LAYOVER_SHADOW):
            p = self.study.scene_path(orbit, date, band)
            if p.is_file():
                out[band] = file_fingerprint(p, hash_limit=0)
            elif band != LAYOVER_SHADOW:
                raise MissingInputError(
                    f"{p} is missing (orbit {orbit}, date {fmt_yyyymmdd(date)}) -> add the {band} scene "
                    f"or remove the date from the study (scenes/{orbit}/{fmt_yyyymmdd(date)}/)"
                )
        return out

    def summer_digest(self, season: str, orbit: str) -> str:
        key = (season, orbit)
        if key not in self._summer_digest:
            dates = self.study.summer_dates(season, orbit)
            if not dates:
                raise InputError(Problem(str(self.study.study_toml), f"seasons.{season}.summer.{orbit}",
                                         "no summer reference dates for this orbit",
                                         "list snow-free summer dates with scenes for the orbit"))
            parts = {"settings": self.settings(),
                     "scenes": {fmt_yyyymmdd(d): self.scene_fingerprints(orbit, d) for d in dates}}
            self._summer_digest[key] = digest_json(parts)
        return self._summer_digest[key]

    def labels(self, acq: Acquisition) -> pd.DataFrame:
        """The label map of (prev_date, date], computed once per process (verify checks and digests both need it)."""
        key = (acq.prev_date, acq.date)
        if key not in self._labels:
            self._labels[key] = label_map(self.inventory, self.deposition, acq.previous, acq.date)
        return self._labels[key]

    def task_digest(self, acq: Acquisition, labels: pd.DataFrame) -> str:
        parts = {
            "settings": self.settings(),
            "summer": self.summer_digest(acq.season, acq.orbit),
            "t1": self.scene_fingerprints(acq.orbit, acq.date),
            "t0": self.scene_fingerprints(acq.orbit, acq.previous),
            "labels": sha256_text(labels.to_csv(index=False)),
            "massifs": sha256_text("|".join(self.deposition["massif"].astype(str))),
        }
        return digest_json(parts)




# -- tasks ---------------------------------------------------------------------------------------
def list_tasks(root: Path) -> list[Acquisition]:
    """Every acquisition that produces a shard: all winter acquisitions with a previous one."""
    return Study.load(root).acquisitions(include_first=False)


def _find_acquisition(study: Study, season: str, orbit: str, date: dt.date) -> Acquisition:
    try:
        study.config.season(season)
        study.config.orbit(orbit)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from e
    acqs = study.acquisitions(season=season, orbit=orbit)
    for a in acqs:
        if a.date == date:
            return a
    known = ", ".join(fmt_yyyymmdd(a.date) for a in acqs) or "none"
    raise ConfigError(f"{fmt_yyyymmdd(date)} is not a winter acquisition of season {season}, orbit {orbit} "
                      f"in {study.root}; its dates are: {known} -> pick one of them")


def summer_reference(inputs: StudyInputs, season: str, orbit: str) -> dict[str, np.ndarray]:
    """Summer reference windows {"VV", "VH"} (n_corridors, P, P), linear power; cached on disk."""
    study, p = inputs.study, inputs.patch_size
    path = study.summer_ref_path(season, orbit)
    digest = inputs.summer_digest(season, orbit)
    memo = inputs._summer.get((season, orbit))
    if memo is not None and memo[0] == digest:
        return memo[1]
    if path.is_file():
        try:
            with open_h5(path) as f:
                if f.attrs.get("digest") == digest:
                    out = {"VV": f["VV"][()], "VH": f["VH"][()]}
                    inputs._summer[(season, orbit)] = (digest, out)
                    return out
        except OSError:
            log.warning("summer reference %s unreadable; recomputing", path)
    r0, c0 = inputs.origins()
    out = {}
    dates = study.summer_dates(season, orbit)
    for band in ("VV", "VH"):
        total = np.zeros((len(r0), p, p), dtype=np.float64)
        count = np.zeros((len(r0), p, p), dtype=np.int32)
        for d in dates:
            where = f"summer reference {season}/{orbit}/{fmt_yyyymmdd(d)} {band}"
            lin = read_power_windows(study.scene_path(orbit, d, band), r0, c0, p, study.config.units,
                                     inputs.grid, where)
            lin[read_mask_windows(study.scene_path(orbit, d, LAYOVER_SHADOW), r0, c0, p, inputs.grid, where)] = np.nan
            ok = np.isfinite(lin) & (lin > 0)
            total += np.where(ok, lin, 0.0)
            count += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            out[band] = np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
    with atomic_path(path) as tmp, open_h5(tmp, "w") as f:
        for band, arr in out.items():
            f.create_dataset(band, data=arr)
            f[band].attrs["units"] = "linear power (m2 m-2)"
        f.create_dataset("path_id", data=inputs.deposition["path_id"].astype(str).to_numpy(dtype=object),
                         dtype=h5py.string_dtype())
        f.attrs["digest"] = digest
        f.attrs["dates"] = [fmt_yyyymmdd(d) for d in dates]
        f.attrs["season"], f.attrs["orbit"] = season, orbit
    log.info("summer reference %s/%s from %d dates -> %s", season, orbit, len(dates), path)
    inputs._summer[(season, orbit)] = (digest, out)
    return out


def summer_reference_db(inputs: StudyInputs, season: str, orbit: str) -> dict[str, np.ndarray]:
    """``summer_reference`` in dB and marked (``mark_invalid``), once per (season, orbit) and process."""
    digest = inputs.summer_digest(season, orbit)
    memo = inputs._summer_db.get((season, orbit))
    if memo is None or memo[0] != digest:
        db = {band: to_db(arr, "linear") for band, arr in summer_reference(inputs, season, orbit).items()}
        mark_invalid(db["VV"], db["VH"])
        memo = (digest, db)
        inputs._summer_db[(season, orbit)] = memo
    return memo[1]


def prepare_references(root: Path, progress: bool = False) -> None:
    """Deposition zones and every (season, orbit) summer reference, before an array of tasks.

    Optional: each task computes what is missing itself, but running this first avoids many
    array tasks computing the same reference at once.
    """
    inputs = StudyInputs.load(Path(root))
    for season, orbit in sorted({(a.season, a.orbit) for a in list_tasks(root)}):
        summer_reference(inputs, season, orbit)


def _shard_is_current(path: Path, digest: str) -> bool:
    if not path.is_file():
        return False
    try:
        attrs = read_attrs(path)
    except OSError:
        return False
    return attrs.get("digest") == digest and bool(attrs.get("complete", False))


_INPUTS_CACHE: dict[Path, tuple[tuple, StudyInputs]] = {}


def clear_process_inputs() -> None:
    """Forget the study inputs this process keeps (``_process_inputs``): the next task or status
    loads the tables again, as a fresh process would."""
    _INPUTS_CACHE.clear()


def _process_inputs(root: Path) -> StudyInputs:
    """``StudyInputs`` reused across ``task_is_complete`` and ``preprocess_task`` calls while the
    study's tables are unchanged.

    A status over thousands of tasks then loads the deposition table and inventory once, and the
    local executor's consecutive preprocess tasks share them (and the last date read). The
    key is the (size, mtime) of study.toml, inventory.csv, corridors.gpkg, dem.tif and
    work/deposition.gpkg; scene files are fingerprinted per call anyway.
    """
    root = Path(root).resolve()
    names = ("study.toml", "inventory.csv", "corridors.gpkg", "dem.tif", "work/deposition.gpkg")
    key = tuple((st.st_size, st.st_mtime_ns) if (st := _stat(root / n)) else None for n in names)
    hit = _INPUTS_CACHE.get(root)
    if hit is not None and hit[0] == key:
        hit[1]._summer_digest.clear()  # summer scenes may have changed: recompute their digests
        return hit[1]
    inputs = StudyInputs.load(root)
    key = tuple((st.st_size, st.st_mtime_ns) if (st := _stat(root / n)) else None for n in names)
    _INPUTS_CACHE.clear()
    _INPUTS_CACHE[root] = (key, inputs)
    return inputs


def _stat(path: Path):
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def task_is_complete(root: Path, season: str, orbit: str, date: dt.date) -> bool:
    """True when the shard of this task exists and was made from the current inputs and settings."""
    inputs = _process_inputs(Path(root))
    acq = _find_acquisition(inputs.study, season, orbit, date)
    if acq.prev_date is None:
        return True  # nothing to produce
    return _shard_is_current(inputs.study.shard_path(season, orbit, date), inputs.task_digest(acq, inputs.labels(acq)))


def incomplete_tasks(root: Path) -> list[Acquisition]:
    """The tasks whose shard is missing or out of date (one study load for all of them)."""
    inputs = StudyInputs.load(Path(root))
    out = []
    for acq in inputs.study.acquisitions(include_first=False):
        shard = inputs.study.shard_path(acq.season, acq.orbit, acq.date)
        if not _shard_is_current(shard, inputs.task_digest(acq, inputs.labels(acq))):
            out.append(acq)
    return out


def _read_date(inputs: StudyInputs, orbit: str, date: dt.date, r0, c0) -> tuple[np.ndarray, np.ndarray]:
    """VV, VH (dB) windows of one date, NaN wherever either band or the layover/shadow mask is
    invalid (``mark_invalid``); the last date read is kept in memory, so a run of consecutive tasks
    in one process reads (and marks) every date once, not twice."""
    key = (orbit, date, inputs.scene_fingerprints(orbit, date))  # a replaced scene is read again
    if inputs._last_date is not None and inputs._last_date[0] == key:
        return inputs._last_date[1]
    vv, vh, mask = _read_date_files(inputs, orbit, date, r0, c0)
    mark_invalid(vv, vh, mask)
    inputs._last_date = (key, (vv, vh))
    return vv, vh


def _read_date_files(inputs: StudyInputs, orbit: str, date: dt.date, r0, c0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    study, p = inputs.study, inputs.patch_size
    where = f"orbit {orbit} date {fmt_yyyymmdd(date)}"
    vv = read_db_windows(study.scene_path(orbit, date, "VV"), r0, c0, p, study.config.units, inputs.grid, where + " VV")
    vh = read_db_windows(study.scene_path(orbit, date, "VH"), r0, c0, p, study.config.units, inputs.grid, where + " VH")
    mask = read_mask_windows(study.scene_path(orbit, date, LAYOVER_SHADOW), r0, c0, p, inputs.grid, where + " mask")
    return vv, vh, mask


@dataclass
class _Shard:
    """A task's computed shard, ready to be written (``write``: atomic, temp file + fsync + rename)."""

    path: Path
    patches: np.ndarray
    meta: pd.DataFrame
    attrs: dict
    dtype: str
    key: str

    def write(self) -> Path:
        write_patches(self.path, self.patches, self.meta, self.attrs, dtype=self.dtype)
        log.debug("%s: %d patches -> %s", self.key, len(self.meta), self.path)
        return self.path


def _compute_task(inputs: StudyInputs, acq: Acquisition, force: bool) -> _Shard | None:
    """The task's shard in memory, or None when the shard on disk is current (and not ``force``)."""
    study = inputs.study
    shard = study.shard_path(acq.season, acq.orbit, acq.date)
    labels = inputs.labels(acq)
    digest = inputs.task_digest(acq, labels)
    if not force and _shard_is_current(shard, digest):
        log.debug("%s: shard up to date, skipped", acq.key)
        return None
    summer = summer_reference_db(inputs, acq.season, acq.orbit)
    r0, c0 = inputs.origins()
    vv0, vh0 = _read_date(inputs, acq.orbit, acq.previous, r0, c0)
    vv1, vh1 = _read_date(inputs, acq.orbit, acq.date, r0, c0)
    patches, frac = compute_channels_db(vv1, vh1, vv0, vh0, summer["VV"], summer["VH"], dtype=study.config.patch_dtype)
    dep = inputs.deposition
    meta = pd.DataFrame({
        "path_id": dep["path_id"].astype(str).to_numpy(),
        "massif": dep["massif"].astype(str).to_numpy(),
        "season": acq.season,
        "orbit": acq.orbit,
        "date": acq.date.isoformat(),
        "prev_date": acq.previous.isoformat(),
        "label": labels["label"].to_numpy(),
        "event_id": labels["event_id"].to_numpy(),
        "deposit_area_m2": labels["deposit_area_m2"].to_numpy(),
        "elevation": dep["elevation"].to_numpy(),
        "slope": dep["slope"].to_numpy(),
        "aspect": dep["aspect"].to_numpy(),
        "valid_fraction": frac,
        "x": dep["x"].to_numpy(),
        "y": dep["y"].to_numpy(),
    })
    attrs = {
        "digest": digest, "complete": True, "task": acq.key, "season": acq.season, "orbit": acq.orbit,
        "date": acq.date.isoformat(), "prev_date": acq.previous.isoformat(), "study": study.config.name,
        "created_by": f"avalanche-hpc {__version__}", "settings": json.dumps(inputs.settings(), sort_keys=True),
        "units": "dB", "elevation_units": "m", "slope_units": "degrees",
        "aspect_units": "degrees clockwise from north (downslope direction)",
    }
    return _Shard(shard, patches, meta, attrs, study.config.patch_dtype, acq.key)


def preprocess_task(root: Path, season: str, orbit: str, date: dt.date, force: bool = False) -> Path | None:
    """Run one (season, orbit, date) task; returns the shard path, None for a season's first date.

    Before anything is written, what the task reads is validated as ``inputs check`` would
    (``taskcheck.require_valid_task``: the tables and this task's scene headers, cached per
    process), and temporary files left in its folders by dead writers are removed.
    """
    from avalanche_hpc.inputs.taskcheck import require_valid_task

    check_id(season, "season id", where="--season")
    check_id(orbit, "orbit id", where="--orbit")
    require_valid_task(Path(root), season, orbit, date)
    inputs = _process_inputs(Path(root))  # tables loaded once per process while unchanged
    study = inputs.study
    clean_tmp([study.work_dir], recursive=False)
    clean_tmp([study.summer_ref_path(season, orbit).parent, study.shard_path(season, orbit, date).parent])
    acq = _find_acquisition(inputs.study, season, orbit, date)
    if acq.prev_date is None:
        log.info("%s skipped: first acquisition of season %s on orbit %s (no previous acquisition to "
                 "compare with)", acq.key, season, orbit)
        return None
    shard = _compute_task(inputs, acq, force)
    return study.shard_path(season, orbit, date) if shard is None else shard.write()


def preprocess_all(root: Path, force: bool = False, progress: bool = True, season: str | None = None,
                   orbit: str | None = None, check: bool = True) -> list[Path]:
    """Every task (optionally of one season/orbit), in this process; returns the shard paths.

    The whole study is validated first (``checks.require_valid_study``) unless ``check=False``.
    """
    root = Path(root)
    if check:
        from avalanche_hpc.inputs.checks import require_valid_study

        require_valid_study(root)
    clean_tmp([root / "work"])
    inputs = StudyInputs.load(root)
    study = inputs.study
    try:
        all_acqs = study.acquisitions(season=season, orbit=orbit)
        if season is not None:
            study.config.season(season)
        if orbit is not None:
            study.config.orbit(orbit)
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from e
    for a in all_acqs:
        if a.prev_date is None:
            log.info("%s skipped: first acquisition of the season on orbit %s (no previous acquisition)", a.key, a.orbit)
    tasks = [a for a in all_acqs if a.prev_date is not None]
    paths, written = [], 0
    # Each shard is written (HDF5 write, fsync, rename) by one background thread while this one
    # reads and computes the next task; at most one shard waits, so memory holds two tasks' patches.
    # A failed write raises here, at the next task or at the end; a kill leaves at most the one
    # pending temporary file (removed by the next run, which redoes that task).
    with progress_bar(enabled=progress) as bar, ThreadPoolExecutor(1, thread_name_prefix="shard-writer") as pool:
        tid = bar.add_task("preprocess", total=len(tasks), detail="")
        pending: Future | None = None
        for acq in tasks:
            bar.update(tid, detail=acq.key)
            shard = _compute_task(inputs, acq, force)
            if pending is not None:
                pending.result()
                bar.advance(tid)
                pending = None
            paths.append(study.shard_path(acq.season, acq.orbit, acq.date))
            if shard is None:
                bar.advance(tid)
                continue
            written += 1
            pending = pool.submit(shard.write)
        if pending is not None:
            pending.result()
            bar.advance(tid)
    log.info("preprocess %s: %d shards written, %d already up to date", root, written, len(tasks) - written)
    return paths
