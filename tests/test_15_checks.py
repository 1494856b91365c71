"""``avalanche-hpc inputs check``: every broken-input kind gives exit 1 and a message naming the file and row/key/date.

Each test breaks a fresh copy of the synthetic ``tiny`` study (``tiny_study_copy``) in one way and
runs the real CLI on it; one test breaks many files at once and expects every problem listed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import tomllib
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import rasterio
import tomli_w
from rasterio.crs import CRS
from rasterio.transform import Affine
from shapely.geometry import LineString
from typer.testing import CliRunner

from avalanche_hpc.cli.main import app
from avalanche_hpc.errors import InputError
from avalanche_hpc.inputs.checks import check_study, check_study_report, probe_raster, require_valid_study
from avalanche_hpc.study import Study

runner = CliRunner()


def check(root: Path) -> tuple[int, str]:
    r = runner.invoke(app, ["inputs", "check", str(root)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def fails_with(root: Path, *needles: str) -> str:
    """Run the CLI; assert exit 1 and that one reported problem line holds every needle."""
    code, out = check(root)
    assert code == 1, out
    lines = [ln for ln in out.splitlines() if ln.lstrip().startswith("x ")]
    assert any(all(n in ln for n in needles) for ln in lines), f"no problem line with {needles}:\n{out}"
    return out


def first_winter(study: Study):
    return study.acquisitions()[0]


def edit_toml(root: Path, change) -> None:
    path = root / "study.toml"
    data = tomllib.loads(path.read_text())
    change(data)
    path.write_text(tomli_w.dumps(data))


def rewrite_corridors(root: Path, change) -> None:
    path = root / "corridors.gpkg"
    gdf = change(gpd.read_file(path, layer="corridors"))
    path.unlink()
    gdf.to_file(path, layer="corridors")


def rewrite_inventory(root: Path, change) -> None:
    path = root / "inventory.csv"
    df = change(pd.read_csv(path, dtype=str, keep_default_na=False))
    df.to_csv(path, index=False)


def rel(study: Study, path: Path) -> str:
    return str(path.relative_to(study.root))


# --- the valid study ---------------------------------------------------------------------------


def test_valid_study_passes(tiny_study_copy: Path):
    code, out = check(tiny_study_copy)
    assert code == 0, out
    assert "OK" in out and "scene rasters" in out and "corridors" in out
    report = check_study_report(tiny_study_copy)
    assert report.problems == [] and report.checked["scene rasters"] >= 4
    assert isinstance(require_valid_study(tiny_study_copy), Study)


# --- study.toml ------------------------------------------------------------------------------------


def test_toml_syntax_error(tiny_study_copy: Path):
    path = tiny_study_copy / "study.toml"
    path.write_text("broken = = 1\n" + path.read_text())
    fails_with(tiny_study_copy, "study.toml", "[line 1, column", "not valid TOML")


def test_bad_keys_and_values_each_named(tiny_study_copy: Path):
    def change(d):
        d["nmae"] = d.pop("name")
        d["orbits"][0]["direction"] = "sideways"

    edit_toml(tiny_study_copy, change)
    out = fails_with(tiny_study_copy, "study.toml", "key nmae")
    assert re.search(r"key orbits\.0\.direction.*sideways|key orbits\.0\.direction", out)
    assert "key name" in out  # the missing key is reported too


# --- rasters ---------------------------------------------------------------------------------------


def test_truncated_scene(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    a = first_winter(study)
    vv = study.scene_path(a.orbit, a.date, "VV")
    data = vv.read_bytes()
    vv.write_bytes(data[: int(len(data) * 0.7)])
    out = fails_with(tiny_study_copy, rel(study, vv), f"date {a.date}")
    assert "truncated" in out or "cannot be opened" in out


def test_truncated_data_blocks_caught_by_probe(tiny_study_copy: Path, tmp_path: Path):
    """A file whose header survives but whose last blocks are cut off: caught without reading it all."""
    study = Study.load(tiny_study_copy)
    a = first_winter(study)
    src = study.scene_path(a.orbit, a.date, "VH")
    copy = tmp_path / "cut.tif"
    with rasterio.open(src) as s:  # rewrite uncompressed, header first, so that only data is lost
        prof = {k: s.profile[k] for k in ("driver", "width", "height", "count", "dtype", "crs", "transform", "nodata")}
        with rasterio.open(copy, "w", **prof) as d:
            d.write(s.read())
    size = copy.stat().st_size
    with rasterio.open(copy) as s:
        bh = s.block_shapes[0][0]
        last = int(s.get_tag_item(f"BLOCK_OFFSET_0_{(s.height - 1) // bh}", "TIFF", bidx=1))
    assert last > size // 2  # data at the end of the file
    os.truncate(copy, last + 1)
    grid, _info, errors = probe_raster(copy)
    assert grid is not None and errors and "truncated" in errors[0]


def test_garbage_dem(tiny_study_copy: Path):
    (tiny_study_copy / "dem.tif").write_bytes(b"this is not a GeoTIFF" * 10)
    fails_with(tiny_study_copy, "dem.tif", "cannot be opened")


def test_crs_mismatch(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    a = first_winter(study)
    vh = study.scene_path(a.orbit, a.date, "VH")
    other = 32631 if study.config.crs_epsg != 32631 else 32632
    with rasterio.open(vh, "r+") as ds:
        ds.crs = CRS.from_epsg(other)
    fails_with(tiny_study_copy, rel(study, vh), f"date {a.date}", f"EPSG:{other}", f"crs_epsg is {study.config.crs_epsg}")


def test_pixel_size_mismatch(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    a = study.acquisitions()[-1]
    vv = study.scene_path(a.orbit, a.date, "VV")
    with rasterio.open(vv, "r+") as ds:
        t = ds.transform
        ds.transform = Affine(t.a * 2, t.b, t.c, t.d, t.e * 2, t.f)
    fails_with(tiny_study_copy, rel(study, vv), f"date {a.date}", "pixel size")


def test_grid_mismatch_with_dem(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    a = first_winter(study)
    vv = study.scene_path(a.orbit, a.date, "VV")
    with rasterio.open(vv, "r+") as ds:
        t = ds.transform
        ds.transform = Affine(t.a, t.b, t.c + 3 * t.a, t.d, t.e, t.f)  # shifted by 3 pixels
    fails_with(tiny_study_copy, rel(study, vv), f"date {a.date}", "grid differs from dem.tif")


# --- scenes and dates -------------------------------------------------------------------------------


def test_missing_polarisation(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    a = study.acquisitions()[1]
    study.scene_path(a.orbit, a.date, "VH").unlink()
    fails_with(tiny_study_copy, rel(study, study.scene_path(a.orbit, a.date, "VH")), f"date {a.date}", "missing")


def test_listed_winter_date_without_scenes(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    season = study.config.seasons[0]
    orbit = study.config.orbits[0].id
    dates = study.winter_dates(season.id, orbit)
    ghost = dates[-1] - dt.timedelta(days=1)  # inside the season, between two real acquisitions

    def change(d):
        d["seasons"][0].setdefault("dates", {})[orbit] = [*dates, ghost]

    edit_toml(tiny_study_copy, change)
    fails_with(tiny_study_copy, f"scenes/{orbit}/{ghost:%Y%m%d}", f"date {ghost}", "winter", "folder is missing")


def test_summer_date_without_scenes(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    season, orbit = study.config.seasons[0], study.config.orbits[0].id
    summer = study.summer_dates(season.id, orbit)[0]
    for p in study.scene_dir(orbit, summer).iterdir():
        p.unlink()
    study.scene_dir(orbit, summer).rmdir()
    fails_with(tiny_study_copy, f"scenes/{orbit}/{summer:%Y%m%d}", f"date {summer}", "summer")


def test_missing_summer_references(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    season, orbit = study.config.seasons[0], study.config.orbits[-1].id
    edit_toml(tiny_study_copy, lambda d: d["seasons"][0]["summer"].pop(orbit))
    fails_with(tiny_study_copy, "study.toml", f"summer.{orbit}", f"orbit {orbit} in season {season.id}")


# --- corridors.gpkg --------------------------------------------------------------------------------


def test_corridor_path_id_and_massif_problems(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    ids = list(gpd.read_file(study.corridors_path, layer="corridors")["path_id"])

    def change(g):
        g.loc[1, "path_id"] = g.loc[0, "path_id"]  # duplicate
        g.loc[2, "path_id"] = ""  # empty
        g.loc[3, "massif"] = ""  # empty massif
        g.loc[4, "massif"] = "Atlantis"  # not in study.toml
        c = g.geometry.iloc[5].centroid
        g.loc[5, "geometry"] = LineString([(c.x, c.y), (c.x + 50, c.y + 50)])  # not a polygon
        return g

    rewrite_corridors(tiny_study_copy, change)
    fails_with(tiny_study_copy, "corridors.gpkg", "row 2", f"path_id {ids[0]}", "not unique")
    fails_with(tiny_study_copy, "corridors.gpkg", "row 3", "path_id is empty")
    fails_with(tiny_study_copy, "corridors.gpkg", "row 4", "massif is empty")
    fails_with(tiny_study_copy, "corridors.gpkg", "row 5", "Atlantis", "not listed in study.toml")
    fails_with(tiny_study_copy, "corridors.gpkg", "row 6", "LineString", "Polygon")


def test_corridor_crs_mismatch(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    rewrite_corridors(tiny_study_copy, lambda g: g.to_crs(4326))
    fails_with(tiny_study_copy, "corridors.gpkg", "CRS", f"crs_epsg is {study.config.crs_epsg}")


def test_corridor_missing_massif_column(tiny_study_copy: Path):
    rewrite_corridors(tiny_study_copy, lambda g: g.drop(columns=["massif"]))
    fails_with(tiny_study_copy, "corridors.gpkg", "column massif", "missing")


def test_monitored_column_must_be_boolean(tiny_study_copy: Path):
    def change(g):
        return g.assign(monitored=["false"] + ["true"] * (len(g) - 1))  # text: 'false' would read as true

    rewrite_corridors(tiny_study_copy, change)
    fails_with(tiny_study_copy, "corridors.gpkg", "row 1, monitored", "'false'")
    rewrite_corridors(tiny_study_copy, lambda g: g.assign(monitored=[False] + [True] * (len(g) - 1)))
    code, out = check(tiny_study_copy)
    assert code == 0, out


# --- inventory.csv ---------------------------------------------------------------------------------


def test_inventory_row_problems(tiny_study_copy: Path):
    def change(df):
        assert len(df) >= 5, "the tiny study needs a few inventory rows"
        df.loc[0, "path_id"] = "NO-SUCH-PATH"
        df.loc[1, "date_min"] = "12/01/2018"
        df.loc[2, "date_min"], df.loc[2, "date_max"] = "2018-02-10", "2018-02-01"
        df.loc[3, "deposit_area_m2"] = "-40"
        df.loc[4, "deposit_area_m2"] = "big"
        return df

    rewrite_inventory(tiny_study_copy, change)
    fails_with(tiny_study_copy, "inventory.csv", "row 1", "NO-SUCH-PATH", "not in corridors.gpkg")
    fails_with(tiny_study_copy, "inventory.csv", "row 2", "date_min", "12/01/2018")
    fails_with(tiny_study_copy, "inventory.csv", "row 3", "date_max 2018-02-01 is before date_min 2018-02-10")
    fails_with(tiny_study_copy, "inventory.csv", "row 4", "deposit_area_m2", "-40")
    fails_with(tiny_study_copy, "inventory.csv", "row 5", "deposit_area_m2", "'big' is not a number")


def test_inventory_missing_column(tiny_study_copy: Path):
    rewrite_inventory(tiny_study_copy, lambda df: df.drop(columns=["date_max"]))
    fails_with(tiny_study_copy, "inventory.csv", "column date_max", "missing")


# --- everything at once ------------------------------------------------------------------------------


def test_every_problem_is_collected(tiny_study_copy: Path):
    study = Study.load(tiny_study_copy)
    a = first_winter(study)
    study.scene_path(a.orbit, a.date, "VH").unlink()
    vv = study.scene_path(a.orbit, a.date, "VV")
    vv.write_bytes(vv.read_bytes()[:200])
    rewrite_corridors(tiny_study_copy, lambda g: g.assign(massif=["Atlantis", *list(g["massif"][1:])]))
    rewrite_inventory(tiny_study_copy, lambda df: df.assign(date_min=["soon", *list(df["date_min"][1:])]))
    problems = check_study(tiny_study_copy)
    files = {Path(p.file).name for p in problems}
    assert {"VH.tif", "VV.tif", "corridors.gpkg", "inventory.csv"} <= files
    with pytest.raises(InputError) as e:
        require_valid_study(tiny_study_copy)
    assert len(e.value.problems) == len(problems) >= 4


def test_console_script_exit_code(tiny_study_copy: Path, repo_root: Path):
    """The installed console script (not only the in-process app) exits 1 and names the file."""
    (tiny_study_copy / "inventory.csv").unlink()
    exe = repo_root / ".venv" / "bin" / "avalanche-hpc"
    if not exe.is_file():
        pytest.skip(f"console script not installed at {exe}")
    r = subprocess.run([str(exe), "inputs", "check", str(tiny_study_copy)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1
    assert "inventory.csv" in r.stdout and "missing" in r.stdout

