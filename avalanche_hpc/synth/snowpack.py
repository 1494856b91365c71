"""Snowpack time series: dry-snow winter, wet-snow episodes (mostly in spring), refrozen crust, snowfalls.

The weather of the season is a set of daily scalar series (orbit-independent, deterministic for the
seed): the freezing level (m) rises through spring with warm spells on top, and snowfall days
bury debris and reset the crust. Per date, the spatial state follows from the terrain:

- wetness (0..1) = logistic((freezing level + aspect bonus + broad noise - elevation) / 100 m):
  whole slopes turn wet together, south faces and low slopes first;
- crust (0..1): snow that was wet since the last snowfall and has refrozen (raises backscatter);
- dry-snow variability: a broad field of ``Physics.dry_snow_db`` std;
- patchiness: per date, the wet-snow line wanders by ``Physics.wet_patch_m`` metres at a random
  5-20 px scale, so wetting and refreezing come in patches near the line.

The descending pass is at dawn (~05:30 UTC): the surface has refrozen overnight, so it sees less
wet snow and more crust than the ascending pass at dusk (~17:30 UTC).
``SnowState.vv_db/vh_db`` turn the state into dB offsets relative to the dry-snow winter background.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from avalanche_hpc.errors import ArgumentError
from avalanche_hpc.synth.fields import rng_for, smooth_field
from avalanche_hpc.synth.presets import Physics
from avalanche_hpc.synth.terrain import Terrain

__all__ = ["SnowState", "Weather", "level_field", "make_weather", "snow_state"]

WET_TRANSITION_M = 100.0
SOUTH_BONUS_M = 200.0


@dataclass
class Weather:
    start: dt.date
    freezing_m: np.ndarray      # per day, metres
    snowfall_cm: np.ndarray     # per day, cm of new snow
    crust_level_m: np.ndarray   # per day: highest freezing level since the last big snowfall

    def day(self, d: dt.date) -> int:
        i = (d - self.start).days
        if not 0 <= i < len(self.freezing_m):
            raise ArgumentError(f"date {d} outside the simulated season starting {self.start}")
        return i

    def storms(self, min_cm: float = 20.0) -> list[dt.date]:
        return [self.start + dt.timedelta(days=int(i)) for i in np.nonzero(self.snowfall_cm >= min_cm)[0]]

    def warm_days(self, above_m: float = 2000.0) -> list[dt.date]:
        return [self.start + dt.timedelta(days=int(i)) for i in np.nonzero(self.freezing_m >= above_m)[0]]


def make_weather(start: dt.date, end: dt.date, seed: int, top_m: float) -> Weather:
    """Daily freezing level and snowfall from ``start`` to ``end`` (inclusive)."""
    rng = rng_for(seed, "weather")
    n = (end - start).days + 1
    days = np.arange(n)
    # seasonal freezing level: ~ 700 m until mid January, then rising to above the summits by early June
    mid_jan = dt.date(start.year + (1 if start.month >= 7 else 0), 1, 15)
    t = np.clip((days - (mid_jan - start).days) / 140.0, 0.0, 1.0)
    seasonal = 700.0 + (top_m + 300.0 - 700.0) * t**1.6
    fl = seasonal.copy()
    # warm spells: one or two in winter (rain on snow), several in spring
    # (start day, length in days, rise as a fraction of the relief above 700 m)
    spells: list[tuple[int, int, float]] = [(int(rng.integers(30, 80)), int(rng.integers(3, 7)), rng.uniform(0.45, 0.7))]
    if rng.random() < 0.5:
        spells.append((int(rng.integers(60, 100)), int(rng.integers(2, 5)), rng.uniform(0.4, 0.6)))
    d0 = int(rng.integers(95, 115))
    while d0 < n:
        spells.append((d0, int(rng.integers(4, 12)), rng.uniform(0.15, 0.3)))
        d0 += int(rng.integers(12, 24))
    for s0, length, frac in spells:
        sl = slice(int(s0), min(int(s0 + length), n))
        fl[sl] = np.maximum(fl[sl], seasonal[sl] + frac * (top_m - 700.0) + rng.uniform(-100, 100))
    fl += rng.normal(0.0, 80.0, n)
    # snowfall: storms every ~10 days, heavier in mid-winter
    snow = np.zeros(n)
    i = int(rng.integers(0, 6))
    while i < n:
        snow[i] = rng.gamma(2.0, 15.0) * (1.3 if 20 <= i <= 110 else 0.7)
        i += int(rng.integers(5, 16))
    crust = np.empty(n)
    level = fl[0]
    for k in range(n):
        if snow[k] >= 20.0:
            level = fl[k]
        level = max(level, fl[k])
        crust[k] = level
    return Weather(start, fl.astype(np.float32), snow.astype(np.float32), crust.astype(np.float32))


@dataclass
class SnowState:
    wetness: np.ndarray   # 0..1 float32
    crust: np.ndarray     # 0..1 float32
    dry_db: np.ndarray    # dB, broad dry-snow variability

    @property
    def wet_fraction(self) -> float:
        return float(self.wetness.mean())

    def vv_db(self, phys: Physics) -> np.ndarray:
        return (-phys.wet_drop_db * self.wetness + phys.crust_gain_db * self.crust + self.dry_db).astype(np.float32)

    def vh_db(self, phys: Physics) -> np.ndarray:
        return (-phys.wet_drop_db * phys.wet_vh_ratio * self.wetness + 0.8 * phys.crust_gain_db * self.crust
                + 0.8 * self.dry_db).astype(np.float32)


def level_field(terrain: Terrain, seed: int) -> np.ndarray:
    """Static offset (m) of the wet-snow line: south faces and a broad random pattern."""
    rng = rng_for(seed, "snowline")
    south = np.cos(np.radians(terrain.aspect - 180.0)) * np.clip(terrain.slope / 30.0, 0, 1)
    return (SOUTH_BONUS_M * south + 120.0 * smooth_field(rng, terrain.shape, 80.0)).astype(np.float32)


def snow_state(terrain: Terrain, weather: Weather, d: dt.date, phys: Physics, seed: int,
               level: np.ndarray | None = None, morning: bool = False) -> SnowState:
    """Snow state of one date; ``morning`` (descending pass, ~05:30 UTC): the surface has refrozen
    overnight up to ``phys.morning_refreeze_m`` below the day's freezing level (it shows as crust)."""
    if level is None:
        level = level_field(terrain, seed)
    i = weather.day(d)
    rng = rng_for(seed, "drysnow", d.toordinal())
    z = terrain.dem
    fl = weather.freezing_m[i] - (phys.morning_refreeze_m if morning else 0.0)
    # patchy wetting and refreezing (5-20 px): the wet-snow line of this date wanders by wet_patch_m
    prng = rng_for(seed, "wetpatch", d.toordinal())
    patch = phys.wet_patch_m * smooth_field(prng, terrain.shape, float(prng.uniform(*phys.wet_patch_px)))
    wet = 1.0 / (1.0 + np.exp(-(fl + level + patch - z) / WET_TRANSITION_M))
    was = 1.0 / (1.0 + np.exp(-(weather.crust_level_m[i] + level + patch - z) / WET_TRANSITION_M))
    crust = np.clip(was - wet, 0.0, 1.0)
    dry = phys.dry_snow_db * smooth_field(rng, terrain.shape, 60.0)
    return SnowState(wet.astype(np.float32), crust.astype(np.float32), dry.astype(np.float32))
