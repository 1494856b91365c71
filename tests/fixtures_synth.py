"""Fixtures that build synthetic studies (owned by the synth stage).

``tiny_study``: a tiny study (preset ``tiny``, seed 0) generated once per test session; treat it
as read-only. ``tiny_study_copy``: a private copy in ``tmp_path`` for tests that modify it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from avalanche_hpc.synth import generate_study

    return generate_study(tmp_path_factory.mktemp("synth") / "tiny", preset="tiny", seed=0)


@pytest.fixture
def tiny_study_copy(tiny_study: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_study, dst)
    return dst


def merged_copy(src: Path, root: Path) -> Path:
    """A copy of study ``src`` at ``root``, preprocessed and merged (session fixtures build on it)."""
    from avalanche_hpc.preprocess.tasks import preprocess_all
    from avalanche_hpc.store.merge import merge_store

    shutil.copytree(src, root)
    preprocess_all(root, progress=False)
    merge_store(root)
    return root
