"""Check a patch store against its contract and the study, and count what it holds.

``verify_store`` lists every problem (schema, shapes, NaN policy, labels against freshly built
label maps, out-of-date shards); ``store_info`` counts positive/negative/unknown patches per
(massif, orbit, season). Both read ``STUDY/work/patches.h5`` as ``merge.py`` writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from avalanche_hpc.errors import MissingInputError, Problem, StageError
from avalanche_hpc.preprocess.tasks import StudyInputs
from avalanche_hpc.store.layout import (
    CHANNELS,
    KEY_COLUMNS,
    META_COLUMNS,
    SCHEMA_VERSION,
    open_h5,
    read_attrs,
    read_meta,
)
from avalanche_hpc.store.merge import BLOCK, current_shards, season_store_path, shards_by_season, store_digest
from avalanche_hpc.study import LABEL_NAMES, Study, fmt_yyyymmdd

__all__ = ["store_info", "verify_store"]


def verify_store(root: Path) -> list[Problem]:
    """Every problem of the store: schema, shapes, NaN policy, and labels against fresh label maps.

    A study that ``inputs check`` refuses raises ``InputError`` first (``taskcheck.require_valid_tables``).
    """
    root = Path(root)
    from avalanche_hpc.inputs.taskcheck import require_valid_tables

    require_valid_tables(root, scenes=True)
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
        for a in range(0, n, BLOCK):
            block = ds[a:min(a + BLOCK, n)]
            _check_nan_policy(block, vf[a:a + len(block)], a, bad)
    meta = read_meta(store)
    _check_labels(inputs, meta, bad)
    try:
        shards = current_shards(inputs)
        attrs = read_attrs(store)
        if attrs.get("digest") != store_digest(attrs.get("layout"), shards):
            bad("attrs/digest", "the store was merged from other shards than the current ones (out of date)")
        if attrs.get("layout") == "seasonal":  # each season store against its season's current shards
            for season, items in shards_by_season(shards).items():
                path = season_store_path(store, season)
                got = read_attrs(path).get("digest") if path.is_file() else None
                if got != store_digest("consolidated", items):
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
    names = LABEL_NAMES
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
        if g["prev_date"].nunique() != 1 or g["prev_date"].iloc[0] != acq.previous.isoformat():
            bad(where, f"prev_date {sorted(g['prev_date'].unique())} but the previous acquisition is {acq.prev_date}", fix)
    for key in set(groups) - expected_keys:
        bad("/".join(key), f"{len(groups[key])} rows of an acquisition the study does not list", fix)


# -- info --------------------------------------------------------------------------------------------
def store_info(root: Path) -> pd.DataFrame:
    """Counts per (massif, orbit, season): positive, negative, unknown, total (plus a total row)."""
    study = Study.load(root)
    if not study.store_path.is_file():
        raise MissingInputError(f"{study.store_path} does not exist -> run 'avalanche-hpc store merge {root}'")
    meta = read_meta(study.store_path)
    keys = ["massif", "orbit", "season"]
    lab = meta["label"].map(LABEL_NAMES)
    names = list(LABEL_NAMES.values())
    table = pd.crosstab([meta[k] for k in keys], lab).reindex(columns=names, fill_value=0)
    table["total"] = table.sum(axis=1)
    table = table.reset_index()
    total = {k: "all" for k in keys} | {c: int(table[c].sum()) for c in [*names, "total"]}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


