"""Fixtures for the real single-node SLURM cluster (owned by the HPC stage).

``slurm_cluster`` starts the cluster with ``slurm/local/start.sh`` (installing it from Debian
packages on a fresh machine) when this process is root and apt is there; otherwise the SLURM
tests are skipped with the reason, unless ``AVALANCHE_REQUIRE_SLURM=1`` (set by ``.ci/run``), in
which case they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START = REPO / "slurm" / "local" / "start.sh"


def _unavailable(reason: str) -> None:
    if os.environ.get("AVALANCHE_REQUIRE_SLURM") == "1":
        pytest.fail(f"AVALANCHE_REQUIRE_SLURM=1 but the SLURM cluster is unavailable: {reason}", pytrace=False)
    pytest.skip(f"no SLURM cluster: {reason} (run 'sudo bash slurm/local/start.sh', see slurm/local/README.md)")


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The name of the node of a running single-node cluster (started here if needed)."""
    if os.geteuid() != 0 and shutil.which("sbatch") is None:
        _unavailable("not root (start.sh installs and starts system daemons) and no sbatch on PATH")
    if os.geteuid() == 0 and shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        _unavailable("no apt-get to install slurm-wlm and no slurmctld installed")
    if os.geteuid() == 0:
        res = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            _unavailable(f"slurm/local/start.sh failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    res = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=30)
    if res.returncode != 0 or not res.stdout.strip():
        _unavailable(f"sinfo does not answer: {res.stderr.strip()}")
    node, state = res.stdout.split()[:2]
    if state not in ("idle", "mixed", "allocated", "completing"):
        _unavailable(f"node {node} is {state}")
    return node
