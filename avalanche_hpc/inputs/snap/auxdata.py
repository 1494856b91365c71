"""Auxiliary data for offline compute nodes: fetched on a node with internet, verified before gpt starts.

SNAP fetches precise orbit files and DEM tiles on demand, which hangs or fails on compute
nodes without internet. ``fetch_auxdata`` (run on a login/transfer node) puts everything
the graph needs under ``STUDY/work/snap/``::

    work/snap/auxdata/Orbits/Sentinel-1/POEORB/S1A/2017/01/S1A_OPER_AUX_POEORB_OPOD_..._V..._....EOF.zip
    work/snap/auxdata/dem/egm96/ww15mgh_b.zip        (geoid, for externalDEMApplyEGM=true)
    work/snap/dem.tif                                 (the external DEM, study CRS, float32)

That is SNAP's own auxdata layout (microwave-toolbox ``SentinelPODOrbitFile.getDestFolder``:
``<AuxDataPath>/Orbits/Sentinel-1/POEORB/<S1x>/<yyyy>/<MM>``, file names starting
``S1x_OPER_AUX_POEORB_OPOD_`` and ending ``.EOF`` or ``.zip``; snap-engine
``EarthGravitationalModel96``: ``<AuxDataPath>/dem/egm96/ww15mgh_b.zip``), so each
task links those folders into the ``auxdata`` of its own SNAP user dir and SNAP finds them
without downloading. ``verify_auxdata`` lists every product whose orbit file is missing, and a
missing DEM or geoid, before any gpt starts.
"""

from __future__ import annotations

import datetime as dt
import html.parser
import logging
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from avalanche_hpc.atomic import atomic_path
from avalanche_hpc.errors import InputError, Problem, StageError
from avalanche_hpc.inputs.products import S1Product, parse_time
from avalanche_hpc.inputs.snap.gpt import DEM_NODATA
from avalanche_hpc.study import Study

log = logging.getLogger(__name__)

# The orbit mirror SNAP itself scrapes (microwave-toolbox OrbitFileScraper.Step).
STEP_ORBITS_URL = "https://step.esa.int/auxdata/orbits/Sentinel-1/"
EGM96_URL = "https://step.esa.int/auxdata/dem/egm96/ww15mgh_b.zip"
EGM96_RELPATH = Path("dem") / "egm96" / "ww15mgh_b.zip"
ORBIT_TYPE = "POEORB"
ORBIT_NAME_RE = re.compile(
    r"^(?P<mission>S1[A-D])_OPER_AUX_(?P<type>POEORB|RESORB)_OPOD_(?P<created>\d{8}T\d{6})_"
    r"V(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})\.EOF(\.zip)?$",
    re.IGNORECASE,
)
# The product's first orbit state vector (SNAP's STATE_VECTOR_TIME, which picks the month folder and
# must lie in the file's validity) precedes the acquisition start; require this much cover on each side.
STATE_VECTOR_MARGIN = dt.timedelta(minutes=10)
DEM_MARGIN_PX = 0
HTTP_TIMEOUT_S = 60


def snap_work_dir(study: Study) -> Path:
    return study.work_dir / "snap"


def auxdata_dir(study: Study) -> Path:
    """Staged SNAP auxdata (orbits, geoid): linked as ``auxdata`` into each task's SNAP user dir."""
    return snap_work_dir(study) / "auxdata"


def orbit_dir(study: Study) -> Path:
    return auxdata_dir(study) / "Orbits" / "Sentinel-1" / ORBIT_TYPE


def staged_dem_path(study: Study) -> Path:
    return snap_work_dir(study) / "dem.tif"


def egm96_path(study: Study) -> Path:
    return auxdata_dir(study) / EGM96_RELPATH


def orbit_validity(name: str) -> tuple[dt.datetime, dt.datetime] | None:
    """Validity window of an orbit file from its name; None if the name is not an S1 orbit file name."""
    m = ORBIT_NAME_RE.match(name)
    if m is None:
        return None
    return parse_time(m["start"]), parse_time(m["stop"])


def _month_folders(product: S1Product) -> list[tuple[int, int]]:
    """(year, month) folders SNAP may look in for this product: the month of the state-vector time."""
    out = []
    for t in (product.start - STATE_VECTOR_MARGIN, product.start):
        if (t.year, t.month) not in out:
            out.append((t.year, t.month))
    return out


def _covers(name: str, product: S1Product) -> bool:
    v = orbit_validity(name)
    return (v is not None and name.upper().startswith(f"{product.mission}_OPER_AUX_{ORBIT_TYPE}_")
            and v[0] <= product.start - STATE_VECTOR_MARGIN and v[1] >= product.stop + STATE_VECTOR_MARGIN)


def find_orbit_file(orbits: Path, product: S1Product) -> Path | None:
    """The staged precise orbit file covering the product, in the folder SNAP looks in; None if absent."""
    found = None
    for year, month in _month_folders(product):
        folder = orbits / product.mission / f"{year:04d}" / f"{month:02d}"
        hits = sorted(p for p in folder.glob("*") if p.is_file() and _covers(p.name, product)) if folder.is_dir() else []
        if not hits:
            return None  # SNAP may look in this folder: it must hold a covering file
        found = hits[-1]
    return found


def verify_auxdata(study: Study, products: Iterable[S1Product], dem_apply_egm: bool = True) -> list[Problem]:
    """Every problem that would make gpt download or fail on an offline node (all of them, not the first)."""
    problems: list[Problem] = []
    fix = f"run 'avalanche-hpc snap-auxdata {study.root} --products ...' on a node with internet first"
    dem = staged_dem_path(study)
    if not dem.is_file():
        problems.append(Problem(str(dem), "", "the external DEM for Terrain-Correction is not staged", fix))
    if dem_apply_egm and not egm96_path(study).is_file():
        problems.append(Problem(str(egm96_path(study)), "", "the EGM96 geoid SNAP needs for the external DEM is not staged",
                                fix))
    orbits = orbit_dir(study)
    for prod in products:
        if find_orbit_file(orbits, prod) is None:
            folders = ", ".join(f"{orbits / prod.mission / f'{y:04d}' / f'{m:02d}'}" for y, m in _month_folders(prod))
            problems.append(Problem(
                str(prod.path), f"{prod.mission} {prod.start:%Y-%m-%dT%H:%M:%S}",
                f"no precise orbit file (POEORB) covering {prod.start - STATE_VECTOR_MARGIN:%Y-%m-%dT%H:%M} .. "
                f"{prod.stop + STATE_VECTOR_MARGIN:%Y-%m-%dT%H:%M} in {folders}",
                fix + " (or copy the .EOF/.EOF.zip from the Copernicus Data Space there)"))
    return problems


def require_auxdata(study: Study, products: Iterable[S1Product], dem_apply_egm: bool = True) -> None:
    problems = verify_auxdata(study, products, dem_apply_egm)
    if problems:
        raise InputError(problems)


# -- staging (needs internet) ----------------------------------------------------------------------
class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            for k, v in attrs:
                if k == "href" and v:
                    self.hrefs.append(v)


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:
            return r.read()
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise StageError(f"cannot fetch {url}: {e} -> run the staging step on a node with internet access, "
                         "or copy the files into the staged folder by hand (docs/containers.md)") from e


def _download(url: str, target: Path) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(_get(url))


def stage_orbits(study: Study, products: Iterable[S1Product], base_url: str = STEP_ORBITS_URL) -> list[Path]:
    """Download the precise orbit file of every product not yet staged; returns the staged files."""
    orbits = orbit_dir(study)
    base = base_url.rstrip("/") + "/"
    listings: dict[str, list[str]] = {}
    out: list[Path] = []
    for prod in products:
        have = find_orbit_file(orbits, prod)
        if have is not None:
            out.append(have)
            continue
        chosen: tuple[str, str] | None = None
        # a file valid for the product may be filed under the month of its validity start (the previous day)
        for t in (prod.start - dt.timedelta(days=1), prod.start):
            url = f"{base}{ORBIT_TYPE}/{prod.mission}/{t.year:04d}/{t.month:02d}/"
            if url not in listings:
                parser = _Links()
                try:
                    parser.feed(_get(url).decode("utf-8", "replace"))
                except StageError as e:
                    log.warning("%s", e)
                listings[url] = [h.rsplit("/", 1)[-1] for h in parser.hrefs]
            names = sorted(n for n in listings[url] if _covers(n, prod))
            if names:
                chosen = (url, names[-1])  # latest processing of the covering files
        if chosen is None:
            raise StageError(f"no precise orbit file covering {prod.path.name} ({prod.start:%Y-%m-%d %H:%M:%S} UTC) at "
                             f"{base}{ORBIT_TYPE}/{prod.mission}/ -> precise orbits appear ~3 weeks after acquisition; "
                             "retry later or place the file by hand (docs/containers.md)")
        url, name = chosen
        for year, month in _month_folders(prod):
            target = orbits / prod.mission / f"{year:04d}" / f"{month:02d}" / name
            if not target.is_file():
                log.info("orbit file %s -> %s", name, target.parent)
                _download(url + name, target)
        out.append(find_orbit_file(orbits, prod) or target)
    return out


def stage_egm96(study: Study, url: str = EGM96_URL) -> Path:
    target = egm96_path(study)
    if not target.is_file():
        log.info("EGM96 geoid -> %s", target)
        _download(url, target)
    return target


def stage_dem(study: Study, source: Path | None = None, margin_px: int = DEM_MARGIN_PX, force: bool = False) -> Path:
    """Write the external DEM: ``source`` (any raster GDAL reads; default the study's dem.tif) warped to the
    study CRS on the study's grid (+ ``margin_px`` pixels each side), float32 metres, nodata -32768."""
    import numpy as np
    import rasterio
    from rasterio.transform import Affine
    from rasterio.warp import Resampling, reproject

    target = staged_dem_path(study)
    if target.is_file() and not force:
        return target
    src_path = Path(source) if source is not None else study.dem_path
    if not study.dem_path.is_file():
        raise InputError(Problem(str(study.dem_path), "", "the study DEM is missing; it defines the output grid",
                                 "see docs/data-contract.md (dem.tif)"))
    with rasterio.open(study.dem_path) as grid:
        t, h, w = grid.transform, grid.height, grid.width
    t2 = t @ Affine.translation(-margin_px, -margin_px)
    out = np.full((h + 2 * margin_px, w + 2 * margin_px), DEM_NODATA, dtype="float32")
    with rasterio.open(src_path) as src:
        reproject(rasterio.band(src, 1), out, dst_transform=t2, dst_crs=f"EPSG:{study.config.crs_epsg}",
                  dst_nodata=DEM_NODATA, resampling=Resampling.bilinear)
    profile = dict(driver="GTiff", width=out.shape[1], height=out.shape[0], count=1, dtype="float32",
                   crs=f"EPSG:{study.config.crs_epsg}", transform=t2, nodata=DEM_NODATA,
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with atomic_path(target) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(out, 1)
        dst.update_tags(UNITS="m", VERTICAL="orthometric (EGM96 applied by SNAP)")
    return target


def fetch_auxdata(study: Study, products: list[S1Product], *, base_url: str = STEP_ORBITS_URL,
                  egm96_url: str = EGM96_URL, dem_source: Path | None = None, dem_apply_egm: bool = True,
                  force_dem: bool = False) -> list[Problem]:
    """Stage everything; returns the verification problems left (empty when all is in place)."""
    stage_dem(study, dem_source, force=force_dem)
    if dem_apply_egm:
        stage_egm96(study, egm96_url)
    stage_orbits(study, products, base_url)
    return verify_auxdata(study, products, dem_apply_egm)


def link_auxdata(study: Study, userdir: Path) -> None:
    """Point a (per-task) SNAP user dir at the staged orbit files and geoid.

    ``<userdir>/auxdata`` stays a private folder (SNAP unpacks module resources into it at start-up,
    which must not race between tasks); only ``auxdata/Orbits`` and ``auxdata/dem/egm96`` are
    symlinks to the shared, read-only staged copies.
    """
    aux = userdir / "auxdata"
    for rel in (Path("Orbits"), EGM96_RELPATH.parent):
        src = (auxdata_dir(study) / rel).resolve()
        link = aux / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            if link.resolve() == src:
                continue
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(src, target_is_directory=True)
