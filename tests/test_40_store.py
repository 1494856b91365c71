"""Patch store: merge (both layouts), verify, info, the CLI, and a task killed mid-write."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from avalanche_hpc.cli.main import app
from avalanche_hpc.errors import StageError
from avalanche_hpc.preprocess.tasks import incomplete_tasks, preprocess_all, preprocess_task, task_is_complete
from avalanche_hpc.store.layout import read_attrs, read_meta, read_patches
from avalanche_hpc.store.merge import merge_store
from avalanche_hpc.store.verify import store_info, verify_store
from tests.test_31_preprocess import ORBIT, SEASON, WINTER, build_hand_study, kill_mid_write

runner = CliRunner()


@pytest.fixture()
def hand_study(tmp_path):
    root = build_hand_study(tmp_path / "s")
    preprocess_all(root, progress=False)
    return root


def test_merge_consolidated_and_verify(hand_study):
    root = hand_study
    store = merge_store(root)
    assert store == root / "work" / "patches.h5"
    meta = read_meta(store)
    assert len(meta) == 9  # 3 dates x 3 corridors
    assert list(meta["date"].unique()) == ["2018-01-07", "2018-01-13", "2018-01-19"]
    shard = read_patches(root / "work" / "shards" / SEASON / ORBIT / "20180113.h5")
    np.testing.assert_array_equal(read_patches(store, [3, 4, 5]), shard)
    assert read_attrs(store)["layout"] == "consolidated"
    assert verify_store(root) == []
    # up to date: not rewritten (same file), only touched
    inode = store.stat().st_ino
    merge_store(root)
    assert store.stat().st_ino == inode


def test_virtual_layout_reads_the_shards_and_survives_a_move(hand_study, tmp_path, monkeypatch):
    merge_store(hand_study)
    consolidated = read_patches(hand_study / "work" / "patches.h5")
    moved = tmp_path / "moved"
    shutil.move(hand_study, moved)
    merge_store(moved, layout="virtual")
    monkeypatch.chdir(tmp_path)  # relative source paths resolve against the store's folder, not the cwd
    with h5py.File(moved / "work" / "patches.h5", "r") as f:
        assert f["patches"].is_virtual
    np.testing.assert_array_equal(read_patches(moved / "work" / "patches.h5"), consolidated)
    assert verify_store(moved) == []
    # a deleted source shard is reported (a VDS would silently read the NaN fill value)
    (moved / "work" / "shards" / SEASON / ORBIT / "20180119.h5").unlink()
    problems = verify_store(moved)
    assert any("source shard" in p.what and "20180119.h5" in p.what for p in problems)


def test_merge_refuses_missing_shards(tmp_path):
    root = build_hand_study(tmp_path / "s")
    preprocess_task(root, SEASON, ORBIT, WINTER[1])
    with pytest.raises(StageError, match=r"2 preprocess task\(s\).*20180113 \(missing\)"):
        merge_store(root)


def test_verify_finds_stale_labels_and_broken_nan_policy(hand_study):
    root = hand_study
    merge_store(root)
    # the inventory changes after the merge: labels of the store no longer match the label maps
    inv = pd.read_csv(root / "inventory.csv")
    inv.loc[0, ["date_min", "date_max"]] = ["2018-01-08", "2018-01-10"]  # e1 moves to the next window
    inv.to_csv(root / "inventory.csv", index=False)
    problems = verify_store(root)
    wheres = {p.where for p in problems}
    assert f"{SEASON}/{ORBIT}/20180107" in wheres and f"{SEASON}/{ORBIT}/20180113" in wheres
    assert any("p1: store 1 'e1', inventory says 0" in p.what for p in problems)
    result = runner.invoke(app, ["store", "verify", str(root)])
    assert result.exit_code == 1
    # re-running the stages repairs it
    preprocess_all(root, progress=False)
    merge_store(root)
    assert verify_store(root) == []
    # a valid fraction that disagrees with the NaN pixels
    with h5py.File(root / "work" / "patches.h5", "r+") as f:
        f["meta/valid_fraction"][2] = 0.5
        f["patches"][4, 1, 0, 0] = np.nan
    whats = " ".join(p.what for p in verify_store(root))
    assert "row 2: 0.5000 stored" in whats
    assert "not all at the same pixel in rows [4]" in whats


def test_killed_task_leaves_no_shard_and_rerun_verifies(tmp_path):
    root = build_hand_study(tmp_path / "s")
    kill_mid_write(root, WINTER[2])
    shard_dir = root / "work" / "shards" / SEASON / ORBIT
    assert not (shard_dir / "20180113.h5").exists()
    assert any(".tmp-" in p.name for p in shard_dir.iterdir())  # the half-written temporary file
    assert not task_is_complete(root, SEASON, ORBIT, WINTER[2])
    assert [a.date for a in incomplete_tasks(root)] == WINTER[1:]
    result = runner.invoke(app, ["preprocess", str(root)])
    assert result.exit_code == 0, result.output
    assert incomplete_tasks(root) == []
    result = runner.invoke(app, ["store", "merge", str(root)])
    assert result.exit_code == 0, result.output
    assert not any(".tmp-" in p.name for p in shard_dir.iterdir())  # merge cleans up after killed tasks
    result = runner.invoke(app, ["store", "verify", str(root)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_cli_single_task_info_and_bad_date(tmp_path):
    root = build_hand_study(tmp_path / "s")
    result = runner.invoke(app, ["preprocess", str(root), "--season", SEASON, "--orbit", ORBIT, "--date", "20180101"])
    assert result.exit_code == 0 and "first date of the season" in result.output
    result = runner.invoke(app, ["preprocess", str(root), "--season", SEASON, "--orbit", ORBIT, "--date", "20180107"])
    assert result.exit_code == 0 and result.output.strip().endswith("20180107.h5")
    result = runner.invoke(app, ["preprocess", str(root), "--date", "2018-01-07"])
    assert result.exit_code != 0 and "YYYYMMDD" in str(result.exception)
    runner.invoke(app, ["preprocess", str(root)])
    runner.invoke(app, ["store", "merge", str(root)])
    info = store_info(root)
    total = info[info["massif"] == "all"].iloc[0]
    # labels by hand: 01-07 [1, -1, -1], 01-13 [0, -1, -1], 01-19 [0, 0, -1]
    assert (total["positive"], total["negative"], total["unknown"], total["total"]) == (1, 3, 5, 9)
    vanoise = info[info["massif"] == "Vanoise"].iloc[0]
    assert (vanoise["positive"], vanoise["negative"], vanoise["unknown"]) == (1, 3, 2)
    result = runner.invoke(app, ["store", "info", str(root)], env={"COLUMNS": "160"})
    assert result.exit_code == 0 and "Belledonne" in result.output and "Vanoise" in result.output


def test_tiny_synthetic_study_end_to_end(tiny_study_copy, caplog):
    root = tiny_study_copy
    from avalanche_hpc.preprocess.tasks import list_tasks
    from avalanche_hpc.study import Study

    study = Study.load(root)
    tasks = list_tasks(root)
    assert len(tasks) == sum(len(study.winter_dates(s.id, o.id)) - 1 for s in study.config.seasons
                             for o in study.config.orbits)
    paths = preprocess_all(root, progress=False)
    assert len(paths) == len(tasks)
    store = merge_store(root)
    assert verify_store(root) == []
    meta = read_meta(store)
    corridors = study.read_corridors()
    assert len(meta) == len(tasks) * len(corridors)
    assert set(meta["orbit"]) == {o.id for o in study.config.orbits}  # linear and dB orbits both made it
    assert (meta["label"] == 1).any() and (meta["label"] == 0).any()
    if "monitored" in corridors.columns:
        unmonitored = set(corridors.loc[~corridors["monitored"].astype(bool), "path_id"])
        assert (meta.loc[meta["path_id"].isin(unmonitored), "label"] == -1).all()
    patches = read_patches(store)
    assert np.isfinite(patches).any(axis=(1, 2, 3)).all()  # every patch has valid pixels
    assert ((meta["valid_fraction"] > 0) & (meta["valid_fraction"] <= 1)).all()
    # a second run skips every task and keeps the store
    caplog.clear()
    with caplog.at_level("INFO"):
        preprocess_all(root, progress=False)
    assert f"0 shards written, {len(tasks)} already up to date" in caplog.text
    inode = store.stat().st_ino
    merge_store(root)
    assert store.stat().st_ino == inode
