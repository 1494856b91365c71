"""Preprocess stage: deposition zones, channel arithmetic, units, nodata/layover, shards, restarts.

The hand-built study (``build_hand_study``) is a 40 x 40 DEM (20 m pixels) tilted down to the
south, three rectangular corridors, one orbit, four winter dates and two summer dates. Scene
values are ``base(date, band) * (1 + 0.01 * col)``: the spatial factor cancels in every ratio,
so every channel is a constant that can be computed by hand.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import h5py
import numpy as np
import pandas as pd
import pytest
import rasterio
from shapely.geometry import box

from avalanche_hpc.atomic import PAUSE_ENV, PAUSE_MATCH_ENV
from avalanche_hpc.errors import ConfigError, InputError, MissingInputError
from avalanche_hpc.inputs.grid import transform_from_origin
from avalanche_hpc.preprocess.channels import compute_channels
from avalanche_hpc.preprocess.deposition import compute_deposition, load_deposition, slope_aspect
from avalanche_hpc.preprocess.tasks import (
    list_tasks,
    preprocess_all,
    preprocess_task,
    task_is_complete,
)
from avalanche_hpc.store.layout import read_attrs, read_meta, read_patches
from avalanche_hpc.study import OrbitConfig, SeasonConfig, Study, StudyConfig

D = dt.date
ORBIT = "D139"
SEASON = "2017-2018"
WINTER = [D(2018, 1, 1), D(2018, 1, 7), D(2018, 1, 13), D(2018, 1, 19)]
SUMMER = [D(2017, 8, 1), D(2017, 8, 13)]
# linear-power base values per date: summer means are VV 0.2, VH 0.03
BASE = {
    SUMMER[0]: (0.1, 0.02), SUMMER[1]: (0.3, 0.04),
    WINTER[0]: (0.1, 0.015), WINTER[1]: (0.4, 0.06), WINTER[2]: (0.2, 0.03), WINTER[3]: (0.05, 0.12),
}
SIZE = 40
PIX = 20.0
X0, Y0 = 900000.0, 6500000.0
NODATA = -9999.0
PATCH = 16


def _write_tif(path: Path, arr: np.ndarray, nodata=NODATA, dtype="float32", tags: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    prof = dict(driver="GTiff", height=arr.shape[0], width=arr.shape[1], count=1, dtype=dtype,
                crs="EPSG:2154", transform=transform_from_origin(X0, Y0, PIX, PIX), nodata=nodata)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr.astype(dtype), 1)
        if tags:
            dst.update_tags(**tags)


def build_hand_study(root: Path, units: str = "linear", tagged_db: bool = False, nodata_at=None,
                     layover_at=None, monitored=(True, True, False)) -> Path:
    """A tiny hand-built study (see module docstring). ``units``: the scenes' units (study.toml);
    ``tagged_db``: write dB scenes with a ``UNITS=dB`` tag while study.toml says linear;
    ``nodata_at``/``layover_at``: (date, row-slice, col-slice) set to nodata / layover in VV / the mask."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = StudyConfig(
        name="hand", crs_epsg=2154, pixel_size_m=PIX, units="linear" if tagged_db else units,
        massifs=["Vanoise", "Belledonne"], patch_size=PATCH,
        orbits=[OrbitConfig(id=ORBIT, direction="descending", relative_orbit=139)],
        seasons=[SeasonConfig(id=SEASON, start=D(2017, 12, 1), end=D(2018, 4, 30), summer={ORBIT: SUMMER})],
    )
    Study.write_config(root, cfg)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    dem = 2000.0 - 10.0 * rows + 0.5 * cols  # falls 10 m per pixel to the south, rises gently east
    _write_tif(root / "dem.tif", dem)
    # corridors: column bands from row 5 to row 30 (x/y in map units)
    def rect(c0, c1, r0=5, r1=30):
        return box(X0 + c0 * PIX, Y0 - r1 * PIX, X0 + c1 * PIX, Y0 - r0 * PIX)
    gdf = gpd.GeoDataFrame({"path_id": ["p1", "p2", "p3"], "massif": ["Vanoise", "Vanoise", "Belledonne"],
                            "monitored": list(monitored)},
                           geometry=[rect(4, 8), rect(18, 22), rect(30, 34)], crs="EPSG:2154")
    gdf.to_file(root / "corridors.gpkg", layer="corridors", driver="GPKG")
    pd.DataFrame({
        "event_id": ["e1", "e2"], "path_id": ["p1", "p2"],
        "date_min": ["2018-01-03", "2018-01-05"], "date_max": ["2018-01-06", "2018-01-12"],
        "deposit_area_m2": [1200.0, 800.0],
    }).to_csv(root / "inventory.csv", index=False)
    spatial = 1.0 + 0.01 * cols
    for d, (vv, vh) in BASE.items():
        folder = root / "scenes" / ORBIT / d.strftime("%Y%m%d")
        for band, base in (("VV", vv), ("VH", vh)):
            lin = base * spatial
            if units == "dB" or tagged_db:
                arr = 10 * np.log10(lin)
            else:
                arr = lin
            if nodata_at and nodata_at[0] == d and band == "VV":
                arr = arr.copy()
                arr[nodata_at[1], nodata_at[2]] = NODATA
            _write_tif(folder / f"{band}.tif", arr, tags={"UNITS": "dB"} if tagged_db else None)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        if layover_at and layover_at[0] == d:
            mask[layover_at[1], layover_at[2]] = 1
        _write_tif(folder / "layover_shadow.tif", mask, nodata=None, dtype="uint8")
    return root


# -- the arithmetic --------------------------------------------------------------------------------
def test_compute_channels_by_hand():
    # 1 patch of 2x2 pixels; pixel (1, 1) invalid through the mask, pixel (1, 0) through a NaN summer value
    one = np.ones((1, 2, 2))
    vv1, vv0, vvs = 0.4 * one, 0.1 * one, 0.2 * one
    vh1, vh0, vhs = 0.06 * one, 0.015 * one, 0.03 * one
    vvs = vvs.copy()
    vvs[0, 1, 0] = np.nan
    invalid = np.zeros((1, 2, 2), bool)
    invalid[0, 1, 1] = True
    out, frac = compute_channels(vv1, vh1, vv0, vh0, vvs, vhs, invalid)
    assert out.shape == (1, 3, 2, 2) and out.dtype == np.float32
    # by hand: VV* = 10 log10(0.4/0.2) = 3.0103 dB; VV*_old = 10 log10(0.1/0.2) = -3.0103 dB
    # VH* = 10 log10(0.06/0.03) = 3.0103, VH*_old = 10 log10(0.015/0.03) = -3.0103 -> VHdiff = 6.0206 dB
    np.testing.assert_allclose(out[0, :, 0, 0], [3.0103, -3.0103, 6.0206], atol=1e-4)
    np.testing.assert_allclose(out[0, :, 0, 1], [3.0103, -3.0103, 6.0206], atol=1e-4)
    assert np.isnan(out[0, :, 1, 0]).all() and np.isnan(out[0, :, 1, 1]).all()
    assert frac[0] == pytest.approx(0.5)
    # non-positive or infinite linear power is invalid too
    vh0 = vh0.copy()
    vh0[0, 0, 1] = 0.0
    vv1 = vv1.copy()
    vv1[0, 0, 0] = np.inf
    out, frac = compute_channels(vv1, vh1, vv0, vh0, vvs, vhs, invalid)
    assert np.isnan(out).all() and frac[0] == 0.0


def test_slope_aspect_of_planes():
    rows, cols = np.mgrid[0:5, 0:5].astype(float)
    # falls 20 m per 20 m pixel towards the south: slope 45 degrees, faces south (180)
    s, a = slope_aspect(2000.0 - 20.0 * rows, 20.0, 20.0)
    np.testing.assert_allclose(s, 45.0)
    np.testing.assert_allclose(a, 180.0)
    # rises to the east: faces west (270)
    s, a = slope_aspect(100.0 + 20.0 * cols, 20.0, 20.0)
    np.testing.assert_allclose(a, 270.0)


def test_deposition_zone_at_the_low_end(tmp_path):
    root = build_hand_study(tmp_path / "s")
    dep = load_deposition(root)
    assert list(dep["path_id"]) == ["p1", "p2", "p3"]
    # corridor rows 5..29: lowest 10% of elevations are the southernmost rows (>= 27)
    assert (dep["row"] >= 27).all()
    p1 = dep.iloc[0]
    assert 4 <= p1["col"] < 8
    # dem = 2000 - 10 row + 0.5 col at the zone; slope ~ atan(10.01/20) = 26.6 deg, facing ~south (slightly west)
    assert p1["slope"] == pytest.approx(np.degrees(np.arctan(np.hypot(10, 0.5) / 20)), abs=0.1)
    assert 180 < p1["aspect"] < 185
    assert p1["elevation"] == pytest.approx(2000 - 10 * dep["row"].iloc[0] + 0.5 * 5.5, abs=15)
    assert list(dep["monitored"]) == [True, True, False]
    # saved once: a second call does not rewrite it
    path = root / "work" / "deposition.gpkg"
    mtime = path.stat().st_mtime_ns
    compute_deposition(root)
    assert path.stat().st_mtime_ns == mtime
    # the corridors change -> recomputed
    gdf = gpd.read_file(root / "corridors.gpkg", layer="corridors")
    gdf.loc[0, "geometry"] = box(X0 + 4 * PIX, Y0 - 20 * PIX, X0 + 8 * PIX, Y0 - 5 * PIX)
    gdf.to_file(root / "corridors.gpkg", layer="corridors", driver="GPKG")
    dep2 = load_deposition(root)
    assert dep2.iloc[0]["row"] < 20 <= dep.iloc[0]["row"]


# -- whole tasks on the hand-built study ----------------------------------------------------------
def test_tasks_patches_and_labels(tmp_path, caplog):
    root = build_hand_study(tmp_path / "s")
    tasks = list_tasks(root)
    assert [t.date for t in tasks] == WINTER[1:]
    with caplog.at_level("INFO"):
        assert preprocess_task(root, SEASON, ORBIT, WINTER[0]) is None
    assert "first acquisition" in caplog.text
    shard = preprocess_task(root, SEASON, ORBIT, WINTER[1])
    assert shard == root / "work" / "shards" / SEASON / ORBIT / "20180107.h5"
    meta = read_meta(shard)
    p = read_patches(shard)
    assert p.shape == (3, 3, PATCH, PATCH)
    # t1 = 2018-01-07 (VV 0.4, VH 0.06), t0 = 2018-01-01 (VV 0.1, VH 0.015), summer VV 0.2, VH 0.03
    centre = p[:, :, 4:12, 8:14]
    np.testing.assert_allclose(centre[:, 0], 3.0103, atol=1e-3)
    np.testing.assert_allclose(centre[:, 1], -3.0103, atol=1e-3)
    np.testing.assert_allclose(centre[:, 2], 6.0206, atol=1e-3)
    # e1 [01-03, 01-06] inside (01-01, 01-07] -> positive; e2 [01-05, 01-12] straddles t1 -> unknown;
    # p3 unmonitored -> unknown
    assert list(meta["label"]) == [1, -1, -1]
    assert list(meta["event_id"]) == ["e1", "", ""]
    assert meta["deposit_area_m2"].iloc[0] == pytest.approx(1200.0)
    assert list(meta["date"]) == ["2018-01-07"] * 3 and list(meta["prev_date"]) == ["2018-01-01"] * 3
    assert list(meta["massif"]) == ["Vanoise", "Vanoise", "Belledonne"]
    # pixels of a window outside the scene are invalid: p1's window (centre col 5) starts at col -3
    dep = load_deposition(root)
    c0 = dep["col"].to_numpy() - PATCH // 2
    r0 = dep["row"].to_numpy() - PATCH // 2
    inside = (np.minimum(c0 + PATCH, SIZE) - np.maximum(c0, 0)) * (np.minimum(r0 + PATCH, SIZE) - np.maximum(r0, 0))
    np.testing.assert_allclose(meta["valid_fraction"], inside / PATCH**2)
    assert meta["valid_fraction"].iloc[0] < 1 and meta["valid_fraction"].iloc[1] == 1
    attrs = read_attrs(shard)
    assert attrs["task"] == f"{SEASON}/{ORBIT}/20180107" and attrs["units"] == "dB" and attrs["digest"]
    assert task_is_complete(root, SEASON, ORBIT, WINTER[1])
    assert not task_is_complete(root, SEASON, ORBIT, WINTER[2])
    # next date: e2 [01-05, 01-12] straddles t0 = 01-07 -> unknown
    meta3 = read_meta(preprocess_task(root, SEASON, ORBIT, WINTER[2]))
    assert list(meta3["label"]) == [0, -1, -1]


@pytest.mark.parametrize("mode", ["dB", "tagged"])
def test_db_and_linear_inputs_give_the_same_patches(tmp_path, mode):
    lin = build_hand_study(tmp_path / "lin")
    db = build_hand_study(tmp_path / "db", units="dB" if mode == "dB" else "linear", tagged_db=mode == "tagged")
    a = read_patches(preprocess_task(lin, SEASON, ORBIT, WINTER[2]))
    b = read_patches(preprocess_task(db, SEASON, ORBIT, WINTER[2]))
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_nodata_and_layover_flow_into_valid_fraction(tmp_path):
    # nodata in VV of t1 on 4 rows x 16 cols around p2's patch; layover on t0 in p1's patch
    root = build_hand_study(tmp_path / "s", nodata_at=(WINTER[1], slice(28, 32), slice(0, SIZE)),
                            layover_at=(WINTER[0], slice(20, 40), slice(0, 10)))
    dep = load_deposition(root)
    shard = preprocess_task(root, SEASON, ORBIT, WINTER[1])
    p, meta = read_patches(shard), read_meta(shard)
    for i in range(3):
        r0, c0 = dep["row"].iloc[i] - PATCH // 2, dep["col"].iloc[i] - PATCH // 2
        rows = np.arange(r0, r0 + PATCH)[:, None]
        cols = np.arange(c0, c0 + PATCH)[None, :]
        bad = ((rows >= 28) & (rows < 32)) | ((rows >= 20) & (cols < 10))
        bad = bad | (rows >= SIZE) | (cols < 0) | (cols >= SIZE)
        assert meta["valid_fraction"].iloc[i] == pytest.approx(1 - bad.mean(), abs=1e-6)
        assert np.isnan(p[i][:, bad]).all()
        assert np.isfinite(p[i][:, ~bad]).all()
    assert meta["valid_fraction"].iloc[0] < meta["valid_fraction"].iloc[1] < 1


def test_second_run_skips_and_force_redoes(tmp_path, caplog):
    root = build_hand_study(tmp_path / "s")
    paths = preprocess_all(root, progress=False)
    assert len(paths) == 3 and all(p.is_file() for p in paths)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    with caplog.at_level("INFO"):
        preprocess_all(root, progress=False)
    assert "0 shards written, 3 already up to date" in caplog.text
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    # an inventory change alters the labels of some dates only: those shards are redone
    inv = pd.read_csv(root / "inventory.csv")
    inv.loc[1, ["date_min", "date_max"]] = ["2018-01-08", "2018-01-12"]  # was [01-05, 01-12]
    assert task_is_complete(root, SEASON, ORBIT, WINTER[1])
    inv.to_csv(root / "inventory.csv", index=False)
    assert not task_is_complete(root, SEASON, ORBIT, WINTER[1])  # status sees the edit at once
    assert task_is_complete(root, SEASON, ORBIT, WINTER[3])  # 2018-01-19: labels unchanged
    caplog.clear()
    with caplog.at_level("INFO"):
        preprocess_all(root, progress=False)
    assert "2 shards written, 1 already up to date" in caplog.text
    assert list(read_meta(paths[1])["label"]) == [0, 1, -1]  # 2018-01-13
    caplog.clear()
    with caplog.at_level("INFO"):
        preprocess_all(root, progress=False, force=True)
    assert "3 shards written, 0 already up to date" in caplog.text


def test_a_failed_background_write_stops_the_run_and_a_rerun_finishes(tmp_path, monkeypatch):
    """``preprocess_all`` writes each shard in a background thread: a write that fails (here a full
    disk on the second shard) stops the run with the environment's message, leaves no temporary or
    half-written file, and the shards written before it stay; a re-run writes only what is missing."""
    import errno

    from avalanche_hpc.envfail import EnvironmentFault

    root = build_hand_study(tmp_path / "s")
    real_fsync = os.fsync
    calls: list[Path] = []

    def full_disk_on_second_shard(fd):  # the shard's flush before its rename (atomic.atomic_path)
        name = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if "shards" in name.parts:
            calls.append(name.with_name(name.name.split(".tmp-")[0]))
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_on_second_shard)
    with pytest.raises(EnvironmentFault) as info:
        preprocess_all(root, progress=False)
    assert calls[1].name in str(info.value) and "space" in str(info.value).lower()
    assert calls[0].is_file() and not calls[1].exists()
    shards = Study.load(root).work_dir / "shards"
    assert not [p for p in shards.rglob("*") if ".tmp-" in p.name]
    monkeypatch.setattr(os, "fsync", real_fsync)
    mtime = calls[0].stat().st_mtime_ns
    paths = preprocess_all(root, progress=False)
    assert len(paths) == 3 and all(p.is_file() for p in paths)
    assert calls[0].stat().st_mtime_ns == mtime  # the shard written before the failure was kept


def test_consecutive_tasks_in_one_process_read_each_date_once(tmp_path, monkeypatch):
    """The local executor runs ``preprocess_task`` task after task in one process: the study tables
    are loaded once and a task's t1 is the next task's t0 (read once); a scene replaced between two
    tasks is read again, and the shard equals one made from a fresh process state."""
    from avalanche_hpc.preprocess import tasks

    root = build_hand_study(tmp_path / "s")
    tasks.clear_process_inputs()
    reads: list[str] = []
    real = tasks.read_db_windows

    def counting(path, *args, **kwargs):
        reads.append(Path(path).parent.name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tasks, "read_db_windows", counting)
    preprocess_task(root, SEASON, ORBIT, WINTER[1])
    assert sorted(reads) == ["20180101", "20180101", "20180107", "20180107"]
    reads.clear()
    preprocess_task(root, SEASON, ORBIT, WINTER[2])
    assert reads == ["20180113", "20180113"]  # t0 = 2018-01-07 was the last date read
    # replace a scene of 2018-01-13 (the next task's t0): it must be read again, not served stale
    vv = root / "scenes" / ORBIT / "20180113" / "VV.tif"
    with rasterio.open(vv) as src:
        arr = src.read(1)
    time.sleep(0.01)
    _write_tif(vv, arr * np.float32(2.0))
    reads.clear()
    shard = preprocess_task(root, SEASON, ORBIT, WINTER[3])
    assert sorted(reads) == ["20180113", "20180113", "20180119", "20180119"]
    kept = read_patches(shard)
    tasks.clear_process_inputs()
    preprocess_task(root, SEASON, ORBIT, WINTER[3], force=True)
    assert np.array_equal(read_patches(shard), kept, equal_nan=True)
    np.testing.assert_allclose(np.nanmean(kept[:, 1]), 10 * np.log10(2 * 0.2 / 0.2), atol=1e-3)  # VV*_old doubled


def test_bad_task_options_and_inputs_name_the_problem(tmp_path):
    root = build_hand_study(tmp_path / "s")
    with pytest.raises(ConfigError, match="20180108.*20180101, 20180107"):
        preprocess_task(root, SEASON, ORBIT, D(2018, 1, 8))
    with pytest.raises(ConfigError, match="unknown orbit 'A1'"):
        preprocess_task(root, SEASON, "A1", WINTER[1])
    # a corrupt scene (garbage bytes)
    bad = root / "scenes" / ORBIT / "20180119" / "VV.tif"
    bad.write_bytes(b"this is not a tiff" * 10)
    with pytest.raises(InputError, match=r"20180119/VV\.tif") as e:
        preprocess_task(root, SEASON, ORBIT, WINTER[3])
    assert "re-export or re-ingest this scene" in str(e.value)  # refused by the task's input check
    # a truncated scene
    vv = root / "scenes" / ORBIT / "20180107" / "VV.tif"
    vv.write_bytes(vv.read_bytes()[:600])
    with pytest.raises((InputError, MissingInputError), match=r"20180107/VV\.tif"):
        preprocess_task(root, SEASON, ORBIT, WINTER[1])
    assert not (root / "work" / "shards" / SEASON / ORBIT / "20180107.h5").exists()
    # a missing scene
    (root / "scenes" / ORBIT / "20180113" / "VH.tif").unlink()
    with pytest.raises((InputError, MissingInputError), match=r"20180113/VH\.tif"):
        preprocess_task(root, SEASON, ORBIT, WINTER[2])


def test_scene_off_the_dem_grid_is_refused(tmp_path):
    root = build_hand_study(tmp_path / "s")
    vv = root / "scenes" / ORBIT / "20180107" / "VV.tif"
    with rasterio.open(vv) as src:
        arr = src.read(1)
    _write_tif(vv, arr[:30, :30])
    with pytest.raises(InputError, match="grid differs from dem.tif"):
        preprocess_task(root, SEASON, ORBIT, WINTER[1])


_KILL_SCRIPT = """
import datetime as dt, sys
from avalanche_hpc.preprocess.tasks import preprocess_task
preprocess_task(sys.argv[1], sys.argv[2], sys.argv[3], dt.date.fromisoformat(sys.argv[4]))
"""


def run_task_subprocess(root: Path, date: dt.date, pause: float | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if pause is not None:
        env[PAUSE_ENV] = str(pause)
        env[PAUSE_MATCH_ENV] = f"{date:%Y%m%d}.h5"  # the shard only
    return subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(root), SEASON, ORBIT, date.isoformat()],
                            env=env, cwd=Path(__file__).resolve().parents[1])


def kill_mid_write(root: Path, date: dt.date) -> None:
    """Start a task that pauses after writing its temporary shard, SIGKILL it there."""
    shard_dir = root / "work" / "shards" / SEASON / ORBIT
    proc = run_task_subprocess(root, date, pause=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(shard_dir.glob("*.paused")):
        assert proc.poll() is None, "the task ended before reaching the write"
        time.sleep(0.05)
    assert list(shard_dir.glob("*.paused")), "the task never reached the write"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_two_tasks_for_the_same_shard(tmp_path):
    root = build_hand_study(tmp_path / "s")
    from avalanche_hpc.preprocess.tasks import prepare_references

    prepare_references(root)
    procs = [run_task_subprocess(root, WINTER[1]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    shard = root / "work" / "shards" / SEASON / ORBIT / "20180107.h5"
    with h5py.File(shard, "r") as f:
        assert f["patches"].shape == (3, 3, PATCH, PATCH)
    assert task_is_complete(root, SEASON, ORBIT, WINTER[1])
    assert [p.name for p in shard.parent.iterdir()] == ["20180107.h5"]


def test_corrupt_outputs_are_redone_and_missing_summer_named(tmp_path):
    root = build_hand_study(tmp_path / "s")
    paths = preprocess_all(root, progress=False)
    good = read_patches(paths[0])
    # a garbage shard and a garbage summer cache (e.g. a disk filled up outside our atomic writes)
    paths[0].write_bytes(b"\0" * 100)
    (root / "work" / "summer" / SEASON / f"{ORBIT}.h5").write_bytes(b"garbage")
    assert not task_is_complete(root, SEASON, ORBIT, WINTER[1])
    preprocess_all(root, progress=False)
    np.testing.assert_array_equal(read_patches(paths[0]), good)
    # a missing summer scene is named, with its date
    (root / "scenes" / ORBIT / "20170813" / "VV.tif").unlink()
    with pytest.raises((InputError, MissingInputError), match=r"20170813/VV\.tif"):
        preprocess_task(root, SEASON, ORBIT, WINTER[1], force=True)
    # a corrupt DEM is named
    (root / "dem.tif").write_bytes(b"not a dem")
    with pytest.raises(InputError, match=r"dem\.tif"):
        preprocess_task(root, SEASON, ORBIT, WINTER[1], force=True)


def test_grouped_window_reads_equal_single_reads(tmp_path):
    from avalanche_hpc.preprocess.raster import read_windows

    rng = np.random.default_rng(0)
    arr = rng.random((SIZE, SIZE)).astype(np.float32)
    _write_tif(tmp_path / "a.tif", arr)
    # dense clusters, isolated windows, and windows hanging over every edge
    r0 = np.concatenate([rng.integers(-20, SIZE + 5, 60), [0, 0, 30, 30]])
    c0 = np.concatenate([rng.integers(-20, SIZE + 5, 60), [0, 1, 2, 3]])
    padded = np.full((SIZE + 80, SIZE + 80), np.nan, np.float32)
    padded[40:40 + SIZE, 40:40 + SIZE] = arr
    want = np.stack([padded[r + 40:r + 40 + PATCH, c + 40:c + 40 + PATCH] for r, c in zip(r0, c0, strict=False)])
    with rasterio.open(tmp_path / "a.tif") as src:
        for grouped, cell in ((False, 512), (True, 16), (True, 512)):
            got = read_windows(src, r0, c0, PATCH, grouped=grouped, cell=cell)
            np.testing.assert_array_equal(got, want)
