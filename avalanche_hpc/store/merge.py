"""Merge the shards into one patch store, verify it, and count what it holds.

``merge_store`` writes ``STUDY/work/patches.h5`` in the layout of ``store.py``, rows in task
order (season, orbit, date as ``list_tasks`` gives them) and, within a task, corridor order.
Two layouts are possible:

- ``consolidated`` (the default): one self-contained file; patches are copied shard by shard
  (streamed, never all in memory), chunked one patch per chunk, uncompressed;
- ``virtual``: ``/patches`` is an HDF5 virtual dataset mapping the shards' ``/patches``
  (relative paths, so the study directory can move); only the metadata is copied;
- ``seasonal`` (campaigns of several winters): one consolidated store per season,
  ``work/seasons/{season}.h5``, each rewritten only when one of its shards changed, behind one
  ``patches.h5`` whose ``/patches`` is a virtual dataset over the season stores. Adding a date
  rewrites one season; adding a season writes one store; nothing else is copied again, and a
  random read goes through one VDS mapping of a few sources (one per season, not one per shard).
  ``auto`` (the job default) is ``seasonal`` for a study of several seasons, else ``consolidated``.

The default was chosen by ``benchmarks/bench_preprocess.py`` (see ``docs/benchmarks.md``):
a consolidated copy costs one sequential copy at merge time but serves the random single-patch
reads of training faster, keeps working when shards are deleted or rewritten, and is one file
to stage to a node's local disk. ``layout="virtual"`` remains available for very large studies
where a second copy of the data is unwelcome.

Run ``merge_store`` after every preprocess task has finished (a SLURM ``afterok``
dependency): it removes temporary files left under ``work/shards`` by killed tasks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from avalanche_hpc import __version__
from avalanche_hpc.atomic import atomic_path, clean_stale_tmp
from avalanche_hpc.digest import digest_json
from avalanche_hpc.errors import MissingInputError, Problem, StageError
from avalanche_hpc.preprocess.tasks import StudyInputs, _shard_is_current
from avalanche_hpc.store.layout import (
    CHANNELS,
    KEY_COLUMNS,
    META_COLUMNS,
    SCHEMA_VERSION,
    _write_attrs,
    _write_meta,
    open_h5,
    open_patch_writer,
    read_attrs,
    read_meta,
)
from avalanche_hpc.study import LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_UNKNOWN, fmt_yyyymmdd

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_LAYOUT", "LAYOUTS", "merge_store", "resolve_layout", "season_store_path", "store_info",
           "verify_store"]

LAYOUTS = ("consolidated", "virtual", "seasonal", "auto")
DEFAULT_LAYOUT = "auto"  # consolidated for one season, seasonal for several
_BLOCK = 2048  # rows per block when copying or scanning patches


def _current_shards(inputs: StudyInputs) -> list[tuple[str, Path, str]]:
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


def merge_store(root: Path, force: bool = False, layout: str = DEFAULT_LAYOUT, progress: bool = False) -> Path:
    """Write ``work/patches.h5`` from the shards unless it is up to date; returns its path."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: use one of {list(LAYOUTS)}")
    root = Path(root)
    inputs = StudyInputs.load(root)
    study = inputs.study
    layout = resolve_layout(layout, len(study.config.seasons))
    store = study.store_path
    n_stale = clean_stale_tmp(study.work_dir / "shards")
    if n_stale:
        log.info("removed %d temporary file(s) left by killed tasks under %s", n_stale, study.work_dir / "shards")
    shards = _current_shards(inputs)
    digest = _store_digest(layout, shards)
    if not force and store.is_file():
        try:
            if read_attrs(store).get("digest") == digest:
                os.utime(store)  # newer than its shards again (status tools compare mtimes)
                log.info("patch store up to date: %s", store)
                return store
        except OSError:
            pass
    p = inputs.patch_size
    attrs = {
        "digest": digest, "layout": layout, "n_shards": len(shards), "study": study.config.name,
        "patch_size": p, "created_by": f"avalanche-hpc {__version__}", "units": "dB",
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
        _merge_consolidated(store, shards, sizes, meta, attrs, p, progress)
    else:
        _merge_virtual(store, shards, sizes, meta, attrs, p)
    log.info("patch store (%s): %d patches from %d shards -> %s", layout, n, len(shards), store)
    return store


def _merge_consolidated(store, shards, sizes, meta, attrs, p, progress) -> None:
    from rich.progress import Progress

    with open_patch_writer(store, len(meta), p, meta, attrs) as ds, Progress(disable=not progress) as bar:
        tid = bar.add_task("merge", total=len(shards))
        start = 0
        for (_, path, _), n in zip(shards, sizes, strict=False):
            with open_h5(path) as f:
                src = f["patches"]
                for a in range(0, n, _BLOCK):
                    b = min(a + _BLOCK, n)
                    ds[start + a:start + b] = src[a:b]
            start += n
            bar.advance(tid)


def _merge_virtual(store, shards, sizes, meta, attrs, p) -> None:
    shape = (len(meta), len(CHANNELS), p, p)
    vlayout = h5py.VirtualLayout(shape=shape, dtype=np.float32)
    start = 0
    for (_, path, _), n in zip(shards, sizes, strict=False):
        if n:
            rel = os.path.relpath(path, store.parent)
            vlayout[start:start + n] = h5py.VirtualSource(rel, "patches", shape=(n, len(CHANNELS), p, p))
        start += n
    with atomic_path(store) as tmp, open_h5(tmp, "w") as f:
        f.create_virtual_dataset("patches", vlayout, fillvalue=np.nan)
        f["patches"].attrs["channels"] = list(CHANNELS)
        f["patches"].attrs["units"] = "dB"
        _write_meta(f, meta)
        _write_attrs(f, attrs)


def resolve_layout(layout: str, n_seasons: int) -> str:
    """``auto`` -> ``seasonal`` with several seasons, else ``consolidated``; other layouts unchanged."""
    if layout == "auto":
        return "seasonal" if n_seasons > 1 else "consolidated"
    return layout


def season_store_path(store: Path, season: str) -> Path:
    """The consolidated store of one season behind a seasonal ``patches.h5``."""
    return store.parent / "seasons" / f"{season}.h5"


def _merge_seasonal(study, shards, attrs, p, progress) -> int:
    """Season stores (rewritten only when their shards changed) + the VDS over them; returns N."""
    from rich.progress import Progress

    store = study.store_path
    by_season: dict[str, list[tuple[str, Path, str]]] = {}
    for item in shards:
        by_season.setdefault(item[0].split("/")[0], []).append(item)
    metas, sources = [], []
    with Progress(disable=not progress) as bar:
        tid = bar.add_task("merge (seasons)", total=len(by_season))
        for season, items in by_season.items():
            path = season_store_path(store, season)
            sdigest = _store_digest("consolidated", items)
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
    shape = (len(meta), len(CHANNELS), p, p)
    vlayout = h5py.VirtualLayout(shape=shape, dtype=np.float32)
    start = 0
    for _, path, n in sources:
        if n:
            rel = os.path.relpath(path, store.parent)
            vlayout[start:start + n] = h5py.VirtualSource(rel, "patches", shape=(n, len(CHANNELS), p, p))
        start += n
    with atomic_path(store) as tmp, open_h5(tmp, "w") as f:
        f.create_virtual_dataset("patches", vlayout, fillvalue=np.nan)
        f["patches"].attrs["channels"] = list(CHANNELS)
        f["patches"].attrs["units"] = "dB"
        _write_meta(f, meta)
        _write_attrs(f, {**attrs, "seasons": [s for s, _, _ in sources]})
    # season stores of seasons the study no longer lists
    keep = {path.name for _, path, _ in sources}
    for old in (store.parent / "seasons").glob("*.h5") if (store.parent / "seasons").is_dir() else []:
        if old.name not in keep:
            old.unlink()
            log.info("removed %s (season no longer in the study)", old)
    return len(meta)


# -- verify -----------------------------------------------------------------------------------------
def verify_store(root: Path) -> list[Problem]:
    """Every problem of the store: schema, shapes, NaN policy, and labels against fresh label maps."""
    root = Path(root)
    inputs = StudyInputs.load(root)
    study = inputs.study
    store = study.store_path
    fix_merge = f"run 'avalanche-hpc store merge {root}'"
    if not store.is_file():
        return [Problem(str(store), "", "the patch store does not exist", fix_merge)]
    problems: list[Problem] = []

    def bad(where: str, what: str, fix: str = fix_merge + " --force") -> None:
        problems.append(Problem(str(store), where, what, fix))

    try:
        f = open_h5(store)
    except OSError as e:
        return [Problem(str(store), "", f"cannot be opened as HDF5: {e}", fix_merge + " --force")]
    with f:
        if f.attrs.get("schema_version") != SCHEMA_VERSION:
            bad("attrs/schema_version", f"schema_version {f.attrs.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        if "patches" not in f:
            bad("/patches", "dataset missing")
            return problems
        ds = f["patches"]
        p = inputs.patch_size
        n = ds.shape[0] if ds.ndim else 0
        if ds.ndim != 4 or ds.shape[1:] != (len(CHANNELS), p, p):
            bad("/patches", f"shape {ds.shape}, expected (N, {len(CHANNELS)}, {p}, {p})")
            return problems
        if ds.dtype != np.float32:
            bad("/patches", f"dtype {ds.dtype}, expected float32")
        if list(ds.attrs.get("channels", [])) != list(CHANNELS):
            bad("/patches attrs/channels", f"{list(ds.attrs.get('channels', []))}, expected {list(CHANNELS)}")
        if ds.is_virtual:
            for vs in ds.virtual_sources():
                src = Path(vs.file_name)
                src = src if src.is_absolute() else store.parent / src
                if not src.is_file():
                    bad("/patches (virtual)", f"source shard {src} is missing", f"re-run preprocess, then {fix_merge} --force")
        if "meta" not in f:
            bad("/meta", "group missing")
            return problems
        for col, kind in META_COLUMNS.items():
            if col not in f["meta"]:
                bad(f"/meta/{col}", "column missing")
            elif f["meta"][col].shape != (n,):
                bad(f"/meta/{col}", f"{f['meta'][col].shape[0]} rows for {n} patches")
            elif (kind == "str") != (f["meta"][col].dtype.kind in "OS"):
                bad(f"/meta/{col}", f"dtype {f['meta'][col].dtype}, expected {kind}")
        if problems:
            return problems
        vf = f["meta"]["valid_fraction"][()]
        for a in range(0, n, _BLOCK):
            block = ds[a:min(a + _BLOCK, n)]
            _check_nan_policy(block, vf[a:a + len(block)], a, bad)
    meta = read_meta(store)
    _check_labels(inputs, meta, bad)
    try:
        shards = _current_shards(inputs)
        attrs = read_attrs(store)
        if attrs.get("digest") != _store_digest(attrs.get("layout"), shards):
            bad("attrs/digest", "the store was merged from other shards than the current ones (out of date)")
        if attrs.get("layout") == "seasonal":
            by_season: dict[str, list] = {}
            for item in shards:
                by_season.setdefault(item[0].split("/")[0], []).append(item)
            for season, items in by_season.items():
                path = season_store_path(store, season)
                got = read_attrs(path).get("digest") if path.is_file() else None
                if got != _store_digest("consolidated", items):
                    bad(f"season store {path.name}", "missing or merged from other shards than the current ones")
    except StageError as e:
        problems.append(Problem(str(store), "shards", str(e), f"run 'avalanche-hpc preprocess {root}' then {fix_merge}"))
    return problems


def _check_nan_policy(block: np.ndarray, vf: np.ndarray, offset: int, bad) -> None:
    if np.isinf(block).any():
        rows = np.unique(np.nonzero(np.isinf(block))[0])[:5] + offset
        bad("/patches", f"infinite values in rows {rows.tolist()}", "re-run preprocess with --force")
    nan = np.isnan(block)
    same = (nan == nan[:, :1]).all(axis=(1, 2, 3))
    if not same.all():
        rows = (np.flatnonzero(~same)[:5] + offset).tolist()
        bad("/patches", f"NaN in some channels but not all at the same pixel in rows {rows}",
            "re-run preprocess with --force")
    frac = 1.0 - nan[:, 0].reshape(len(block), -1).mean(axis=1)
    off = np.abs(frac - vf) > 1e-5
    if off.any():
        i = int(np.flatnonzero(off)[0])
        bad("/meta/valid_fraction", f"{int(off.sum())} row(s) disagree with the NaN pixels, e.g. row {offset + i}: "
            f"{vf[i]:.4f} stored vs {frac[i]:.4f} valid", "re-run preprocess with --force")


def _check_labels(inputs: StudyInputs, meta: pd.DataFrame, bad) -> None:
    dup = meta.duplicated(list(KEY_COLUMNS))
    if dup.any():
        r = meta[dup].iloc[0]
        bad("/meta", f"{int(dup.sum())} duplicated key(s), e.g. {tuple(r[c] for c in KEY_COLUMNS)}")
    names = {LABEL_POSITIVE: "positive", LABEL_NEGATIVE: "negative", LABEL_UNKNOWN: "unknown"}
    odd = ~meta["label"].isin(list(names))
    if odd.any():
        bad("/meta/label", f"values {sorted(meta.loc[odd, 'label'].unique().tolist())} are not label codes 1/0/-1")
    groups = {k: g for k, g in meta.groupby(["season", "orbit", "date"], sort=False)}
    expected_keys = set()
    fix = f"re-run 'avalanche-hpc preprocess {inputs.study.root}' then 'avalanche-hpc store merge {inputs.study.root}'"
    for acq in inputs.study.acquisitions(include_first=False):
        key = (acq.season, acq.orbit, acq.date.isoformat())
        expected_keys.add(key)
        where = f"{acq.season}/{acq.orbit}/{fmt_yyyymmdd(acq.date)}"
        g = groups.get(key)
        want = inputs.labels(acq).set_index("path_id")
        if g is None:
            bad(where, f"no rows for this acquisition ({len(want)} corridors expected)", fix)
            continue
        got = g.set_index("path_id")
        missing = want.index.difference(got.index)
        extra = got.index.difference(want.index)
        if len(missing) or len(extra):
            bad(where, f"corridors differ from the study: {len(missing)} missing (e.g. {list(missing[:3])}), "
                f"{len(extra)} unknown (e.g. {list(extra[:3])})", fix)
        common = want.index.intersection(got.index)
        w, s = want.loc[common], got.loc[common]
        mism = (w["label"].to_numpy() != s["label"].to_numpy()) | (w["event_id"].astype(str).to_numpy() != s["event_id"].astype(str).to_numpy())
        if mism.any():
            counts = {names[c]: (int((s["label"] == c).sum()), int((w["label"] == c).sum())) for c in names}
            pid = common[np.flatnonzero(mism)[0]]
            bad(where, f"{int(mism.sum())} label(s) differ from the label map (e.g. {pid}: store "
                f"{int(s.at[pid, 'label'])} '{s.at[pid, 'event_id']}', inventory says {int(w.at[pid, 'label'])} "
                f"'{w.at[pid, 'event_id']}'); counts store/label map {counts}", fix)
        if g["prev_date"].nunique() != 1 or g["prev_date"].iloc[0] != acq.prev_date.isoformat():
            bad(where, f"prev_date {sorted(g['prev_date'].unique())} but the previous acquisition is {acq.prev_date}", fix)
    for key in set(groups) - expected_keys:
        bad("/".join(key), f"{len(groups[key])} rows of an acquisition the study does not list", fix)


# -- info --------------------------------------------------------------------------------------------
def store_info(root: Path) -> pd.DataFrame:
    """Counts per (massif, orbit, season): positive, negative, unknown, total (plus a total row)."""
    from avalanche_hpc.study import Study

    study = Study.load(root)
    if not study.store_path.is_file():
        raise MissingInputError(f"{study.store_path} does not exist -> run 'avalanche-hpc store merge {root}'")
    meta = read_meta(study.store_path)
    keys = ["massif", "orbit", "season"]
    lab = meta["label"].map({LABEL_POSITIVE: "positive", LABEL_NEGATIVE: "negative", LABEL_UNKNOWN: "unknown"})
    table = pd.crosstab([meta[k] for k in keys], lab).reindex(columns=["positive", "negative", "unknown"], fill_value=0)
    table["total"] = table.sum(axis=1)
    table = table.reset_index()
    total = {k: "all" for k in keys} | {c: int(table[c].sum()) for c in ("positive", "negative", "unknown", "total")}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def _store_digest(layout: str | None, shards: list) -> str:
    """What the merged store depends on: its layout and each current shard's own digest."""
    return digest_json([layout, [(k, d) for k, _, d in shards]])
