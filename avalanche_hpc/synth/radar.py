"""Sentinel-1 imaging geometry and radiometry of the synthetic scenes.

Geometry (per orbit, static): the radar is right-looking; it looks towards the azimuth
``OrbitConfig.look_azimuth_deg`` (descending ~280, west; ascending ~80, east) at the orbit's
incidence angle ``theta``. With the unit surface normal ``n`` and the unit vector ``s`` from the
ground to the sensor, the local incidence angle is ``acos(n . s)``.

- Layover: along a line in the look direction, the slant range ``x tan(theta) - z`` (x: horizontal
  distance away from the sensor) must grow; pixels where it does not (a nearer point has a larger
  range, or a farther point a smaller one) are in layover: steep slopes facing the sensor.
- Shadow: the ray towards the sensor descends ``cot(theta)`` metres per metre; a pixel is shadowed
  when ``z + x cot(theta)`` is exceeded by a nearer point: steep slopes facing away.

Both are running maxima/minima along the look direction, swept column by column (the look
azimuth is within 45 degrees of east or west) with linear interpolation between rows.

Radiometry: ``sigma0_dB = ground + 10 n log10(cos(local) / cos(theta)) + texture + snow + debris``,
layover adds ``layover_gain_db``; then the noise floor (NESZ) is added in linear power and the
result is multiplied by gamma speckle of shape ENL and mean 1. Shadow pixels see only the noise.

Foreshortening: a slope facing the sensor squeezes ``1 / v`` ground pixels into one slant-range
cell, ``v = sin(local) / sin(theta)``; a deposit there is mixed with its surroundings, so its
contrast is scaled by ``max(v, min_visibility)`` (capped at 1). This is why deposits on
sensor-facing slopes (east-facing for the descending orbit, as in the paper's misses) are harder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avalanche_hpc.synth.fields import rng_for, smooth_field
from avalanche_hpc.synth.presets import Physics
from avalanche_hpc.synth.terrain import Terrain

__all__ = ["MASK_LAYOVER", "MASK_SHADOW", "MASK_VALID", "OrbitGeometry", "observe", "observe_linear", "orbit_geometry", "speckle"]

MASK_VALID, MASK_LAYOVER, MASK_SHADOW = 0, 1, 2


@dataclass
class OrbitGeometry:
    look_azimuth_deg: float
    incidence_deg: float
    cos_local: np.ndarray       # float32, cos(local incidence angle); <= 0 facing away beyond grazing
    mask: np.ndarray            # uint8 0 valid / 1 layover / 2 shadow / 3 both
    visibility: np.ndarray      # float32 0..1, contrast kept by foreshortening
    base_vv_db: np.ndarray      # float32, snow-free dB without snow, texture included
    base_vh_db: np.ndarray


def _sweep_running(values: np.ndarray, look_az: float, reverse: bool, op) -> np.ndarray:
    """Running ``op`` (np.maximum / np.minimum) of ``values`` along the look direction.

    Not reversed: from the near side (sensor) to the far side; reversed: far to near.
    """
    h, w = values.shape
    dx = np.sin(np.radians(look_az))          # east component of the look direction
    dy = np.cos(np.radians(look_az))          # north component
    step_c = 1 if dx > 0 else -1              # columns walked when moving away from the sensor
    drow = -dy / abs(dx)                      # rows moved per column step away from the sensor
    if reverse:
        step_c, drow = -step_c, -drow
    cols = range(0, w) if step_c > 0 else range(w - 1, -1, -1)
    out = np.empty_like(values)
    rows = np.arange(h, dtype=np.float64)
    prev = None
    for c in cols:
        cur = values[:, c]
        if prev is None:
            out[:, c] = cur
        else:
            # the previous value along the ray through (r, c) sits at row r - drow in the previous column
            src = rows - drow
            carried = np.interp(src, rows, prev, left=-np.inf if op is np.maximum else np.inf,
                                right=-np.inf if op is np.maximum else np.inf)
            out[:, c] = op(cur, carried)
        prev = out[:, c]
    return out


def orbit_geometry(terrain: Terrain, look_azimuth_deg: float, incidence_deg: float, phys: Physics,
                   seed: int) -> OrbitGeometry:
    """Static geometry and snow-free radiometry of one orbit over the terrain."""
    dem = terrain.dem.astype(np.float64)
    px = terrain.pixel_m
    d_row, d_col = np.gradient(dem)
    gx, gy = d_col / px, -d_row / px                     # dz/d(east), dz/d(north)
    norm = np.sqrt(gx**2 + gy**2 + 1.0)
    th = np.radians(incidence_deg)
    az = np.radians(look_azimuth_deg)
    # unit vector from the ground to the sensor: opposite of the horizontal look direction, and up
    sx, sy, sz = -np.sin(th) * np.sin(az), -np.sin(th) * np.cos(az), np.cos(th)
    cos_local = (-gx * sx - gy * sy + sz) / norm
    # horizontal distance away from the sensor, along the look direction (m)
    h, w = dem.shape
    yy, xx = np.mgrid[0:h, 0:w]
    x_look = (xx * px) * np.sin(az) + (-yy * px) * np.cos(az)
    rng_coord = x_look * np.tan(th) - dem                  # proportional to slant range
    lay = (_sweep_running(rng_coord, look_azimuth_deg, False, np.maximum) > rng_coord + 1e-6) | \
          (_sweep_running(rng_coord, look_azimuth_deg, True, np.minimum) < rng_coord - 1e-6)
    ray = dem + x_look / np.tan(th)
    shadow = _sweep_running(ray, look_azimuth_deg, False, np.maximum) > ray + 1e-6
    mask = (lay.astype(np.uint8) * MASK_LAYOVER) | (shadow.astype(np.uint8) * MASK_SHADOW)
    sin_local = np.sqrt(np.clip(1.0 - cos_local**2, 0.0, 1.0))
    vis = np.clip(sin_local / np.sin(th), phys.min_visibility, 1.0) if phys.foreshortening else np.ones_like(dem)
    rng = rng_for(seed, "texture")
    tex = phys.texture_db * (0.7 * smooth_field(rng, (h, w), 6.0) + 0.3 * smooth_field(rng, (h, w), 25.0))
    inc_db = 10.0 * phys.incidence_exponent * np.log10(np.clip(cos_local, 0.05, 1.0) / np.cos(th))
    inc_db = np.where(lay, phys.layover_gain_db, inc_db)
    base_vv = phys.vv_ground_db + inc_db + tex
    base_vh = phys.vh_ground_db + 0.8 * inc_db + 1.2 * tex
    shadow_db = -60.0
    base_vv = np.where(shadow, shadow_db, base_vv)
    base_vh = np.where(shadow, shadow_db, base_vh)
    return OrbitGeometry(look_azimuth_deg, incidence_deg, cos_local.astype(np.float32), mask,
                         vis.astype(np.float32), base_vv.astype(np.float32), base_vh.astype(np.float32))


def speckle(rng: np.random.Generator, shape: tuple[int, int], enl: float) -> np.ndarray:
    """Multiplicative gamma speckle, mean 1, shape ``enl`` (float32)."""
    return rng.standard_gamma(enl, size=shape, dtype=np.float32) / np.float32(enl)


def observe(db: np.ndarray, nesz_db: float, rng: np.random.Generator, enl: float) -> np.ndarray:
    """Linear sigma0 (float32): signal plus noise floor, times speckle."""
    lin = np.power(np.float32(10.0), db / np.float32(10.0)) + np.float32(10.0 ** (nesz_db / 10.0))
    return (lin * speckle(rng, db.shape, enl)).astype(np.float32)


def observe_linear(lin: np.ndarray, nesz_db: float, rng: np.random.Generator, enl: float) -> np.ndarray:
    """Linear sigma0 (float32): linear signal plus noise floor, times speckle."""
    noisy = lin + np.float32(10.0 ** (nesz_db / 10.0))
    return (noisy * speckle(rng, lin.shape, enl)).astype(np.float32)
