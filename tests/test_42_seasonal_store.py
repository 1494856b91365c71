"""The seasonal store layout: one consolidated store per season behind one virtual ``patches.h5``.

- ``auto`` picks it for a multi-season study; readers see the same rows and patches as a
  consolidated copy; it verifies;
- adding a season (study.toml and scenes) writes that season's store only: the existing season
  stores are not rewritten (same inode and mtime) and the store then verifies with four seasons;
- a season store that is deleted or stale is reported by ``verify_store``.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import tomli_w

from avalanche_hpc.preprocess.tasks import preprocess_all
from avalanche_hpc.store.layout import read_attrs, read_meta, read_patches
from avalanche_hpc.store.merge import merge_store, season_store_path
from avalanche_hpc.store.verify import verify_store


def _keep_seasons(root: Path, n: int) -> None:
    path = root / "study.toml"
    data = tomllib.loads(path.read_text())
    data["seasons"] = data["seasons"][:n]
    path.write_text(tomli_w.dumps(data))


def test_seasonal_store_grows_without_recopying(tiny3_study: Path, tmp_path: Path) -> None:
    from avalanche_hpc.synth import generate_study, get_preset

    root = tmp_path / "s"
    shutil.copytree(tiny3_study, root)
    generate_study(root, preset=get_preset("tiny3").with_seasons("2015-2016:2018-2019"), seed=0)
    full = (root / "study.toml").read_text()
    _keep_seasons(root, 3)
    preprocess_all(root, progress=False)
    store = merge_store(root)  # auto -> seasonal
    attrs = read_attrs(store)
    assert attrs["layout"] == "seasonal" and attrs["seasons"] == ["2015-2016", "2016-2017", "2017-2018"]
    assert verify_store(root) == []
    meta3 = read_meta(store)
    seasons = [season_store_path(store, s) for s in attrs["seasons"]]
    stamp = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in seasons}

    # the same rows and patches as a consolidated copy of the same shards
    other = tmp_path / "c"
    shutil.copytree(root, other, ignore=shutil.ignore_patterns("patches.h5", "seasons"))
    cons = merge_store(other, layout="consolidated")
    assert read_meta(cons).equals(meta3)
    rows = np.random.default_rng(0).choice(len(meta3), size=40, replace=False)
    np.testing.assert_array_equal(read_patches(store, rows), read_patches(cons, rows))

    # a fourth season: only its store is written
    (root / "study.toml").write_text(full)
    preprocess_all(root, progress=False)
    merge_store(root)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in seasons} == stamp
    attrs = read_attrs(store)
    assert attrs["seasons"][-1] == "2018-2019" and season_store_path(store, "2018-2019").is_file()
    meta4 = read_meta(store)
    assert set(meta4["season"]) == {"2015-2016", "2016-2017", "2017-2018", "2018-2019"}
    assert meta4.iloc[:len(meta3)].equals(meta3)
    assert verify_store(root) == []
    new = np.flatnonzero(meta4["season"].to_numpy() == "2018-2019")[:5]
    got = read_patches(store, new)
    assert np.isfinite(got).any() and got.shape[0] == len(new)

    # a missing season store is a problem verify names
    season_store_path(store, "2016-2017").unlink()
    problems = verify_store(root)
    assert any("2016-2017" in (p.where + p.what) for p in problems)
