"""Season splits on a real 3-season synthetic store (``tiny3``): ``season-<id>`` and ``forward-<id>``.

- a season hold-out tests on that winter only and trains/validates on the others, corridors of
  the training seasons dealt to train/val as groups;
- a forward split trains on the earlier winters only and tests on that one and the later ones;
- every season's part of the pool is balanced;
- both train (CNN + baseline) and appear in the report, next to the per-season table of the
  random split.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avalanche_hpc.errors import ConfigError
from avalanche_hpc.learn.splits import build_split, labelled_meta, make_split, read_split, validate_split
from avalanche_hpc.study import Study

SEASONS = ["2015-2016", "2016-2017", "2017-2018"]
FAST = {"max_epochs": 3, "patience": 50, "batch_size": 16, "n_views": 1}


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


@pytest.mark.slow
def test_season_holdout_and_forward_train_and_appear_in_the_report(tiny3_store: Path) -> None:
    from avalanche_hpc.learn.baseline import baseline_run
    from avalanche_hpc.learn.train import train_run
    from avalanche_hpc.report import build_report

    exp = "seasons"
    for split in ("random", "season-2017-2018", "forward-2016-2017"):
        run = train_run(tiny3_store, exp, split, seed=0, weights="none", **FAST)
        assert (run / "metrics.json").is_file()
        baseline_run(tiny3_store, exp, split)
    index = build_report(tiny3_store, exp)
    summary = json.loads((index.parent / "summary.json").read_text())
    tables = summary["tables"]
    rows = tables["season_splits"]["rows"]
    assert [r[0] for r in rows] == ["season-2017-2018", "forward-2016-2017"]
    assert rows[0][2:4] == ["2015-2016, 2016-2017", "2017-2018"]
    assert rows[1][2:4] == ["2015-2016", "2016-2017, 2017-2018"]
    n_test = rows[0][4]["mean"]
    split = read_split(Study.load(tiny3_store).runs_dir(exp) / "season-2017-2018" / "split.csv")
    assert n_test == int((split["set"] == "test").sum())
    assert [r[0] for r in tables["per_season"]["rows"]] == SEASONS
    html = index.read_text()
    assert "Across seasons" in html and "forward-2016-2017" in html and "Per season" in html
