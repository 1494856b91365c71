"""Avalanche corridors: release zones on steep high slopes, steepest-descent paths, deposits at the low ends.

A release pixel (slope ``RELEASE_SLOPE`` degrees, upper half of its massif's elevations) starts a
D8 steepest-descent walk. The walk runs while the terrain keeps descending and stops in the
runout: ``RUNOUT_PX`` pixels after the slope first falls below ``STOP_SLOPE_DEG``, or at a pit.
The corridor polygon is the path buffered by a width of ``CORRIDOR_WIDTH_M``. Corridors whose
low end lies closer than ``MIN_END_SEPARATION_PX`` to an earlier corridor's low end, or too near
the grid edge, are dropped (so every deposition zone is distinct).

The deposit footprint of an avalanche is an elongated blob (a capsule along the last part of the
path) of the event's area, with a soft edge and a rough, static texture (per event).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from shapely.geometry import LineString

from avalanche_hpc.synth.fields import rng_for
from avalanche_hpc.synth.terrain import Terrain

__all__ = ["Corridor", "Footprint", "deposit_footprint", "make_corridors"]

RELEASE_SLOPE = (30.0, 50.0)
STOP_SLOPE_DEG = 13.0
RUNOUT_PX = 5
MIN_LENGTH_PX = 12
MAX_LENGTH_PX = 160
CORRIDOR_WIDTH_M = (60.0, 140.0)
MIN_END_SEPARATION_PX = 7.0
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


@dataclass
class Corridor:
    path_id: str
    massif: str
    monitored: bool
    rows: np.ndarray        # path pixel rows, release -> runout
    cols: np.ndarray
    width_m: float
    polygon: object         # shapely Polygon in map coordinates

    @property
    def end(self) -> tuple[int, int]:
        return int(self.rows[-1]), int(self.cols[-1])


@dataclass
class Footprint:
    """Deposit weights (0..1, float32) in a window with upper-left pixel (r0, c0)."""

    r0: int
    c0: int
    weights: np.ndarray

    @property
    def n_pixels(self) -> float:
        return float(self.weights.sum())


def _descend(dem: np.ndarray, slope: np.ndarray, r: int, c: int, margin: int) -> list[tuple[int, int]] | None:
    h, w = dem.shape
    path = [(r, c)]
    seen = {(r, c)}
    below_since = None
    for _ in range(MAX_LENGTH_PX):
        z = dem[r, c]
        best, best_drop = None, 0.0
        for dr, dc in _NEIGHBOURS:
            rr, cc = r + dr, c + dc
            if not (0 <= rr < h and 0 <= cc < w) or (rr, cc) in seen:
                continue
            drop = (z - dem[rr, cc]) / (1.4142 if dr and dc else 1.0)
            if drop > best_drop:
                best, best_drop = (rr, cc), drop
        if best is None:
            break
        r, c = best
        if not (margin <= r < h - margin and margin <= c < w - margin):
            return None
        path.append(best)
        seen.add(best)
        if below_since is None and len(path) > MIN_LENGTH_PX // 2 and \
                sum(float(slope[p]) for p in path[-3:]) < 3 * STOP_SLOPE_DEG:
            below_since = len(path)
        if below_since is not None and len(path) - below_since >= RUNOUT_PX:
            break
    if len(path) < MIN_LENGTH_PX or below_since is None:
        return None
    return path


def _massif_code(massif: str) -> str:
    """Short code for path ids: initials of a compound name ('HM'), else the first 4 letters ('VANO')."""
    parts = massif.replace("-", " ").split()
    return ("".join(p[0] for p in parts) if len(parts) > 1 else parts[0][:4]).upper()


def make_corridors(terrain: Terrain, n: int, monitored_fraction: float, seed: int) -> list[Corridor]:
    """Up to ``n`` corridors (fewer when the terrain has no room), deterministic for ``seed``."""
    rng = rng_for(seed, "corridors")
    # descend on a lightly smoothed DEM: pixel-scale roughness would end paths in tiny pits
    dem = ndimage.gaussian_filter(terrain.dem.astype(np.float64), 1.0)
    slope = ndimage.gaussian_filter(terrain.slope.astype(np.float64), 1.0)
    h, w = dem.shape
    margin = max(4, min(32, min(h, w) // 8))
    cand = np.zeros(dem.shape, bool)
    for k in range(len(terrain.names)):
        m = terrain.massif == k
        if not m.any():
            continue
        cand |= m & (dem > np.percentile(dem[m], 55))
    cand &= (slope >= RELEASE_SLOPE[0]) & (slope <= RELEASE_SLOPE[1])
    cand[:margin] = cand[-margin:] = False
    cand[:, :margin] = cand[:, -margin:] = False
    rr, cc = np.nonzero(cand)
    order = rng.permutation(len(rr))
    # pixels closer than MIN_END_SEPARATION_PX to an accepted low end
    taken = np.zeros(dem.shape, bool)
    rad = int(np.ceil(MIN_END_SEPARATION_PX))
    dy, dx = np.mgrid[-rad:rad + 1, -rad:rad + 1]
    disk = np.hypot(dy, dx) < MIN_END_SEPARATION_PX
    corridors: list[Corridor] = []
    counters: dict[str, int] = {}
    t = terrain.transform
    tries = 0
    for i in order:
        if len(corridors) >= n or tries > 60 * n:
            break
        tries += 1
        path = _descend(dem, slope, int(rr[i]), int(cc[i]), margin)
        if path is None:
            continue
        er, ec = path[-1]
        if taken[er, ec]:
            continue
        taken[max(er - rad, 0):er + rad + 1, max(ec - rad, 0):ec + rad + 1] |= \
            disk[max(rad - er, 0):, max(rad - ec, 0):][:h - max(er - rad, 0), :w - max(ec - rad, 0)]
        pr = np.array([p[0] for p in path], dtype=np.int32)
        pc = np.array([p[1] for p in path], dtype=np.int32)
        massif = terrain.names[int(terrain.massif[er, ec])]
        width = float(rng.uniform(*CORRIDOR_WIDTH_M))
        xs = t.c + (pc + 0.5) * t.a
        ys = t.f + (pr + 0.5) * t.e
        poly = LineString(np.column_stack([xs, ys])).buffer(width / 2.0, cap_style="round")
        code = _massif_code(massif)
        counters[code] = counters.get(code, 0) + 1
        path_id = f"{code}-{counters[code]:04d}"
        corridors.append(Corridor(path_id, massif, True, pr, pc, width, poly))
    if corridors:
        n_unmon = round((1.0 - monitored_fraction) * len(corridors))
        for j in rng.choice(len(corridors), size=n_unmon, replace=False):
            corridors[int(j)].monitored = False
    return corridors


def deposit_footprint(corridor: Corridor, area_m2: float, pixel_m: float, rng: np.random.Generator,
                      shape: tuple[int, int]) -> Footprint:
    """Elongated soft-edged blob of ``area_m2`` along the low end of the corridor path."""
    n_px = max(area_m2 / pixel_m**2, 1.0)
    elong = rng.uniform(1.8, 3.5)                       # length / width
    width = max(np.sqrt(n_px / elong), 1.0)             # pixels
    length = n_px / width
    # tail of the path (from the end upwards) of about ``length`` pixels, extended past the end a bit
    rows = corridor.rows.astype(np.float64)
    cols = corridor.cols.astype(np.float64)
    seg = np.hypot(np.diff(rows), np.diff(cols))
    cum = np.concatenate([[0.0], np.cumsum(seg[::-1])])[::-1]   # distance to the end along the path
    keep = cum <= max(length - width, 0.0)
    tr, tc = rows[keep], cols[keep]
    if len(tr) == 0:
        tr, tc = rows[-1:], cols[-1:]
    rad = width / 2.0
    pad = int(np.ceil(rad + 3))
    r0, r1 = int(tr.min()) - pad, int(tr.max()) + pad + 1
    c0, c1 = int(tc.min()) - pad, int(tc.max()) + pad + 1
    gy, gx = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    dist = np.full(gy.shape, np.inf)
    for y, x in zip(tr, tc, strict=False):
        dist = np.minimum(dist, np.hypot(gy - y, gx - x))
    wts = np.clip(rad + 0.5 - dist, 0.0, 1.0)
    # rough texture: blocks and snowballs; static per event
    wts *= np.clip(rng.gamma(4.0, 0.25, size=wts.shape), 0.3, 2.0)
    # a deposit smaller than one pixel fills only part of it: its contrast is diluted accordingly
    wts *= min(area_m2 / pixel_m**2, 1.0)
    # clip to the grid
    h, w = shape
    a, b = max(r0, 0), max(c0, 0)
    wts = wts[a - r0:min(r1, h) - r0, b - c0:min(c1, w) - c0]
    return Footprint(a, b, wts.astype(np.float32))
