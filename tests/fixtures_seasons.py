"""Fixtures of multi-season studies (owned by the campaign work, issue 14).

``tiny3_study``: preset ``tiny3`` (3 short winters, 2015-2016 to 2017-2018), seed 0, generated
once per session; read-only. ``tiny3_copy``: a private copy for tests that modify it.
``tiny3_store``: a private copy, preprocessed and merged (seasonal layout).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny3_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from avalanche_hpc.synth import generate_study

    return generate_study(tmp_path_factory.mktemp("seasons") / "tiny3", preset="tiny3", seed=0)


@pytest.fixture
def tiny3_copy(tiny3_study: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "tiny3"
    shutil.copytree(tiny3_study, dst)
    return dst


@pytest.fixture(scope="session")
def tiny3_store(tiny3_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures_synth import merged_copy

    return merged_copy(tiny3_study, tmp_path_factory.mktemp("seasons-store") / "tiny3")
