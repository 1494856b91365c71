"""The sbatch scripts submitit writes for each stage, compared with committed golden files.

A change to what is submitted (resources, dependencies, the array throttle, the interpreter) shows
up as a diff of ``tests/golden/*.sbatch`` in review. Paths are normalised (``<repo>``,
``<python>``). Regenerate after an intended change with ``AVALANCHE_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from avalanche_hpc.hpc.jobspec import load_job
from avalanche_hpc.hpc.launcher import render_sbatch
from avalanche_hpc.hpc.profiles import load_profile

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
CASES = [  # profile, stage, number of tasks, dependency
    ("local", "preprocess", 12, None),
    ("local", "merge", 1, "afterok:101"),
    ("local", "train", 3, "afterok:102"),
    ("local", "report", 1, "afterok:103:104"),
    ("example-university", "preprocess", 120, None),
    ("example-university", "train", 6, "afterok:102"),
    ("local-charliecloud", "preprocess", 12, None),
]


def normalise(text: str) -> str:
    return (text.replace(shlex.quote(sys.executable), "<python>").replace(sys.executable, "<python>")
            .replace(str(REPO), "<repo>"))


@pytest.mark.parametrize("profile,stage,n,dep", CASES, ids=[f"{p}-{s}" for p, s, _, _ in CASES])
def test_sbatch_matches_golden(profile, stage, n, dep):
    job = load_job(REPO / "jobs" / "tiny-slurm.toml")
    text = normalise(render_sbatch(job, load_profile(REPO / "slurm" / "profiles" / f"{profile}.toml"), stage, n, dep))
    golden = GOLDEN / f"{profile}-{stage}.sbatch"
    if os.environ.get("AVALANCHE_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.is_file(), f"{golden} missing -> run with AVALANCHE_UPDATE_GOLDEN=1 and review the file"
    assert text == golden.read_text(), f"sbatch of {stage} differs from {golden} (see the diff above)"


def test_golden_scripts_say_what_matters():
    pre = (GOLDEN / "local-preprocess.sbatch").read_text()
    assert "#SBATCH --array=0-11%4" in pre and "<python> -u -m submitit.core._submit" in pre
    train = (GOLDEN / "example-university-train.sbatch").read_text()
    for line in ("#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@300", "#SBATCH --dependency=afterok:102", "#SBATCH --account=avalanche-lab",
                 "#SBATCH --array=0-5%6", "apptainer exec --nv --bind"):
        assert line in train
    assert "#SBATCH --dependency=afterok:103:104" in (GOLDEN / "local-report.sbatch").read_text()
