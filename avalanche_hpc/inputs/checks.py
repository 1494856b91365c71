"""Validate a whole study directory against the input contract before any compute.

``check_study`` reports *every* problem it finds (it never stops at the first), each a
``Problem(file, where, what, fix)`` naming the file, the row/key/date/band and the fix.
Rasters are checked from their headers (``rasterio.open`` + profile) plus a cheap
integrity probe (TIFF block offsets against the file size and one read of the last block
row), so checking a study with thousands of scenes stays fast: nothing reads a full raster.

What is checked (see ``docs/data-contract.md``):

- ``study.toml``: TOML syntax, every key and value (pydantic), massifs, orbits, seasons.
- ``dem.tif``: readable, one band, CRS = ``crs_epsg``, pixel size = ``pixel_size_m``.
- every listed/discovered winter date and every summer reference date of every
  (season, orbit): a scene folder with ``VV.tif`` and ``VH.tif``, each readable, float32,
  nodata set, on the DEM grid (CRS, pixel size, transform, shape), ``UNITS`` tag valid;
  optional ``layover_shadow.tif`` uint8 on the same grid; summer references present for
  every (season, orbit) with winter dates; stray folders under ``scenes/``.
- seasons: windows that overlap, a date claimed by two seasons (a winter date of two
  seasons, or one season's winter date listed as another's summer reference); season ids
  are safe folder names (``study.SeasonConfig``).
- ``corridors.gpkg``: layer ``corridors``, CRS, columns ``path_id``/``massif``, unique
  non-empty ``path_id``, non-empty ``massif`` listed in study.toml, (Multi)Polygon
  geometries that are valid and overlap the DEM, optional boolean ``monitored``.
- ``inventory.csv``: columns, unique non-empty ``event_id``, ``path_id`` known in the
  corridors, ISO dates, ``date_max >= date_min``, ``deposit_area_m2`` a non-negative number
  (empty = unknown).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from avalanche_hpc.errors import InputError, Problem
from avalanche_hpc.inputs.grid import Grid
from avalanche_hpc.study import (
    CORRIDOR_LAYER,
    DATE_DIR_RE,
    INVENTORY_COLUMNS,
    LAYOVER_SHADOW,
    POLARISATIONS,
    Study,
    StudyConfig,
    inventory_dates,
    parse_study_toml,
    parse_yyyymmdd,
    study_config_problems,
)

log = logging.getLogger(__name__)

CONTRACT = "docs/data-contract.md"
UNITS_VALUES = ("linear", "dB")
# Above this many blocks the integrity probe samples block offsets instead of reading them all.
MAX_BLOCKS_PROBED = 4096
# A scene whose sampled blocks are at least this share nodata is reported as a warning ("mostly nodata").
MOSTLY_NODATA = 0.9
NODATA_SAMPLE_BLOCKS = 16


@dataclass
class CheckReport:
    """Everything ``check_study_report`` found, and counts of what it looked at (for the summary)."""

    root: Path
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)  # accepted, but worth a look (mostly-nodata scenes)

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n


# ---------------------------------------------------------------------------------------------
# public entry points


def check_study(root: str | Path) -> list[Problem]:
    """Every problem in the study at ``root`` (empty list: the study satisfies the contract)."""
    return check_study_report(root).problems


def require_valid_study(root: str | Path) -> Study:
    """Load the study, or raise ``InputError`` listing every problem ``check_study`` finds."""
    problems = check_study(root)
    if problems:
        raise InputError(problems)
    return Study.load(root)


def check_study_report(
    root: str | Path,
    progress: Callable[[Iterable, int, str], Iterable] | None = None,
) -> CheckReport:
    """Run every check; ``progress(iterable, total, description)`` may wrap the scene loop (a progress bar)."""
    root = Path(root)
    report = CheckReport(root)
    rio_log = logging.getLogger("rasterio")
    level = rio_log.level
    rio_log.setLevel(max(level, logging.WARNING))  # GDAL errors become Problems; do not log them twice
    try:
        return _run_checks(root, report, progress)
    finally:
        rio_log.setLevel(level)


def _run_checks(root: Path, report: CheckReport, progress) -> CheckReport:
    if not root.is_dir():
        report.problems.append(Problem(str(root), "", "study directory does not exist",
                                       f"create it, or make a synthetic one with 'avalanche-hpc synth {root}'"))
        return report
    config = _check_config(root, report)
    study = Study(root, config) if config is not None else None
    dem = _check_dem(root, config, report)
    path_ids = _check_corridors(root, config, dem, report)
    _check_inventory(root, path_ids, report)
    if study is not None:
        _check_scenes(study, dem, report, progress)
    else:  # without a valid study.toml, still probe every raster under scenes/ (readability, grid vs the DEM)
        _check_scene_tree(root, dem, report, progress)
    return report


# ---------------------------------------------------------------------------------------------
# study.toml


def _check_config(root: Path, report: CheckReport) -> StudyConfig | None:
    path = root / "study.toml"
    if not path.is_file():
        report.problems.append(Problem(str(path), "", "missing",
                                       f"every study needs a study.toml (name, crs_epsg, pixel_size_m, massifs, "
                                       f"orbits, seasons); see {CONTRACT}"))
        return None
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        report.problems.append(Problem(str(path), _toml_where(e), f"not valid TOML: {e}",
                                       "fix the TOML syntax (strings quoted, dates as YYYY-MM-DD, one key per line)"))
        return None
    try:
        cfg = parse_study_toml(raw)
    except ValidationError as e:
        report.problems.extend(study_config_problems(e, path))
        return None
    report.count("study.toml")
    return cfg


def _toml_where(e: Exception) -> str:
    text = str(e)
    for mark in ("(at line", "(at end of document"):
        if mark in text:
            return text[text.index(mark) + 4 : text.rindex(")")]
    return ""


# ---------------------------------------------------------------------------------------------
# rasters


def probe_raster(path: Path) -> tuple[Grid | None, dict, list[str]]:
    """Open a raster's header and probe its integrity without reading it all.

    Returns ``(grid, info, errors)``; ``grid`` is None when the file cannot be opened.
    ``info`` holds dtype, count, nodata and the dataset tags. ``errors`` are integrity
    failures (blocks beyond the end of the file, a failing read of the last block row).
    """
    import rasterio

    errors: list[str] = []
    try:
        src = rasterio.open(path)
    except Exception as e:  # RasterioIOError and friends: not a raster, corrupt header
        return None, {}, [f"cannot be opened as a raster: {e}"]
    with src:
        grid = Grid.of(src)
        info = {"dtype": src.dtypes[0], "count": src.count, "nodata": src.nodata, "tags": src.tags(),
                "driver": src.driver}
        if src.driver == "GTiff":
            errors.extend(_probe_tiff_blocks(src, path))
        if not errors:
            try:
                h = src.block_shapes[0][0] if src.block_shapes else 1
                row0 = max(0, src.height - max(1, h))
                src.read(1, window=((row0, src.height), (0, src.width)))
            except Exception as e:
                errors.append(f"data cannot be read (corrupt or truncated): {e}")
    return grid, info, errors


def nodata_share(path: Path, nodata, blocks: int = NODATA_SAMPLE_BLOCKS) -> float | None:
    """Share of nodata/non-finite pixels in ``blocks`` evenly spaced storage blocks of band 1 (None if
    unreadable). Whole blocks (tiles, or strips): each is decoded once, where a sampled row of a tiled
    file decodes a whole row of tiles (on 3200 x 3200 scenes with 256 x 256 tiles, 16 rows decoded
    most of the file)."""
    import numpy as np
    import rasterio

    try:
        with rasterio.open(path) as src:
            bh, bw = src.block_shapes[0] if src.block_shapes else (1, src.width)
            nbx, nby = math.ceil(src.width / bw), math.ceil(src.height / bh)
            picks = np.unique(np.linspace(0, nbx * nby - 1, min(blocks, nbx * nby)).astype(int))
            bad = total = 0
            for k in picks:
                by, bx = divmod(int(k), nbx)
                block = src.read(1, window=((by * bh, min((by + 1) * bh, src.height)),
                                            (bx * bw, min((bx + 1) * bw, src.width))))
                invalid = ~np.isfinite(block) if block.dtype.kind == "f" else np.zeros(block.shape, bool)
                if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
                    invalid |= block == nodata
                bad += int(invalid.sum())
                total += block.size
    except Exception:  # unreadable files are reported by probe_raster
        return None
    return bad / total if total else None


def _probe_tiff_blocks(src, path: Path) -> list[str]:
    """Compare TIFF block offsets + sizes with the file size: catches truncated files cheaply."""
    try:
        size = os.path.getsize(path)
        bh, bw = src.block_shapes[0]
        nx, ny = math.ceil(src.width / bw), math.ceil(src.height / bh)
        blocks = [(x, y) for y in range(ny) for x in range(nx)]
        if len(blocks) > MAX_BLOCKS_PROBED:  # the last blocks (end of file) and an even sample
            step = len(blocks) // MAX_BLOCKS_PROBED + 1
            blocks = blocks[::step] + blocks[-nx:]
        for x, y in blocks:
            off = src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1)
            n = src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1)
            if off is None or n is None:
                continue
            if int(off) + int(n) > size:
                return [f"truncated: block ({x}, {y}) ends at byte {int(off) + int(n)} but the file has {size} bytes"]
    except Exception as e:  # pragma: no cover - defensive: the probe itself must never crash the check
        log.debug("block probe of %s failed: %s", path, e)
    return []


def _grid_problems(path: Path, where: str, grid: Grid, config: StudyConfig | None,
                   ref: Grid | None, ref_name: str) -> list[Problem]:
    out: list[Problem] = []
    if config is not None:
        if grid.crs_epsg != config.crs_epsg:
            out.append(Problem(str(path), where, f"CRS is {grid.crs_text} but study.toml crs_epsg is {config.crs_epsg}",
                               f"reproject it: gdalwarp -t_srs EPSG:{config.crs_epsg} (or fix crs_epsg)"))
        px, py = grid.pixel_size
        if not grid.has_pixel_size(config.pixel_size_m):
            out.append(Problem(str(path), where,
                               f"pixel size is {px:g} x {py:g} m but study.toml pixel_size_m is {config.pixel_size_m:g}",
                               f"resample it: gdalwarp -tr {config.pixel_size_m:g} {config.pixel_size_m:g}"))
    if ref is not None and config is None and not grid.same_crs(ref):
        out.append(Problem(str(path), where, f"CRS is {grid.crs_text} but {ref_name}'s is {ref.crs_text}",
                           f"reproject it onto the {ref_name} grid (gdalwarp -t_srs {ref.crs_text})"))
    if ref is not None and not out and (grid.shape != ref.shape or not grid.same_transform(ref)):
        out.append(Problem(
            str(path), where,
            f"grid differs from {ref_name}: shape {grid.height}x{grid.width} origin ({grid.transform[2]:.3f}, "
            f"{grid.transform[5]:.3f}) vs {ref.height}x{ref.width} origin ({ref.transform[2]:.3f}, "
            f"{ref.transform[5]:.3f})",
            f"resample onto the {ref_name} grid: {ref.warp_to()}",
        ))
    return out


def _check_dem(root: Path, config: StudyConfig | None, report: CheckReport) -> Grid | None:
    path = root / "dem.tif"
    if not path.is_file():
        report.problems.append(Problem(str(path), "", "missing",
                                       f"provide the DEM (elevation in metres, study CRS) as dem.tif; see {CONTRACT}"))
        return None
    grid, info, errors = probe_raster(path)
    for e in errors:
        report.problems.append(Problem(str(path), "", e, "re-export the DEM as a GeoTIFF"))
    if grid is None:
        return None
    if info["count"] != 1:
        report.problems.append(Problem(str(path), "bands", f"has {info['count']} bands, expected 1 (elevation, m)",
                                       "keep only the elevation band"))
    grid_problems = _grid_problems(path, "", grid, config, None, "")
    report.problems.extend(grid_problems)
    report.count("dem.tif")
    # A DEM in the wrong CRS cannot serve as the grid reference for the scenes.
    return None if (grid_problems or errors) else grid


def _check_scene_raster(path: Path, where: str, band: str, config: StudyConfig | None, dem: Grid | None,
                        report: CheckReport) -> None:
    grid, info, errors = probe_raster(path)
    for e in errors:
        report.problems.append(Problem(str(path), where, e, "re-export or re-ingest this scene"))
    if grid is None:
        return
    report.count("scene rasters")
    report.problems.extend(_grid_problems(path, where, grid, config, dem, "dem.tif"))
    if band == LAYOVER_SHADOW:
        if info["dtype"] != "uint8":
            report.problems.append(Problem(str(path), where, f"dtype is {info['dtype']}, expected uint8 "
                                           f"(0 valid, 1 layover, 2 shadow, 3 both)",
                                           "rewrite the mask as uint8 with those codes"))
        return
    if info["count"] != 1:
        report.problems.append(Problem(str(path), where, f"has {info['count']} bands, expected 1",
                                       "write one file per polarisation (VV.tif, VH.tif)"))
    if info["dtype"] != "float32":
        report.problems.append(Problem(str(path), where, f"dtype is {info['dtype']}, expected float32 sigma0",
                                       "convert: gdal_translate -ot Float32"))
    if info["nodata"] is None:
        report.problems.append(Problem(str(path), where, "no nodata value is set",
                                       "set one: gdal_edit.py -a_nodata -99 (use a value that is never valid sigma0)"))
    share = nodata_share(path, info["nodata"])
    if share is not None and share >= MOSTLY_NODATA:
        report.warnings.append(Problem(str(path), where, f"{share:.0%} of the sampled pixels are nodata",
                                       "check the scene (a failed SNAP run or a footprint off the study area); its "
                                       "patches fall below min_valid_fraction and are left out of training"))
    units = info["tags"].get("UNITS")
    if units is not None and units.strip().lower() not in {u.lower() for u in UNITS_VALUES}:
        report.problems.append(Problem(str(path), f"{where}, tag UNITS", f"UNITS tag is {units!r}",
                                       f"set it to one of {list(UNITS_VALUES)} (gdal_edit.py -mo UNITS=dB)"))


def _check_seasons(study: Study, report: CheckReport) -> None:
    """Seasons that overlap, and acquisition dates claimed by two seasons (each date is one season's)."""
    cfg, toml = study.config, str(study.study_toml)
    seasons = sorted(cfg.seasons, key=lambda s: s.start)
    if len(seasons) > 1:  # a campaign: say how many winters were checked
        report.count("seasons", len(seasons))
    for i, a in enumerate(seasons):
        for b in seasons[i + 1:]:
            if b.start <= a.end:
                report.problems.append(Problem(
                    toml, f"key seasons.{a.id} and seasons.{b.id}",
                    f"season windows overlap: {a.id} is {a.start}..{a.end}, {b.id} is {b.start}..{b.end}",
                    f"make the windows disjoint (end {a.id} before {b.start}, or start {b.id} after {a.end}): "
                    f"a winter date must belong to one season"))
    for orbit in cfg.orbits:
        claims: dict[dt.date, list[tuple[str, str]]] = {}
        for season in cfg.seasons:
            for d in study.winter_dates(season.id, orbit.id):
                claims.setdefault(d, []).append((season.id, "winter"))
            for d in study.summer_dates(season.id, orbit.id):
                claims.setdefault(d, []).append((season.id, "summer"))
        for d, who in sorted(claims.items()):
            winter = [s for s, kind in who if kind == "winter"]
            # one summer reference shared by two seasons is fine; a winter date is one season's only
            if len(winter) > 1 or (winter and len(who) > 1):
                names = ", ".join(f"{s} ({kind})" for s, kind in who)
                report.problems.append(Problem(
                    toml, f"orbit {orbit.id}, date {d}", f"date claimed by several seasons: {names}",
                    f"list {d} in one season only (seasons.<id>.dates.{orbit.id} or summer.{orbit.id}), "
                    f"or make the season windows disjoint"))


def _check_scenes(study: Study, dem: Grid | None, report: CheckReport, progress) -> None:
    cfg = study.config
    _check_seasons(study, report)
    jobs: list[tuple[Path, str, str]] = []  # (raster path, where, band)
    seen: set[tuple[str, dt.date]] = set()
    any_winter = False
    for season in cfg.seasons:
        for orbit in cfg.orbits:
            winter = study.winter_dates(season.id, orbit.id)
            summer = study.summer_dates(season.id, orbit.id)
            any_winter = any_winter or bool(winter)
            if winter and not summer:
                report.problems.append(Problem(
                    str(study.study_toml), f"key seasons.{season.id}.summer.{orbit.id}",
                    f"no summer reference dates for orbit {orbit.id} in season {season.id} "
                    f"({len(winter)} winter dates need them)",
                    f"list snow-free dates: [seasons.summer] {orbit.id} = [YYYY-MM-DD, ...] and put their scenes "
                    f"under scenes/{orbit.id}/"))
            report.problems.extend(season_window_problems(study, season.id, orbit.id))
            for kind, dates in (("winter", winter), ("summer", summer)):
                for d in dates:
                    if (orbit.id, d) in seen:
                        continue
                    seen.add((orbit.id, d))
                    report.count(f"{kind} acquisitions")
                    jobs.extend(_scene_files(study, season.id, orbit.id, d, kind, report))
    if not any_winter:
        report.problems.append(Problem(str(study.scenes_dir), "", "no winter acquisitions found for any season/orbit",
                                       "put scenes under scenes/{orbit}/{YYYYMMDD}/ or list dates in study.toml"))
    _check_stray_folders(study, report)
    it: Iterable = jobs
    if progress is not None:
        it = progress(jobs, len(jobs), "checking scenes")
    for path, where, band in it:
        _check_scene_raster(path, where, band, cfg, dem, report)


def season_window_problems(study: Study, season_id: str, orbit_id: str) -> list[Problem]:
    """Winter dates listed in study.toml for (season, orbit) that lie outside the season window."""
    season = study.config.season(season_id)
    if season.dates is None or orbit_id not in season.dates:
        return []
    return [Problem(str(study.study_toml), f"key seasons.{season.id}.dates.{orbit_id}, date {d}",
                    f"winter date {d} lies outside the season window {season.start}..{season.end}",
                    "move the date to the right season or fix start/end")
            for d in study.winter_dates(season_id, orbit_id) if not (season.start <= d <= season.end)]


def _scene_files(study: Study, season: str, orbit: str, d: dt.date, kind: str,
                 report: CheckReport) -> list[tuple[Path, str, str]]:
    where = f"orbit {orbit}, date {d} ({kind}, season {season})"
    folder = study.scene_dir(orbit, d)
    if not folder.is_dir():
        report.problems.append(Problem(str(folder), where, "scene folder is missing",
                                       f"ingest the scenes (avalanche-hpc ingest ... --orbit {orbit}) or remove "
                                       f"{d} from study.toml"))
        return []
    out = []
    for band in POLARISATIONS:
        p = study.scene_path(orbit, d, band)
        if p.is_file():
            out.append((p, where, band))
        else:
            report.problems.append(Problem(str(p), where, f"{band} scene is missing",
                                           f"provide {band}.tif for this date (both VV and VH are required)"))
    mask = study.scene_path(orbit, d, LAYOVER_SHADOW)
    if mask.is_file():
        out.append((mask, where, LAYOVER_SHADOW))
    return out


def _check_scene_tree(root: Path, dem: Grid | None, report: CheckReport, progress) -> None:
    scenes = root / "scenes"
    if not scenes.is_dir():
        return
    jobs = []
    for p in sorted(scenes.glob("*/*/*.tif")):
        band = p.stem
        if band in (*POLARISATIONS, LAYOVER_SHADOW):
            jobs.append((p, f"orbit {p.parent.parent.name}, date folder {p.parent.name}", band))
    it: Iterable = jobs if progress is None else progress(jobs, len(jobs), "checking scenes")
    for path, where, band in it:
        _check_scene_raster(path, where, band, None, dem, report)


def _check_stray_folders(study: Study, report: CheckReport) -> None:
    if not study.scenes_dir.is_dir():
        return
    ids = [o.id for o in study.config.orbits]
    for p in sorted(study.scenes_dir.iterdir()):
        if not p.is_dir():
            continue
        if p.name not in ids:
            report.problems.append(Problem(str(p), f"orbit {p.name}", f"folder for an orbit not in study.toml {ids}",
                                           "add the orbit to study.toml [[orbits]] or move the folder away"))
            continue
        for q in sorted(p.iterdir()):
            if q.is_dir() and not DATE_DIR_RE.match(q.name):
                report.problems.append(Problem(str(q), "", "scene folder name is not a YYYYMMDD date",
                                               "rename it to the acquisition date, e.g. 20180115"))
            elif q.is_dir():
                try:
                    parse_yyyymmdd(q.name)
                except ValueError:
                    report.problems.append(Problem(str(q), "", f"{q.name} is not a calendar date",
                                                   "rename it to the acquisition date, e.g. 20180115"))


# ---------------------------------------------------------------------------------------------
# corridors.gpkg


def _check_corridors(root: Path, config: StudyConfig | None, dem: Grid | None,
                     report: CheckReport) -> set[str] | None:
    """Returns the set of valid path ids (None when the corridors cannot be read at all)."""
    import geopandas as gpd
    import pyogrio

    path = root / "corridors.gpkg"
    if not path.is_file():
        report.problems.append(Problem(str(path), "", "missing",
                                       f"provide the corridor polygons (layer '{CORRIDOR_LAYER}': path_id, massif, "
                                       f"geometry); see {CONTRACT}"))
        return None
    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
    except Exception as e:
        report.problems.append(Problem(str(path), "", f"cannot be read as a GeoPackage: {e}",
                                       "write it again as a GeoPackage (.gpkg)"))
        return None
    if CORRIDOR_LAYER not in layers:
        report.problems.append(Problem(str(path), f"layer {CORRIDOR_LAYER}", f"no layer named '{CORRIDOR_LAYER}' "
                                       f"(layers: {layers})", f"rename the layer to '{CORRIDOR_LAYER}'"))
        return None
    try:
        gdf = gpd.read_file(path, layer=CORRIDOR_LAYER)
    except Exception as e:
        report.problems.append(Problem(str(path), f"layer {CORRIDOR_LAYER}", f"cannot be read: {e}",
                                       "write the GeoPackage again"))
        return None
    report.count("corridors", len(gdf))
    problems = report.problems
    if config is not None:
        epsg = gdf.crs.to_epsg() if gdf.crs is not None else None
        if epsg != config.crs_epsg:
            problems.append(Problem(str(path), f"layer {CORRIDOR_LAYER}, CRS",
                                    f"CRS is {gdf.crs.to_string() if gdf.crs else 'none'} but study.toml crs_epsg "
                                    f"is {config.crs_epsg}",
                                    f"reproject: ogr2ogr -t_srs EPSG:{config.crs_epsg} (or gdf.to_crs)"))
    missing = [c for c in ("path_id", "massif") if c not in gdf.columns]
    for c in missing:
        problems.append(Problem(str(path), f"column {c}", f"column '{c}' is missing",
                                f"add a '{c}' column (text) to layer '{CORRIDOR_LAYER}'"))
    ids: set[str] = set()
    if "path_id" in gdf.columns:
        pid = [_text(v) for v in gdf["path_id"]]
        counts = Counter(pid)
        for i, v in enumerate(pid):
            row = f"row {i + 1}"
            if v is None:
                problems.append(Problem(str(path), f"{row}, path_id", "path_id is empty",
                                        "give every corridor a unique path_id"))
            elif counts[v] > 1:
                problems.append(Problem(str(path), f"{row}, path_id {v}",
                                        f"path_id {v!r} is not unique ({counts[v]} corridors)",
                                        "give every corridor a unique path_id"))
            else:
                ids.add(v)
        ids |= {v for v in counts if v is not None}
    if "massif" in gdf.columns:
        listed = set(config.massifs) if config is not None else None
        for i, m in enumerate(_text(v) for v in gdf["massif"]):
            row = f"row {i + 1}" + (f", path_id {_text(gdf['path_id'].iat[i])}" if "path_id" in gdf.columns else "")
            if m is None:
                problems.append(Problem(str(path), f"{row}, massif", "massif is empty",
                                        "name the massif of every corridor (one of study.toml massifs)"))
            elif listed is not None and m not in listed:
                problems.append(Problem(str(path), f"{row}, massif {m}",
                                        f"massif {m!r} is not listed in study.toml massifs {sorted(listed)}",
                                        "add it to study.toml massifs or correct the name"))
    if "monitored" in gdf.columns:
        for i, v in enumerate(gdf["monitored"]):
            if not _is_boolish(v):
                problems.append(Problem(str(path), f"row {i + 1}, monitored",
                                        f"monitored is {v!r}, expected a boolean",
                                        "store a boolean (or 0/1 integer) column; empty means true; text such as "
                                        "'false' is not accepted"))
    _check_geometries(path, gdf, dem if config is not None else None, problems)
    return ids


def _check_geometries(path: Path, gdf, dem: Grid | None, problems: list[Problem]) -> None:
    from shapely.geometry import box

    extent = box(*dem.bounds) if dem is not None else None
    has_id = "path_id" in gdf.columns
    for i, geom in enumerate(gdf.geometry):
        row = f"row {i + 1}" + (f", path_id {_text(gdf['path_id'].iat[i])}" if has_id else "")
        if geom is None or geom.is_empty:
            problems.append(Problem(str(path), f"{row}, geometry", "geometry is empty",
                                    "draw the corridor polygon or delete the row"))
            continue
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            problems.append(Problem(str(path), f"{row}, geometry", f"geometry is a {geom.geom_type}, "
                                    f"expected Polygon or MultiPolygon",
                                    "draw the corridor outline as a polygon (buffer a line if needed)"))
            continue
        if not geom.is_valid:
            from shapely.validation import explain_validity

            problems.append(Problem(str(path), f"{row}, geometry", f"invalid polygon: {explain_validity(geom)}",
                                    "repair it (shapely make_valid, QGIS 'Fix geometries')"))
            continue
        if extent is not None and not geom.intersects(extent):
            problems.append(Problem(str(path), f"{row}, geometry", "corridor lies outside dem.tif",
                                    "extend the DEM and scenes over it or remove the corridor"))


def _text(v) -> str | None:
    """A cell as stripped text; None for empty/missing values (NaN, None, '')."""
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    s = str(v).strip()
    return s or None


def _is_boolish(v) -> bool:
    """A ``monitored`` cell: a boolean, 0/1, or empty (default true). Text is refused: 'false' would read as true."""
    import numpy as np

    if v is None or isinstance(v, bool | np.bool_):
        return True
    if isinstance(v, float | np.floating):
        return math.isnan(v) or v in (0.0, 1.0)
    if isinstance(v, int | np.integer):
        return int(v) in (0, 1)
    return False


# ---------------------------------------------------------------------------------------------
# inventory.csv


def _check_inventory(root: Path, path_ids: set[str] | None, report: CheckReport) -> None:
    import pandas as pd

    path = root / "inventory.csv"
    problems = report.problems
    if not path.is_file():
        problems.append(Problem(str(path), "", "missing",
                                f"provide the inventory with columns {list(INVENTORY_COLUMNS)} (it may have no rows); "
                                f"see {CONTRACT}"))
        return
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as e:
        problems.append(Problem(str(path), f"byte {e.start}", f"is not UTF-8 text ({e.reason})",
                                "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8, or 'CSV UTF-8' in a spreadsheet)"))
        return
    except Exception as e:
        problems.append(Problem(str(path), "", f"cannot be read as CSV: {e}",
                                "write a comma-separated file with a header row"))
        return
    report.count("inventory rows", len(df))
    missing = [c for c in INVENTORY_COLUMNS if c not in df.columns]
    for c in missing:
        problems.append(Problem(str(path), f"header, column {c}", f"column '{c}' is missing",
                                f"the header must contain {list(INVENTORY_COLUMNS)}"))

    def row(i: int) -> str:
        eid = df.at[i, "event_id"].strip() if "event_id" in df.columns else ""
        return f"row {i + 1}" + (f" (event {eid})" if eid else "")

    if "event_id" in df.columns:
        ev = df["event_id"].str.strip()
        counts = ev.value_counts()
        for i in df.index:
            if not ev[i]:
                problems.append(Problem(str(path), f"row {i + 1}, event_id", "event_id is empty",
                                        "give every event a unique event_id"))
            elif counts[ev[i]] > 1:
                problems.append(Problem(str(path), f"{row(i)}, event_id", f"event_id {ev[i]!r} is not unique",
                                        "give every event a unique event_id"))
    if "path_id" in df.columns:
        for i in df.index:
            pid = df.at[i, "path_id"].strip()
            if not pid:
                problems.append(Problem(str(path), f"{row(i)}, path_id", "path_id is empty",
                                        "name the corridor of every event"))
            elif path_ids is not None and pid not in path_ids:
                problems.append(Problem(str(path), f"{row(i)}, path_id {pid}",
                                        f"path_id {pid!r} is not in corridors.gpkg",
                                        "correct the path_id or add the corridor to corridors.gpkg"))
    problems.extend(inventory_dates(df, path, row)[1])
    if "deposit_area_m2" in df.columns:
        for i in df.index:
            raw = df.at[i, "deposit_area_m2"].strip()
            if not raw:
                continue  # unknown area is allowed
            try:
                v = float(raw)
            except ValueError:
                problems.append(Problem(str(path), f"{row(i)}, deposit_area_m2", f"{raw!r} is not a number",
                                        "write the deposit area in square metres, or leave it empty when unknown"))
                continue
            if not math.isfinite(v) or v < 0:
                problems.append(Problem(str(path), f"{row(i)}, deposit_area_m2", f"deposit area {raw} is not a "
                                        f"non-negative finite number",
                                        "write the deposit area in square metres, or leave it empty when unknown"))
