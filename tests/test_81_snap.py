"""The SNAP step without SNAP: product names, gpt command lines, auxdata checks, scene assembly, the CLI.

SNAP itself cannot run here. Where a test needs a ``gpt`` executable to exercise the task
plumbing (checks before start, temporary output + rename, assembly onto the DEM grid), it
puts a small stand-in script named ``gpt`` on PATH that writes a 3-band GeoTIFF the way the
graph's Write node does; what SNAP computes is not tested (docs/containers.md).
"""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import json
import os
import stat
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from avalanche_hpc.cli.main import app
from avalanche_hpc.errors import ConfigError, InputError, MissingInputError
from avalanche_hpc.inputs.grid import transform_from_origin
from avalanche_hpc.inputs.products import list_products, parse_product_name, relative_orbit
from avalanche_hpc.inputs.snap import gpt as gptmod
from avalanche_hpc.inputs.snap.auxdata import (
    egm96_path,
    fetch_auxdata,
    orbit_dir,
    staged_dem_path,
    verify_auxdata,
)
from avalanche_hpc.inputs.snap.tasks import (
    SOURCES_JSON,
    list_snap_tasks,
    list_tasks,
    raw_path,
    snap_product,
    snap_products,
    task_is_complete,
)
from avalanche_hpc.study import OrbitConfig, SeasonConfig, Study, StudyConfig

# Real Sentinel-1 product names (ESA archive identifiers quoted in public code and docs).
S1A_DESC = "S1A_IW_GRDH_1SDV_20170110T054325_20170110T054350_014779_018103_1F6A"  # abs 14779 -> rel 7
S1A_ASC = "S1A_IW_GRDH_1SDV_20180829T170656_20180829T170721_023464_028DE0_F7BD"  # abs 23464 -> rel 117 (pyroSAR docs)
S1B_DESC = "S1B_IW_GRDH_1SDV_20170226T053524_20170226T053549_004467_007C6B_F7DE"  # abs 4467 -> rel 66
S1B_NIGHT = "S1B_IW_GRDH_1SDV_20170507T233247_20170507T233312_005499_009A2C_4206"  # abs 5499 -> rel 48

EPSG = 32632
ORIGIN = (300000.0, 5100000.0)
H, W = 30, 40


def make_study(root: Path) -> Path:
    cfg = StudyConfig(
        name="snap-test", crs_epsg=EPSG, pixel_size_m=20.0, massifs=["Vanoise"],
        orbits=[OrbitConfig(id="D007", direction="descending", relative_orbit=7),
                OrbitConfig(id="A117", direction="ascending", relative_orbit=117)],
        seasons=[SeasonConfig(id="2016-2017", start=dt.date(2016, 11, 1), end=dt.date(2017, 5, 31), summer={})],
    )
    root.mkdir(parents=True, exist_ok=True)
    Study.write_config(root, cfg)
    dem = (1500 + np.arange(H * W, dtype="float32").reshape(H, W)).astype("float32")
    with rasterio.open(root / "dem.tif", "w", driver="GTiff", width=W, height=H, count=1, dtype="float32",
                       crs=f"EPSG:{EPSG}", transform=transform_from_origin(*ORIGIN, 20, 20), nodata=-9999) as ds:
        ds.write(dem, 1)
    return root


@pytest.fixture()
def study(tmp_path) -> Path:
    return make_study(tmp_path / "study")


def make_products(d: Path, names: list[str], ext: str = ".zip") -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for n in names:
        p = d / f"{n}{ext}"
        if ext == ".SAFE":
            p.mkdir()
        else:
            p.write_bytes(b"PK")  # the content is read by SNAP only
        out.append(p)
    return out


# -- product names ---------------------------------------------------------------------------------
def test_parse_real_product_names():
    p = parse_product_name(f"/data/{S1A_DESC}.SAFE")
    assert (p.mission, p.mode, p.product_type, p.level, p.product_class, p.polarisation) == \
        ("S1A", "IW", "GRDH", 1, "S", "DV")
    assert p.start == dt.datetime(2017, 1, 10, 5, 43, 25) and p.stop == dt.datetime(2017, 1, 10, 5, 43, 50)
    assert (p.absolute_orbit, p.datatake, p.unique_id) == (14779, "018103", "1F6A")
    assert p.name == S1A_DESC and p.bands == ("VV", "VH") and p.date == dt.date(2017, 1, 10)
    assert p.relative_orbit == 7
    assert parse_product_name(f"{S1A_ASC}.zip").relative_orbit == 117
    assert parse_product_name(S1B_DESC).relative_orbit == 66
    assert parse_product_name(f"{S1B_NIGHT}.zip").relative_orbit == 48
    # the cycle wraps: S1A absolute 73 is relative 1, 72 is 175; S1C uses its own offset
    assert relative_orbit("S1A", 73) == 1 and relative_orbit("S1A", 72) == 175
    assert relative_orbit("S1B", 27) == 1 and relative_orbit("S1C", 172) == 1
    with pytest.raises(ValueError, match="S1D"):
        relative_orbit("S1D", 100)


def test_direction_comes_from_the_study_orbit(study):
    cfg = Study.load(study).config
    assert parse_product_name(S1A_DESC).study_orbit(cfg).direction == "descending"
    assert parse_product_name(S1A_ASC).study_orbit(cfg).direction == "ascending"
    with pytest.raises(InputError, match=r"relative orbit 66.*D007 \(relative orbit 7, descending\)"):
        parse_product_name(S1B_DESC).study_orbit(cfg)


@pytest.mark.parametrize("bad", [
    "S1A_IW_GRDH_1SDV_20170110T054325_20170110T054350_14779_018103_1F6A.zip",  # 5-digit orbit
    "S2A_MSIL1C_20170110T103401_N0204_R108_T32TLR_20170110T103400.zip",  # not Sentinel-1
    "S1A_IW_GRDH_1SDV_20170110T054325_20170110T054350_014779_018103_1F6A.tif",
    "scene.zip",
])
def test_malformed_names_are_clear_errors(bad):
    with pytest.raises(InputError) as e:
        parse_product_name(f"/in/{bad}")
    msg = str(e.value)
    assert bad in msg and "S1X_MM_TTTR_LFPP" in msg and S1A_DESC in msg  # names the file and the pattern


def test_list_products_reports_every_bad_name(tmp_path):
    d = tmp_path / "grd"
    make_products(d, [S1A_DESC, S1B_DESC])
    (d / "notes.zip").write_bytes(b"")
    (d / "S1A_IW_SLC__1SDV_20170110T054325_20170110T054350_014779_018103_1F6A.zip").write_bytes(b"")
    with pytest.raises(InputError) as e:
        list_products(d)
    assert len(e.value.problems) == 2 and "not a GRD product" in str(e.value) and "notes.zip" in str(e.value)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# products\ngrd/{S1B_DESC}.zip\n{d / S1A_DESC}.zip\n", encoding="utf-8")
    prods = list_products(listing)
    assert [p.name for p in prods] == [S1A_DESC, S1B_DESC]  # sorted by start time


# -- gpt command lines -----------------------------------------------------------------------------
def test_gpt_command_for_cpus_and_memory(tmp_path):
    graph = gptmod.default_graph()
    params = gptmod.graph_parameters(input_path=Path("/d/x.zip"), output_path=tmp_path / "o.tif",
                                     dem_path=Path("/s/dem.tif"), crs_epsg=EPSG, pixel_size_m=20,
                                     grid_origin=ORIGIN)
    cmd = gptmod.gpt_command(graph, params, cpus=6, mem_gb=32, userdir="/tmp/u1", orbit_dir="/s/orb")
    assert cmd[0] == "gpt"
    # heap = 32 GiB - 20 % headroom; cache = 60 % of the heap
    assert "-J-Xmx26215M" in cmd and cmd[cmd.index("-c") + 1] == f"{int(26215 * 0.6)}M"
    assert cmd[cmd.index("-q") + 1] == "6"
    assert "-J-Dsnap.userdir=/tmp/u1" in cmd and "-J-DOrbitFiles.sentinel1POEOrbitPath=/s/orb" in cmd
    assert cmd.index("-J-Xmx26215M") < cmd.index(str(graph))  # JVM options before gpt's own
    assert "-PmapProjection=EPSG:32632" in cmd and "-PdemFile=/s/dem.tif" in cmd and "-Ppolarisations=VV,VH" in cmd
    small = gptmod.gpt_command(graph, params, cpus=1, mem_gb=4, userdir="/u", gpt_prefix=["apptainer", "exec", "i.sif", "gpt"])
    assert small[:4] == ["apptainer", "exec", "i.sif", "gpt"]
    assert "-J-Xmx3072M" in small and small[small.index("-q") + 1] == "1"  # 4 GiB - 1 GiB minimum headroom
    with pytest.raises(ConfigError, match="--mem-gb"):
        gptmod.gpt_memory(2.5)
    with pytest.raises(ConfigError, match="demFile"):
        gptmod.gpt_command(graph, {k: v for k, v in params.items() if k != "demFile"}, cpus=2, mem_gb=8, userdir="/u")


def test_task_resources_follow_the_slurm_allocation(monkeypatch):
    for k in ("SLURM_CPUS_PER_TASK", "SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU"):
        monkeypatch.delenv(k, raising=False)
    assert gptmod.task_resources(3, 12.0) == (3, 12.0)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    monkeypatch.setenv("SLURM_MEM_PER_CPU", "4096")
    assert gptmod.task_resources() == (5, 20.0)
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "65536")
    assert gptmod.task_resources() == (5, 64.0)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.delenv("SLURM_MEM_PER_NODE")
    monkeypatch.delenv("SLURM_MEM_PER_CPU")
    cpus, mem = gptmod.task_resources()
    assert cpus == len(os.sched_getaffinity(0)) and 0 < mem < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3


def test_missing_gpt_says_how_to_use_the_image(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("AVALANCHE_GPT", raising=False)
    with pytest.raises(MissingInputError) as e:
        gptmod.find_gpt()
    msg = str(e.value)
    assert "apptainer exec" in msg and "avalanche.sif" in msg and "image =" in msg


# -- auxdata for offline nodes ----------------------------------------------------------------------
def orbit_name(mission: str, start: dt.datetime) -> str:
    v0, v1 = start - dt.timedelta(hours=2), start + dt.timedelta(hours=24)
    return (f"{mission}_OPER_AUX_POEORB_OPOD_{start + dt.timedelta(days=20):%Y%m%dT%H%M%S}_"
            f"V{v0:%Y%m%dT%H%M%S}_{v1:%Y%m%dT%H%M%S}.EOF.zip")


def test_verification_lists_every_missing_file_before_gpt(study, tmp_path):
    st = Study.load(study)
    prods = [parse_product_name(f"{n}.zip") for n in (S1A_DESC, S1A_ASC)]
    problems = verify_auxdata(st, prods)
    text = "\n".join(map(str, problems))
    assert len(problems) == 4  # DEM, geoid, two orbit files
    assert "external DEM" in text and "EGM96" in text and S1A_DESC in text and S1A_ASC in text
    assert "S1A/2017/01" in text and "snap-auxdata" in text
    # an orbit file with the right name in SNAP's folder satisfies the check; one not covering the time does not
    folder = orbit_dir(st) / "S1A" / "2017" / "01"
    folder.mkdir(parents=True)
    (folder / orbit_name("S1A", dt.datetime(2017, 1, 12))).write_bytes(b"")
    assert len(verify_auxdata(st, prods)) == 4
    (folder / orbit_name("S1A", dt.datetime(2017, 1, 10, 5))).write_bytes(b"")
    assert len(verify_auxdata(st, prods)) == 3


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture()
def orbit_mirror(tmp_path):
    """A real HTTP server on loopback serving a directory laid out like step.esa.int/auxdata/."""
    root = tmp_path / "mirror"
    for mission, start in (("S1A", dt.datetime(2017, 1, 10, 5)), ("S1A", dt.datetime(2018, 8, 29, 16))):
        d = root / "orbits" / "Sentinel-1" / "POEORB" / mission / f"{start:%Y}" / f"{start:%m}"
        d.mkdir(parents=True, exist_ok=True)
        (d / orbit_name(mission, start)).write_bytes(b"orbit " + start.isoformat().encode())
        (d / orbit_name(mission, start - dt.timedelta(days=3))).write_bytes(b"other day")
    (root / "dem" / "egm96").mkdir(parents=True)
    (root / "dem" / "egm96" / "ww15mgh_b.zip").write_bytes(b"geoid")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_fetch_auxdata_from_a_mirror_then_verify(study, orbit_mirror):
    st = Study.load(study)
    prods = [parse_product_name(f"{n}.zip") for n in (S1A_DESC, S1A_ASC)]
    problems = fetch_auxdata(st, prods, base_url=f"{orbit_mirror}/orbits/Sentinel-1/",
                             egm96_url=f"{orbit_mirror}/dem/egm96/ww15mgh_b.zip")
    assert problems == []
    staged = sorted(p.relative_to(orbit_dir(st)).as_posix() for p in orbit_dir(st).rglob("*.zip"))
    assert staged == [f"S1A/2017/01/{orbit_name('S1A', dt.datetime(2017, 1, 10, 5))}",
                      f"S1A/2018/08/{orbit_name('S1A', dt.datetime(2018, 8, 29, 16))}"]
    assert egm96_path(st).read_bytes() == b"geoid"
    with rasterio.open(staged_dem_path(st)) as d, rasterio.open(st.dem_path) as ref:
        assert d.crs.to_epsg() == EPSG and d.transform == ref.transform and d.dtypes[0] == "float32"
        np.testing.assert_allclose(d.read(1), ref.read(1))
    # a product with no orbit file on the mirror: a clear error naming it
    from avalanche_hpc.errors import StageError

    with pytest.raises(StageError, match=S1B_DESC):
        fetch_auxdata(st, [parse_product_name(S1B_DESC)], base_url=f"{orbit_mirror}/orbits/Sentinel-1/",
                      egm96_url=f"{orbit_mirror}/dem/egm96/ww15mgh_b.zip")


# -- the snap step and the CLI -----------------------------------------------------------------------
FAKE_GPT = r'''#!{python}
"""Stand-in for SNAP gpt (tests only): writes Sigma0_VV, Sigma0_VH, layoverShadowMask like the graph's Write."""
import sys
import numpy as np
import rasterio
from rasterio.transform import from_origin
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("-P"))
assert any(a.startswith("-J-Xmx") for a in sys.argv), sys.argv
x0, y0 = float(args["gridOriginX"]), float(args["gridOriginY"])
asc = "_023464_" in args["input"]
h, w = 30, 25  # each slice covers part of the 30 x 40 grid; ascending covers the east side
x = x0 + (15 * 20 if asc else 0)
vv = np.full((h, w), 0.1 if asc else 0.2, dtype="float32"); vv[:, -3:] = 0.0  # SNAP no-data is 0
mask = np.zeros((h, w), dtype="float32"); mask[0, :] = 1; mask[1, :] = 2; mask[2, :] = 3
with rasterio.open(args["output"], "w", driver="GTiff", width=w, height=h, count=3, dtype="float32",
                   crs=args["mapProjection"], transform=from_origin(x, y0, 20, 20)) as ds:
    ds.write(np.stack([vv, vv / 4, mask]))
'''


@pytest.fixture()
def fake_gpt(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "gpt"
    exe.write_text(FAKE_GPT.format(python=sys.executable), encoding="utf-8")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("AVALANCHE_GPT", raising=False)
    return exe


def test_snap_checks_auxdata_first_then_runs_places_and_skips(study, tmp_path, fake_gpt, orbit_mirror):
    prods = make_products(tmp_path / "grd", [S1A_DESC, S1A_ASC])
    with pytest.raises(InputError, match="product not found"):
        snap_product(study, tmp_path / "elsewhere" / f"{S1A_DESC}.zip", scratch=tmp_path / "scratch")
    # nothing staged: a clear error before any gpt runs, nothing written
    with pytest.raises(InputError, match="not staged"):
        snap_products(study, tmp_path / "grd", scratch=tmp_path / "scratch", cpus=2, mem_gb=8, progress=False)
    assert not (study / "scenes").exists()
    st = Study.load(study)
    fetch_auxdata(st, [parse_product_name(p) for p in prods], base_url=f"{orbit_mirror}/orbits/Sentinel-1/",
                  egm96_url=f"{orbit_mirror}/dem/egm96/ww15mgh_b.zip")
    assert len(list_tasks(study, tmp_path / "grd")) == 2
    out = snap_products(study, tmp_path / "grd", scratch=tmp_path / "scratch", cpus=2, mem_gb=8, progress=False)
    assert out == [st.scene_dir("D007", dt.date(2017, 1, 10)), st.scene_dir("A117", dt.date(2018, 8, 29))]
    with rasterio.open(st.scene_path("D007", dt.date(2017, 1, 10), "VV")) as vv, rasterio.open(st.dem_path) as dem:
        assert vv.transform == dem.transform and vv.shape == dem.shape and vv.dtypes[0] == "float32"
        assert vv.tags()["UNITS"] == "linear" and vv.nodata == -9999.0
        a = vv.read(1)
        assert np.all(a[:, :22] == np.float32(0.2)) and np.all(a[:, 22:] == -9999.0)
    with rasterio.open(st.scene_path("D007", dt.date(2017, 1, 10), "layover_shadow")) as m:
        mk = m.read(1)
        assert m.dtypes[0] == "uint8" and list(mk[:4, 0]) == [1, 2, 3, 0] and np.all(mk[:, 30:] == 255)
    tasks = list_snap_tasks(study, prods)
    assert all(task_is_complete(st, t) for t in tasks) and list_tasks(study, prods) == []
    # each task's SNAP user dir (on scratch) sees the staged orbits and geoid through symlinks
    userdirs = sorted((tmp_path / "scratch").glob("snap-userdir-*"))
    assert len(userdirs) == 2
    assert (userdirs[0] / "auxdata" / "Orbits").resolve() == (orbit_dir(st).parents[1]).resolve()
    assert (userdirs[0] / "auxdata" / "dem" / "egm96" / "ww15mgh_b.zip").read_bytes() == b"geoid"
    # a second run skips everything (idempotent) -- even with gpt gone
    fake_gpt.unlink()
    assert snap_products(study, tmp_path / "grd", scratch=tmp_path / "scratch", progress=False) == []
    assert snap_product(study, prods[0], scratch=tmp_path / "scratch") is None


def test_two_slices_of_one_date_are_mosaicked(study, tmp_path, fake_gpt):
    st = Study.load(study)
    tasks = list_snap_tasks(study, [f"{S1A_DESC}.zip"])
    # a second slice of the same pass (next 25 s, same orbit) written by an earlier task
    slice2 = raw_path(st, tasks[0]).with_name("S1A_IW_GRDH_1SDV_20170110T054350_20170110T054415_014779_018103_2B7C.tif")
    slice2.parent.mkdir(parents=True)
    with rasterio.open(slice2, "w", driver="GTiff", width=20, height=30, count=3, dtype="float32", crs=f"EPSG:{EPSG}",
                       transform=transform_from_origin(ORIGIN[0] + 20 * 20, ORIGIN[1], 20, 20)) as ds:
        ds.write(np.stack([np.full((30, 20), 0.5, "float32"), np.full((30, 20), 0.125, "float32"),
                           np.zeros((30, 20), "float32")]))
    from avalanche_hpc.inputs.snap.tasks import assemble_scene

    assemble_scene(st, "D007", dt.date(2017, 1, 10))
    with rasterio.open(st.scene_path("D007", dt.date(2017, 1, 10), "VH")) as vh:
        a = vh.read(1)
    assert np.all(a[:, 20:] == np.float32(0.125)) and np.all(a[:, :20] == -9999.0)
    sources = json.loads((st.scene_dir("D007", dt.date(2017, 1, 10)) / SOURCES_JSON).read_text())
    assert sources["products"] == [slice2.stem]
    assert not task_is_complete(st, tasks[0])  # its own slice is not in the scene yet


def test_cli_dry_run_prints_gpt_command_lines(study, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no gpt here: a dry run still prints
    make_products(tmp_path / "grd", [S1A_DESC, S1A_ASC], ext=".SAFE")
    r = CliRunner().invoke(app, ["snap", str(study), "--products", str(tmp_path / "grd"), "--dry-run",
                                 "--cpus", "4", "--mem-gb", "16", "--scratch", str(tmp_path / "scr")])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 2 and all(ln.startswith("gpt -J-Xmx13108M") for ln in lines)
    assert "-q 4" in lines[0] and f"-Pinput={tmp_path / 'grd' / S1A_DESC}.SAFE" in lines[0]
    assert f"-Poutput={study}/work/snap/raw/D007/20170110/{S1A_DESC}.tif" in lines[0]
    assert "/work/snap/raw/A117/20180829/" in lines[1] and f"-J-Dsnap.userdir={tmp_path / 'scr'}" in lines[1]
    # with a profile naming an image, gpt runs inside it
    prof = tmp_path / "p.toml"
    prof.write_text('name = "c"\nimage = "/img/avalanche.sif"\nbinds = ["/scratch"]\n', encoding="utf-8")
    r = CliRunner().invoke(app, ["snap", str(study), "-p", str(tmp_path / "grd"), "--dry-run", "--profile", str(prof)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("apptainer exec --bind /scratch,") and "/img/avalanche.sif gpt -J-Xmx" in r.output


def test_cli_snap_auxdata_check_and_its_deprecated_alias(study, tmp_path):
    d = tmp_path / "grd"
    make_products(d, [S1A_DESC])
    for command in ("snap-auxdata", "snap-stage"):  # snap-stage: the old name, hidden but still accepted
        r = CliRunner().invoke(app, [command, str(study), "--products", str(d), "--check"])
        assert r.exit_code != 0 and isinstance(r.exception, InputError)
        assert "no precise orbit file" in str(r.exception) and "snap-auxdata" in str(r.exception)
    helptext = CliRunner().invoke(app, ["--help"]).output
    assert "snap-auxdata" in helptext and "snap-stage" not in helptext


def test_cli_bad_product_name_fails_clearly(study, tmp_path):
    d = tmp_path / "grd"
    make_products(d, [S1A_DESC])
    (d / "S1A_IW_GRDH_1SDV_broken.zip").write_bytes(b"")
    r = CliRunner().invoke(app, ["snap", str(study), "--products", str(d), "--dry-run"])
    assert r.exit_code != 0 and isinstance(r.exception, InputError)
    assert "S1A_IW_GRDH_1SDV_broken.zip" in str(r.exception) and "S1X_MM_TTTR_LFPP" in str(r.exception)


def test_failing_gpt_leaves_nothing_half_written(study, tmp_path, fake_gpt, orbit_mirror):
    prods = make_products(tmp_path / "grd", [S1A_DESC])
    st = Study.load(study)
    fetch_auxdata(st, [parse_product_name(prods[0])], base_url=f"{orbit_mirror}/orbits/Sentinel-1/",
                  egm96_url=f"{orbit_mirror}/dem/egm96/ww15mgh_b.zip")
    fake_gpt.write_text(f"#!{sys.executable}\nimport sys\nopen([a[9:] for a in sys.argv if a.startswith('-Poutput=')][0],"
                        " 'w').write('half')\nsys.exit(1)\n", encoding="utf-8")
    from avalanche_hpc.errors import StageError

    with pytest.raises(StageError, match=r"(?s)gpt failed .*exit 1.*-q 2"):
        snap_product(study, prods[0], cpus=2, mem_gb=8, scratch=tmp_path / "scratch")
    task, = list_snap_tasks(study, prods)
    assert not raw_path(st, task).exists() and list(raw_path(st, task).parent.iterdir()) == []
    assert not st.scene_dir("D007", dt.date(2017, 1, 10)).exists()


def test_stage_dem_warps_a_real_raster_into_another_utm_zone(tmp_path):
    """--dem-source in another CRS: the real pyroSAR GeoTIFF (EPSG:32631) warped onto a study grid in EPSG:32632."""
    from rasterio.warp import transform_bounds

    from avalanche_hpc.inputs.snap.auxdata import stage_dem
    from tests.conftest import SHARED_REAL

    real = SHARED_REAL / "S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif"
    if not real.is_file():
        pytest.skip(f"real sample {real} not available")
    with rasterio.open(real) as src:
        left, bottom, right, top = transform_bounds(src.crs, f"EPSG:{EPSG}", *src.bounds)
        ref = src.read(1, masked=True)
    root = make_study(tmp_path / "s")
    x0, y0 = round(left / 20) * 20, round(top / 20) * 20
    w, h = int((right - left) // 20) - 2, int((top - bottom) // 20) - 2
    with rasterio.open(root / "dem.tif", "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                       crs=f"EPSG:{EPSG}", transform=transform_from_origin(x0, y0, 20, 20), nodata=-9999) as ds:
        ds.write(np.zeros((h, w), "float32"), 1)
    out = stage_dem(Study.load(root), source=real)
    with rasterio.open(out) as d:
        a = d.read(1, masked=True)
        assert d.crs.to_epsg() == EPSG and d.shape == (h, w) and d.nodata == gptmod.DEM_NODATA
    # the rotated footprint leaves nodata corners; inside, the values are the real ones (same range)
    assert 0.3 < a.count() / a.size < 1.0
    assert ref.min() - 1e-3 <= a.min() and a.max() <= ref.max() + 1e-3
