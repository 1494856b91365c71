"""Avalanche debris in the radar signal: a rough deposit raises backscatter, then fades.

On the first acquisition after the event the deposit raises VV by ``gain_db`` (dB) and VH by
``gain_db * debris_vh_ratio`` (roughness raises cross-pol more), where

    gain_db = debris_db * size_factor(area)

``size_factor`` grows log-linearly from ``small_fraction`` at ``debris_small_m2`` to 1 at
``debris_full_m2``. The signal then decays as ``exp(-age_days / fade_days)`` and is multiplied
by ``burial_factor`` for every snowfall of 20 cm or more since the event; below ``debris_min_db``
the deposit is no longer drawn. Per orbit, the contrast is further scaled by the foreshortening
visibility of the deposit's pixels (``radar.OrbitGeometry.visibility``).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from avalanche_hpc.synth.presets import Physics
from avalanche_hpc.synth.snowpack import Weather

__all__ = ["add_debris", "aged_gain_db", "gain_db", "size_factor"]


def size_factor(area_m2: float | np.ndarray, phys: Physics) -> np.ndarray:
    a = np.clip(np.asarray(area_m2, dtype=np.float64), phys.debris_small_m2, phys.debris_full_m2)
    t = np.log(a / phys.debris_small_m2) / np.log(phys.debris_full_m2 / phys.debris_small_m2)
    return phys.small_fraction + (1.0 - phys.small_fraction) * t


def gain_db(area_m2: float | np.ndarray, phys: Physics) -> np.ndarray:
    """VV rise (dB) of a fresh deposit of this area, before foreshortening."""
    return phys.debris_db * size_factor(area_m2, phys)


def aged_gain_db(fresh_db: float, event_date: dt.date, d: dt.date, weather: Weather, phys: Physics) -> float:
    """VV rise (dB) on date ``d`` of a deposit laid down on ``event_date`` (0 before the event)."""
    if d < event_date:
        return 0.0
    age = (d - event_date).days
    i0, i1 = weather.day(event_date), weather.day(d)
    burials = int(np.count_nonzero(weather.snowfall_cm[i0 + 1:i1 + 1] >= 20.0))
    g = fresh_db * np.exp(-age / phys.fade_days) * phys.burial_factor ** burials
    return float(g) if g >= phys.debris_min_db else 0.0


def add_debris(vv_db: np.ndarray, vh_db: np.ndarray, r0: int, c0: int, weights: np.ndarray, g_db: float,
               visibility: np.ndarray, phys: Physics) -> None:
    """Add a deposit (in place) with VV gain ``g_db`` scaled by the per-pixel weights and visibility."""
    h, w = weights.shape
    vis = visibility[r0:r0 + h, c0:c0 + w]
    add = (g_db * weights * vis).astype(np.float32)
    vv_db[r0:r0 + h, c0:c0 + w] += add
    vh_db[r0:r0 + h, c0:c0 + w] += add * np.float32(phys.debris_vh_ratio)
