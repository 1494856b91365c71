"""Array sizes: the cluster's MaxArraySize (from ``scontrol show config``), the profile's cap, chunks."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from avalanche_hpc.errors import ConfigError
from avalanche_hpc.hpc.arrays import (
    SLURM_DEFAULT_MAX_ARRAY_SIZE,
    array_limit,
    chunks,
    cluster_max_array_size,
    parse_max_array_size,
)
from avalanche_hpc.hpc.profiles import parse_profile

CONFIG = """Configuration data as of 2026-12-01T14:00:00
AccountingStorageBackupHost = (null)
MaxArraySize            = 1001
MaxJobCount             = 10000
"""


def test_parse_and_limit() -> None:
    assert parse_max_array_size(CONFIG) == 1001
    assert parse_max_array_size("MaxJobCount = 5\n") is None
    assert array_limit(None, cluster=1001) == 1001
    assert array_limit(10, cluster=1001) == 10  # the profile lowers it
    assert array_limit(5000, cluster=1001) == 1001  # never above the cluster's
    assert SLURM_DEFAULT_MAX_ARRAY_SIZE == 1001


def test_chunks_cover_every_task_once_in_order() -> None:
    items = list(range(23))
    parts = chunks(items, 10)
    assert [len(p) for p in parts] == [10, 10, 3] and [x for p in parts for x in p] == items
    assert chunks([], 10) == [] and chunks(items, 100) == [items]
    with pytest.raises(ValueError):
        chunks(items, 0)


def test_profile_key_max_array_size() -> None:
    prof = parse_profile({"name": "x", "max_array_size": 8})
    assert prof.max_array_size == 8
    with pytest.raises(ConfigError, match="max_array_size"):
        parse_profile({"name": "x", "max_array_size": 0})


@pytest.mark.slurm
def test_reads_the_running_clusters_limit(slurm_cluster) -> None:
    assert shutil.which("scontrol")
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    assert cluster_max_array_size() == parse_max_array_size(out) is not None


def test_job_season_splits_follow_the_study(tiny3_study, tmp_path) -> None:
    from avalanche_hpc.hpc.jobspec import parse_job

    job = parse_job({"name": "c", "stages": ["train"], "study": {"path": str(tiny3_study)},
                     "train": {"splits": ["random"], "season_holdouts": True, "forward": True}}, tmp_path)
    assert job.split_names() == ["random", "season-2015-2016", "season-2016-2017", "season-2017-2018",
                                 "forward-2016-2017"]  # forward-2017-2018 would repeat season-2017-2018
    job = parse_job({"name": "c", "stages": ["train"], "study": {"path": str(tiny3_study)},
                     "train": {"splits": [], "season_holdouts": ["2016-2017"], "forward": True}}, tmp_path)
    assert job.split_names() == ["season-2016-2017", "forward-2016-2017", "forward-2017-2018"]
