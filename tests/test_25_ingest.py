"""``avalanche-hpc ingest``: SNAP/pyroSAR names -> scenes/{orbit}/{YYYYMMDD}/{band}.tif, on real and hand-built files."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from shapely.geometry import box
from typer.testing import CliRunner

from avalanche_hpc.cli.main import app
from avalanche_hpc.errors import InputError
from avalanche_hpc.inputs.grid import transform_from_origin
from avalanche_hpc.inputs.ingest import ingest_scenes, parse_scene_name, plan_ingest
from avalanche_hpc.study import Study, StudyConfig
from tests.conftest import SHARED_REAL

REAL_NAME = "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif"
REAL = SHARED_REAL / REAL_NAME
needs_real = pytest.mark.skipif(
    not REAL.is_file(), reason=f"real Sentinel-1 sample absent: {REAL} (the shared data folder is not mounted)"
)
runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _config(orbits: list[dict], crs: int) -> StudyConfig:
    return StudyConfig.model_validate(dict(
        name="ingest-test", crs_epsg=crs, pixel_size_m=20.0, massifs=["Vanoise"], orbits=orbits,
        seasons=[dict(id="2014-2015", start=dt.date(2014, 11, 1), end=dt.date(2015, 5, 31),
                      summer={o["id"]: [dt.date(2014, 8, 10)] for o in orbits})],
    ))


def _study_on_grid(root: Path, orbits: list[dict], crs: int, transform, shape: tuple[int, int]) -> Path:
    """A study whose DEM has the given grid (the scenes come from ingest)."""
    root.mkdir(parents=True, exist_ok=True)
    Study.write_config(root, _config(orbits, crs))
    h, w = shape
    with rasterio.open(root / "dem.tif", "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                       crs=f"EPSG:{crs}", transform=transform, nodata=-9999) as d:
        d.write(np.full((1, h, w), 1500.0, dtype="float32"))
    return root


ASC = dict(id="A088", direction="ascending", relative_orbit=88)
DESC = dict(id="D139", direction="descending", relative_orbit=139)


@pytest.fixture
def real_study(tmp_path: Path) -> Path:
    if not REAL.is_file():
        pytest.skip(f"real Sentinel-1 sample absent: {REAL}")
    with rasterio.open(REAL) as src:
        return _study_on_grid(tmp_path / "study", [ASC, DESC], 32631, src.transform, (src.height, src.width))


# --- names ----------------------------------------------------------------------------------------


def test_parse_pyrosar_name():
    n = parse_scene_name(Path("/x") / REAL_NAME)
    assert (n.producer, n.sensor, n.direction, n.band, n.db_in_name) == ("pyrosar", "S1A", "ascending", "VV", True)
    assert n.start == dt.datetime(2015, 3, 9, 17, 30, 17)
    lin = parse_scene_name("S1B__IW___D_20180102T054500_VH_grd_mli_geo_norm.tif")
    assert (lin.direction, lin.band, lin.db_in_name, lin.date) == ("descending", "VH", False, dt.date(2018, 1, 2))
    mask = parse_scene_name("S1A__IW___D_20180102T054500_layoverShadowMask.tif")
    assert mask.band == "layover_shadow"


def test_parse_snap_names_derive_relative_orbit():
    base = "S1A_IW_GRDH_1SDV_20150309T173017_20150309T173042_004969_006374_A1B2"
    n = parse_scene_name(f"{base}_Orb_NR_Cal_Spk_TC.tif")
    assert (n.producer, n.band, n.direction) == ("snap", None, None)  # bands told apart by their descriptions
    assert n.relative_orbit == (4969 - 73) % 175 + 1
    one = parse_scene_name(f"{base}_Orb_Cal_TC_Sigma0_VH_db.tif")
    assert (one.band, one.db_in_name) == ("VH", True)
    nested = parse_scene_name(f"/data/{base}_TC.data/Sigma0_VV.tif")  # SNAP folder layout, one file per band
    assert (nested.band, nested.date, nested.relative_orbit) == ("VV", dt.date(2015, 3, 9), n.relative_orbit)
    s1b = parse_scene_name("S1B_IW_GRDH_1SDV_20180102T054500_20180102T054525_008966_00FFFF_1A2B_TC_Sigma0_VV.tif")
    assert s1b.relative_orbit == (8966 - 27) % 175 + 1


@pytest.mark.parametrize("bad", [
    "scene_VV.tif",
    "S1A__IW___X_20150309T173017_VV_grd.tif",  # direction must be A or D
    "S1A__IW___A_20151309T173017_VV_grd.tif",  # month 13
    "S1A__IW___A_20150309T173017_grd_mli.tif",  # no polarisation
])
def test_malformed_name_is_a_clear_error(bad: str):
    with pytest.raises(InputError) as e:
        parse_scene_name(bad)
    msg = str(e.value)
    assert bad in msg and "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif" in msg  # names the expected pattern


# --- the real pyroSAR file ---------------------------------------------------------------------


@needs_real
def test_ingest_real_pyrosar_file(real_study: Path):
    r = _cli("ingest", REAL, "--study", real_study)
    assert r.exit_code == 0, r.output
    target = real_study / "scenes" / "A088" / "20150309" / "VV.tif"
    assert REAL.is_file()  # --copy is the default
    with rasterio.open(target) as t, rasterio.open(REAL) as s:
        assert t.tags()["UNITS"] == "dB"
        assert t.tags()["INGEST_SOURCE"] == REAL_NAME
        assert (t.dtypes[0], t.nodata, t.crs.to_epsg(), t.shape) == ("float32", -99.0, 32631, (217, 268))
        np.testing.assert_array_equal(t.read(1), s.read(1))
    assert not list(target.parent.glob("*.tmp-*"))

    again = _cli("ingest", REAL, "--study", real_study)  # refuses to overwrite
    assert again.exit_code == 1
    assert "VV.tif" in again.output and "--overwrite" in again.output
    assert _cli("ingest", REAL, "--study", real_study, "--overwrite").exit_code == 0


@needs_real
def test_dry_run_writes_nothing(real_study: Path):
    r = _cli("ingest", REAL, "--study", real_study, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "A088" in r.output and "would write" in r.output
    assert not (real_study / "scenes").exists()


@needs_real
def test_orbit_choice(tmp_path: Path):
    with rasterio.open(REAL) as src:
        grid = (src.transform, (src.height, src.width))
    two_asc = _study_on_grid(tmp_path / "two", [ASC, dict(ASC, id="A161", relative_orbit=161), DESC], 32631, *grid)
    r = _cli("ingest", REAL, "--study", two_asc)
    assert r.exit_code == 1
    assert "A088" in r.output and "A161" in r.output and "--orbit" in r.output  # lists the choices
    wrong = _cli("ingest", REAL, "--study", two_asc, "--orbit", "D139")
    assert wrong.exit_code == 1 and "descending" in wrong.output
    unknown = _cli("ingest", REAL, "--study", two_asc, "--orbit", "X1")
    assert unknown.exit_code == 1 and "X1" in unknown.output
    ok = _cli("ingest", REAL, "--study", two_asc, "--orbit", "A161")
    assert ok.exit_code == 0, ok.output
    assert (two_asc / "scenes" / "A161" / "20150309" / "VV.tif").is_file()


@needs_real
def test_move_removes_the_source_after_writing(real_study: Path, tmp_path: Path):
    src = tmp_path / "incoming" / REAL_NAME
    src.parent.mkdir()
    shutil.copyfile(REAL, src)  # a scratch copy outside the repository
    r = _cli("ingest", src.parent, "--study", real_study, "--move")  # a folder is expanded to its GeoTIFFs
    assert r.exit_code == 0, r.output
    assert not src.exists()
    assert (real_study / "scenes" / "A088" / "20150309" / "VV.tif").is_file()


@needs_real
def test_grid_and_crs_mismatch_refused(tmp_path: Path):
    with rasterio.open(REAL) as src:
        t, shape = src.transform, (src.height, src.width)
    shifted = _study_on_grid(tmp_path / "shifted", [ASC], 32631, transform_from_origin(t.c + 100, t.f, 20, 20), shape)
    r = _cli("ingest", REAL, "--study", shifted)
    assert r.exit_code == 1 and "grid differs from dem.tif" in r.output and "gdalwarp" in r.output
    other_crs = _study_on_grid(tmp_path / "crs", [ASC], 32632, t, shape)
    r = _cli("ingest", REAL, "--study", other_crs)
    assert r.exit_code == 1 and "EPSG:32632" in r.output
    assert not (shifted / "scenes").exists() and not (other_crs / "scenes").exists()


# --- SNAP outputs (hand-built rasters on a small grid) --------------------------------------------

SNAP_BASE = "S1A_IW_GRDH_1SDV_20141207T054500_20141207T054525_{abs:06d}_006374_A1B2"
ABS_FOR_139 = 73 + 138 + 175 * 115  # an S1A absolute orbit on relative orbit 139


def _write(path: Path, arrays: list[np.ndarray], descriptions: list[str] | None = None, nodata=None,
           dtype="float32", crs=32632) -> Path:
    h, w = arrays[0].shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=len(arrays), dtype=dtype,
                       crs=f"EPSG:{crs}", transform=transform_from_origin(300000, 5000000, 20, 20), nodata=nodata) as d:
        for i, a in enumerate(arrays, start=1):
            d.write(a.astype(dtype), i)
            if descriptions:
                d.set_band_description(i, descriptions[i - 1])
    return path


def _small_study(root: Path) -> Path:
    _study_on_grid(root, [DESC, ASC], 32632, transform_from_origin(300000, 5000000, 20, 20), (40, 50))
    gpd.GeoDataFrame({"path_id": ["P1"], "massif": ["Vanoise"]}, geometry=[box(300100, 4999400, 300300, 4999800)],
                     crs="EPSG:32632").to_file(root / "corridors.gpkg", layer="corridors")
    pd.DataFrame({"event_id": ["E1"], "path_id": ["P1"], "date_min": ["2014-12-02"], "date_max": ["2014-12-06"],
                  "deposit_area_m2": [800]}).to_csv(root / "inventory.csv", index=False)
    return root


def test_snap_outputs_become_a_valid_study(tmp_path: Path):
    root = _small_study(tmp_path / "study")
    rng = np.random.default_rng(0)
    lin = lambda: rng.gamma(4.0, 0.05 / 4, (40, 50))  # noqa: E731 - linear sigma0
    inc = tmp_path / "snap"
    inc.mkdir()
    files = []
    for day in ("20141201", "20141207"):  # winter: one two-band file per date
        name = SNAP_BASE.format(abs=ABS_FOR_139).replace("20141207", day) + "_Orb_NR_Cal_Spk_TC.tif"
        files.append(_write(inc / name, [lin(), lin()], ["Sigma0_VH", "Sigma0_VV"], nodata=0.0))
    summer = SNAP_BASE.format(abs=ABS_FOR_139).replace("20141207", "20140810") + "_Orb_Cal_TC"
    for pol in ("VV", "VH"):  # summer: one file per band, in dB, no nodata declared
        files.append(_write(inc / f"{summer}_Sigma0_{pol}_db.tif", [10 * np.log10(lin())]))
    mask = np.zeros((40, 50), dtype="uint8")
    mask[:5] = 1
    mask[-5:] = 2
    files.append(_write(inc / f"{summer}_layoverShadowMask.tif", [mask], dtype="uint8"))

    no_nodata = _cli("ingest", *files, "--study", root)
    assert no_nodata.exit_code == 1 and "nodata" in no_nodata.output and "Sigma0_VV_db" in no_nodata.output
    assert not (root / "scenes").exists()  # validated before any write

    r = _cli("ingest", *files, "--study", root, "--nodata", "-99")  # D139 chosen from the relative orbit
    assert r.exit_code == 0, r.output
    d = root / "scenes" / "D139"
    assert sorted(p.name for p in d.iterdir()) == ["20140810", "20141201", "20141207"]
    with rasterio.open(d / "20141207" / "VV.tif") as vv, rasterio.open(files[1]) as src:
        assert vv.tags()["UNITS"] == "linear" and vv.count == 1
        np.testing.assert_allclose(vv.read(1), src.read(2))  # band 2 was described Sigma0_VV
    with rasterio.open(d / "20140810" / "VH.tif") as vh:
        assert vh.tags()["UNITS"] == "dB" and vh.nodata == -99
    with rasterio.open(d / "20140810" / "layover_shadow.tif") as m:
        assert m.dtypes[0] == "uint8"
        np.testing.assert_array_equal(m.read(1), mask)

    # the ascending orbit has no scenes: drop it, then the study satisfies the contract
    cfg = Study.load(root).config
    Study.write_config(root, cfg.model_copy(update={
        "orbits": [cfg.orbit("D139")],
        "seasons": [cfg.seasons[0].model_copy(update={"summer": {"D139": [dt.date(2014, 8, 10)]}})],
    }))
    check = _cli("inputs", "check", root)
    assert check.exit_code == 0, check.output


def test_bad_snap_inputs_are_refused_before_writing(tmp_path: Path):
    root = _small_study(tmp_path / "study")
    inc = tmp_path / "snap"
    inc.mkdir()
    base = SNAP_BASE.format(abs=ABS_FOR_139)
    undescribed = _write(inc / f"{base}_TC.tif", [np.ones((40, 50))] * 2, nodata=0.0)
    looks_db = _write(inc / f"{base.replace('20141207', '20141213')}_TC_Sigma0_VV.tif",
                      [np.full((40, 50), -12.0)], nodata=-99.0)
    bad_mask = _write(inc / f"{base}_layoverShadowMask.tif", [np.full((40, 50), 7)], dtype="uint8")
    with pytest.raises(InputError) as e:
        plan_ingest(root, [undescribed, looks_db, bad_mask])
    msg = str(e.value)
    assert len(e.value.problems) == 3  # every file reported, not only the first
    assert "cannot tell which" in msg and "look like dB" in msg and "[7]" in msg
    with pytest.raises(InputError):
        ingest_scenes(root, [undescribed, looks_db, bad_mask])
    assert not (root / "scenes").exists()
