"""Train/validation/test splits of the labelled patches, saved as files under ``runs/{experiment}/``.

Every split of an experiment partitions the same *pool* of store rows:

1. only labelled rows (label 0 or 1) of ``STUDY/work/patches.h5``;
2. all positives, and as many negatives as positives drawn at random (seeded) - per massif, so
   every massif, hence every hold-out test set and the focus-massif figures, is balanced 50/50
   (a massif short of negatives gives all it has; the shortfall is drawn from the other massifs).

Splits (``split`` names):

- ``random``: 60/20/20 of the pool with every date of one corridor (``path_id``) in one set.
  Corridors are dealt to the sets in a seeded random order, each to the set furthest below
  its target counts of positives and negatives, so sets are close to 60/20/20 *and* balanced.
- ``holdout-<massif-slug>``: test = every pool row of that massif; validation = 25% of the
  other massifs' rows (20% of 80%), again by corridor; train = the rest.
- ``season-<season id>``: test = every pool row of that season; train and validation (25%, by
  corridor) = the other seasons: "does a model from the other winters work on this one?".
- ``forward-<season id>``: test = that season and every later one; train and validation = the
  earlier seasons only (the operational question: a model of past winters on the next ones).
  Seasons are ordered by their start date.

With several seasons the negatives of the pool are drawn per (massif, season), so each season's
test set is balanced too (with one season this is the per-massif draw, unchanged).

Because all splits share the pool, the feature bank (``features.py``) is computed once per
experiment and reused by every split and seed. ``split.csv`` columns: ``store_row, season,
orbit, date, path_id, massif, label, set`` (set in train|val|test). Writing is idempotent: a
split file is written when absent; if present it must equal what the store and seed give now.

Patches with less than ``min_valid_fraction`` (study.toml, default 0.5) valid pixels are left out
of the pool (hence of training, the baseline and every split); ``split.json`` beside ``split.csv``
counts them (``excluded_low_valid``: positives and negatives) with the threshold used.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd

from avalanche_hpc.atomic import write_json, write_text
from avalanche_hpc.errors import ConfigError, MissingInputError
from avalanche_hpc.ids import check_id
from avalanche_hpc.store.layout import read_meta
from avalanche_hpc.study import Study

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ["store_row", "season", "orbit", "date", "path_id", "massif", "label", "set"]
SETS = ("train", "val", "test")
RANDOM_FRACTIONS = (0.6, 0.2, 0.2)
HOLDOUT_VAL_FRACTION = 0.25  # of the non-held-out rows: 20% of the 80%
HOLDOUT_PREFIX = "holdout-"
SEASON_PREFIX = "season-"
FORWARD_PREFIX = "forward-"


def slugify(name: str) -> str:
    """``Haute-Maurienne`` -> ``haute-maurienne``; ``Écrins`` -> ``ecrins``."""
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")


def holdout_split_name(massif: str) -> str:
    return HOLDOUT_PREFIX + slugify(massif)


def massif_of_split(split: str, massifs: list[str]) -> str:
    """The massif a ``holdout-<slug>`` split holds out; ConfigError listing valid names otherwise."""
    slug = split[len(HOLDOUT_PREFIX):]
    for m in massifs:
        if slugify(m) == slug:
            return m
    valid = ", ".join(["random"] + [holdout_split_name(m) for m in massifs])
    raise ConfigError(f"unknown split {split!r}; valid splits are: {valid}")


def season_split_name(season: str) -> str:
    return SEASON_PREFIX + season


def forward_split_name(season: str) -> str:
    return FORWARD_PREFIX + season


def is_season_split(split: str) -> bool:
    return split.startswith((SEASON_PREFIX, FORWARD_PREFIX))


def seasons_of_split(split: str, seasons: list[str]) -> tuple[list[str], list[str]]:
    """(train+val seasons, test seasons) of a ``season-<id>``/``forward-<id>`` split; ``seasons`` in
    time order. ConfigError listing the valid names for an unknown season or an empty side."""
    prefix = SEASON_PREFIX if split.startswith(SEASON_PREFIX) else FORWARD_PREFIX
    sid = split[len(prefix):]
    if sid not in seasons:
        valid = ", ".join([season_split_name(s) for s in seasons] + [forward_split_name(s) for s in seasons[1:]])
        raise ConfigError(f"unknown split {split!r}: no season {sid!r} in the study; season splits are: {valid}")
    if len(seasons) < 2:
        raise ConfigError(f"split {split!r} needs at least two seasons; the study has {seasons}")
    if prefix == SEASON_PREFIX:
        return [s for s in seasons if s != sid], [sid]
    k = seasons.index(sid)
    if k == 0:
        raise ConfigError(f"split {split!r}: no season before {sid} to train on -> use "
                          f"{', '.join(forward_split_name(s) for s in seasons[1:])}")
    return seasons[:k], seasons[k:]


def validate_split(split: str, massifs: list[str], seasons: list[str] | None = None) -> str:
    """Return ``split`` when valid (``random``, an existing massif's hold-out, a season split).

    Season splits are checked against ``seasons`` when given (``make_split`` always checks them).
    """
    check_id(split, "split name", where="--split")
    if split == "random":
        return split
    if split.startswith(HOLDOUT_PREFIX):
        massif_of_split(split, massifs)
        return split
    if is_season_split(split):
        if seasons is not None:
            seasons_of_split(split, seasons)
        return split
    valid = ", ".join(["random"] + [holdout_split_name(m) for m in massifs] + ["season-<id>", "forward-<id>"])
    raise ConfigError(f"unknown split {split!r}; valid splits are: {valid}")


def labelled_meta(store_path: Path, min_valid_fraction: float = 0.0) -> pd.DataFrame:
    """Store metadata with a ``store_row`` column, labelled rows only, valid fraction >= ``min_valid_fraction``.

    ``attrs["excluded_low_valid"]`` counts the labelled rows left out for too few valid pixels
    (``{"positive": n, "negative": n}``).
    """
    if not Path(store_path).is_file():
        raise MissingInputError(
            f"patch store {store_path} does not exist -> run 'avalanche-hpc preprocess STUDY' then "
            f"'avalanche-hpc store merge STUDY'"
        )
    meta = read_meta(store_path)
    meta.insert(0, "store_row", np.arange(len(meta), dtype=np.int64))
    labelled = meta[meta["label"] >= 0]
    low = labelled["valid_fraction"].to_numpy() < min_valid_fraction
    excluded = {"positive": int((labelled["label"].to_numpy()[low] == 1).sum()),
                "negative": int((labelled["label"].to_numpy()[low] == 0).sum())}
    out = labelled[~low].reset_index(drop=True)
    out.attrs["excluded_low_valid"] = excluded
    if low.any():
        log.warning("%d labelled patch(es) (%d positive) have less than %.0f%% valid pixels and are left out of the "
                    "splits (study.toml min_valid_fraction)", int(low.sum()), excluded["positive"],
                    100 * min_valid_fraction)
    return out


def select_pool(meta: pd.DataFrame, seed: int) -> pd.DataFrame:
    """All positives + as many negatives, drawn per massif (seeded); sorted by store row."""
    rng = np.random.default_rng([seed, 0x5EED])
    pos = meta[meta["label"] == 1]
    neg = meta[meta["label"] == 0]
    if len(pos) == 0 or len(neg) == 0:
        raise ConfigError(
            f"the store has {len(pos)} positive and {len(neg)} negative labelled patches; training needs both "
            f"-> check inventory.csv and corridors.gpkg (monitored corridors with events)"
        )
    chosen: list[np.ndarray] = []
    shortfall = 0
    # per massif, and per season too when there are several (each season's test set balanced)
    keys = ["massif", "season"] if "season" in meta.columns and meta["season"].nunique() > 1 else ["massif"]
    groups = sorted(map(tuple, meta[keys].drop_duplicates().to_numpy().tolist()))
    for g in groups:
        sel_pos = np.logical_and.reduce([pos[k] == v for k, v in zip(keys, g, strict=True)])
        sel_neg = np.logical_and.reduce([neg[k] == v for k, v in zip(keys, g, strict=True)])
        want = int(sel_pos.sum())
        cand = neg.loc[sel_neg, "store_row"].to_numpy()
        take = min(want, len(cand))
        shortfall += want - take
        chosen.append(rng.choice(cand, size=take, replace=False) if take else np.empty(0, np.int64))
    picked = np.concatenate(chosen)
    if shortfall:
        rest = np.setdiff1d(neg["store_row"].to_numpy(), picked)
        extra = min(shortfall, len(rest))
        picked = np.concatenate([picked, rng.choice(rest, size=extra, replace=False)])
        if extra < shortfall:
            log.warning("only %d negatives for %d positives: the pool is not balanced", len(picked), len(pos))
    rows = np.sort(np.concatenate([pos["store_row"].to_numpy(), picked]))
    return meta.set_index("store_row").loc[rows].reset_index()


def assign_groups(pool: pd.DataFrame, fractions: dict[str, float], seed: int, salt: int) -> pd.Series:
    """Deal corridors (path_id groups) to sets, each to the set furthest below its targets.

    Targets are the fractions of positives and of negatives; groups are dealt largest first,
    ties broken by a seeded shuffle, so the split is balanced and reproducible.
    """
    rng = np.random.default_rng([seed, salt])
    counts = pool.groupby("path_id")["label"].agg(pos="sum", n="count")
    counts["neg"] = counts["n"] - counts["pos"]
    order = rng.permutation(len(counts))
    counts = counts.iloc[order]
    counts = counts.iloc[np.argsort(-counts["n"].to_numpy(), kind="stable")]
    total_pos, total_neg = max(int(counts["pos"].sum()), 1), max(int(counts["neg"].sum()), 1)
    names = list(fractions)
    have = {s: np.zeros(2) for s in names}
    target = {s: np.array([fractions[s] * total_pos, fractions[s] * total_neg]) for s in names}
    scale = np.array([1.0 / total_pos, 1.0 / total_neg])
    group_set: dict[str, str] = {}
    for path_id, row in counts.iterrows():
        g = np.array([row["pos"], row["neg"]], dtype=float)
        # deficit of each set, relative to the class totals, weighted by what the group brings
        scores = [float(((target[s] - have[s]) * scale * g).sum()) + 1e-9 * fractions[s] for s in names]
        best = names[int(np.argmax(scores))]
        have[best] += g
        group_set[path_id] = best
    return pool["path_id"].map(group_set)


def build_split(meta: pd.DataFrame, split: str, seed: int, seasons: list[str] | None = None) -> pd.DataFrame:
    """The split table (SPLIT_COLUMNS) of labelled store metadata ``meta``.

    ``seasons``: the study's seasons in time order (season splits; default: those of ``meta``, sorted).
    """
    pool = select_pool(meta, seed)
    massifs = sorted(meta["massif"].unique())
    if split == "random":
        sets = assign_groups(pool, dict(zip(SETS, RANDOM_FRACTIONS, strict=False)), seed, salt=1)
    elif is_season_split(split):
        order = seasons if seasons is not None else sorted(meta["season"].astype(str).unique())
        train_seasons, test_seasons = seasons_of_split(split, order)
        season = pool["season"].astype(str)
        held = season.isin(test_seasons)
        fit = season.isin(train_seasons)
        for side, rows in (("test", held), ("train", fit)):
            lab = pool.loc[rows, "label"]
            if lab.nunique() < 2:
                which = test_seasons if side == "test" else train_seasons
                raise ConfigError(f"split {split!r}: the {side} season(s) {which} hold {int(lab.sum())} positive and "
                                  f"{int((lab == 0).sum())} negative pool patches; both are needed -> preprocess "
                                  f"and merge those seasons, or choose another season")
        sets = pd.Series("test", index=pool.index, dtype=object)
        sets[~held & ~fit] = "unused"
        sets[fit] = assign_groups(pool[fit], {"train": 1 - HOLDOUT_VAL_FRACTION, "val": HOLDOUT_VAL_FRACTION},
                                  seed, salt=3)
        keep = sets != "unused"
        pool, sets = pool[keep].reset_index(drop=True), sets[keep].reset_index(drop=True)
    else:
        massif = massif_of_split(split, massifs)
        held = pool["massif"] == massif
        if not held.any():
            raise ConfigError(f"split {split!r}: massif {massif!r} has no labelled patches in the pool")
        if held.all():
            raise ConfigError(f"split {split!r}: every labelled patch is in {massif!r}; nothing left to train on")
        sets = pd.Series("test", index=pool.index, dtype=object)
        others = pool[~held]
        sets[~held] = assign_groups(others, {"train": 1 - HOLDOUT_VAL_FRACTION, "val": HOLDOUT_VAL_FRACTION},
                                    seed, salt=2)
    out = pool.assign(set=sets.to_numpy())
    out["label"] = out["label"].astype(int)
    return out[SPLIT_COLUMNS].sort_values("store_row").reset_index(drop=True)


def _csv_text(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, lineterminator="\n")


def make_split(root: Path, experiment: str, split: str = "random", seed: int = 0) -> Path:
    """Write ``runs/{experiment}/{split}/split.csv`` (idempotent) and return its path.

    Raises ConfigError when the file exists but differs from what the store and ``seed`` give
    now (the store changed, or another seed was used): runs trained on it would be stale.
    """
    study = Study.load(root)
    seasons = [s.id for s in sorted(study.config.seasons, key=lambda s: s.start)]
    validate_split(split, study.config.massifs, seasons)
    min_valid = study.config.min_valid_fraction
    meta = labelled_meta(study.store_path, min_valid)
    table = build_split(meta, split, seed, seasons)
    path = study.runs(experiment).split_csv(split)
    text = _csv_text(table)
    summary = {"min_valid_fraction": min_valid, "excluded_low_valid": meta.attrs["excluded_low_valid"],
               "rows": len(table), "split_seed": seed}

    if path.is_file():
        if path.read_text(encoding="utf-8") != text:
            raise ConfigError(
                f"{path} differs from the split that the current store and seed {seed} give -> the store or "
                f"the split seed changed since the runs of experiment {experiment!r}; start a new experiment "
                f"(--experiment NEW) or delete {path.parent}"
            )
        if not (path.parent / "split.json").is_file():
            write_json(path.parent / "split.json", summary)
        return path
    write_json(path.parent / "split.json", summary)
    write_text(path, text)
    counts = table.groupby("set")["label"].agg(["count", "sum"])
    log.info("split %s: %s", split, ", ".join(f"{s} {int(r['count'])} ({int(r['sum'])} positive)"
                                               for s, r in counts.iterrows()))
    return path


def read_split(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise MissingInputError(f"split file {path} does not exist -> it is made by 'avalanche-hpc train'")
    return pd.read_csv(path, dtype={"path_id": str, "season": str, "orbit": str, "date": str, "massif": str})
