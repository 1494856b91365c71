"""The study grid: CRS, transform and shape of ``dem.tif``, which every scene must share.

One type serves the three places that compare grids: the contract check (``inputs/checks.py``),
ingest (``inputs/ingest.py``) and the windowed reads of preprocessing (``preprocess/raster.py``).

Tolerance (one, for every comparison): two transforms are the same when each of their six
coefficients differs by at most ``GRID_TOL`` of a pixel (``GRID_TOL * pixel size`` metres; the
coefficients are metres or metres per pixel), and a pixel size matches the study's when it is
within ``GRID_TOL`` of it, relatively. Shapes must be equal. CRSs are compared by EPSG code when
both have one, else by their text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRID_TOL = 1e-6  # fraction of a pixel


@dataclass(frozen=True)
class Grid:
    """What a raster header tells about its grid (the DEM's is the reference of the study)."""

    crs_epsg: int | None
    crs_text: str
    transform: tuple[float, ...]  # affine a, b, c, d, e, f (GDAL order: c, f the upper-left corner)
    width: int
    height: int

    @classmethod
    def of(cls, src: Any) -> Grid:
        """The grid of an open rasterio dataset."""
        crs = src.crs
        epsg = None
        if crs is not None:
            try:
                epsg = crs.to_epsg()
            except Exception:  # a CRS without an EPSG equivalent
                epsg = None
        return cls(epsg, crs.to_string() if crs else "none", tuple(src.transform)[:6], src.width, src.height)

    @classmethod
    def read(cls, path: str | Path) -> Grid:
        """The grid of a raster file (rasterio errors propagate; callers word them)."""
        import rasterio

        with rasterio.open(path) as src:
            return cls.of(src)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def pixel_size(self) -> tuple[float, float]:
        return abs(self.transform[0]), abs(self.transform[4])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self.transform[:6]
        xs = (c, c + a * self.width)
        ys = (f, f + e * self.height)
        return min(xs), min(ys), max(xs), max(ys)

    def same_crs(self, other: Grid) -> bool:
        if self.crs_epsg is not None and other.crs_epsg is not None:
            return self.crs_epsg == other.crs_epsg
        return self.crs_text == other.crs_text

    def has_pixel_size(self, size_m: float) -> bool:
        return all(abs(p - size_m) <= GRID_TOL * max(p, size_m) for p in self.pixel_size)

    def same_transform(self, other: Grid) -> bool:
        tol = GRID_TOL * max(*other.pixel_size, *self.pixel_size, 1e-12)
        return all(abs(a - b) <= tol for a, b in zip(self.transform, other.transform, strict=True))

    def same_as(self, other: Grid) -> bool:
        """Same CRS, shape and transform (within ``GRID_TOL``)."""
        return self.same_crs(other) and self.shape == other.shape and self.same_transform(other)

    def describe(self) -> str:
        t = self.transform
        return f"{self.height}x{self.width} at ({t[2]:.3f}, {t[5]:.3f})"

    def warp_to(self) -> str:
        """The gdalwarp options that resample a raster onto this grid."""
        px, py = self.pixel_size
        return f"gdalwarp -te {' '.join(f'{v:.3f}' for v in self.bounds)} -tr {px:g} {py:g}"


# rasterio 1.4.4's ``transform.from_origin`` and ``windows.transform`` compose affines with ``*``,
# which affine 3.0 deprecates (PendingDeprecationWarning on every call). These two do the same
# arithmetic with ``@`` (affine's ``*`` calls ``@``), so their results are bit-identical.
def transform_from_origin(west: float, north: float, xsize: float, ysize: float) -> Any:
    """``rasterio.transform.from_origin``: the affine of a north-up grid with upper-left corner (west, north)."""
    from affine import Affine

    return Affine.translation(west, north) @ Affine.scale(xsize, -ysize)


def window_transform(transform: Any, col_off: float, row_off: float) -> Any:
    """``rasterio.windows.transform``: the affine of a window whose upper-left pixel is (row_off, col_off)."""
    from affine import Affine

    x, y = transform @ (col_off, row_off)
    return Affine.translation(x - transform.c, y - transform.f) @ transform
