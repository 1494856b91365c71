"""Job specs (validation, paths, splits) and the local executor (in-process, only what is incomplete)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from avalanche_hpc.errors import ConfigError, MissingInputError
from avalanche_hpc.hpc.jobspec import load_job, parse_job
from avalanche_hpc.hpc.pipeline import run_job
from avalanche_hpc.hpc.stages import is_complete, list_stage_tasks

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"


def test_demo_job_is_the_whole_pipeline_locally():
    job = load_job(JOBS / "demo.toml")
    assert job.stages == ["synth", "check", "preprocess", "merge", "train", "baseline", "detect", "report"]
    assert job.executor == "local" and job.study.preset == "demo"
    assert job.root == (REPO / "studies" / "demo").resolve()  # relative to the job file's folder
    assert job.profile == (REPO / "slurm" / "profiles" / "local.toml").resolve()
    assert job.train.seeds == [0, 1, 2] and job.split_names() == ["random"]
    assert job.baseline.variants == ["paper", "tuned"]


def test_tiny_slurm_job_loads():
    job = load_job(JOBS / "tiny-slurm.toml")
    assert job.executor == "slurm" and job.train.weights == "none" and job.train.max_epochs == 5


def _raw() -> dict:
    return tomllib.loads((JOBS / "demo.toml").read_text())


def test_unknown_keys_and_stages_name_the_valid_ones(tmp_path):
    raw = _raw()
    raw["train"] = {**raw["train"], "epochs": 3}
    raw["stages"] = ["synth", "prepocess"]
    with pytest.raises(ConfigError) as e:
        parse_job(raw, JOBS, JOBS / "demo.toml")
    msg = str(e.value)
    assert "train.epochs: unknown key -> valid keys here: seeds, splits, holdouts" in msg
    assert "unknown stage 'prepocess' -> valid stages: synth, check, preprocess" in msg
    assert str(JOBS / "demo.toml") in msg


def test_inconsistent_specs_are_refused():
    with pytest.raises(ConfigError, match="stage 'synth' needs study.preset"):
        parse_job({"name": "x", "stages": ["synth"], "study": {"path": "s"}}, REPO)
    with pytest.raises(ConfigError, match="a stage is listed twice"):
        parse_job({"name": "x", "stages": ["merge", "merge"], "study": {"path": "s"}}, REPO)
    with pytest.raises(ConfigError, match="study: missing -> add it"):
        parse_job({"name": "x"}, REPO)
    with pytest.raises(ConfigError, match=r"name: .*job name .a b. is not allowed as a folder name"):
        parse_job({"name": "a b", "study": {"path": "s"}}, REPO)
    with pytest.raises(MissingInputError, match="see jobs/demo.toml"):
        load_job(JOBS / "absent.toml")
    with pytest.raises(ConfigError, match="the slurm executor needs a cluster profile"):
        run_job(parse_job({"name": "x", "stages": ["merge"], "executor": "slurm", "study": {"path": "s"}}, REPO))


def test_stages_are_ordered_and_holdouts_become_splits():
    job = parse_job({"name": "x", "stages": ["report", "train", "merge"], "study": {"path": "s"},
                     "train": {"seeds": [0, 1], "holdouts": ["Haute-Maurienne"]}}, REPO)
    assert job.stages == ["merge", "train", "report"]
    assert job.split_names() == ["random", "holdout-haute-maurienne"]
    keys = [t.key for t in list_stage_tasks(job, "train")]
    assert keys == ["random/seed0", "random/seed1", "holdout-haute-maurienne/seed0", "holdout-haute-maurienne/seed1"]
    assert list_stage_tasks(job, "preprocess") is None  # no study yet: tasks unknown
    # both baseline variants by default (the paper's writes baseline/, the tuned one baseline-tuned/)
    base = list_stage_tasks(job, "baseline")
    assert [(t.key, t.args) for t in base] == [
        ("random", ("random", "paper")), ("random/tuned", ("random", "tuned")),
        ("holdout-haute-maurienne", ("holdout-haute-maurienne", "paper")),
        ("holdout-haute-maurienne/tuned", ("holdout-haute-maurienne", "tuned"))]
    only = parse_job({"name": "x", "stages": ["baseline"], "study": {"path": "s"}, "baseline": {"variants": ["paper"]}},
                     REPO)
    assert [t.args for t in list_stage_tasks(only, "baseline")] == [("random", "paper")]
    with pytest.raises(ConfigError, match="baseline.variants"):
        parse_job({"name": "x", "stages": ["baseline"], "study": {"path": "s"}, "baseline": {"variants": ["best"]}},
                  REPO)


def test_local_executor_runs_only_what_is_incomplete(tmp_path):
    from tests.test_31_preprocess import build_hand_study

    root = build_hand_study(tmp_path / "hand")
    job = parse_job({"name": "hand", "stages": ["preprocess", "merge"], "study": {"path": str(root)}}, tmp_path)
    tasks = list_stage_tasks(job, "preprocess")
    assert len(tasks) == 3 and not any(is_complete(job, t) for t in tasks)
    ran = run_job(job, progress=False)
    assert ran == {"preprocess": [t.key for t in tasks], "merge": ["merge"]}
    assert all(is_complete(job, t) for t in tasks) and (root / "work" / "patches.h5").is_file()
    assert run_job(job, progress=False) == {"preprocess": [], "merge": []}
    # one shard removed: only that task runs again; the shard it writes has the same digest, so the
    # store (whose digest is made of its shards' digests) is still current: completeness is digests, not mtimes
    victim = sorted((root / "work" / "shards").rglob("*.h5"))[-1]
    victim.unlink()
    assert not is_complete(job, tasks[-1]) and not is_complete(job, list_stage_tasks(job, "merge")[0])
    ran = run_job(job, progress=False)
    assert ran == {"preprocess": [tasks[-1].key], "merge": []}
    # another setting is another digest: the store with the virtual layout is not the consolidated one
    virtual = parse_job({"name": "hand", "stages": ["preprocess", "merge"], "study": {"path": str(root)},
                         "merge": {"layout": "virtual"}}, tmp_path)
    assert run_job(virtual, progress=False) == {"preprocess": [], "merge": ["merge"]}
    assert run_job(virtual, progress=False) == {"preprocess": [], "merge": []}


def test_cli_run_and_status(tmp_path):
    from typer.testing import CliRunner

    from avalanche_hpc.cli.main import app
    from tests.test_31_preprocess import build_hand_study

    build_hand_study(tmp_path / "hand")
    spec = tmp_path / "job.toml"
    spec.write_text('name = "hand"\nstages = ["preprocess", "merge"]\n[study]\npath = "hand"\n')
    runner = CliRunner()
    res = runner.invoke(app, ["-q", "run", str(spec)])
    assert res.exit_code == 0, res.output
    assert "ran: preprocess 3, merge 1" in res.output
    res = runner.invoke(app, ["status", str(spec)])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if "preprocess" in ln or "merge" in ln]
    assert len(lines) == 4 and all("done" in ln for ln in lines)
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "hand"\nstages = ["preprocess"]\nexecutor = "slurm"\n[study]\npath = "hand"\n')
    res = runner.invoke(app, ["run", str(bad)])
    assert res.exit_code != 0 and "needs a cluster profile" in str(res.exception)


def test_the_registry_is_the_one_list_of_stages():
    from avalanche_hpc.hpc.ddp import TrainTask
    from avalanche_hpc.hpc.profiles import STAGES as PROFILE_STAGES
    from avalanche_hpc.hpc.stages import STAGE_NAMES, STAGES, get_stage, slurm_callable, slurm_task

    assert STAGE_NAMES == tuple(STAGES) == PROFILE_STAGES
    for i, stage in enumerate(STAGES.values()):  # a stage comes after what it depends on
        assert all(STAGE_NAMES.index(d) < i for d in stage.depends), stage.name
    assert parse_job({"name": "x", "study": {"path": "s", "preset": "tiny"}}, REPO).stages == list(STAGE_NAMES)
    assert isinstance(slurm_callable("train"), TrainTask) and slurm_callable("merge") is slurm_task
    assert [s.name for s in STAGES.values() if s.on_host] == ["synth", "check"]
    with pytest.raises(ConfigError, match="unknown stage 'fuse' -> valid stages: synth, check"):
        get_stage("fuse")
