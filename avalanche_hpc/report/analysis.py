"""The paper's analysis (which avalanches are missed) and the dataset summary.

True positives (TP: avalanche detected) and false negatives (FN: avalanche missed) are the
positive test rows of the CNN runs of the main split, pooled over seeds (a patch counts once
per seed). They are compared by aspect octant (aspect = direction the slope faces, degrees
clockwise from north), deposit size class (EPA ``deposit_area_m2``, m2; the paper's
small-avalanche threshold is 70 m2), month of the acquisition, and local slope (degrees);
aspect and size also per orbit (the paper's east-facing finding is for the descending orbit).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from avalanche_hpc.report.collect import Experiment, Table
from avalanche_hpc.study import LABEL_NAMES

log = logging.getLogger(__name__)

OCTANTS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
SIZE_EDGES_M2 = (70.0, 1000.0, 10000.0, 100000.0)  # m2; < 70 m2 is the paper's "small avalanche"
SIZE_CLASSES = ("< 70 m²", "70–1 000 m²", "1 000–10 000 m²", "10 000–100 000 m²", "≥ 100 000 m²", "unknown area")
SLOPE_EDGES_DEG = (10.0, 20.0, 30.0, 40.0)
SLOPE_CLASSES = ("< 10°", "10–20°", "20–30°", "30–40°", "≥ 40°", "unknown slope")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def octant_of(aspect_deg: np.ndarray | pd.Series) -> np.ndarray:
    """Index 0..7 into OCTANTS (N = 337.5..22.5 degrees); -1 where the aspect is missing."""
    a = np.asarray(aspect_deg, dtype=float)
    out = np.floor(((a + 22.5) % 360.0) / 45.0)
    return np.where(np.isfinite(a), out, -1).astype(int)


def size_class_of(area_m2: np.ndarray | pd.Series) -> np.ndarray:
    a = np.asarray(area_m2, dtype=float)
    idx = np.searchsorted(np.asarray(SIZE_EDGES_M2), a, side="right")
    return np.where(np.isfinite(a), idx, len(SIZE_CLASSES) - 1).astype(int)


def slope_class_of(slope_deg: np.ndarray | pd.Series) -> np.ndarray:
    s = np.asarray(slope_deg, dtype=float)
    idx = np.searchsorted(np.asarray(SLOPE_EDGES_DEG), s, side="right")
    return np.where(np.isfinite(s), idx, len(SLOPE_CLASSES) - 1).astype(int)


def positives_outcome(exp: Experiment) -> pd.DataFrame:
    """Positive test rows of every CNN seed of the main split, with ``outcome`` TP or FN and ``seed``."""
    frames = []
    for run in exp.main_split.cnn:
        pos = run.test[run.test["label"] == 1].copy()
        pos["outcome"] = np.where(pos["pred"] == 1, "TP", "FN")
        pos["seed"] = run.seed
        frames.append(pos)
    if not frames:
        return pd.DataFrame(columns=["outcome", "seed"])
    return pd.concat(frames, ignore_index=True)


def _pct(num: int, den: int) -> str:
    return f"{100.0 * num / den:.1f} %" if den else "n/a"


def _class_table(pos: pd.DataFrame, classes: tuple[str, ...], idx: np.ndarray, tid: str, title: str, note: str
                 ) -> tuple[Table, dict[str, Any]]:
    tp_all = int((pos["outcome"] == "TP").sum())
    fn_all = int((pos["outcome"] == "FN").sum())
    rows, data = [], []
    for k, name in enumerate(classes):
        sel = idx == k
        tp = int((sel & (pos["outcome"] == "TP").to_numpy()).sum())
        fn = int((sel & (pos["outcome"] == "FN").to_numpy()).sum())
        if tp + fn == 0 and name.startswith("unknown"):
            continue
        rows.append([name, tp, fn, _pct(tp, tp_all), _pct(fn, fn_all), _pct(fn, tp + fn)])
        data.append({"class": name, "tp": tp, "fn": fn})
    cols = ["Class", "TP", "FN", "Share of TP", "Share of FN", "Missed (FN / positives)"]
    return Table(tid, title, cols, rows, note), {"classes": data, "tp_total": tp_all, "fn_total": fn_all}


def _columns_present(pos: pd.DataFrame, col: str) -> bool:
    return col in pos.columns and pd.to_numeric(pos[col], errors="coerce").notna().any()


def _orbits(exp: Experiment, pos: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str]]:
    """(orbit id, its positive rows, label such as 'D139 (descending)') when there are two or more orbits."""
    if "orbit" not in pos.columns:
        return []
    ids = sorted(pos["orbit"].astype(str).unique())
    if len(ids) < 2:
        return []
    direction = {o.id: o.direction for o in exp.study.config.orbits}
    return [(o, pos[pos["orbit"].astype(str) == o],
             f"{o} ({direction[o]})" if direction.get(o) else o) for o in ids]


def _aspect_table(pos: pd.DataFrame, is_tp: np.ndarray, where: str, suffix: str, title: str
                  ) -> tuple[Table | None, dict[str, Any]]:
    from scipy import stats

    if not _columns_present(pos, "aspect"):
        return None, {}
    aspect = pd.to_numeric(pos["aspect"], errors="coerce").to_numpy()
    east = np.isfinite(aspect) & (np.mod(aspect, 360.0) > 0) & (np.mod(aspect, 360.0) < 180)
    tp_e, fn_e = int((east & is_tp).sum()), int((east & ~is_tp).sum())
    tp_n, fn_n = int(is_tp.sum()), int((~is_tp).sum())
    p = float(stats.fisher_exact([[tp_e, tp_n - tp_e], [fn_e, fn_n - fn_e]])[1]) if tp_n and fn_n else None
    note = (f"{where} East-facing (aspect strictly between 0° and 180°): {_pct(tp_e, tp_n)} of TP, "
            f"{_pct(fn_e, fn_n)} of FN (paper, descending orbit: 44 % of TP, 69 % of FN); "
            f"Fisher exact test p = {p:.3g}." if p is not None else where)
    t, d = _class_table(pos, OCTANTS, octant_of(aspect), f"aspect{suffix}", f"TP vs FN by aspect octant{title}", note)
    d.update({"east_tp_share": tp_e / tp_n if tp_n else None, "east_fn_share": fn_e / fn_n if fn_n else None,
              "east_fisher_p": p})
    return t, d


def _size_table(pos: pd.DataFrame, is_tp: np.ndarray, where: str, suffix: str, title: str
                ) -> tuple[Table | None, dict[str, Any]]:
    if "deposit_area_m2" not in pos.columns:
        return None, {}
    area = pd.to_numeric(pos["deposit_area_m2"], errors="coerce").to_numpy()
    small = np.isfinite(area) & (area < SIZE_EDGES_M2[0])
    note = (f"{where} Deposit area from the inventory (m², sum of the events in the window). "
            f"Missed among small (< 70 m²): {_pct(int((small & ~is_tp).sum()), int(small.sum()))} "
            f"(paper: 40 %).")
    t, d = _class_table(pos, SIZE_CLASSES, size_class_of(area), f"size{suffix}",
                        f"TP vs FN by deposit size class{title}", note)
    d["small_missed_share"] = float((small & ~is_tp).sum() / small.sum()) if small.sum() else None
    d["small_positives"] = int(small.sum())
    return t, d


def analyse_misses(exp: Experiment) -> tuple[list[Table], dict[str, Any]]:
    """Tables (aspect and size: all orbits, then per orbit; month; slope) and their data (figures, summary.json).

    The paper's east-facing finding is for its one (descending) orbit: pooling orbits dilutes it,
    so aspect and size are also given orbit by orbit (``aspect_by_orbit``, ``size_by_orbit``)."""
    from scipy import stats

    pos = positives_outcome(exp)
    n_seeds = len(exp.main_split.cnn)
    pooled = f"CNN, split '{exp.main_split.name}', positive test patches pooled over {n_seeds} seed(s)."
    tables: list[Table] = []
    data: dict[str, Any] = {"n_positive_rows": len(pos), "n_seeds": n_seeds}
    if pos.empty:
        return tables, data
    is_tp = (pos["outcome"] == "TP").to_numpy()

    orbits = _orbits(exp, pos)
    for key, sub, label in [(None, pos, "all orbits"), *orbits]:
        suffix = "" if key is None else f"_{key}"
        title = "" if key is None else f", orbit {label}"
        where = pooled if key is None else f"{pooled} Orbit {label} only."
        sub_tp = (sub["outcome"] == "TP").to_numpy()
        for name, make_table in (("aspect", _aspect_table), ("size", _size_table)):
            t, d = make_table(sub, sub_tp, where, suffix, title)
            if t is not None:
                tables.append(t)
                if key is None:
                    data[name] = d
                else:
                    data.setdefault(f"{name}_by_orbit", {})[label] = d

    if "date" in pos.columns:
        month = pd.to_datetime(pos["date"], errors="coerce").dt.month.to_numpy()
        present = sorted({int(m) for m in month[np.isfinite(month)]}, key=lambda m: (m < 7, m))  # winter order
        names = tuple(MONTHS[m - 1] for m in present)
        idx = np.array([present.index(int(m)) if np.isfinite(m) else -1 for m in month])
        counts = np.array([[int(((idx == k) & is_tp).sum()), int(((idx == k) & ~is_tp).sum())]
                           for k in range(len(names))])
        counts = counts[counts.sum(axis=1) > 0]
        p = None
        if counts.shape[0] > 1 and (counts.sum(axis=0) > 0).all():
            p = float(stats.chi2_contingency(counts)[1])
        extra = f" Chi-square test of independence (month x outcome): p = {p:.3g}." if p is not None else ""
        t, d = _class_table(pos, names, idx, "month", "TP vs FN by month of acquisition", pooled + extra)
        d["chi2_p"] = p
        tables.append(t)
        data["month"] = d

    if _columns_present(pos, "slope"):
        slope = pd.to_numeric(pos["slope"], errors="coerce").to_numpy()
        a, b = slope[is_tp & np.isfinite(slope)], slope[~is_tp & np.isfinite(slope)]
        p = float(stats.mannwhitneyu(a, b).pvalue) if len(a) and len(b) else None
        extra = (f" Mean slope: TP {a.mean():.1f}°, FN {b.mean():.1f}°; Mann-Whitney U p = {p:.3g}."
                 if p is not None else "")
        t, d = _class_table(pos, SLOPE_CLASSES, slope_class_of(slope), "slope", "TP vs FN by local slope",
                            pooled + extra)
        d.update({"tp_mean_deg": float(a.mean()) if len(a) else None,
                  "fn_mean_deg": float(b.mean()) if len(b) else None, "mannwhitney_p": p})
        tables.append(t)
        data["slope"] = d
    return tables, data


# -- dataset summary -------------------------------------------------------------------------------


def _label_counts(meta: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    t = meta.assign(label_name=meta["label"].astype(int).map(LABEL_NAMES))
    counts = t.groupby([*by, "label_name"]).size().unstack("label_name", fill_value=0)
    for name in LABEL_NAMES.values():
        if name not in counts.columns:
            counts[name] = 0
    counts = counts[list(LABEL_NAMES.values())]
    counts["total"] = counts.sum(axis=1)
    return counts.reset_index()


def _frame_table(df: pd.DataFrame, tid: str, title: str, note: str = "") -> Table:
    rows = [[(int(v) if isinstance(v, (np.integer,)) else v) for v in r] for r in df.itertuples(index=False)]
    return Table(tid, title, [str(c) for c in df.columns], rows, note)


def inventory_coverage(exp: Experiment, meta: pd.DataFrame) -> tuple[Table | None, dict[str, Any]]:
    """Inventory events that became positive patches, and why the others were left unlabelled."""
    study = exp.study
    if not study.inventory_path.is_file():
        return None, {}
    inv = study.read_inventory()
    used: set[str] = set()
    for ids in meta.loc[meta["label"] == 1, "event_id"].astype(str):
        used.update(i for i in ids.split(";") if i)
    width = np.array([(b - a).days + 1 for a, b in zip(inv["date_min"], inv["date_max"], strict=False)])  # days, inclusive
    gaps = []
    if {"date", "prev_date"} <= set(meta.columns):
        d = pd.to_datetime(meta["date"], errors="coerce") - pd.to_datetime(meta["prev_date"], errors="coerce")
        gaps = d.dt.days.dropna()
    gap = int(np.median(gaps)) if len(gaps) else 6
    labelled_paths = set(meta.loc[meta["label"] >= 0, "path_id"].astype(str))
    is_used = inv["event_id"].astype(str).isin(used).to_numpy()
    unmonitored = ~inv["path_id"].astype(str).isin(labelled_paths).to_numpy()
    wide = width > gap
    reasons = [
        ("became positive patches", is_used),
        ("not used: corridor never labelled (not in the store or not monitored)", ~is_used & unmonitored),
        (f"not used: date window wider than the revisit interval ({gap} days)", ~is_used & ~unmonitored & wide),
        ("not used: window straddles an acquisition or lies outside the acquisitions",
         ~is_used & ~unmonitored & ~wide),
    ]
    rows = [[name, int(mask.sum()), _pct(int(mask.sum()), len(inv))] for name, mask in reasons]
    rows.append(["inventory events (total)", len(inv), "100.0 %"])
    data = {name: int(mask.sum()) for name, mask in reasons} | {"total": len(inv), "revisit_days": gap}
    return Table("inventory", "What the inventory left unlabelled", ["Inventory events", "Count", "Share"], rows,
                 f"From {study.inventory_path.name} and the store's positive rows (event_id). "
                 f"Unknown-label patches: {int((meta['label'] == -1).sum())} of {len(meta)}."), data


def summarise_dataset(exp: Experiment) -> tuple[list[Table], dict[str, Any]]:
    """Samples per massif, label, date (from the store's metadata), inventory coverage, split sizes."""
    from avalanche_hpc.store.layout import read_meta

    tables: list[Table] = []
    data: dict[str, Any] = {}
    store = exp.study.store_path
    if store.is_file():
        meta = read_meta(store)
        data["store_rows"] = len(meta)
        per_massif = _label_counts(meta, ["massif"])
        tables.append(_frame_table(per_massif, "ds_massif", "Samples per massif and label (patch store)",
                                   f"{store.name}: every (season, orbit, date, corridor) patch; learning uses "
                                   f"positive and negative rows only."))
        if meta["season"].nunique() > 1:  # a campaign: labelled activity winter by winter
            per_season = _label_counts(meta, ["season"])
            tables.append(_frame_table(per_season, "ds_season", "Samples per season and label (patch store)",
                                       "Positives are inventoried avalanches between two acquisitions: the "
                                       "inventory's activity per winter, as the patch store labels it."))
            data["per_season"] = per_season.to_dict(orient="records")
        per_date = _label_counts(meta, ["season", "orbit", "date"])
        tables.append(_frame_table(per_date, "ds_date", "Samples per acquisition date and label (patch store)"))
        data["per_massif"] = per_massif.to_dict(orient="records")
        data["per_date"] = per_date.to_dict(orient="records")
        try:
            t, d = inventory_coverage(exp, meta)
        except Exception as e:  # the inventory is optional here; a bad one is the inputs check's business
            log.warning("inventory summary left out: %s", e)
            t, d = None, {"error": str(e)}
        if t is not None:
            tables.append(t)
        data["inventory"] = d
    else:
        data["store_rows"] = None
        log.info("no patch store at %s: dataset summary from split.csv only", store)
    split_rows = []
    for s in exp.splits:
        if s.split_table is None:
            continue
        for set_name in ("train", "val", "test"):
            part = s.split_table[s.split_table["set"] == set_name]
            split_rows.append([s.name, set_name, int((part["label"] == 1).sum()), int((part["label"] == 0).sum()),
                               len(part)])
    if split_rows:
        tables.append(Table("ds_splits", "Samples per split and set (split.csv)",
                            ["Split", "Set", "positive", "negative", "total"], split_rows))
        data["splits"] = split_rows
    return tables, data



def store_digest_info(store: Path) -> dict[str, Any]:
    """Attributes of the patch store (its inputs/settings digest) and its size; {} when absent."""
    from avalanche_hpc.store.layout import read_attrs

    if not store.is_file():
        return {}
    info: dict[str, Any] = {"path": str(store), "size_bytes": store.stat().st_size}
    try:
        info["attrs"] = read_attrs(store)
    except OSError as e:
        info["attrs_error"] = str(e)
    return info
