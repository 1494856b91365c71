"""The pipeline on the real single-node SLURM cluster (slurm/local/start.sh), through submitit.

- a preprocess array over a tiny study: a corrupt scene fails its one task; ``status`` reports it
  with its log; after the fix a re-run submits that task alone; ``sacct`` then shows every task
  COMPLETED and the merge (afterok) ran;
- a 2-rank DDP training run gives the metrics of a 1-rank run;
- a training run interrupted mid-way by USR2 (submitit checkpoint -> ``scontrol requeue``) resumes
  from its checkpoint and ends with the metrics of an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from avalanche_hpc.hpc.jobspec import parse_job
from avalanche_hpc.hpc.launcher import JobFiles, sacct_states, submit_job
from avalanche_hpc.hpc.profiles import load_profile, parse_profile
from avalanche_hpc.hpc.status import FAILED, job_status, summary

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "slurm" / "profiles" / "local.toml"
TRAIN = {"weights": "none", "max_epochs": 6, "patience": 50, "batch_size": 16, "n_views": 1}


def _wait(ids: list[str], timeout: float = 240) -> dict[str, dict[str, str]]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        states = sacct_states(ids)
        if all(states.get(j, {}).get("state") not in (None, "PENDING", "RUNNING", "REQUEUED", "COMPLETING")
               for j in ids):
            return states
        time.sleep(1)
    raise AssertionError(f"jobs {ids} not finished after {timeout} s: {sacct_states(ids)}")


def test_preprocess_array_failed_task_reported_and_resubmitted_alone(slurm_cluster, tmp_path):
    from tests.test_31_preprocess import WINTER, build_hand_study

    root = build_hand_study(tmp_path / "hand")
    job = parse_job({"name": "hand", "stages": ["preprocess", "merge"], "study": {"path": str(root)}}, tmp_path)
    vv = root / "scenes" / "D139" / WINTER[-1].strftime("%Y%m%d") / "VV.tif"
    good = vv.read_bytes()
    vv.write_bytes(b"not a GeoTIFF" * 100)  # the last date's task fails (no other task reads it)

    sub = submit_job(job, LOCAL)
    assert [k for k, _ in sub.submitted["preprocess"]] == [f"2017-2018/D139/{d:%Y%m%d}" for d in WINTER[1:]]
    assert len({j.split("_")[0] for _, j in sub.submitted["preprocess"]}) == 1  # one array, not one job per task
    states = _wait(sub.job_ids)
    pre = dict(sub.submitted["preprocess"])
    bad_key = f"2017-2018/D139/{WINTER[-1]:%Y%m%d}"
    assert [states[pre[k]]["state"] for k in sorted(pre)] == ["COMPLETED", "COMPLETED", "FAILED"]
    assert states[sub.submitted["merge"][0][1]]["state"] == "CANCELLED"  # afterok never satisfied

    rows = {(r.stage, r.key): r for r in job_status(job)}
    failed = rows[("preprocess", bad_key)]
    assert failed.state == FAILED and failed.slurm_state == "FAILED"
    assert Path(failed.log).is_file() and "VV.tif" in Path(failed.log).read_text()
    assert summary(list(rows.values()))["preprocess"] == {"done": 2, "failed": 1}

    vv.write_bytes(good)  # the fix
    again = submit_job(job, LOCAL)
    assert [k for k, _ in again.submitted["preprocess"]] == [bad_key]  # only the failed task
    assert again.submitted["merge"]
    again.wait(timeout_s=240)
    record = JobFiles.of(job).read()["stages"]
    ids = [t["job_id"] for st in record.values() for t in st["tasks"].values()]
    final = sacct_states(ids)
    assert {final[j]["state"] for j in ids} == {"COMPLETED"} and len(ids) == 4
    assert record["preprocess"]["tasks"][bad_key]["attempt"] == 2
    assert all(r.state == "done" for r in job_status(job))
    assert submit_job(job, LOCAL).submitted == {}  # nothing left to do


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """A small learning study and a 1-rank in-process run (the reference metrics)."""
    from avalanche_hpc.learn.train import train_run
    from tests.fixtures_learn import make_learning_study

    root = make_learning_study(tmp_path_factory.mktemp("learn") / "study", paths_per_massif=5, n_dates=4)
    out = train_run(root, "ref", "random", 0, progress=False, **{k: v for k, v in TRAIN.items()})
    return root, out


def _share_bank(root: Path, experiment: str) -> None:
    """Give an experiment the reference's feature bank (a cache keyed by data + weights + views): the
    runs compared then start from identical features, and the test skips recomputing them."""
    shutil.copytree(root / "runs" / "ref" / "features", root / "runs" / experiment / "features", dirs_exist_ok=True)


def _metrics(run: Path) -> tuple[dict, pd.DataFrame]:
    return json.loads((run / "metrics.json").read_text()), pd.read_csv(run / "history.csv")


def test_ddp_two_ranks_match_one_rank(slurm_cluster, reference_run):
    root, ref = reference_run
    job = parse_job({"name": "ddp", "experiment": "ddp", "stages": ["train"], "study": {"path": str(root)},
                     "train": TRAIN}, root)
    prof = load_profile(LOCAL)
    assert prof.resources("train").tasks_per_node == 2
    _share_bank(root, "ddp")
    sub = submit_job(job, prof)
    sub.wait(timeout_s=240)
    (_key, jid), = sub.submitted["train"]
    err0, err1 = (JobFiles.of(job).root / "train" / jid / f"{jid}_{r}_log.err" for r in (0, 1))
    assert "rank 0/2 (gloo)" in err0.read_text() and "rank 1/2 (gloo)" in err1.read_text()
    run = root / "runs" / "ddp" / "random" / "cnn" / "seed0"
    m_ref, h_ref = _metrics(ref)
    m, h = _metrics(run)
    # stated tolerance: the 2-rank step equals the 1-rank step up to float summation order
    assert m["all"]["confusion"] == m_ref["all"]["confusion"] and m["best_epoch"] == m_ref["best_epoch"]
    assert len(h) == len(h_ref)
    for col in ("train_loss", "val_loss"):
        assert (h[col] - h_ref[col]).abs().max() < 1e-4, col


def test_requeued_training_resumes_and_matches(slurm_cluster, reference_run):
    from avalanche_hpc.hpc.ddp import EpochPause, TrainTask
    from avalanche_hpc.hpc.launcher import _executor
    from avalanche_hpc.hpc.stages import list_stage_tasks

    root, ref = reference_run
    job = parse_job({"name": "requeue", "experiment": "requeue", "stages": ["train"], "study": {"path": str(root)},
                     "train": TRAIN}, root)
    raw = load_profile(LOCAL).model_dump()
    raw["stages"]["train"]["tasks_per_node"] = 1
    prof = parse_profile(raw)
    task, = list_stage_tasks(job, "train")
    _share_bank(root, "requeue")
    sj = _executor(job, prof, "train", None).submit(TrainTask(), job, task, on_epoch_end=EpochPause(1.0))
    history = root / "runs" / "requeue" / "random" / "cnn" / "seed0" / "history.csv"
    end = time.monotonic() + 180
    while not (history.is_file() and len(pd.read_csv(history)) >= 2):
        assert time.monotonic() < end, f"training never reached epoch 2: {sacct_states([sj.job_id])}"
        time.sleep(0.3)
    subprocess.run(["scancel", "--signal=USR2", sj.job_id], check=True)  # what SLURM sends before the time limit
    _wait([sj.job_id], timeout=240)
    info = subprocess.run(["scontrol", "show", "job", sj.job_id], capture_output=True, text=True).stdout
    assert "Restarts=1" in info, info
    log = Path(sj.paths.stderr).read_text()
    assert "checkpoint requested" in log and "restart 1 of this SLURM job" in log
    assert sacct_states([sj.job_id])[sj.job_id]["state"] == "COMPLETED"
    m_ref, h_ref = _metrics(ref)
    m, h = _metrics(history.parent)
    assert m["all"] == m_ref["all"] and m["best_epoch"] == m_ref["best_epoch"]
    assert h[["epoch", "train_loss", "val_loss"]].equals(h_ref[["epoch", "train_loss", "val_loss"]])


def test_jobs_stuck_behind_a_failed_dependency_are_cancelled(slurm_cluster, tmp_path):
    """On clusters without kill_invalid_depend a re-run cancels what can never start, and resubmits."""
    from avalanche_hpc.hpc.launcher import _active_tasks, never_satisfied

    def sbatch(*args: str) -> str:
        return subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "%j.out"), *args], check=True,
                              capture_output=True, text=True).stdout.strip().split(";")[0]

    failing = sbatch("--wrap", "exit 3")
    stuck = sbatch(f"--dependency=afterok:{failing}", "--kill-on-invalid-dep=no", "--wrap", "true")
    end = time.monotonic() + 60
    while never_satisfied([stuck]) != [stuck]:
        assert time.monotonic() < end, subprocess.run(["squeue", "-j", stuck], capture_output=True, text=True).stdout
        time.sleep(0.5)
    record = {"stages": {"merge": {"tasks": {"merge": {"job_id": stuck}}}}}
    assert _active_tasks(record, "merge") == {}  # not active: the next run submits the task again
    assert _wait([stuck], timeout=30)[stuck]["state"] == "CANCELLED"
