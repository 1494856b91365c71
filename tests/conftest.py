"""Shared fixtures. Test files are numbered by layer (test_10_*, test_20_*, ...): the lowest broken layer fails first.

Fixtures of one concern live in their own plugin module (``tests/fixtures_*.py``) listed below.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures_synth", "tests.fixtures_slurm", "tests.fixtures_learn", "tests.fixtures_report",
                  "tests.fixtures_seasons", "tests.fixtures_detect"]

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
