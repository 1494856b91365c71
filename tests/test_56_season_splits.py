"""Season splits on a real 3-season synthetic store (``tiny3``): ``season-<id>`` and ``forward-<id>``.

- a season hold-out tests on that winter only and trains/validates on the others, corridors of
  the training seasons dealt to train/val as groups;
- a forward split trains on the earlier winters only and tests on that one and the later ones;
- every season's part of the pool is balanced;
- training both and the report: ``tests/test_76_campaign.py`` (through the job executors).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from avalanche_hpc.errors import ConfigError
from avalanche_hpc.learn.splits import build_split, labelled_meta, make_split, read_split, validate_split
from avalanche_hpc.study import Study

SEASONS = ["2015-2016", "2016-2017", "2017-2018"]


def test_season_holdout_and_forward_split_sets(tiny3_store: Path) -> None:
    meta = labelled_meta(Study.load(tiny3_store).store_path)
    hold = build_split(meta, "season-2016-2017", seed=0, seasons=SEASONS)
    assert set(hold.loc[hold["set"] == "test", "season"]) == {"2016-2017"}
    assert set(hold.loc[hold["set"] != "test", "season"]) == {"2015-2016", "2017-2018"}
    fit = hold[hold["set"] != "test"]
    assert not set(fit.loc[fit["set"] == "train", "path_id"]) & set(fit.loc[fit["set"] == "val", "path_id"])
    assert {"train", "val"} <= set(fit["set"])
    for _, g in hold.groupby("season"):  # balanced per season (negatives drawn per massif and season)
        assert abs(int(g["label"].sum()) * 2 - len(g)) <= 2

    fwd = build_split(meta, "forward-2016-2017", seed=0, seasons=SEASONS)
    assert set(fwd.loc[fwd["set"] == "test", "season"]) == {"2016-2017", "2017-2018"}
    assert set(fwd.loc[fwd["set"].isin(["train", "val"]), "season"]) == {"2015-2016"}

    with pytest.raises(ConfigError, match="no season '2019-2020'.*season-2015-2016"):
        build_split(meta, "season-2019-2020", seed=0, seasons=SEASONS)
    with pytest.raises(ConfigError, match="no season before 2015-2016"):
        build_split(meta, "forward-2015-2016", seed=0, seasons=SEASONS)
    with pytest.raises(ConfigError, match="season-<id>"):
        validate_split("winter-2016", ["Vanoise"], SEASONS)


def test_split_file_is_keyed_by_season(tiny3_store: Path, tmp_path: Path) -> None:
    path = make_split(tiny3_store, "splits-test", "season-2017-2018")
    table = read_split(path)
    assert set(table.loc[table["set"] == "test", "season"]) == {"2017-2018"}
    assert make_split(tiny3_store, "splits-test", "season-2017-2018") == path  # idempotent
