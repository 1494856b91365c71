"""Map SNAP and pyroSAR output GeoTIFFs into the study layout ``scenes/{orbit}/{YYYYMMDD}/{band}.tif``.

Recognised file names (the stem, ``.tif``/``.tiff`` extension):

- pyroSAR: ``S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db`` -- sensor (S1A..S1D),
  acquisition mode, orbit direction (``A`` ascending / ``D`` descending), start time (UTC),
  polarisation, processing steps; a trailing ``_db`` means dB, otherwise linear power.
  A pyroSAR ``..._layoverShadowMask`` export becomes ``layover_shadow.tif``.
- SNAP (standard Sentinel-1 product name + operator suffixes written by ``Write``):
  ``S1A_IW_GRDH_1SDV_20150309T173017_20150309T173042_004969_006374_A1B2_Orb_NR_Cal_Spk_TC``
  with bands described ``Sigma0_VV`` / ``Sigma0_VH``, or one file per band with
  ``Sigma0_VV`` (``Sigma0_VV_db``) in the name; a file named ``Sigma0_VV.tif`` inside a
  folder carrying the product name works too. The relative orbit is derived from the
  absolute orbit number in the name; a ``layoverShadowMask`` band/file becomes the mask.

Units come from, in order: the raster's ``UNITS`` tag, the band unit metadata, the name
(``_db``); the result is written as the ``UNITS`` tag of the ingested file. Masks use the
SNAP terrain-correction encoding, which is the study's: 0 valid, 1 layover, 2 shadow, 3 both.

Everything is validated before the first write (names, orbit choice, CRS/grid against the
study, existing targets); each file is written atomically (temporary file + rename) and an
existing target is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from avalanche_hpc.atomic import atomic_path
from avalanche_hpc.errors import InputError, Problem
from avalanche_hpc.inputs.grid import Grid
from avalanche_hpc.inputs.products import PRODUCT_PREFIX_RE, parse_time, product_from_match, relative_orbit
from avalanche_hpc.study import LAYOVER_SHADOW, LAYOVER_SHADOW_CODES, POLARISATIONS, Study

log = logging.getLogger(__name__)

PYROSAR_RE = re.compile(
    r"^(?P<sensor>S1[A-D])_+(?P<mode>IW|EW|SM|WV|S[1-6])_+(?P<dir>[AD])_(?P<start>\d{8}T\d{6})_(?P<rest>.+)$"
)
SIGMA0_RE = re.compile(r"(?:^|_)Sigma0_(?P<pol>VV|VH)(?P<db>_db)?(?:_|$)", re.IGNORECASE)
MASK_RE = re.compile(r"layover_?shadow_?mask", re.IGNORECASE)
POL_RE = re.compile(r"^(?P<pol>VV|VH|HH|HV)(?:_|$)")
EXPECTED = (
    "pyroSAR 'S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif' (…_db = dB, …_layoverShadowMask.tif = mask) "
    "or SNAP 'S1A_IW_GRDH_1SDV_20150309T173017_20150309T173042_004969_006374_A1B2_Orb_NR_Cal_Spk_TC.tif' "
    "(bands described Sigma0_VV/Sigma0_VH, or '…_Sigma0_VV.tif' one file per band)"
)


@dataclass(frozen=True)
class SceneName:
    """What a file name says about a scene."""

    file: Path
    producer: str  # "pyrosar" | "snap"
    sensor: str
    start: dt.datetime  # UTC start of the acquisition
    direction: str | None  # "ascending" | "descending" | None (SNAP names do not say)
    relative_orbit: int | None  # from the absolute orbit in SNAP names
    band: str | None  # "VV" | "VH" | "layover_shadow"; None: several bands, told apart by their descriptions
    db_in_name: bool  # a '_db' suffix

    @property
    def date(self) -> dt.date:
        return self.start.date()


@dataclass(frozen=True)
class IngestItem:
    """One file to write: band ``band_index`` (1-based) of ``source`` -> ``target``."""

    source: Path
    band_index: int
    band: str  # VV | VH | layover_shadow
    orbit: str
    date: dt.date
    units: str | None  # "dB" | "linear"; None for the mask
    target: Path
    replaces: bool  # the target exists (only planned with overwrite=True)


def parse_scene_name(path: str | Path) -> SceneName:
    """Parse a pyroSAR or SNAP output name; raises ``InputError`` naming the file and the expected patterns."""
    path = Path(path)
    stem = path.name
    for ext in (".tiff", ".tif", ".TIFF", ".TIF"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    m = PYROSAR_RE.match(stem)
    if m:
        rest = m["rest"]
        if MASK_RE.search(rest):
            band = LAYOVER_SHADOW
        else:
            pm = POL_RE.match(rest)
            if pm is None:
                raise _name_error(path, f"no polarisation after the start time in {stem!r}")
            band = pm["pol"].upper()
            if band not in POLARISATIONS:
                raise _name_error(path, f"polarisation {band} is not used by the study (only {list(POLARISATIONS)})")
        return SceneName(path, "pyrosar", m["sensor"], _start(path, m["start"]),
                         "ascending" if m["dir"] == "A" else "descending", None, band,
                         rest.lower().endswith("_db") or rest.lower() == "db")
    m = PRODUCT_PREFIX_RE.match(stem)
    if m is None and (SIGMA0_RE.search(stem) or MASK_RE.search(stem)):
        parent = path.parent.name.removesuffix(".data")
        pm = PRODUCT_PREFIX_RE.match(parent)
        if pm is not None:  # '<product>.data/Sigma0_VV.tif': the product name is the folder's
            return _snap_name(path, pm, stem)
    if m is None:
        raise _name_error(path, "the name matches neither the pyroSAR nor the SNAP pattern")
    return _snap_name(path, m, m["rest"] or "")


def _snap_name(path: Path, m: re.Match[str], rest: str) -> SceneName:
    prod = product_from_match(path, m)
    try:
        rel: int | None = relative_orbit(prod.mission, prod.absolute_orbit)
    except InputError:  # a unit without a known orbit offset: the orbit must then be given
        rel = None
    band: str | None = None
    db = False
    sm = SIGMA0_RE.search(rest)
    if MASK_RE.search(rest):
        band = LAYOVER_SHADOW
    elif sm is not None:
        band = sm["pol"].upper()
        db = sm["db"] is not None
    else:
        db = rest.lower().endswith("_db") or rest.lower() == "db"
    return SceneName(path, "snap", prod.mission, prod.start, None, rel, band, db)


def _start(path: Path, text: str) -> dt.datetime:
    try:
        return parse_time(text)
    except ValueError as e:
        raise _name_error(path, f"start time {text!r} is not a valid date/time") from e


def _name_error(path: Path, what: str) -> InputError:
    return InputError(Problem(str(path), "file name", what, f"rename it to the producer's pattern: {EXPECTED}"))


# ---------------------------------------------------------------------------------------------
# planning (all validation happens here, before any write)


def expand_sources(sources: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders contribute their ``*.tif``/``*.tiff`` files (recursively, sorted)."""
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in (".tif", ".tiff")))
        else:
            out.append(p)
    return out


def choose_orbit(study: Study, name: SceneName, orbit: str | None) -> str:
    """The study orbit a scene belongs to: ``orbit`` if given (checked), else the only plausible one."""
    cfg = study.config
    ids = [o.id for o in cfg.orbits]
    described = ", ".join(f"{o.id} ({o.direction}, relative orbit {o.relative_orbit})" for o in cfg.orbits)
    if orbit is not None:
        if orbit not in ids:
            raise InputError(Problem(str(study.study_toml), f"orbit {orbit}", f"--orbit {orbit} is not a study orbit",
                                     f"choose one of: {described}"))
        o = cfg.orbit(orbit)
        if name.direction is not None and name.direction != o.direction:
            raise InputError(Problem(str(name.file), "orbit direction",
                                     f"the file is {name.direction} but orbit {orbit} is {o.direction}",
                                     f"choose a {name.direction} orbit: {described}"))
        if name.relative_orbit is not None and name.relative_orbit != o.relative_orbit:
            raise InputError(Problem(str(name.file), "relative orbit",
                                     f"the file is relative orbit {name.relative_orbit} but orbit {orbit} is "
                                     f"{o.relative_orbit}", f"choose the matching orbit: {described}"))
        return orbit
    if name.relative_orbit is not None:
        cands = [o.id for o in cfg.orbits if o.relative_orbit == name.relative_orbit]
        why = f"relative orbit {name.relative_orbit}"
    elif name.direction is not None:
        cands = [o.id for o in cfg.orbits if o.direction == name.direction]
        why = f"{name.direction} direction"
    else:
        cands, why = ids, "any direction"
    if len(cands) == 1:
        return cands[0]
    what = (f"no study orbit matches the file's {why}" if not cands
            else f"{len(cands)} study orbits match the file's {why}: {cands}")
    raise InputError(Problem(str(name.file), "orbit", what,
                             f"pass --orbit ID (study orbits: {described}) or add the orbit to study.toml"))


def plan_ingest(
    root: str | Path,
    sources: Sequence[str | Path],
    orbit: str | None = None,
    overwrite: bool = False,
    nodata: float | None = None,
) -> list[IngestItem]:
    """Validate every source and return what ``ingest_scenes`` would write; raises ``InputError`` listing all problems."""
    study = Study.load(root)
    problems: list[Problem] = []
    items: list[IngestItem] = []
    files = expand_sources(sources)
    if not files:
        raise InputError(Problem(", ".join(map(str, sources)) or "(none)", "", "no input files",
                                 "give GeoTIFF files or folders holding them"))
    dem_grid = _dem_grid(study)
    for f in files:
        try:
            items.extend(_plan_file(study, f, orbit, dem_grid, nodata))
        except InputError as e:
            problems.extend(e.problems)
    by_target: dict[Path, IngestItem] = {}
    for it in items:
        other = by_target.get(it.target)
        if other is not None:
            problems.append(Problem(str(it.source), f"orbit {it.orbit}, date {it.date}, band {it.band}",
                                    f"maps to the same target {it.target} as {other.source}",
                                    "ingest only one file per orbit, date and band"))
        by_target[it.target] = it
        if it.target.exists() and it.target.resolve() == it.source.resolve():
            problems.append(Problem(str(it.source), "", "is already in place (the source is the target)",
                                    "leave this file out"))
            continue
        if it.replaces and not overwrite:
            problems.append(Problem(str(it.target), f"orbit {it.orbit}, date {it.date}, band {it.band}",
                                    f"already exists (would be replaced by {it.source.name})",
                                    "pass --overwrite to replace it, or leave this file out"))
    if problems:
        raise InputError(problems)
    return items


def _dem_grid(study: Study) -> Grid | None:
    if not study.dem_path.is_file():
        return None
    try:
        return Grid.read(study.dem_path)
    except Exception:  # an unreadable DEM is 'inputs check's business; ingest then checks CRS/pixel only
        return None


def _plan_file(study: Study, f: Path, orbit: str | None, dem_grid: Grid | None, nodata: float | None) -> list[IngestItem]:
    import rasterio

    if not f.is_file():
        raise InputError(Problem(str(f), "", "file does not exist", "check the path"))
    name = parse_scene_name(f)
    oid = choose_orbit(study, name, orbit)
    try:
        src = rasterio.open(f)
    except Exception as e:
        raise InputError(Problem(str(f), "", f"cannot be opened as a raster: {e}",
                                 "re-export it as a GeoTIFF")) from e
    problems: list[Problem] = []
    with src:
        bands = _bands_of(name, src, problems)
        _check_grid(study, f, src, dem_grid, problems)
        if src.nodata is None and nodata is None and any(b != LAYOVER_SHADOW for _, b in bands):
            problems.append(Problem(str(f), "nodata", "the raster declares no nodata value",
                                    "pass --nodata VALUE (SNAP writes 0 where there is no data)"))
        items = []
        for bidx, band in bands:
            units = None if band == LAYOVER_SHADOW else _units_of(name, src, bidx, problems)
            if band == LAYOVER_SHADOW:
                _check_mask_values(f, src, bidx, problems)
            elif units is not None:
                _check_units_plausible(f, src, bidx, units, nodata, problems)
            target = study.scene_path(oid, name.date, band)
            items.append(IngestItem(f, bidx, band, oid, name.date, units, target, target.exists()))
    if problems:
        raise InputError(problems)
    return items


def _bands_of(name: SceneName, src, problems: list[Problem]) -> list[tuple[int, str]]:
    if name.band is not None:
        if src.count != 1:
            problems.append(Problem(str(name.file), "bands", f"the name says one band ({name.band}) but the file has "
                                    f"{src.count}", "write one band per file, or name the bands Sigma0_VV/Sigma0_VH"))
        return [(1, name.band)]
    found: list[tuple[int, str]] = []
    for i, desc in enumerate(src.descriptions, start=1):
        desc = desc or ""
        sm = SIGMA0_RE.search(desc)
        if sm is not None:
            found.append((i, sm["pol"].upper()))
        elif MASK_RE.search(desc):
            found.append((i, LAYOVER_SHADOW))
    if not found:
        problems.append(Problem(str(name.file), "bands", f"cannot tell which of the {src.count} band(s) is VV or VH "
                                f"(band descriptions: {list(src.descriptions)})",
                                "name the bands Sigma0_VV / Sigma0_VH, or write one file per band with Sigma0_VV in "
                                "the file name"))
    dup = {b for _, b in found if [x for _, x in found].count(b) > 1}
    if dup:
        problems.append(Problem(str(name.file), "bands", f"several bands for {sorted(dup)}",
                                "keep one band per polarisation"))
    return found


def _check_grid(study: Study, f: Path, src, dem_grid: Grid | None, problems: list[Problem]) -> None:
    cfg = study.config
    grid = Grid.of(src)
    if grid.crs_epsg != cfg.crs_epsg:
        problems.append(Problem(str(f), "CRS", f"CRS is {grid.crs_text} but the study's is EPSG:{cfg.crs_epsg}",
                                f"reproject it first: gdalwarp -t_srs EPSG:{cfg.crs_epsg}"))
        return
    if not grid.has_pixel_size(cfg.pixel_size_m):
        px, py = grid.pixel_size
        problems.append(Problem(str(f), "pixel size", f"pixel size is {px:g} x {py:g} m but the study's is "
                                f"{cfg.pixel_size_m:g}", f"resample it: gdalwarp -tr {cfg.pixel_size_m:g} "
                                f"{cfg.pixel_size_m:g}"))
        return
    if dem_grid is not None and not grid.same_as(dem_grid):
        problems.append(Problem(str(f), "grid", f"grid differs from dem.tif ({grid.describe()} vs "
                                f"{dem_grid.describe()})", f"resample onto the DEM grid: {dem_grid.warp_to()}"))


def _units_of(name: SceneName, src, bidx: int, problems: list[Problem]) -> str | None:
    tag = src.tags().get("UNITS")
    if tag is not None:
        canonical = {"db": "dB", "linear": "linear"}.get(tag.strip().lower())
        if canonical is not None:
            return canonical
        problems.append(Problem(str(name.file), "tag UNITS", f"UNITS tag is {tag!r}", "set it to 'dB' or 'linear'"))
        return None
    unit = (src.units[bidx - 1] or "").strip().lower() if src.units else ""
    desc = (src.descriptions[bidx - 1] or "") if src.descriptions else ""
    if unit in ("db", "intensity_db"):
        return "dB"
    if unit in ("intensity", "linear"):
        return "linear"
    if name.db_in_name or desc.lower().endswith("_db"):
        return "dB"
    return "linear"


def _sample(src, bidx: int, nodata: float | None):
    import numpy as np

    h = min(src.height, 256)
    w = min(src.width, 256)
    a = src.read(bidx, out_shape=(h, w)).astype("float64")
    nd = src.nodata if src.nodata is not None else nodata
    ok = np.isfinite(a)
    if nd is not None:
        ok &= a != nd
    return a[ok]


def _check_units_plausible(f: Path, src, bidx: int, units: str, nodata: float | None,
                           problems: list[Problem]) -> None:
    """Catch a wrong units declaration (dB read as linear power or the reverse) from a decimated sample."""
    import numpy as np

    try:
        v = _sample(src, bidx, nodata)
    except Exception as e:
        problems.append(Problem(str(f), f"band {bidx}", f"data cannot be read: {e}", "re-export the file"))
        return
    if v.size == 0:
        problems.append(Problem(str(f), f"band {bidx}", "no valid pixel in a decimated sample (all nodata)",
                                "check the nodata value and the scene footprint"))
        return
    if units == "linear" and np.mean(v < 0) > 0.5:
        problems.append(Problem(str(f), f"band {bidx}", "declared linear power but most values are negative "
                                "(they look like dB)", "name the file with a '_db' suffix or tag it UNITS=dB"))
    if units == "dB" and v.min() >= 0 and np.median(v) < 0.5:
        problems.append(Problem(str(f), f"band {bidx}", "declared dB but every value lies in [0, 0.5] "
                                "(they look like linear power)", "drop the '_db' suffix or tag it UNITS=linear"))


def _check_mask_values(f: Path, src, bidx: int, problems: list[Problem]) -> None:
    import numpy as np

    a = src.read(bidx)
    bad = np.setdiff1d(np.unique(a[np.isfinite(a)] if a.dtype.kind == "f" else a), LAYOVER_SHADOW_CODES)
    if bad.size:
        problems.append(Problem(str(f), f"band {bidx}", f"mask values {bad[:10].tolist()} are not layover/shadow "
                                "codes 0 (valid), 1 (layover), 2 (shadow), 3 (both)",
                                "export SNAP's layoverShadowMask unchanged, or recode to 0/1/2/3"))


# ---------------------------------------------------------------------------------------------
# writing


def ingest_scenes(
    root: str | Path,
    sources: Sequence[str | Path],
    orbit: str | None = None,
    move: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
    nodata: float | None = None,
) -> list[IngestItem]:
    """Validate, then write every planned file atomically; ``move`` deletes each source once all its bands are in.

    Returns the plan (what was written, or what would be with ``dry_run``).
    """
    items = plan_ingest(root, sources, orbit=orbit, overwrite=overwrite, nodata=nodata)
    if dry_run:
        return items
    for it in items:
        write_item(it, nodata)
        log.info("%s -> %s (%s)", it.source.name, it.target, it.units or "mask")
    if move:
        for src in dict.fromkeys(it.source for it in items):
            src.unlink()
            log.info("removed %s (--move)", src)
    return items


def write_item(it: IngestItem, nodata: float | None = None) -> Path:
    """Write one band to its target (temporary file + rename), tagged with its units and provenance."""
    import rasterio

    tags = {"INGEST_SOURCE": it.source.name, "ACQUISITION_DATE": it.date.isoformat()}
    with rasterio.open(it.source) as src:
        copy_as_is = (src.count == 1 and src.driver == "GTiff"
                      and (src.nodata is not None or it.band == LAYOVER_SHADOW) and src.dtypes[0] == ("uint8" if it.band == LAYOVER_SHADOW else "float32"))
        profile = src.profile
    with atomic_path(it.target) as tmp:
        if copy_as_is:
            shutil.copyfile(it.source, tmp)
        else:
            _rewrite_band(it, tmp, profile, nodata)
        with rasterio.open(tmp, "r+") as dst:
            if it.units is not None:
                dst.update_tags(UNITS=it.units, **tags)
            else:
                dst.update_tags(CODES="0 valid, 1 layover, 2 shadow, 3 both", **tags)
            dst.set_band_description(1, it.band)
    return it.target


def _rewrite_band(it: IngestItem, tmp: Path, profile: dict, nodata: float | None) -> None:
    import numpy as np
    import rasterio

    with rasterio.open(it.source) as src:
        a = src.read(it.band_index)
        src_nodata = src.nodata if src.nodata is not None else nodata
    prof = {k: profile[k] for k in ("crs", "transform", "width", "height")}
    prof.update(driver="GTiff", count=1, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    if it.band == LAYOVER_SHADOW:
        a = np.where(np.isfinite(a), a, 0).astype("uint8") if a.dtype.kind == "f" else a.astype("uint8")
        prof.update(dtype="uint8", nodata=None)
    else:
        prof.update(dtype="float32", nodata=src_nodata)
        a = a.astype("float32")
    if prof["width"] < 256 or prof["height"] < 256:
        prof.update(tiled=False)
        prof.pop("blockxsize")
        prof.pop("blockysize")
    with rasterio.open(tmp, "w", **prof) as dst:
        dst.write(a, 1)
