"""inputs/grid.py: the one grid type (CRS, transform, shape; one tolerance) and its affine helpers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import rasterio.transform
import rasterio.windows
from rasterio.windows import Window

from avalanche_hpc.inputs.grid import GRID_TOL, Grid, transform_from_origin, window_transform

PIX = 20.0


def _grid(x0=300000.0, y0=5000000.0, pix=PIX, shape=(40, 50), epsg=32632) -> Grid:
    t = transform_from_origin(x0, y0, pix, pix)
    return Grid(epsg, f"EPSG:{epsg}", tuple(t)[:6], shape[1], shape[0])


def test_same_as_compares_crs_shape_and_transform_within_one_tolerance():
    g = _grid()
    assert g.same_as(_grid())
    # origins closer than GRID_TOL of a pixel are the same; a little more is not
    assert g.same_as(_grid(x0=300000.0 + 0.5 * GRID_TOL * PIX))
    assert not g.same_as(_grid(x0=300000.0 + 2 * GRID_TOL * PIX))
    assert not g.same_as(_grid(pix=PIX * (1 + 2 * GRID_TOL)))
    assert not g.same_as(_grid(shape=(40, 51)))
    assert not g.same_as(_grid(epsg=32631))
    # without EPSG codes the CRS text decides
    assert Grid(None, "LOCAL_CS", g.transform, 50, 40).same_crs(Grid(None, "LOCAL_CS", g.transform, 50, 40))
    assert not Grid(None, "LOCAL_CS", g.transform, 50, 40).same_crs(g)


def test_pixel_size_bounds_and_the_warp_hint():
    g = _grid()
    assert g.has_pixel_size(PIX) and g.has_pixel_size(PIX * (1 + 0.5 * GRID_TOL)) and not g.has_pixel_size(10.0)
    assert g.bounds == (300000.0, 5000000.0 - 40 * PIX, 300000.0 + 50 * PIX, 5000000.0)
    assert g.warp_to() == "gdalwarp -te 300000.000 4999200.000 301000.000 5000000.000 -tr 20 20"
    assert g.describe() == "40x50 at (300000.000, 5000000.000)"


def test_read_gives_the_grid_of_a_file(tmp_path):
    path = tmp_path / "r.tif"
    with rasterio.open(path, "w", driver="GTiff", width=50, height=40, count=1, dtype="float32", crs="EPSG:32632",
                       transform=transform_from_origin(300000.0, 5000000.0, PIX, PIX)) as ds:
        ds.write(np.zeros((40, 50), "float32"), 1)
    assert Grid.read(path) == _grid()


@pytest.mark.parametrize("col,row", [(0, 0), (17, 33), (1234, 999)])
def test_helpers_match_rasterio_bit_for_bit(col, row):
    t = transform_from_origin(300000.123, 5000000.7, 20.0000001, 20.3)
    with warnings.catch_warnings():  # rasterio 1.4.4 composes with affine's deprecated '*'
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        ref_t = rasterio.transform.from_origin(300000.123, 5000000.7, 20.0000001, 20.3)
        ref_w = rasterio.windows.transform(Window(col, row, 5, 5), t)
    assert tuple(t) == tuple(ref_t)
    assert tuple(window_transform(t, col, row)) == tuple(ref_w)
