"""Presets of the synthetic season: sizes (``Preset``) and physics knobs (``Physics``).

Every number that shapes the simulated radar signal lives in ``Physics`` with its unit, so tests
and experiments can read (or change) exactly what the generator applied.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from avalanche_hpc.errors import ConfigError
from avalanche_hpc.synth.calendar import acquisition_dates

__all__ = ["PRESETS", "OrbitSpec", "Physics", "Preset", "get_preset", "parse_season_range"]


@dataclass(frozen=True)
class Physics:
    """Radiometry of the synthetic scenes (dB values are 10*log10 of linear sigma0 power)."""

    # -- background (snow-free ground at the reference incidence angle) --
    vv_ground_db: float = -10.0          # dB, VV sigma0 of flat terrain at the orbit's incidence
    vh_ground_db: float = -17.0          # dB, VH sigma0 of flat terrain
    incidence_exponent: float = 2.0      # sigma0 ~ cos(local incidence)**n / cos(incidence)**n
    texture_db: float = 1.5              # dB, std of the static land-cover texture (rock, forest...)
    summer_change_db: float = 1.2        # dB, std of the broad summer-vs-winter difference (soil, vegetation)
    summer_offset_db: float = -0.6       # dB, mean dry-snow-winter minus summer offset is -this
    layover_gain_db: float = 6.0         # dB, brightness added in layover
    nesz_vv_db: float = -24.0            # dB, noise-equivalent sigma0 (additive noise floor), VV
    nesz_vh_db: float = -28.0            # dB, noise floor, VH
    # -- speckle and clutter (sources and reasoning: docs/simulator.md) --
    enl_raw: float = 4.4                 # looks of the raw IW GRDH speckle (S1 product specification)
    speckle_filter: str = "refined_lee"  # the SNAP graph's filter (7x7 Refined Lee); "none" to skip it
    texture_nu: float = 3.0              # shape of the static gamma (K-distribution) texture; smaller = heavier tails
    bright_per_km2: float = 1.0          # transient bright scatterers per km2 and date
    bright_db: tuple[float, float] = (5.0, 15.0)   # dB, their rise over the background
    misreg_px: tuple[float, float] = (0.1, 1.0)    # pixels, per-date shift of the whole scene
    wet_patch_m: float = 150.0           # m, amplitude of the patchy wet-snow line (5-20 px scales)
    wet_patch_px: tuple[float, float] = (5.0, 20.0)
    wind_db: float = 2.5                 # dB per unit of field excess of wind-scoured/drifted patches
    wind_patch_px: tuple[float, float] = (5.0, 20.0)
    pistes_per_km2: float = 0.15         # static ski pistes / roads whose brightness changes every date
    piste_change_db: float = 1.5         # dB, std of a piste's per-date change
    tracks_per_km2: float = 0.3          # new tracks (skin, snowmobile) per km2 and date
    track_db: float = 1.5                # dB, rise along a fresh track
    # -- snowpack --
    dry_snow_db: float = 0.6             # dB, std of broad date-to-date dry-snow variability
    wet_drop_db: float = 5.0             # dB, VV drop of fully wet snow (VH drops wet_drop_db * wet_vh_ratio)
    wet_vh_ratio: float = 1.1
    crust_gain_db: float = 2.0           # dB, rise of refrozen (crusted) snow after a wet episode
    morning_refreeze_m: float = 400.0    # m, the dawn (descending) pass sees the freezing level this much lower
    # -- debris --
    debris_db: float = 5.0               # dB, VV rise over a large deposit on the first date after the event
    debris_vh_ratio: float = 1.25        # VH rise = debris_db * this (rough surfaces raise cross-pol more)
    debris_small_m2: float = 2000.0      # m2, deposits this small rise by small_fraction * debris_db (Leinss 2020 S1 cut-off)
    debris_full_m2: float = 25000.0      # m2, deposits at least this large rise by the full debris_db
    small_fraction: float = 0.3
    fade_days: float = 25.0              # days, e-folding time of the debris signal
    burial_factor: float = 0.5           # signal kept after a snowfall buries the deposit
    debris_min_db: float = 0.15          # dB, debris weaker than this is not drawn
    foreshortening: bool = True          # deposits on slopes facing the sensor are compressed (weaker)
    min_visibility: float = 0.3          # lower bound of the foreshortening visibility factor


@dataclass(frozen=True)
class OrbitSpec:
    id: str
    direction: str
    relative_orbit: int
    first_date: dt.date
    units: str = "linear"           # units of the written scenes ("linear" or "dB")
    nodata_cols: int = 0            # columns of no data on the far edge (swath border)
    incidence_deg: float = 39.0     # mid-swath incidence angle over the study (study.toml's default)
    heading_deg: float | None = None  # satellite heading; None: 350 ascending / 190 descending (study.toml)
    pass_hour_utc: float | None = None  # time of the pass; None: 05:30 descending (dawn) / 17:20 ascending (dusk)

    @property
    def dawn(self) -> bool:
        """A morning pass: the surface has refrozen overnight (``snowpack.snow_state(morning=True)``)."""
        hour = self.pass_hour_utc if self.pass_hour_utc is not None else (5.5 if self.direction == "descending"
                                                                          else 17.33)
        return hour < 12.0


@dataclass(frozen=True)
class Preset:
    name: str
    shape: tuple[int, int]             # rows, cols of the DEM grid
    pixel_m: float
    massifs: tuple[str, ...]
    n_corridors: int
    orbits: tuple[OrbitSpec, ...]
    n_dates: int                       # winter dates per orbit
    repeat_days: int                   # days between two acquisitions of one orbit
    events_per_corridor: float         # mean avalanches per corridor and season
    monitored_fraction: float = 0.85
    recorded_fraction: float = 0.85    # events of monitored corridors present in the inventory
    season_id: str = "2017-2018"
    season_start: dt.date = dt.date(2017, 11, 15)
    season_end: dt.date = dt.date(2018, 6, 15)
    summer_dates: tuple[dt.date, ...] = (dt.date(2017, 8, 10), dt.date(2017, 8, 22))
    epsg: int = 32632
    origin: tuple[float, float] = (300000.0, 5030000.0)   # upper-left corner (x, y), metres, EPSG:32632
    physics: Physics = field(default_factory=Physics)
    # -- several seasons (empty: the single season above, with n_dates every repeat_days) --
    # Season ids "YYYY-YYYY"; each season's winter dates follow the constellation calendar
    # (synth/calendar.py, anchored at each orbit's first_date) inside ``window``, its summer
    # references are the first ``n_summer`` passes from 1 August of its first year.
    seasons: tuple[str, ...] = ()
    window: tuple[tuple[int, int], tuple[int, int]] = ((12, 1), (4, 30))  # (month, day) in year 1, in year 2
    n_summer: int = 2
    # set by season_presets() on the single-season presets it derives (None/"": use the fields above)
    orbit_dates: tuple[tuple[dt.date, ...], ...] | None = None   # winter dates per orbit
    orbit_summer: tuple[tuple[dt.date, ...], ...] | None = None  # summer references per orbit
    season_key: str = ""  # extra key of the season's random streams (weather, events, inventory)

    def with_physics(self, **changes) -> Preset:
        return replace(self, physics=replace(self.physics, **changes))

    def with_seasons(self, seasons: str | tuple[str, ...]) -> Preset:
        """This preset over other seasons: ``"2015-2016:2024-2025"`` (a range) or a tuple of ids."""
        ids = parse_season_range(seasons) if isinstance(seasons, str) else tuple(seasons)
        for sid in ids:
            _season_years(sid)
        return replace(self, seasons=ids)

    def season_presets(self) -> list[Preset]:
        """One single-season preset per season (``[self]`` for a single-season preset)."""
        if not self.seasons:
            return [self]
        out = []
        for sid in self.seasons:
            y0, y1 = _season_years(sid)
            (m0, d0), (m1, d1) = self.window
            start, end = dt.date(y0, m0, d0), dt.date(y1, m1, d1)
            winter = tuple(tuple(acquisition_dates(o.first_date, start, end)) for o in self.orbits)
            summer = tuple(tuple(acquisition_dates(o.first_date, dt.date(y0, 8, 1), dt.date(y0, 9, 30))[:self.n_summer])
                           for o in self.orbits)
            out.append(replace(self, seasons=(), season_id=sid, season_start=start, season_end=end,
                               orbit_dates=winter, orbit_summer=summer, n_dates=max(len(w) for w in winter),
                               season_key=sid))
        return out


def _season_years(sid: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in sid.split("-"))
        ok = len(sid) == 9 and b == a + 1 and 2014 <= a <= 2100
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"season {sid!r}: write a winter as 'YYYY-YYYY' with consecutive years, "
                          f"e.g. '2017-2018' (Sentinel-1 data start in October 2014)")
    return a, b


def parse_season_range(text: str) -> tuple[str, ...]:
    """``"2015-2016:2017-2018"`` -> the three seasons; ``"2017-2018"`` -> one; ``"a,b"`` -> a list."""
    text = text.strip()
    if "," in text:
        ids = tuple(t.strip() for t in text.split(",") if t.strip())
        for sid in ids:
            _season_years(sid)
        return ids
    first, _, last = text.partition(":")
    a = _season_years(first.strip())[0]
    b = _season_years((last or first).strip())[0]
    if b < a:
        raise ConfigError(f"season range {text!r}: the last season is before the first -> write FIRST:LAST")
    return tuple(f"{y}-{y + 1}" for y in range(a, b + 1))


_D = OrbitSpec("D139", "descending", 139, dt.date(2017, 12, 3))
_A = OrbitSpec("A161", "ascending", 161, dt.date(2017, 12, 5), units="dB", nodata_cols=6)

# The four relative orbits that see the paper's zone (Haute-Maurienne; the paper names "4 relevant
# ascending/descending orbits"): D066, D139 (the paper's), A088, A161. Dates follow the Sentinel-1
# cycle (175 relative orbits in 12 days, one satellite; 6 days with S1A + S1B, as in the 2017-2018
# season): orbit n + k passes k x 12/175 days after orbit n, so D139 = D066 + 5.0 d, A088 = D066 + 1.5 d
# (dawn -> dusk of the next day), A161 = D139 + 1.5 d. Modulo 6 days: D139 on day 0 (dawn), D066 and
# A161 on day 1 (dawn, dusk), A088 on day 2 (dusk). Passes: descending near dawn (~05:30 UTC),
# ascending near dusk (~17:20 UTC) (literature.md). Incidence angles are a choice, not sourced: two
# adjacent tracks of one direction overlap over the zone, one sees it at near range and the other at
# far range of the IW swath (29-46 deg), so each direction has a steep (~34 deg) and a shallow (~42 deg)
# view. Headings: the default 190 / 350 deg (both tracks of a direction are parallel).
_Q = (
    OrbitSpec("D139", "descending", 139, dt.date(2017, 12, 3), incidence_deg=41.5, pass_hour_utc=5.65),
    OrbitSpec("D066", "descending", 66, dt.date(2017, 12, 4), incidence_deg=34.0, pass_hour_utc=5.5,
              units="dB", nodata_cols=4),
    OrbitSpec("A161", "ascending", 161, dt.date(2017, 12, 4), incidence_deg=35.0, pass_hour_utc=17.35,
              units="dB", nodata_cols=6),
    OrbitSpec("A088", "ascending", 88, dt.date(2017, 12, 5), incidence_deg=42.5, pass_hour_utc=17.2),
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", shape=(192, 192), pixel_m=20.0, massifs=("Haute-Maurienne", "Vanoise"),
        n_corridors=20, orbits=(_D, _A), n_dates=6, repeat_days=30, events_per_corridor=1.2,
        summer_dates=(dt.date(2017, 8, 10),),
    ),
    "demo": Preset(
        name="demo", shape=(1024, 1024), pixel_m=20.0,
        massifs=("Haute-Maurienne", "Vanoise", "Maurienne", "Oisans"),
        n_corridors=360, orbits=(_D, _A), n_dates=14, repeat_days=12, events_per_corridor=1.1,
    ),
    # four orbits (two ascending, two descending) at the 6-day repeat of the 2017-2018 season: orbit fusion
    "tiny4": Preset(
        name="tiny4", shape=(192, 192), pixel_m=20.0, massifs=("Haute-Maurienne", "Vanoise"),
        n_corridors=20, orbits=_Q, n_dates=5, repeat_days=6, events_per_corridor=1.2,
        summer_dates=(dt.date(2017, 8, 10),),
    ),
    # sized like the demo's patch count (4 orbits x 21 windows x 150 corridors ~ 2 x 13 x 360)
    "demo4": Preset(
        name="demo4", shape=(640, 640), pixel_m=20.0, massifs=("Haute-Maurienne", "Vanoise", "Maurienne"),
        n_corridors=150, orbits=_Q, n_dates=22, repeat_days=6, events_per_corridor=1.1,
    ),
    "alps": Preset(
        name="alps", shape=(3200, 3200), pixel_m=20.0,
        massifs=("Haute-Maurienne", "Vanoise", "Maurienne", "Haute-Tarentaise", "Beaufortain", "Mont-Blanc",
                 "Aravis", "Chablais", "Bauges", "Chartreuse", "Belledonne", "Grandes-Rousses", "Vercors",
                 "Oisans", "Thabor", "Pelvoux", "Queyras", "Devoluy"),
        n_corridors=3000, orbits=(_D, _A), n_dates=32, repeat_days=6, events_per_corridor=1.0,
    ),
    # several seasons (the constellation calendar decides the dates): tests and the campaign demo.
    # 2015-2016 has one satellite (12-day repeat), the next two have two (6 days); a short window
    # (10 Dec - 20 Jan) keeps it to 28 preprocess tasks.
    "tiny3": Preset(
        name="tiny3", shape=(192, 192), pixel_m=20.0, massifs=("Haute-Maurienne", "Vanoise"),
        n_corridors=20, orbits=(_D, _A), n_dates=0, repeat_days=6, events_per_corridor=1.2,
        seasons=("2015-2016", "2016-2017", "2017-2018"), window=((12, 10), (1, 20)), n_summer=1,
    ),
    # ten winters since 2015 over the whole snow season (1 Dec - 30 Apr) on a small grid (benchmarks)
    "campaign10": Preset(
        name="campaign10", shape=(160, 160), pixel_m=20.0, massifs=("Haute-Maurienne", "Vanoise"),
        n_corridors=16, orbits=(_D, _A), n_dates=0, repeat_days=6, events_per_corridor=2.0,
        seasons=tuple(f"{y}-{y + 1}" for y in range(2015, 2025)), n_summer=1,
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown synthetic preset {name!r} -> choose one of {sorted(PRESETS)}") from None
