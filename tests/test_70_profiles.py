"""Cluster profiles: the committed ones load, stages merge over defaults, bad keys name the valid ones."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from avalanche_hpc.errors import ConfigError, MissingInputError
from avalanche_hpc.hpc.jobspec import load_job
from avalanche_hpc.hpc.launcher import python_for, slurm_parameters
from avalanche_hpc.hpc.profiles import STAGES, load_profile, parse_profile

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "slurm" / "profiles"


@pytest.mark.parametrize("name", ["local.toml", "example-university.toml"])
def test_committed_profiles_load(name):
    prof = load_profile(PROFILES / name)
    for stage in STAGES:
        r = prof.resources(stage)
        assert r.time_min >= 1 and r.cpus_per_task >= 1 and r.mem_gb > 0 and r.tasks_per_node >= 1


def test_stage_overrides_merge_over_defaults():
    prof = load_profile(PROFILES / "example-university.toml")
    train, pre, report = prof.resources("train"), prof.resources("preprocess"), prof.resources("report")
    assert (train.partition, train.gpus_per_node, train.tasks_per_node, train.mem_gb) == ("gpu", 4, 4, 128)
    assert (pre.partition, pre.gpus_per_node, pre.cpus_per_task, pre.time_min) == ("cpu", 0, 1, 30)
    assert report.cpus_per_task == 2 and report.mem_gb == 8 and report.time_min == 30  # [defaults] + override
    assert train.array_parallelism == 32 and train.qos == "normal"


def test_local_profile_allows_two_rank_ddp():
    prof = load_profile(PROFILES / "local.toml")
    assert prof.resources("train").tasks_per_node == 2
    assert prof.resources("preprocess").tasks_per_node == 1


def _raw(name="local.toml") -> dict:
    return tomllib.loads((PROFILES / name).read_text())


def test_unknown_top_level_key_lists_valid_keys():
    raw = _raw() | {"partitoin": "gpu"}
    with pytest.raises(ConfigError) as e:
        parse_profile(raw, "my.toml")
    msg = str(e.value)
    assert "my.toml" in msg and "partitoin: unknown key" in msg
    assert "valid keys here: name, executor, partition, account" in msg


def test_unknown_resource_key_and_stage_are_named():
    raw = _raw()
    raw["stages"] = {"train": {"gpu": 2}, "trian": {"time_min": 3}}
    with pytest.raises(ConfigError) as e:
        parse_profile(raw, "p.toml")
    msg = str(e.value)
    assert "stages.train.gpu: unknown key -> valid keys here: time_min, cpus_per_task, mem_gb, gpus_per_node" in msg
    assert "unknown stage 'trian' -> valid stages: synth, check, preprocess, merge, train, baseline, detect, report" in msg


def test_bad_values_are_refused_with_their_key():
    with pytest.raises(ConfigError, match=r"array_parallelism: .*greater than or equal to 1 \(got 0\)"):
        parse_profile(_raw() | {"array_parallelism": 0})
    with pytest.raises(ConfigError, match=r"defaults.mem_gb"):
        parse_profile(_raw() | {"defaults": {"mem_gb": -1}})
    with pytest.raises(ConfigError, match="'binds' is set but 'image' is not"):
        parse_profile(_raw() | {"binds": ["/data"]})
    with pytest.raises(MissingInputError, match="does not exist -> see slurm/profiles/"):
        load_profile(PROFILES / "nope.toml")


def test_image_profile_runs_python_in_apptainer():
    job = load_job(REPO / "jobs" / "tiny-slurm.toml")
    uni = load_profile(PROFILES / "example-university.toml")
    cmd = python_for(uni)
    assert cmd.startswith("apptainer exec --nv --bind ") and cmd.endswith("/shared/containers/avalanche.sif python")
    assert "/shared/data/studies" in cmd
    local = load_profile(PROFILES / "local.toml")
    import sys

    assert python_for(local).endswith(Path(sys.executable).name)
    params = slurm_parameters(job, uni, "train", "afterok:41")
    assert params["gpus_per_node"] == 4 and params["ntasks_per_node"] == 4 and params["dependency"] == "afterok:41"
    assert params["additional_parameters"]["requeue"] is True
    assert params["setup"][-1] == 'export TMPDIR="/scratch"'
