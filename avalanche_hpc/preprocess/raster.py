"""Windowed raster reads around points: sigma0 in linear power with NaN for invalid pixels.

Only the ``P x P`` windows around the deposition points are read, never a whole scene, so the
cost of a task grows with the number of corridors, not with the scene area. Windows that reach
beyond the raster edge are padded with NaN (invalid).

Units: a scene's ``UNITS`` tag (GDAL dataset metadata, ``linear`` or ``dB``, case-insensitive)
wins; otherwise the study's ``units``. dB values are converted to linear power
``10 ** (x / 10)``. Pixels equal to the nodata value and non-finite pixels are NaN; linear
pixels ``<= 0`` are invalid too (the channel arithmetic and the summer mean reject them). ``layover_shadow.tif`` (uint8: 0 valid, 1 layover, 2 shadow, 3 both)
marks invalid pixels; when absent every pixel is valid.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from avalanche_hpc.errors import InputError, MissingInputError, Problem
from avalanche_hpc.inputs.grid import Grid
from avalanche_hpc.preprocess.channels import db_in_place, to_linear

log = logging.getLogger(__name__)

__all__ = [
    "check_on_grid",
    "dem_grid",
    "raster_units",
    "read_db_windows",
    "read_mask_windows",
    "read_power_windows",
    "read_windows",
    "window_origins",
]

UNITS_TAG = "UNITS"


def dem_grid(path: Path) -> Grid:
    """The grid of ``dem.tif``: every scene must share it."""
    with open_raster(path, "grid") as src:
        return Grid.of(src)


def check_on_grid(src, grid: Grid, path: Path, where: str) -> None:
    """InputError unless the open raster ``src`` has the CRS, shape and transform of ``grid``."""
    own = Grid.of(src)
    if not own.same_as(grid):
        raise InputError(Problem(
            str(path), where,
            f"not on the DEM grid: CRS {own.crs_text} shape {own.shape} transform {own.transform} "
            f"vs dem.tif CRS {grid.crs_text} shape {grid.shape} transform {grid.transform}",
            "resample the scene onto the DEM grid (same CRS, pixel size, origin and size): " + grid.warp_to(),
        ))


def open_raster(path: Path, where: str = ""):
    """``rasterio.open`` with errors that name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} is missing ({where}) -> add the file or remove the date from the study")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioError as e:
        raise InputError(Problem(str(path), where, f"cannot be read as a raster: {e}",
                                 "re-create the file (a float32 GeoTIFF on the DEM grid)")) from e


def raster_units(src, default: str, path: Path | str = "") -> str:
    """``linear`` or ``dB`` from the ``UNITS`` tag, else ``default`` (the study's ``units``)."""
    tag = src.tags().get(UNITS_TAG)
    if tag is None or tag == "":
        return default
    t = tag.strip().lower()
    if t in ("linear", "db"):
        return "linear" if t == "linear" else "dB"
    raise InputError(Problem(str(path), f"tag {UNITS_TAG}", f"unknown units {tag!r}",
                             "set the UNITS tag to 'linear' or 'dB' (or remove it to use study.toml units)"))


def window_origins(rows: np.ndarray, cols: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper-left pixel of the ``size x size`` window centred on each (row, col)."""
    half = size // 2
    return np.asarray(rows, dtype=np.int64) - half, np.asarray(cols, dtype=np.int64) - half


def _group_windows(r0: np.ndarray, c0: np.ndarray, size: int, cell: int, max_waste: float) -> list[np.ndarray]:
    """Groups of window indices whose bounding box is worth one read.

    Windows are binned by the ``cell x cell`` grid cell of their corner; a bin is read as one
    box when the box area is at most ``max_waste`` times the windows' total area, otherwise
    each of its windows is read alone (a group of one).
    """
    keys = (r0 // cell) * (1 << 32) + (c0 // cell)
    order = np.argsort(keys, kind="stable")
    _, starts = np.unique(keys[order], return_index=True)
    groups: list[np.ndarray] = []
    for idx in np.split(order, starts[1:]):
        if len(idx) > 1:
            h = r0[idx].max() - r0[idx].min() + size
            w = c0[idx].max() - c0[idx].min() + size
            if h * w <= max_waste * len(idx) * size * size:
                groups.append(idx)
                continue
        groups.extend(idx[:, None])
    return groups


def read_windows(src, r0: np.ndarray, c0: np.ndarray, size: int, fill: float = np.nan,
                 dtype=np.float32, path: Path | str = "", where: str = "", grouped: bool = True,
                 cell: int = 512, max_waste: float = 4.0) -> np.ndarray:
    """Band 1 of ``src`` in the ``size x size`` windows with upper-left corners (r0, c0).

    Parts of a window outside the raster are ``fill``. Returns (n, size, size) ``dtype``.
    ``grouped``: nearby windows (same ``cell``-pixel grid cell, dense enough) are served by one
    read of their bounding box instead of one read each; the result is identical.
    """
    r0 = np.asarray(r0, dtype=np.int64)
    c0 = np.asarray(c0, dtype=np.int64)
    n = len(r0)
    out = np.full((n, size, size), fill, dtype=dtype)
    h, w = src.height, src.width
    groups = _group_windows(r0, c0, size, cell, max_waste) if grouped and n else [np.array([i]) for i in range(n)]
    try:
        for idx in groups:
            ra, ca = int(r0[idx].min()), int(c0[idx].min())
            rb, cb = int(r0[idx].max()) + size, int(c0[idx].max()) + size
            rr0, cc0, rr1, cc1 = max(ra, 0), max(ca, 0), min(rb, h), min(cb, w)
            if rr1 <= rr0 or cc1 <= cc0:
                continue
            box = np.full((rb - ra, cb - ca), fill, dtype=dtype)
            box[rr0 - ra:rr1 - ra, cc0 - ca:cc1 - ca] = src.read(1, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
            for i in idx:
                a, b = int(r0[i]) - ra, int(c0[i]) - ca
                out[i] = box[a:a + size, b:b + size]
    except rasterio.errors.RasterioError as e:
        raise InputError(Problem(str(path), where, f"read failed (corrupt or truncated file?): {e}",
                                 "re-create the file")) from e
    return out


def _read_band_windows(path: Path, r0: np.ndarray, c0: np.ndarray, size: int, default_units: str,
                       grid: Grid | None, where: str) -> tuple[np.ndarray, str, float | None]:
    """Band 1 windows as stored (NaN outside the raster), their units and the nodata value."""
    with open_raster(path, where) as src:
        if grid is not None:
            check_on_grid(src, grid, path, where)
        if src.count < 1:
            raise InputError(Problem(str(path), where, "has no band", "write sigma0 as band 1"))
        units = raster_units(src, default_units, path)
        raw = read_windows(src, r0, c0, size, path=path, where=where)
        return raw, units, src.nodata


def read_power_windows(path: Path, r0: np.ndarray, c0: np.ndarray, size: int, default_units: str,
                       grid: Grid | None = None, where: str = "") -> np.ndarray:
    """sigma0 windows in linear power, float32 (n, size, size), NaN where nodata, not finite or outside."""
    raw, units, nodata = _read_band_windows(path, r0, c0, size, default_units, grid, where)
    if nodata is not None and not np.isnan(nodata):
        raw[raw == np.float32(nodata)] = np.nan
    raw[~np.isfinite(raw)] = np.nan
    return to_linear(raw, units)


def read_db_windows(path: Path, r0: np.ndarray, c0: np.ndarray, size: int, default_units: str,
                    grid: Grid | None = None, where: str = "") -> np.ndarray:
    """sigma0 windows in dB, float32 (n, size, size), converted in place block by block; **not finite**
    (NaN, or +-inf: non-positive or infinite power) where invalid, nodata or outside the raster.
    ``channels.mark_invalid`` turns every non-finite pixel into NaN in both bands of the date."""
    raw, units, nodata = _read_band_windows(path, r0, c0, size, default_units, grid, where)
    return db_in_place(raw, units, nodata)


def read_mask_windows(path: Path, r0: np.ndarray, c0: np.ndarray, size: int,
                      grid: Grid | None = None, where: str = "") -> np.ndarray:
    """Boolean (n, size, size): True where layover/shadow or outside the raster; all False if no file."""
    if not Path(path).is_file():
        return np.zeros((len(r0), size, size), dtype=bool)
    with open_raster(path, where) as src:
        if grid is not None:
            check_on_grid(src, grid, path, where)
        m = read_windows(src, r0, c0, size, fill=255, dtype=np.uint8, path=path, where=where)
    return m != 0
