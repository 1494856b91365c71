"""Synthetic DEM: named massifs (French Alps names) with ridges, valleys, realistic slopes, all aspects.

Massif centres sit on a jittered grid; every pixel belongs to its nearest centre (a Voronoi
partition). Relief fades towards the borders between massifs, which become the main valleys.
Inside a massif, ridged fractal noise draws sharp crests and gullies. The relief is scaled so that
the median slope of the mountain part is ``TARGET_MEDIAN_SLOPE_DEG``, which gives release zones
(30-50 degrees) and gentle runouts, whatever the grid size.

Units: elevation in metres; slope and aspect in degrees (aspect clockwise from north, the
direction the slope faces, as in ``avalanche_hpc.preprocess.deposition.slope_aspect``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.transform import Affine
from scipy import ndimage

from avalanche_hpc.preprocess.deposition import slope_aspect
from avalanche_hpc.synth.fields import fractal_noise, rng_for

__all__ = ["TARGET_MEDIAN_SLOPE_DEG", "Terrain", "make_terrain"]

TARGET_MEDIAN_SLOPE_DEG = 26.0
VALLEY_FLOOR_M = 900.0
MAX_RELIEF_M = 3000.0


@dataclass
class Terrain:
    dem: np.ndarray             # float32 (rows, cols), metres
    massif: np.ndarray          # int16 (rows, cols), index into ``names``
    names: tuple[str, ...]
    slope: np.ndarray           # float32 degrees
    aspect: np.ndarray          # float32 degrees clockwise from north (downslope direction)
    transform: Affine
    pixel_m: float
    epsg: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.dem.shape


def _massif_centres(n: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    gc = int(np.ceil(np.sqrt(n * w / h)))
    gr = int(np.ceil(n / gc))
    cells = [(r, c) for r in range(gr) for c in range(gc)][:n]
    out = []
    for r, c in cells:
        y = (r + 0.5 + rng.uniform(-0.2, 0.2)) * h / gr
        x = (c + 0.5 + rng.uniform(-0.2, 0.2)) * w / gc
        out.append((y, x))
    return np.array(out)


def make_terrain(shape: tuple[int, int], names: tuple[str, ...], pixel_m: float, origin: tuple[float, float],
                 epsg: int, seed: int) -> Terrain:
    """Build the DEM and the massif partition (deterministic for ``seed``)."""
    rng = rng_for(seed, "terrain")
    h, w = shape
    centres = _massif_centres(len(names), shape, rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # nearest and second-nearest massif centre, one centre at a time (memory: a few grids)
    d1 = np.full(shape, np.inf, np.float32)
    d2 = np.full(shape, np.inf, np.float32)
    massif = np.zeros(shape, np.int16)
    for k, (cy, cx) in enumerate(centres):
        d = np.hypot(yy - cy, xx - cx)
        closer = d < d1
        d2 = np.where(closer, d1, np.minimum(d2, d))
        d1 = np.where(closer, d, d1)
        massif[closer] = k
    del yy, xx
    ratio: np.ndarray
    if len(names) > 1:
        ratio = d1 / np.maximum(d2, 1e-6)           # 0 at a centre, 1 on a border
    else:
        ratio = d1 / (0.75 * max(h, w))
    envelope = ndimage.gaussian_filter(np.clip(1.0 - ratio, 0.0, 1.0), 2.0)
    del d1, d2
    span = float(min(h, w)) / max(np.sqrt(len(names)), 1.0)   # massif size in pixels
    # ridged multifractal: sharp crests and rounded gullies at three scales (crest spacing span/2..span/8);
    # no detail below ~3 pixels, so steepest-descent paths run from crests to valley floors
    ridged = np.zeros(shape, np.float32)
    for k, amp in enumerate((1.0, 0.5, 0.25)):
        wl = max(span / (2.0 * 2**k), 10.0)
        n = fractal_noise(rng, shape, beta=4.0, lo_px=wl * 1.5, hi_px=max(wl / 4.0, 3.0))
        ridged += amp * (1.0 - np.abs(n)) ** 2
    ridged /= 1.75
    rough = fractal_noise(rng, shape, beta=3.0, lo_px=12.0, hi_px=2.0)
    shaping = np.clip(envelope * 1.5, 0.05, 1.0)  # less relief on the floors of the main valleys
    h01 = 0.6 * envelope ** 1.3 + 0.4 * ridged * shaping + 0.004 * rough
    h01 = np.clip(h01 - np.percentile(h01, 0.5), 0.0, None)
    h01 = (h01 / h01.max()) ** 1.15            # glacial profile: flatter floors, steeper upper slopes
    # bisection on the total relief (m) for the target median slope; on large grids a central
    # window of at most 1024 x 1024 pixels is representative and keeps memory small
    r0, c0 = max((h - 1024) // 2, 0), max((w - 1024) // 2, 0)
    win = (slice(r0, r0 + 1024), slice(c0, c0 + 1024))
    sample, mountain = h01[win], envelope[win] > 0.25
    lo, hi = 10.0, 6000.0
    for _ in range(16):
        relief = 0.5 * (lo + hi)
        s0, _a = slope_aspect(relief * sample, pixel_m, pixel_m)
        if np.median(s0[mountain] if mountain.any() else s0) < TARGET_MEDIAN_SLOPE_DEG:
            lo = relief
        else:
            hi = relief
    relief = min(0.5 * (lo + hi), MAX_RELIEF_M)
    dem = (VALLEY_FLOOR_M + relief * h01).astype(np.float32)
    slope, aspect = slope_aspect(dem, pixel_m, pixel_m)
    transform = Affine.translation(origin[0], origin[1]) @ Affine.scale(pixel_m, -pixel_m)
    return Terrain(dem, massif, tuple(names), slope.astype(np.float32), aspect.astype(np.float32), transform,
                   pixel_m, epsg)
