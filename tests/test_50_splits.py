"""Splits: corridor grouping, 50/50 balance, hold-outs, determinism, idempotence, bad names."""

from __future__ import annotations

import pandas as pd
import pytest

from avalanche_hpc.errors import ConfigError
from avalanche_hpc.learn.splits import holdout_split_name, make_split, read_split, slugify
from avalanche_hpc.store.layout import read_meta


def _sets_per_corridor(df: pd.DataFrame) -> pd.Series:
    return df.groupby("path_id")["set"].nunique()


def test_random_split_groups_balances_and_uses_labelled_rows(learning_study):
    df = read_split(make_split(learning_study, "e", "random", seed=0))
    meta = read_meta(learning_study / "work" / "patches.h5")
    assert list(df.columns) == ["store_row", "season", "orbit", "date", "path_id", "massif", "label", "set"]
    # only labelled rows, and every positive of the store
    assert set(df["label"]) == {0, 1}
    assert (meta.loc[df["store_row"], "label"].to_numpy() == df["label"].to_numpy()).all()
    assert df["label"].sum() == (meta["label"] == 1).sum()
    # 50/50 pool, balanced per massif (negatives drawn per massif)
    assert (df["label"] == 1).sum() == (df["label"] == 0).sum()
    per_massif = df.groupby("massif")["label"].agg(["sum", "count"])
    assert (per_massif["sum"] * 2 == per_massif["count"]).all()
    # no corridor in two sets
    assert (_sets_per_corridor(df) == 1).all()
    # close to 60/20/20 and balanced within each set
    share = df["set"].value_counts(normalize=True)
    assert abs(share["train"] - 0.6) < 0.1 and abs(share["val"] - 0.2) < 0.1 and abs(share["test"] - 0.2) < 0.1
    for _, g in df.groupby("set"):
        assert 0.3 <= g["label"].mean() <= 0.7


def test_holdout_split(learning_study):
    name = holdout_split_name("Haute-Maurienne")
    assert name == "holdout-haute-maurienne"
    rnd = read_split(make_split(learning_study, "e", "random", seed=0))
    df = read_split(make_split(learning_study, "e", name, seed=0))
    assert set(df.loc[df["set"] == "test", "massif"]) == {"Haute-Maurienne"}
    assert "Haute-Maurienne" not in set(df.loc[df["set"] != "test", "massif"])
    assert (df["massif"] == "Haute-Maurienne").sum() == (df["set"] == "test").sum()
    assert (_sets_per_corridor(df) == 1).all()
    assert set(df["set"]) == {"train", "val", "test"}
    # every split of an experiment partitions the same pool (one feature bank for all)
    assert df["store_row"].tolist() == rnd["store_row"].tolist()


def test_split_is_deterministic_and_idempotent(learning_study):
    a = make_split(learning_study, "a", "random", seed=3)
    b = make_split(learning_study, "b", "random", seed=3)
    c = make_split(learning_study, "c", "random", seed=4)
    assert a.read_text() == b.read_text()
    assert a.read_text() != c.read_text()
    mtime = a.stat().st_mtime_ns
    assert make_split(learning_study, "a", "random", seed=3) == a
    assert a.stat().st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="differs"):
        make_split(learning_study, "a", "random", seed=4)


def test_bad_split_names_list_the_valid_ones(learning_study):
    with pytest.raises(ConfigError, match="holdout-vanoise"):
        make_split(learning_study, "e", "holdout-mont-blanc")
    with pytest.raises(ConfigError, match="valid splits"):
        make_split(learning_study, "e", "kfold")
    assert slugify("Écrins du Sud") == "ecrins-du-sud"
