"""A campaign of several winters, end to end: the local executor and the real SLURM cluster.

- local: a 3-season study (``tiny3``) through check -> preprocess -> merge (seasonal store) ->
  train + baseline (a season hold-out and a forward split) -> report; the season splits and the
  per-season table are in the report; adding a fourth season to study.toml and running again
  runs exactly that season's preprocess tasks, and the store then holds four seasons and verifies;
- SLURM: the same study with the profile capping arrays at 10 tasks: the preprocess stage goes
  out as several arrays that all complete, merge waits for every one of them (afterok on each,
  and it starts after the last preprocess task ended, from sacct); after adding the fourth season
  the next submission holds exactly that season's tasks (counted in sacct), the store then holds
  four seasons and verifies, and ``status`` summarises per season.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import tomli_w

from avalanche_hpc.hpc.jobspec import parse_job
from avalanche_hpc.hpc.launcher import JobFiles, sacct_states, submit_job
from avalanche_hpc.hpc.pipeline import run_job
from avalanche_hpc.hpc.profiles import parse_profile
from avalanche_hpc.hpc.status import DONE, job_status, season_status
from avalanche_hpc.store.layout import read_attrs
from avalanche_hpc.store.verify import verify_store
from avalanche_hpc.study import Study

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "slurm" / "profiles" / "local.toml"
THREE = ["2015-2016", "2016-2017", "2017-2018"]
FOURTH = "2018-2019"
FAST = {"weights": "none", "max_epochs": 3, "patience": 50, "batch_size": 16, "n_views": 1}


def _four_season_study(tiny3_study: Path, dst: Path) -> str:
    """A copy of tiny3 with a fourth winter's scenes, study.toml listing the first three; returns
    the four-season study.toml text."""
    from avalanche_hpc.synth import generate_study, get_preset

    shutil.copytree(tiny3_study, dst)
    generate_study(dst, preset=get_preset("tiny3").with_seasons(f"{THREE[0]}:{FOURTH}"), seed=0)
    full = (dst / "study.toml").read_text()
    data = tomllib.loads(full)
    data["seasons"] = data["seasons"][:3]
    (dst / "study.toml").write_text(tomli_w.dumps(data))
    return full


def _keys(root: Path, season: str) -> list[str]:
    return [a.key for a in Study.load(root).acquisitions(season=season, include_first=False)]


def test_campaign_local_executor(tiny3_study: Path, tmp_path: Path) -> None:
    root = tmp_path / "camp"
    full = _four_season_study(tiny3_study, root)
    splits = ["season-2017-2018", "forward-2016-2017"]
    job = parse_job({"name": "camp", "experiment": "camp3", "executor": "local",
                     "stages": ["check", "preprocess", "merge", "train", "baseline", "report"],
                     "study": {"path": str(root)}, "merge": {"layout": "seasonal"},
                     "train": {"seeds": [0], "splits": splits, **FAST}}, tmp_path)
    ran = run_job(job, progress=False)
    assert sorted(ran["preprocess"]) == sorted(k for s in THREE for k in _keys(root, s))
    assert sorted(ran["train"]) == sorted(f"{s}/seed0" for s in splits)
    assert read_attrs(Study.load(root).store_path)["seasons"] == THREE
    summary = json.loads((Study.load(root).reports_dir("camp3") / "summary.json").read_text())
    rows = summary["tables"]["season_splits"]["rows"]
    assert [r[0] for r in rows] == splits
    assert rows[0][2:4] == ["2015-2016, 2016-2017", "2017-2018"]
    assert rows[1][2:4] == ["2015-2016", "2016-2017, 2017-2018"]
    assert all(r[4]["mean"] > 0 for r in rows)  # test samples
    # main split (the first: forward-2016-2017) per season: its two test winters
    assert [r[0] for r in summary["tables"]["per_season"]["rows"]] == ["2016-2017", "2017-2018"]
    activity = {r[0]: r for r in summary["tables"]["ds_season"]["rows"]}  # labelled activity per winter
    assert list(activity) == THREE and all(r[1] > 0 for r in activity.values())  # positives each winter
    html = (Study.load(root).reports_dir("camp3") / "index.html").read_text()
    assert "Across seasons" in html and "forward-2016-2017" in html

    # a fourth winter: only its tasks run, the store grows to four seasons and verifies
    (root / "study.toml").write_text(full)
    job4 = parse_job({"name": "camp", "experiment": "camp4", "executor": "local",
                      "stages": ["check", "preprocess", "merge"], "study": {"path": str(root)}}, tmp_path)
    ran = run_job(job4, progress=False)
    assert sorted(ran["preprocess"]) == sorted(_keys(root, FOURTH)) and ran["merge"] == ["merge"]
    assert read_attrs(Study.load(root).store_path)["seasons"] == [*THREE, FOURTH]
    assert verify_store(root) == []
    # status: one line per season after the task table
    spec = tmp_path / "camp4.toml"
    spec.write_text(tomli_w.dumps({"name": "camp", "experiment": "camp4", "stages": ["preprocess", "merge"],
                                   "study": {"path": str(root)}}))
    from typer.testing import CliRunner

    from avalanche_hpc.cli.main import app

    out = CliRunner().invoke(app, ["status", str(spec)]).output
    lines = out[out.index("per season"):].splitlines()
    for season in [*THREE, FOURTH]:
        n = len(_keys(root, season))
        assert any(season in ln and f"{n}/{n}" in ln and "yes" in ln for ln in lines), out


def _sacct_times(ids: list[str]) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    arrays = sorted({j.split("_")[0] for j in ids})
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,Start,End", "-j", ",".join(arrays)],
                         capture_output=True, text=True, check=True).stdout
    times = {}
    for line in out.splitlines():
        jid, start, end = line.split("|")
        if start[:1].isdigit() and end[:1].isdigit():
            times[jid] = (dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end))
    return times


@pytest.mark.slurm
def test_campaign_on_slurm_split_arrays_chained_and_incremental(slurm_cluster, tiny3_study: Path,
                                                               tmp_path: Path) -> None:
    root = tmp_path / "camp"
    full = _four_season_study(tiny3_study, root)
    profile = parse_profile({**tomllib.loads(LOCAL.read_text()), "max_array_size": 10}, LOCAL)
    spec = {"name": "camp", "experiment": "camp3", "stages": ["check", "preprocess", "merge", "baseline"],
            "study": {"path": str(root)}, "merge": {"layout": "seasonal"},
            "train": {"splits": ["season-2016-2017"]}}
    job = parse_job(spec, tmp_path)
    sub = submit_job(job, profile)
    expected = sorted(k for s in THREE for k in _keys(root, s))
    assert sorted(k for k, _ in sub.submitted["preprocess"]) == expected
    arrays = sub.array_ids["preprocess"]
    assert len(arrays) == math.ceil(len(expected) / 10) >= 3  # several arrays, none above the cap
    per_array: dict[str, int] = {}
    for _, jid in sub.submitted["preprocess"]:
        per_array[jid.split("_")[0]] = per_array.get(jid.split("_")[0], 0) + 1
    assert max(per_array.values()) <= 10 and sorted(per_array) == sorted(arrays)
    record = JobFiles.of(job, profile).read()["stages"]
    merge_dep = record["merge"]["arrays"][-1]["dependency"]
    assert merge_dep == "afterok:" + ":".join(sorted(arrays))  # waits for every chunk
    states = sub.wait(timeout_s=900)
    assert {states[j]["state"] for j in sub.job_ids} == {"COMPLETED"}
    times = _sacct_times(sub.job_ids)
    last_pre = max(times[j][1] for _, j in sub.submitted["preprocess"])
    merge_id = sub.submitted["merge"][0][1]
    assert times[merge_id][0] >= last_pre  # merge started after the last preprocess task ended
    base_id = sub.submitted["baseline"][0][1]
    assert times[base_id][0] >= times[merge_id][1]
    assert read_attrs(Study.load(root).store_path)["seasons"] == THREE
    assert verify_store(root) == []

    # a fourth winter: exactly its tasks are submitted (counted in sacct)
    (root / "study.toml").write_text(full)
    job4 = parse_job({**spec, "experiment": "camp4", "stages": ["check", "preprocess", "merge"]}, tmp_path)
    sub4 = submit_job(job4, profile)
    new = sorted(_keys(root, FOURTH))
    assert sorted(k for k, _ in sub4.submitted["preprocess"]) == new
    sub4.wait(timeout_s=600)
    pre_ids = [j for _, j in sub4.submitted["preprocess"]]
    counted = sacct_states(pre_ids)
    in_new_arrays = {j for j in counted if j.split("_")[0] in set(sub4.array_ids["preprocess"])}
    assert len(in_new_arrays) == len(new) and {counted[j]["state"] for j in in_new_arrays} == {"COMPLETED"}
    assert read_attrs(Study.load(root).store_path)["seasons"] == [*THREE, FOURTH]
    assert verify_store(root) == []
    per_season = {s.season: s for s in season_status(job4, job_status(job4, profile))}
    assert list(per_season) == [*THREE, FOURTH]
    assert all(s.in_store and s.states == {DONE: s.n_tasks} for s in per_season.values())
    assert per_season[FOURTH].n_tasks == len(new)
    assert submit_job(job4, profile).submitted == {}  # nothing left to do
