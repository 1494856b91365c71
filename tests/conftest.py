"""Shared fixtures. Test files are numbered by layer (test_10_*, test_20_*, ...): the lowest broken layer fails first."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
