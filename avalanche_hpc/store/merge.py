"""Merge the shards into one patch store (``verify.py`` checks it and counts what it holds).

``merge_store`` writes ``STUDY/work/patches.h5`` in the layout of ``store.py``, rows in task
order (season, orbit, date as ``list_tasks`` gives them) and, within a task, corridor order.
Three layouts are possible:

- ``consolidated`` (the default): one self-contained file; patches are copied shard by shard
  (streamed, never all in memory), chunked one patch per chunk, uncompressed;
- ``virtual``: ``/patches`` is an HDF5 virtual dataset mapping the shards' ``/patches``
  (relative paths, so the study directory can move); only the metadata is copied;
- ``seasonal`` (campaigns of several winters): one consolidated store per season,
  ``work/seasons/{season}.h5``, each rewritten only when one of its shards changed, behind one
  ``patches.h5`` whose ``/patches`` is a virtual dataset over the season stores. Adding a date
  rewrites one season; adding a season writes one store; nothing else is copied again, and a
  random read goes through one VDS mapping of a few sources (one per season, not one per shard).
  ``auto`` (the default) is ``seasonal`` for a study of several seasons, else ``consolidated``.

The default was chosen by ``benchmarks/bench_preprocess.py`` (see ``docs/benchmarks.md``):
a consolidated copy costs one sequential copy at merge time but serves the random single-patch
reads of training faster, keeps working when shards are deleted or rewritten, and is one file
to stage to a node's local disk. ``layout="virtual"`` remains available for very large studies
where a second copy of the data is unwelcome.

Run ``merge_store`` after every preprocess task has finished (a SLURM ``afterok``
dependency). It first runs the study's cleaner over ``work/`` (``cleanup.py``: only temporary
files whose writer is certainly gone) and validates the study's tables and scene headers
(``inputs check``), so a study that check refuses is never merged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from avalanche_hpc import __version__
from avalanche_hpc.atomic import atomic_path
from avalanche_hpc.cleanup import clean_study_tmp
from avalanche_hpc.digest import digest_json
from avalanche_hpc.errors import ConfigError, StageError
from avalanche_hpc.preprocess.tasks import StudyInputs, _shard_is_current
from avalanche_hpc.progress import progress_bar
from avalanche_hpc.store.layout import (
    CHANNELS,
    META_COLUMNS,
    _write_attrs,
    _write_meta,
    open_h5,
    open_patch_writer,
    read_attrs,
    read_meta,
)

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_LAYOUT", "LAYOUTS", "current_shards", "merge_store", "resolve_layout", "season_store_path",
           "shards_by_season", "store_digest", "store_is_current"]

LAYOUTS = ("consolidated", "virtual", "seasonal", "auto")
DEFAULT_LAYOUT = "auto"  # consolidated for one season, seasonal for several
BLOCK = 2048  # rows per block when copying or scanning patches


def current_shards(inputs: StudyInputs) -> list[tuple[str, Path, str]]:
    """(task key, shard path, digest) of every task; raises StageError when some are missing/stale."""
    study = inputs.study
    out, bad = [], []
    for acq in study.acquisitions(include_first=False):
        shard = study.shard_path(acq.season, acq.orbit, acq.date)
        digest = inputs.task_digest(acq, inputs.labels(acq))
        if not _shard_is_current(shard, digest):
            bad.append(f"{acq.key} ({'missing' if not shard.is_file() else 'out of date'})")
        out.append((acq.key, shard, digest))
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise StageError(
            f"{len(bad)} preprocess task(s) of {study.root} are not complete: {', '.join(bad[:10])}{more} -> "
            f"run 'avalanche-hpc preprocess {study.root}' first"
        )
    return out


def _has_digest(store: Path, digest: str) -> bool:
    try:
        return store.is_file() and read_attrs(store).get("digest") == digest
    except OSError:
        return False


def store_is_current(root: Path, layout: str = DEFAULT_LAYOUT) -> bool:
    """Whether ``work/patches.h5`` was merged, with ``layout``, from the current shards (the digest
    ``merge_store`` compares before skipping); False while a shard is missing or out of date."""
    inputs = StudyInputs.load(Path(root))
    layout = resolve_layout(layout, len(inputs.study.config.seasons))
    try:
        shards = current_shards(inputs)
    except StageError:
        return False
    return _has_digest(inputs.study.store_path, store_digest(layout, shards))


def merge_store(root: Path, force: bool = False, layout: str = DEFAULT_LAYOUT, progress: bool = False) -> Path:
    """Write ``work/patches.h5`` from the shards unless it is up to date; returns its path."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout={layout!r}: use one of {list(LAYOUTS)}")
    root = Path(root)
    from avalanche_hpc.inputs.taskcheck import require_valid_tables

    require_valid_tables(root, scenes=True)
    inputs = StudyInputs.load(root)
    study = inputs.study
    layout = resolve_layout(layout, len(study.config.seasons))
    store = study.store_path
    clean_study_tmp(study.work_dir)
    shards = current_shards(inputs)
    digest = store_digest(layout, shards)
    if not force and _has_digest(store, digest):
        log.info("patch store up to date: %s", store)
        return store
    p = inputs.patch_size
    attrs = {
        "digest": digest, "layout": layout, "n_shards": len(shards), "study": study.config.name,
        "patch_size": p, "created_by": f"avalanche-hpc {__version__}", "units": "dB",
        "patch_dtype": study.config.patch_dtype,
    }
    if layout == "seasonal":
        n = _merge_seasonal(study, shards, attrs, p, progress)
        log.info("patch store (seasonal): %d patches from %d shards -> %s", n, len(shards), store)
        return store
    metas = [read_meta(p) for _, p, _ in shards]
    sizes = [len(m) for m in metas]
    meta = pd.concat(metas, ignore_index=True) if metas else pd.DataFrame({c: [] for c in META_COLUMNS})
    n = int(sum(sizes))
    if layout == "consolidated":
        _merge_consolidated(store, shards, sizes, meta, attrs, p, progress, study.config.patch_dtype)
    else:
        _merge_virtual(store, shards, sizes, meta, attrs, p, study.config.patch_dtype)
    log.info("patch store (%s): %d patches from %d shards -> %s", layout, n, len(shards), store)
    return store


def _merge_consolidated(store, shards, sizes, meta, attrs, p, progress, dtype: str = "float32") -> None:
    with open_patch_writer(store, len(meta), p, meta, attrs, dtype=dtype) as ds, progress_bar(enabled=progress) as bar:
        tid = bar.add_task("merge", total=len(shards))
        start = 0
        for (_, path, _), n in zip(shards, sizes, strict=False):
            with open_h5(path) as f:
                src = f["patches"]
                for a in range(0, n, BLOCK):
                    b = min(a + BLOCK, n)
                    ds[start + a:start + b] = src[a:b]
            start += n
            bar.advance(tid)


def _merge_virtual(store, shards, sizes, meta, attrs, p, dtype: str = "float32") -> None:
    _write_virtual(store, [(path, n) for (_, path, _), n in zip(shards, sizes, strict=False)], meta, attrs, p, dtype)


def _write_virtual(store: Path, sources: list[tuple[Path, int]], meta: pd.DataFrame, attrs: dict, p: int,
                   dtype: str = "float32") -> None:
    """``store`` as an HDF5 virtual dataset over ``sources`` ((file, rows) in row order; paths kept relative)."""
    shape = (len(meta), len(CHANNELS), p, p)
    vlayout = h5py.VirtualLayout(shape=shape, dtype=np.dtype(dtype))
    start = 0
    for path, n in sources:
        if n:
            rel = os.path.relpath(path, store.parent)
            vlayout[start:start + n] = h5py.VirtualSource(rel, "patches", shape=(n, len(CHANNELS), p, p))
        start += n
    with atomic_path(store) as tmp, open_h5(tmp, "w") as f:
        f.create_virtual_dataset("patches", vlayout, fillvalue=np.nan)
        f["patches"].attrs["channels"] = list(CHANNELS)
        f["patches"].attrs["units"] = "dB"
        f["patches"].attrs["stored_dtype"] = dtype
        _write_meta(f, meta)
        _write_attrs(f, attrs)


def store_digest(layout: str | None, shards: list) -> str:
    """What the merged store depends on: its layout and each current shard's own digest."""
    return digest_json([layout, [(k, d) for k, _, d in shards]])


def resolve_layout(layout: str, n_seasons: int) -> str:
    """``auto`` -> ``seasonal`` with several seasons, else ``consolidated``; other layouts unchanged."""
    if layout == "auto":
        return "seasonal" if n_seasons > 1 else "consolidated"
    return layout


def season_store_path(store: Path, season: str) -> Path:
    """The consolidated store of one season behind a seasonal ``patches.h5``."""
    return store.parent / "seasons" / f"{season}.h5"


def shards_by_season(shards: list[tuple[str, Path, str]]) -> dict[str, list[tuple[str, Path, str]]]:
    """``current_shards`` grouped by season (task keys are ``season/orbit/YYYYMMDD``), in task order."""
    out: dict[str, list[tuple[str, Path, str]]] = {}
    for item in shards:
        out.setdefault(item[0].split("/")[0], []).append(item)
    return out


def _merge_seasonal(study, shards, attrs, p, progress) -> int:
    """Season stores (rewritten only when their shards changed) + the VDS over them; returns N."""
    store = study.store_path
    metas, sources = [], []
    with progress_bar(enabled=progress) as bar:
        by_season = shards_by_season(shards)
        tid = bar.add_task("merge", total=len(by_season))
        for season, items in by_season.items():
            path = season_store_path(store, season)
            sdigest = store_digest("consolidated", items)
            current = False
            if path.is_file():
                try:
                    current = read_attrs(path).get("digest") == sdigest
                except OSError:
                    current = False
            if current:
                meta = read_meta(path)
                log.info("season store %s up to date (%d patches)", path, len(meta))
            else:
                parts = [read_meta(sp) for _, sp, _ in items]
                meta = pd.concat(parts, ignore_index=True)
                sattrs = {**attrs, "digest": sdigest, "layout": "consolidated", "n_shards": len(items), "season": season}
                path.parent.mkdir(parents=True, exist_ok=True)
                _merge_consolidated(path, items, [len(m) for m in parts], meta, sattrs, p, False)
                log.info("season store %s written (%d patches from %d shards)", path, len(meta), len(items))
            metas.append(meta)
            sources.append((season, path, len(meta)))
            bar.advance(tid)
    meta = pd.concat(metas, ignore_index=True) if metas else pd.DataFrame({c: [] for c in META_COLUMNS})
    _write_virtual(store, [(path, n) for _, path, n in sources], meta,
                   {**attrs, "seasons": [s for s, _, _ in sources]}, p)
    # season stores of seasons the study no longer lists
    keep = {path.name for _, path, _ in sources}
    folder = store.parent / "seasons"
    for old in sorted(folder.glob("*.h5")) if folder.is_dir() else []:
        if old.name not in keep:
            old.unlink()
            log.info("removed %s (season no longer in the study)", old)
    return len(meta)
