"""Fixtures of the learning stage: small studies whose patch store is written directly.

``make_learning_study`` writes a loadable ``study.toml`` and ``work/patches.h5`` (through
``store.write_patches``) with a learnable but not trivially separable signal: positives carry a
new bright deposit (0.5-1.2 x ``signal_db`` in ``VV*`` and ``VHdiff``, not in ``VV*_old``) near
the patch centre over N(0, 1) dB noise, and every patch carries clutter that is not a new
deposit (broad offsets in ``VV*`` and ``VV*_old`` alike, static bright features in both, small
transient changes of up to 2 x ``signal_db`` in ``VV*`` and ``VHdiff``).
Nothing else of the study (rasters, inventory) is needed by splits, training or the baseline.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avalanche_hpc.store.layout import META_COLUMNS, read_attrs, read_meta, read_patches, write_patches
from avalanche_hpc.study import OrbitConfig, SeasonConfig, Study, StudyConfig

MASSIFS = ["Haute-Maurienne", "Vanoise", "Belledonne"]


def make_learning_study(root: Path, paths_per_massif: int = 8, n_dates: int = 6, seed: int = 0,
                        signal_db: float = 3.0, p_positive: float = 0.3, p_unknown: float = 0.1,
                        patch: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    dates = [dt.date(2018, 1, 1) + dt.timedelta(days=6 * i) for i in range(n_dates + 1)]
    cfg = StudyConfig(
        name="learn-test", crs_epsg=2154, pixel_size_m=20.0, massifs=MASSIFS, focus_massif="Haute-Maurienne",
        patch_size=patch,
        orbits=[OrbitConfig(id="D139", direction="descending", relative_orbit=139)],
        seasons=[SeasonConfig(id="2017-2018", start=dt.date(2017, 12, 1), end=dt.date(2018, 5, 1),
                              summer={"D139": [dt.date(2017, 8, 1)]})],
    )
    Study.write_config(root, cfg)
    rows = []
    for m in MASSIFS:
        for k in range(paths_per_massif):
            for d0, d1 in itertools.pairwise(dates):
                u = rng.random()
                label = -1 if u < p_unknown else (1 if u < p_unknown + p_positive else 0)
                rows.append({"path_id": f"{m[:3].upper()}{k:03d}", "massif": m, "season": "2017-2018",
                             "orbit": "D139", "date": d1.isoformat(), "prev_date": d0.isoformat(), "label": label})
    meta = pd.DataFrame(rows)
    n = len(meta)
    meta["event_id"] = [f"E{i}" if lab == 1 else "" for i, lab in enumerate(meta["label"])]
    meta["deposit_area_m2"] = np.where(meta["label"] == 1, rng.uniform(50, 5000, n), np.nan).astype(np.float32)
    meta["elevation"] = rng.uniform(1200, 2400, n).astype(np.float32)
    meta["slope"] = rng.uniform(10, 40, n).astype(np.float32)
    meta["aspect"] = rng.uniform(0, 360, n).astype(np.float32)
    meta["valid_fraction"] = np.float32(1.0)
    meta["x"] = rng.uniform(0, 1e4, n).astype(np.float32)
    meta["y"] = rng.uniform(0, 1e4, n).astype(np.float32)
    assert set(META_COLUMNS) <= set(meta.columns)
    patches = rng.normal(0.0, 1.0, size=(n, 3, patch, patch)).astype(np.float32)
    yy, xx = np.mgrid[0:patch, 0:patch]

    def blob(r_lo: float, r_hi: float, spread: int) -> np.ndarray:
        cy, cx = rng.integers(patch // 2 - spread, patch // 2 + spread + 1, size=2)
        r = rng.uniform(r_lo, r_hi)
        return ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r

    # clutter that is not a new deposit, on every class: broad offsets (wet snow, crust) equal in VV* and
    # VV*_old, static bright features (same place in VV* and VV*_old, no change), and small transient
    # changes in VV* and VHdiff (wind, tracks); so no one channel or one-pixel threshold separates the classes
    offset = rng.normal(0.0, 2.0, size=n).astype(np.float32)
    patches[:, 0] += offset[:, None, None]
    patches[:, 1] += offset[:, None, None]
    for i in range(n):
        if rng.random() < 0.5:
            b = blob(4, 8, 14)
            patches[i, 0][b] += signal_db
            patches[i, 1][b] += signal_db
        if rng.random() < 0.4:
            b = blob(2, 5, 20)
            g = rng.uniform(1.0, 2.0) * signal_db
            patches[i, 0][b] += g
            patches[i, 2][b] += g
    # the deposit: a new bright patch in VV* and VHdiff (not in VV*_old), of varying strength
    for i in np.flatnonzero(meta["label"].to_numpy() == 1):
        b = blob(5, 9, 6)
        g = rng.uniform(0.5, 1.2) * signal_db
        patches[i, 0][b] += g
        patches[i, 2][b] += g
    patches[0, :, :3, :3] = np.nan  # invalid pixels exist in real stores
    write_patches(root / "work" / "patches.h5", patches, meta, attrs={"study": "learn-test"})
    return root


def perturb_test_rows(src: Path, dst: Path, split_csv: Path, seed: int = 99) -> np.ndarray:
    """Copy the study at ``src`` to ``dst`` with the patches of the split's test rows replaced
    (new noise, large bright changes, flipped contrast); returns those store rows. Train and
    validation rows, all metadata and the labels stay byte-identical."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "study.toml", dst / "study.toml")
    store = src / "work" / "patches.h5"
    meta, patches = read_meta(store), read_patches(store)
    split = pd.read_csv(split_csv)
    test_rows = split.loc[split["set"] == "test", "store_row"].to_numpy(dtype=np.int64)
    rng = np.random.default_rng(seed)
    patches[test_rows] = -patches[test_rows] + rng.normal(0.0, 3.0, size=patches[test_rows].shape) + 6.0
    write_patches(dst / "work" / "patches.h5", patches.astype(np.float32), meta, attrs=read_attrs(store))
    return test_rows


@pytest.fixture()
def learning_study(tmp_path) -> Path:
    """A 3-massif study with a store of 144 patches (about 43 positive)."""
    return make_learning_study(tmp_path / "study")
