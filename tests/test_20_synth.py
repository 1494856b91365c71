"""The synthetic season: contract, determinism, physics (layer 20: builds on the study contract)."""

from __future__ import annotations

import datetime as dt
import filecmp
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from typer.testing import CliRunner

from avalanche_hpc.errors import ConfigError
from avalanche_hpc.preprocess.deposition import slope_aspect
from avalanche_hpc.preprocess.raster import read_power_windows
from avalanche_hpc.study import LAYOVER_SHADOW, Study
from avalanche_hpc.synth import PRESETS, generate_study
from avalanche_hpc.synth import debris as debris_mod
from avalanche_hpc.synth.generate import build_world, winter_dates
from avalanche_hpc.synth.inventory import make_inventory

TINY = PRESETS["tiny"]


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix in (".tif", ".csv", ".toml"))


def _db(study: Study, orbit: str, d: dt.date, band: str) -> np.ndarray:
    """sigma0 in dB, NaN where nodata or layover/shadow."""
    with rasterio.open(study.scene_path(orbit, d, band)) as src:
        a = src.read(1).astype(np.float64)
        units, nodata = src.tags()["UNITS"], src.nodata
    a[a == nodata] = np.nan
    db = a if units == "dB" else 10 * np.log10(np.where(a > 0, a, np.nan))
    with rasterio.open(study.scene_path(orbit, d, LAYOVER_SHADOW)) as src:
        db[src.read(1) != 0] = np.nan
    return db


# -- determinism ------------------------------------------------------------------------------------

def test_same_seed_gives_identical_files_and_other_seed_differs(tiny_study: Path, tmp_path: Path) -> None:
    again = generate_study(tmp_path / "again", preset="tiny", seed=0)
    files = _files(tiny_study)
    assert files == _files(again) and len(files) > 40
    _, mismatch, errors = filecmp.cmpfiles(tiny_study, again, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    other = generate_study(tmp_path / "other", preset="tiny", seed=1)
    for name in ("dem.tif", "inventory.csv", "scenes/D139/20171203/VV.tif"):
        assert not filecmp.cmp(tiny_study / name, other / name, shallow=False), name
    a, b = Study.load(tiny_study).read_corridors(), Study.load(again).read_corridors()
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry")) and a.geometry.equals(b.geometry)


# -- the contract ---------------------------------------------------------------------------------

def test_contract_round_trip(tiny_study: Path) -> None:
    from avalanche_hpc.inputs.checks import check_study

    assert check_study(tiny_study) == []
    study = Study.load(tiny_study)
    cfg = study.config
    assert cfg.focus_massif == "Haute-Maurienne" and set(cfg.massifs) == set(TINY.massifs)
    assert [o.id for o in cfg.orbits] == ["D139", "A161"]
    assert [o.direction for o in cfg.orbits] == ["descending", "ascending"]
    season = cfg.seasons[0]
    for i, o in enumerate(cfg.orbits):
        dates = study.winter_dates(season.id, o.id)
        assert dates == winter_dates(TINY, i) and len(dates) == TINY.n_dates
        assert all(season.start <= d <= season.end for d in dates)
        summer = study.summer_dates(season.id, o.id)
        assert summer and all(d < season.start and d.month in (6, 7, 8, 9) for d in summer)
    acq = study.acquisitions()
    assert len(acq) == 2 * TINY.n_dates and sum(a.prev_date is None for a in acq) == 2
    with rasterio.open(study.dem_path) as dem:
        assert dem.dtypes[0] == "float32" and dem.crs.to_epsg() == cfg.crs_epsg
        assert dem.res == (cfg.pixel_size_m, cfg.pixel_size_m)
        transform, shape = dem.transform, dem.shape
    for o in cfg.orbits:
        d = study.winter_dates(season.id, o.id)[0]
        for band in ("VV", "VH", LAYOVER_SHADOW):
            with rasterio.open(study.scene_path(o.id, d, band)) as src:
                assert src.transform == transform and src.shape == shape
                if band == LAYOVER_SHADOW:
                    assert src.dtypes[0] == "uint8" and set(np.unique(src.read(1))) <= {0, 1, 2, 3}
                else:
                    assert src.dtypes[0] == "float32" and src.nodata is not None
                    assert src.tags()["UNITS"] in ("linear", "dB")
    units = {o.id: rasterio.open(study.scene_path(o.id, study.winter_dates(season.id, o.id)[0], "VV")).tags()["UNITS"]
             for o in cfg.orbits}
    assert set(units.values()) == {"linear", "dB"}  # both reader paths are exercised
    # the project's windowed reader gives linear power of the same magnitude for both units
    r0, c0 = np.array([60]), np.array([60])
    means = [np.nanmean(read_power_windows(study.scene_path(o.id, study.winter_dates(season.id, o.id)[0], "VV"),
                                           r0, c0, 64, cfg.units)) for o in cfg.orbits]
    assert all(0.01 < m < 1.0 for m in means)
    corridors = study.read_corridors()
    assert corridors["path_id"].is_unique and corridors["path_id"].map(type).eq(str).all()
    assert corridors["massif"].isin(cfg.massifs).all()
    assert corridors["monitored"].dtype == bool and (~corridors["monitored"]).any() and corridors["monitored"].any()
    assert (corridors.geometry.geom_type == "Polygon").all() and len(corridors) >= 15
    inv = study.read_inventory()
    assert inv["path_id"].isin(corridors["path_id"]).all()
    assert (inv["date_min"] <= inv["date_max"]).all()
    assert len(inv) >= 5


def test_truth_consistent_with_inventory(tiny_study: Path) -> None:
    truth = pd.read_csv(tiny_study / "truth.csv", dtype={"event_id": str, "path_id": str})
    inv = Study.load(tiny_study).read_inventory()
    corridors = Study.load(tiny_study).read_corridors().set_index("path_id")
    for col in ("event_id", "path_id", "date", "deposit_area_m2", "aspect", "slope", "recorded", "monitored",
                "date_min", "date_max"):
        assert col in truth.columns
    assert truth["event_id"].is_unique
    rec = truth[truth["recorded"]]
    assert set(rec["event_id"]) == set(inv["event_id"])
    assert not truth[~truth["monitored"]]["recorded"].any()
    assert (truth["monitored"] == corridors.loc[truth["path_id"], "monitored"].to_numpy()).all()
    merged = inv.merge(truth, on="event_id", suffixes=("", "_true"))
    true_date = pd.to_datetime(merged["date"]).dt.date
    assert (merged["path_id"] == merged["path_id_true"]).all()
    assert ((merged["date_min"] <= true_date) & (true_date <= merged["date_max"])).all()
    assert len(truth) >= 10
    assert (~truth["recorded"] & truth["monitored"]).any()  # unrecorded events exist


def test_inventory_windows_are_imprecise_and_incomplete() -> None:
    world = build_world(TINY, 0)
    n = 2000
    events = pd.DataFrame({"event_id": [f"E{i}" for i in range(n)], "path_id": world.corridors[0].path_id,
                           "date": [dt.date(2018, 2, 1)] * n, "deposit_area_m2": 5000.0, "cause": "dry"})
    world.corridors[0].monitored = True
    inv, out = make_inventory(events, world.corridors[:1], recorded_fraction=0.8, seed=3)
    width = np.array([(b - a).days for a, b in zip(out["date_min"], out["date_max"], strict=False)])
    assert 0.05 < (width > 6).mean() < 0.3          # some windows wider than a revisit
    assert (width <= 1).mean() > 0.4
    assert 0.7 < len(inv) / n < 0.9                 # label noise: unrecorded events


# -- physics --------------------------------------------------------------------------------------

def test_debris_raises_backscatter_by_configured_db(tiny_study: Path) -> None:
    """Mean dB change over each fresh deposit minus the change around it = the applied gain."""
    study = Study.load(tiny_study)
    world = build_world(TINY, 0)
    phys = TINY.physics
    assert debris_mod.gain_db(phys.debris_full_m2 * 2, phys) == pytest.approx(phys.debris_db)
    assert debris_mod.gain_db(phys.debris_small_m2, phys) == pytest.approx(phys.debris_db * phys.small_fraction)
    from scipy import ndimage

    footprint_any = np.zeros(world.terrain.shape, bool)
    for fp in world.footprints:
        footprint_any[fp.r0:fp.r0 + fp.weights.shape[0], fp.c0:fp.c0 + fp.weights.shape[1]] |= fp.weights > 0
    measured, expected = [], []
    for oi, o in enumerate(TINY.orbits):
        from avalanche_hpc.synth.radar import orbit_geometry

        oc = world.orbit_config(oi)
        geom = orbit_geometry(world.terrain, oc.look_azimuth_deg, oc.incidence_deg, phys, 0)
        dates = winter_dates(TINY, oi)
        for k, (ev, fp) in enumerate(zip(world.events.itertuples(), world.footprints, strict=False)):
            after = [d for d in dates if d >= ev.date]
            before = [d for d in dates if d < ev.date]
            if not after or not before:
                continue
            t0, t1 = before[-1], after[0]
            # skip deposits overlapping another deposit visible on t0 or t1
            others = [j for j, e in enumerate(world.events.itertuples()) if j != k and e.date <= t1
                      and debris_mod.aged_gain_db(float(world.fresh_gain_db[j]), e.date, t1, world.weather, phys) > 0]
            h, w = fp.weights.shape
            sl = (slice(fp.r0, fp.r0 + h), slice(fp.c0, fp.c0 + w))
            own = np.zeros(world.terrain.shape, bool)
            own[sl] = fp.weights > 0
            if any(np.any(own[world.footprints[j].r0:world.footprints[j].r0 + world.footprints[j].weights.shape[0],
                              world.footprints[j].c0:world.footprints[j].c0 + world.footprints[j].weights.shape[1]]
                          & (world.footprints[j].weights > 0)) for j in others):
                continue
            diff = _db(study, o.id, t1, "VV") - _db(study, o.id, t0, "VV")
            ring = ndimage.binary_dilation(own, iterations=6) & ~ndimage.binary_dilation(footprint_any, iterations=1)
            inside = own & np.isfinite(diff)
            if inside.sum() < 8 or np.isfinite(diff[ring]).sum() < 30:
                continue
            g = debris_mod.aged_gain_db(float(world.fresh_gain_db[k]), ev.date, t1, world.weather, phys)
            applied = np.zeros(world.terrain.shape)
            applied[sl] = g * fp.weights * geom.visibility[sl]
            measured.append(np.nanmean(diff[inside]) - np.nanmean(diff[ring]))
            expected.append(applied[inside].mean())
    assert len(measured) >= 5
    measured, expected = np.array(measured), np.array(expected)
    assert expected.mean() > 0.8
    # speckle (ENL ~5) gives ~3 dB per-pixel noise on a difference: average over the deposits
    assert measured.mean() == pytest.approx(expected.mean(), abs=0.6)
    assert np.corrcoef(measured, expected)[0, 1] > 0.3


def test_layover_and_shadow_face_toward_and_away_from_the_sensor(tiny_study: Path) -> None:
    study = Study.load(tiny_study)
    with rasterio.open(study.dem_path) as src:
        dem = src.read(1)
        px = src.res[0]
    slope, aspect = slope_aspect(dem, px, px)
    steep = slope > 20
    for o in study.config.orbits:
        d = study.winter_dates(study.config.seasons[0].id, o.id)[0]
        with rasterio.open(study.scene_path(o.id, d, LAYOVER_SHADOW)) as src:
            mask = src.read(1)
        toward = np.cos(np.radians(aspect - (o.look_azimuth_deg + 180.0)))  # 1: faces the sensor
        lay, shadow = (mask == 1) & steep, (mask == 2) & steep
        assert 0.01 < (mask & 1).astype(bool).mean() < 0.4, o.id
        assert lay.sum() > 50 and np.mean(toward[lay]) > 0.5, o.id
        assert shadow.sum() > 5 and np.mean(toward[shadow]) < -0.5, o.id
        # descending looks west: layover on east faces; ascending looks east: layover on west faces
        east = np.sin(np.radians(aspect[lay])).mean()
        assert (east > 0.3) if o.direction == "descending" else (east < -0.3), o.id


def test_small_and_sensor_facing_deposits_are_weaker() -> None:
    """Size scaling; foreshortening: east faces lose contrast in the descending orbit, west faces in the ascending."""
    from avalanche_hpc.synth.radar import orbit_geometry

    phys = TINY.physics
    areas = np.array([500.0, 1000.0, 3000.0, 10000.0, 25000.0, 80000.0])
    g = debris_mod.gain_db(areas, phys)
    assert np.all(np.diff(g) >= 0) and g[0] < 0.4 * phys.debris_db and g[-1] == pytest.approx(phys.debris_db)
    world = build_world(TINY, 0)
    t = world.terrain
    moderate = (t.slope > 10) & (t.slope < 30)
    east = moderate & (np.sin(np.radians(t.aspect)) > 0.7)
    west = moderate & (np.sin(np.radians(t.aspect)) < -0.7)
    for i, o in enumerate(TINY.orbits):
        oc = world.orbit_config(i)
        vis = orbit_geometry(t, oc.look_azimuth_deg, oc.incidence_deg, phys, 0).visibility
        facing, away = (east, west) if o.direction == "descending" else (west, east)
        assert vis[facing].mean() < vis[away].mean() - 0.1, o.id


def test_wet_snow_dates_drop_the_background_and_crust_raises_it(tiny_study: Path) -> None:
    study = Study.load(tiny_study)
    cond = pd.read_csv(tiny_study / "truth_conditions.csv")
    phys = TINY.physics
    checked = {"wet": 0, "crust": 0}
    for o in study.config.orbits:
        c = cond[(cond["orbit"] == o.id) & (cond["kind"] == "winter")]
        calm = c.loc[(c["wet_fraction"] + c["crust_fraction"]).idxmin()]
        assert calm["wet_fraction"] < 0.25  # patchy wetting (wet_patch_m) keeps a little wet snow near the line
        base = _db(study, o.id, dt.date.fromisoformat(calm["date"]), "VV")
        for kind, col, sign, gain in (("wet", "wet_fraction", -1, phys.wet_drop_db),
                                      ("crust", "crust_fraction", 1, phys.crust_gain_db)):
            row = c.loc[c[col].idxmax()]
            if row[col] < 0.5:
                continue
            change = np.nanmedian(_db(study, o.id, dt.date.fromisoformat(row["date"]), "VV") - base)
            expected = sign * gain * (row[col] - calm[col])  # broad, whole-slope change
            assert sign * change > 0.5 * abs(expected) > 0.4, (o.id, kind, change, expected)
            assert change == pytest.approx(expected, abs=2.0), (o.id, kind)
            checked[kind] += 1
    # the dusk (ascending) pass sees wet snow in spring; the dawn (descending) pass mostly refrozen crust
    assert checked["wet"] >= 1 and checked["crust"] >= 1, checked


def _blocks(a: np.ndarray, k: int = 8) -> np.ndarray:
    h, w = (a.shape[0] // k) * k, (a.shape[1] // k) * k
    return np.nanmean(a[:h, :w].reshape(h // k, k, w // k, k).transpose(0, 2, 1, 3).reshape(h // k, w // k, k * k),
                      axis=2)


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
def test_summer_reference_is_snow_free(tiny_study: Path) -> None:
    """The summer scene does not follow the snow state; the winter scene does (speckle-averaged blocks)."""
    from avalanche_hpc.synth.radar import orbit_geometry

    study = Study.load(tiny_study)
    season = study.config.seasons[0]
    world = build_world(TINY, 0)
    phys = TINY.physics
    for oi, o in enumerate(study.config.orbits):
        s = study.summer_dates(season.id, o.id)[0]
        with rasterio.open(study.scene_path(o.id, s, "VV")) as src:
            assert src.tags()["KIND"] == "summer"
        oc = world.orbit_config(oi)
        base = orbit_geometry(world.terrain, oc.look_azimuth_deg, oc.incidence_deg, phys, 0).base_vv_db
        dates = study.winter_dates(season.id, o.id)
        # the date with the largest snow-state contrast (wet snow drops, crust raises VV)
        states = [world.snow(d, oi) for d in dates]
        k = int(np.argmax([float(st.vv_db(phys).std()) for st in states]))
        snow = _blocks(states[k].vv_db(phys).astype(np.float64))
        summer = _blocks(_db(study, o.id, s, "VV") - base)
        winter = _blocks(_db(study, o.id, dates[k], "VV") - base)
        ok = np.isfinite(summer) & np.isfinite(winter)
        assert ok.sum() > 100 and snow[ok].std() > 0.5
        r_winter = np.corrcoef(winter[ok], snow[ok])[0, 1]
        r_summer = np.corrcoef(summer[ok], snow[ok])[0, 1]
        assert r_winter > 0.5, (o.id, r_winter)          # the winter scene carries the snow state
        assert abs(r_summer) < 0.25, (o.id, r_summer)    # the summer reference does not


# -- CLI, resume, overwrite ---------------------------------------------------------------------

def test_cli_synth_resumes_and_refuses_to_clobber(tiny_study: Path, tmp_path: Path) -> None:
    from avalanche_hpc.cli.main import app

    runner = CliRunner()
    root = tmp_path / "s"
    res = runner.invoke(app, ["synth", str(root), "--preset", "tiny", "--seed", "0"])
    assert res.exit_code == 0, res.output
    vv = Study.load(root).scene_path("A161", winter_dates(TINY, 1)[3], "VV")
    vv.unlink()
    (root / "truth.csv").unlink()
    res = runner.invoke(app, ["synth", str(root), "--preset", "tiny", "--seed", "0"])
    assert res.exit_code == 0, res.output
    assert filecmp.cmp(vv, tiny_study / vv.relative_to(root), shallow=False)
    assert filecmp.cmp(root / "truth.csv", tiny_study / "truth.csv", shallow=False)
    res = runner.invoke(app, ["synth", str(root), "--preset", "tiny", "--seed", "5"])
    assert res.exit_code != 0 and "--overwrite" in str(res.exception)
    with pytest.raises(ConfigError, match="unknown synthetic preset"):
        generate_study(tmp_path / "x", preset="huge")
    res = runner.invoke(app, ["synth", str(root), "--preset", "tiny", "--seed", "5", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not filecmp.cmp(root / "dem.tif", tiny_study / "dem.tif", shallow=False)
