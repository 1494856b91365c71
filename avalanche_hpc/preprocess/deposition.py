"""Deposition zones: the lowest-elevation part of each corridor, its centre and terrain attributes.

The paper centres every patch on "the lowest elevation parts of the EPA corridors, where most
of the avalanches would have their zone of deposition". Per corridor:

- the corridor is rasterised on the DEM grid (pixels whose centre lies inside the polygon;
  ``all_touched`` for corridors too thin to cover a pixel centre);
- the **deposition zone** is the set of its pixels at or below the ``ZONE_QUANTILE``
  (10 %) quantile of its elevations (at least one pixel);
- the **centre** is the zone pixel nearest to the zone's centroid (so it always lies in the
  zone, even for a curved zone), given as pixel (row, col) and map (x, y) of the pixel centre;
- ``elevation`` (m) is the mean zone elevation; ``slope`` (degrees) the mean zone slope;
  ``aspect`` (degrees clockwise from north, the direction the slope faces) the circular mean
  of the zone's downslope directions; ``zone_area_m2`` the zone's area.

Only a window around each corridor is read from the DEM (cost grows with the corridors, not the
DEM area). The table is written once per study to ``work/deposition.gpkg`` (layer
``deposition``, point geometry = centre; layer ``provenance`` with the digest of the inputs and
settings), atomically, and recomputed only when ``dem.tif``, ``corridors.gpkg`` or the
settings change.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from rasterio import features
from rasterio.transform import rowcol, xy
from rasterio.windows import Window
from shapely.geometry import Point

from avalanche_hpc.atomic import atomic_path
from avalanche_hpc.digest import digest_json
from avalanche_hpc.errors import InputError, Problem
from avalanche_hpc.inputs.grid import window_transform
from avalanche_hpc.preprocess.labels import monitored_flags
from avalanche_hpc.preprocess.raster import open_raster
from avalanche_hpc.study import Study

log = logging.getLogger(__name__)

__all__ = ["compute_deposition", "deposition_digest", "file_fingerprint", "load_deposition", "slope_aspect"]

ZONE_QUANTILE = 0.10
DEPOSITION_VERSION = 1
LAYER = "deposition"
PROVENANCE_LAYER = "provenance"
COLUMNS = ("path_id", "massif", "monitored", "row", "col", "x", "y", "elevation", "slope", "aspect",
           "zone_area_m2", "zone_pixels")


def file_fingerprint(path: Path, hash_limit: int = 2 * 2**20) -> str:
    """Identity of an input file: size + mtime, plus a content hash for files up to ``hash_limit``.

    Large rasters are identified by size and modification time only, so a task never reads a
    whole scene to decide whether it is up to date.
    """
    st = path.stat()
    ident = f"{path.name}:{st.st_size}:{st.st_mtime_ns}"
    if st.st_size <= hash_limit:
        ident = f"{path.name}:{st.st_size}:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return ident


def deposition_digest(study: Study) -> str:
    """Digest of everything the deposition table depends on."""
    parts = {
        "version": DEPOSITION_VERSION,
        "quantile": ZONE_QUANTILE,
        "dem": file_fingerprint(study.dem_path),
        "corridors": file_fingerprint(study.corridors_path),
    }
    return digest_json(parts)


def slope_aspect(dem: np.ndarray, pixel_x: float, pixel_y: float) -> tuple[np.ndarray, np.ndarray]:
    """Slope (degrees) and aspect (degrees clockwise from north, the downslope direction).

    ``dem`` is north-up (row 0 is the northern edge); ``pixel_x``/``pixel_y`` are positive pixel
    sizes in metres. Central differences inside, one-sided at the edges (``numpy.gradient``).
    """
    d_row, d_col = np.gradient(dem.astype(np.float64))
    dz_east = d_col / pixel_x
    dz_north = -d_row / pixel_y  # rows grow southwards
    slope = np.degrees(np.arctan(np.hypot(dz_east, dz_north)))
    aspect = np.degrees(np.arctan2(-dz_east, -dz_north)) % 360.0
    return slope, aspect


def _circular_mean_deg(a: np.ndarray) -> float:
    r = np.radians(a)
    return float(np.degrees(np.arctan2(np.sin(r).mean(), np.cos(r).mean())) % 360.0)


def _corridor_zone(geom, src, dem_nodata) -> dict | None:
    """Zone attributes of one corridor, or None when it covers no valid DEM pixel."""
    left, bottom, right, top = geom.bounds
    (ra_f, rb_f), (ca_f, cb_f) = rowcol(src.transform, [left, right], [top, bottom], op=float)
    r0 = int(np.floor(min(ra_f, rb_f))) - 1  # one pixel of margin for the gradient
    c0 = int(np.floor(min(ca_f, cb_f))) - 1
    h = int(np.ceil(max(ra_f, rb_f))) + 1 - r0
    w = int(np.ceil(max(ca_f, cb_f))) + 1 - c0
    ra, ca, rb, cb = max(r0, 0), max(c0, 0), min(r0 + h, src.height), min(c0 + w, src.width)
    if rb <= ra or cb <= ca:
        return None
    window = Window(ca, ra, cb - ca, rb - ra)
    dem = src.read(1, window=window).astype(np.float64)
    valid = np.isfinite(dem)
    if dem_nodata is not None and not np.isnan(dem_nodata):
        valid &= dem != dem_nodata
    wt = window_transform(src.transform, window.col_off, window.row_off)
    inside = features.geometry_mask([geom], out_shape=dem.shape, transform=wt, invert=True)
    if not (inside & valid).any():
        inside = features.geometry_mask([geom], out_shape=dem.shape, transform=wt, invert=True, all_touched=True)
    inside &= valid
    if not inside.any():
        return None
    elev = dem[inside]
    cut = np.quantile(elev, ZONE_QUANTILE)
    zone = inside & (dem <= cut)
    filled = np.where(valid, dem, np.nanmean(dem[valid]))
    px, py = abs(src.transform.a), abs(src.transform.e)
    slope, aspect = slope_aspect(filled, px, py)
    zr, zc = np.nonzero(zone)
    mr, mc = zr.mean(), zc.mean()
    k = int(np.argmin((zr - mr) ** 2 + (zc - mc) ** 2))
    row, col = int(zr[k]) + ra, int(zc[k]) + ca
    x, y = xy(src.transform, row, col, offset="center")
    return {
        "row": row, "col": col, "x": float(x), "y": float(y),
        "elevation": float(dem[zone].mean()),
        "slope": float(slope[zone].mean()),
        "aspect": _circular_mean_deg(aspect[zone]),
        "zone_area_m2": float(zone.sum() * px * py),
        "zone_pixels": int(zone.sum()),
    }


def compute_deposition(root: Path, force: bool = False) -> Path:
    """Write ``work/deposition.gpkg`` unless it is up to date with the DEM and corridors; returns its path."""
    study = Study.load(root)
    out = study.deposition_path
    digest = deposition_digest(study)
    if not force and out.is_file() and _stored_digest(out) == digest:
        log.debug("deposition zones up to date: %s", out)
        return out
    corridors = study.read_corridors()
    rows = []
    problems = []
    try:
        monitored = monitored_flags(corridors)
    except ValueError as e:
        raise InputError(Problem(str(study.corridors_path), "column monitored", str(e),
                                 "store monitored as a boolean column (True/False)")) from e
    with open_raster(study.dem_path, "dem") as src:
        for i, rec in enumerate(corridors.itertuples(index=False)):
            geom = rec.geometry
            if geom is None or geom.is_empty:
                problems.append(Problem(str(study.corridors_path), f"row {i + 1} path_id {rec.path_id}",
                                        "empty geometry", "draw the corridor polygon"))
                continue
            z = _corridor_zone(geom, src, src.nodata)
            if z is None:
                problems.append(Problem(str(study.corridors_path), f"row {i + 1} path_id {rec.path_id}",
                                        "covers no valid pixel of dem.tif",
                                        "fix the corridor geometry or extend the DEM"))
                continue
            rows.append({"path_id": str(rec.path_id), "massif": str(rec.massif),
                         "monitored": bool(monitored.iloc[i]), **z})
        crs = src.crs
    if problems:
        raise InputError(problems)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    gdf = gpd.GeoDataFrame(df, geometry=[Point(x, y) for x, y in zip(df["x"], df["y"], strict=False)], crs=crs)
    prov = pd.DataFrame({"key": ["digest", "zone_quantile", "version"],
                         "value": [digest, str(ZONE_QUANTILE), str(DEPOSITION_VERSION)]})
    logging.getLogger("pyogrio").setLevel(logging.WARNING)  # one "Created N records" line per layer otherwise
    with atomic_path(out) as tmp:
        tmp_gpkg = tmp.with_name(tmp.name + ".gpkg")  # GDAL picks the driver from the suffix
        try:
            gdf.to_file(tmp_gpkg, layer=LAYER, driver="GPKG")
            pyogrio.write_dataframe(prov, tmp_gpkg, layer=PROVENANCE_LAYER, driver="GPKG", append=True)
            tmp_gpkg.replace(tmp)
        finally:
            tmp_gpkg.unlink(missing_ok=True)
    log.info("deposition zones of %d corridors -> %s", len(df), out)
    return out


def _stored_digest(path: Path) -> str | None:
    try:
        prov = pyogrio.read_dataframe(path, layer=PROVENANCE_LAYER, read_geometry=False)
        return str(prov.loc[prov["key"] == "digest", "value"].iloc[0])
    except Exception:  # unreadable / old layout: recompute
        return None


def load_deposition(root: Path) -> gpd.GeoDataFrame:
    """The deposition table (computed first when missing or out of date), in corridor order."""
    path = compute_deposition(root)
    gdf = gpd.read_file(path, layer=LAYER)
    gdf["path_id"] = gdf["path_id"].astype(str)
    gdf.attrs["digest"] = _stored_digest(path)
    return gdf
