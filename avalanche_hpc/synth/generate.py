"""``generate_study``: write a complete synthetic study (the study contract plus ``truth.csv``).

Order of work (each file written atomically; scenes date by date, so memory does not grow with the
number of dates):

1. terrain, corridors, weather, events, inventory (all small, deterministic for the seed);
2. ``study.toml``, ``dem.tif``, ``corridors.gpkg``, ``inventory.csv``;
3. per orbit, per date (summer references first): ``scenes/{orbit}/{YYYYMMDD}/VV.tif, VH.tif,
   layover_shadow.tif``; a date whose three files exist is skipped when resuming;
4. ``truth.csv`` and ``truth_conditions.csv`` last, so their presence marks a complete study.

``.synth.json`` records the preset, seed and generator version at the start: re-running the same
generation on a half-written study finishes it; anything else needs ``overwrite=True``.
Random numbers for one (orbit, date) come from ``rng_for(seed, orbit, date)``, so any date can
be regenerated alone, byte-identically.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from avalanche_hpc.atomic import atomic_path, write_json
from avalanche_hpc.errors import AvalancheError, ConfigError
from avalanche_hpc.progress import progress_bar
from avalanche_hpc.study import LAYOVER_SHADOW, OrbitConfig, SeasonConfig, Study, StudyConfig
from avalanche_hpc.synth import clutter, debris, radar
from avalanche_hpc.synth.corridors import Corridor, Footprint, deposit_footprint, make_corridors
from avalanche_hpc.synth.fields import rng_for, smooth_field
from avalanche_hpc.synth.inventory import make_events, make_inventory
from avalanche_hpc.synth.presets import Preset, get_preset
from avalanche_hpc.synth.snowpack import Weather, level_field, make_weather, snow_state
from avalanche_hpc.synth.terrain import Terrain, make_terrain

log = logging.getLogger(__name__)

__all__ = ["GENERATOR_VERSION", "SynthWorld", "build_world", "generate_study", "generation_is_complete", "winter_dates"]

GENERATOR_VERSION = 2
MARKER = ".synth.json"
NODATA = {"linear": 0.0, "dB": -9999.0}
_OWNED_FILES = ("study.toml", "dem.tif", "corridors.gpkg", "inventory.csv", "truth.csv", "truth_conditions.csv",
                MARKER)
_OWNED_DIRS = ("scenes", "work", "runs", "reports")


def winter_dates(preset: Preset, orbit_index: int) -> list[dt.date]:
    if preset.orbit_dates is not None:  # a season of a multi-season preset: the constellation calendar
        return list(preset.orbit_dates[orbit_index])
    o = preset.orbits[orbit_index]
    return [o.first_date + dt.timedelta(days=preset.repeat_days * k) for k in range(preset.n_dates)]


def summer_dates(preset: Preset, orbit_index: int) -> list[dt.date]:
    if preset.orbit_summer is not None:
        return list(preset.orbit_summer[orbit_index])
    return [d + dt.timedelta(days=2 * orbit_index) for d in preset.summer_dates]


def _season_seed(seed: int, preset: Preset) -> int:
    """Seed of a season's weather, events and inventory (the seed itself for single-season presets)."""
    if not preset.season_key:
        return seed
    return int(rng_for(seed, "season", preset.season_key).integers(0, 2**31 - 1))


class SynthWorld:
    """Everything static of one generation: terrain, corridors, weather, events, footprints."""

    def __init__(self, preset: Preset, seed: int, terrain: Terrain, corridors: list[Corridor], weather: Weather,
                 events: pd.DataFrame, inventory: pd.DataFrame, footprints: list[Footprint]):
        self.preset, self.seed = preset, seed
        self.terrain, self.corridors, self.weather = terrain, corridors, weather
        self.events, self.inventory, self.footprints = events, inventory, footprints
        self.fresh_gain_db = debris.gain_db(events["deposit_area_m2"].to_numpy(), preset.physics) \
            if len(events) else np.zeros(0)
        self._level = level_field(terrain, seed)
        self._texture: np.ndarray | None = None
        phys, h, w = preset.physics, *terrain.shape
        area_km2 = h * w * (preset.pixel_m / 1000.0) ** 2
        prng = rng_for(seed, "pistes")
        self.pistes = clutter.make_linear_features(prng, terrain.shape, int(prng.poisson(phys.pistes_per_km2 * area_km2)),
                                                   (40.0, 150.0), 2.0)
        self.area_km2 = area_km2

    def texture_db(self) -> np.ndarray:
        """Static heavy-tailed (K) texture, dB (ground-fixed: the same for every orbit and date)."""
        if self._texture is None:
            self._texture = clutter.k_texture_db(rng_for(self.seed, "ktexture"), self.terrain.shape,
                                                 self.preset.physics.texture_nu)
        return self._texture

    def orbit_config(self, i: int) -> OrbitConfig:
        o = self.preset.orbits[i]
        return OrbitConfig(id=o.id, direction=o.direction, relative_orbit=o.relative_orbit,
                           incidence_deg=o.incidence_deg, heading_deg=o.heading_deg)

    def snow(self, d: dt.date, orbit_index: int):
        morning = self.preset.orbits[orbit_index].dawn  # dawn pass (descending); dusk pass (ascending)
        return snow_state(self.terrain, self.weather, d, self.preset.physics, self.seed, self._level, morning)


def build_world(preset: Preset, seed: int, terrain: Terrain | None = None,
                corridors: list[Corridor] | None = None) -> SynthWorld:
    """Terrain, corridors, weather, events and inventory (deterministic, small).

    ``preset`` is one season (``Preset.season_presets()`` gives them for a multi-season preset);
    ``terrain``/``corridors``: the static pieces already built for another season of the study.
    """
    if preset.seasons:
        raise ConfigError(f"preset {preset.name!r} spans {len(preset.seasons)} seasons: build one world per "
                          f"season (Preset.season_presets())")
    if terrain is None:
        terrain = make_terrain(preset.shape, preset.massifs, preset.pixel_m, preset.origin, preset.epsg, seed)
    if corridors is None:
        corridors = make_corridors(terrain, preset.n_corridors, preset.monitored_fraction, seed)
    if not corridors:
        raise ConfigError(f"preset {preset.name!r}: the terrain of seed {seed} holds no corridor; try another seed")
    top = float(np.percentile(terrain.dem, 99.5))
    sseed = _season_seed(seed, preset)
    weather = make_weather(preset.season_start, preset.season_end, sseed, top)
    all_dates = [d for i in range(len(preset.orbits)) for d in winter_dates(preset, i)]
    ends = {c.path_id: float(terrain.dem[c.end]) for c in corridors}
    events = make_events(corridors, weather, min(all_dates), max(all_dates), preset.events_per_corridor, sseed, ends)
    inv, events = make_inventory(events, corridors, preset.recorded_fraction, sseed)
    if preset.season_key:  # event ids unique across the seasons of a study: E2016-00001
        prefix = f"E{preset.season_start.year}-"
        events["event_id"] = [prefix + e[1:] for e in events["event_id"]]
        inv["event_id"] = [prefix + e[1:] for e in inv["event_id"]]
    by_id = {c.path_id: c for c in corridors}
    footprints = []
    for ev in events.itertuples():
        rng = rng_for(seed, "deposit", ev.event_id)
        footprints.append(deposit_footprint(by_id[ev.path_id], ev.deposit_area_m2, preset.pixel_m, rng, terrain.shape))
    inv["runout_altitude_m"] = [round(ends[p], 0) for p in inv["path_id"]]
    return SynthWorld(preset, seed, terrain, corridors, weather, events, inv, footprints)


def _study_config(world: SynthWorld, seasons: list[SynthWorld] | None = None) -> StudyConfig:
    """study.toml of one world (single season) or of the worlds of every season."""
    p = world.preset
    orbits = [world.orbit_config(i) for i in range(len(p.orbits))]
    season_cfgs = [SeasonConfig(
        id=w.preset.season_id, start=w.preset.season_start, end=w.preset.season_end,
        summer={o.id: summer_dates(w.preset, i) for i, o in enumerate(p.orbits)},
        dates={o.id: winter_dates(w.preset, i) for i, o in enumerate(p.orbits)},
    ) for w in (seasons or [world])]
    what = "season" if len(season_cfgs) == 1 else f"{len(season_cfgs)} seasons"
    return StudyConfig(
        name=f"synthetic-{p.name}-seed{world.seed}", crs_epsg=p.epsg, pixel_size_m=p.pixel_m, units="linear",
        massifs=list(p.massifs), focus_massif="Haute-Maurienne" if "Haute-Maurienne" in p.massifs else None,
        orbits=orbits, seasons=season_cfgs,
        description=(f"Synthetic Sentinel-1 {what} (avalanche-hpc synth, preset {p.name}, seed {world.seed}, "
                     f"generator v{GENERATOR_VERSION}); truth in truth.csv"),
    )


def _profile(terrain: Terrain, dtype: str, nodata: float | None) -> dict:
    h, w = terrain.shape
    prof = {"driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": dtype,
            "crs": rasterio.crs.CRS.from_epsg(terrain.epsg), "transform": terrain.transform,
            "tiled": True, "blockxsize": 256, "blockysize": 256}
    if nodata is not None:
        prof["nodata"] = nodata
    return prof


def _write_raster(path: Path, data: np.ndarray, terrain: Terrain, nodata: float | None, tags: dict,
                  compress: str | None = None) -> None:
    prof = _profile(terrain, str(data.dtype), nodata)
    if compress:
        prof["compress"] = compress
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **prof) as dst:
        dst.write(data, 1)
        dst.update_tags(**{k: str(v) for k, v in tags.items()})


def _write_dem(study: Study, terrain: Terrain) -> None:
    _write_raster(study.dem_path, terrain.dem, terrain, -32768.0, {"UNITS": "metres", "CONTENT": "elevation"},
                  compress="deflate")


def _write_corridors(study: Study, world: SynthWorld) -> None:
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(
        {"path_id": [c.path_id for c in world.corridors], "massif": [c.massif for c in world.corridors],
         "monitored": [bool(c.monitored) for c in world.corridors],
         "width_m": [round(c.width_m, 1) for c in world.corridors]},
        geometry=[c.polygon for c in world.corridors], crs=f"EPSG:{world.terrain.epsg}",
    )
    quiet = logging.getLogger("pyogrio")  # its INFO "Created N records" would break the progress bar
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with atomic_path(study.corridors_path) as tmp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*extension should be 'gpkg'")  # the temporary name
            gdf.to_file(tmp, layer="corridors", driver="GPKG", engine="pyogrio")
    finally:
        quiet.setLevel(level)


def _orbit_truth(world: SynthWorld, geom: radar.OrbitGeometry, orbit_id: str) -> dict[str, list[float]]:
    """Per-event columns of one orbit: mean foreshortening visibility and masked share of the deposit."""
    vis, masked = [], []
    for fp in world.footprints:
        h, w = fp.weights.shape
        sl = (slice(fp.r0, fp.r0 + h), slice(fp.c0, fp.c0 + w))
        wts = fp.weights.astype(np.float64)
        vis.append(round(float((geom.visibility[sl] * wts).sum() / wts.sum()), 3))
        masked.append(round(float(((geom.mask[sl] != 0) * wts).sum() / wts.sum()), 3))
    return {f"visibility_{orbit_id}": vis, f"masked_{orbit_id}": masked}


def _truth_table(world: SynthWorld, orbit_columns: list[dict[str, list[float]]]) -> pd.DataFrame:
    t = world.terrain
    massif = {c.path_id: c.massif for c in world.corridors}
    ev = world.events
    rows = []
    for k, (e, fp) in enumerate(zip(ev.itertuples(), world.footprints, strict=False)):
        h, w = fp.weights.shape
        sl = (slice(fp.r0, fp.r0 + h), slice(fp.c0, fp.c0 + w))
        wts = fp.weights.astype(np.float64)
        asp = np.radians(t.aspect[sl])
        aspect = float(np.degrees(np.arctan2((np.sin(asp) * wts).sum(), (np.cos(asp) * wts).sum())) % 360.0)
        row = {
            "event_id": e.event_id, "path_id": e.path_id, "massif": massif[e.path_id], "date": e.date.isoformat(),
            "deposit_area_m2": e.deposit_area_m2, "aspect": round(aspect, 1),
            "slope": round(float((t.slope[sl] * wts).sum() / wts.sum()), 1),
            "elevation_m": round(float((t.dem[sl] * wts).sum() / wts.sum()), 0),
            "recorded": bool(e.recorded), "monitored": bool(e.monitored),
            "date_min": e.date_min.isoformat(), "date_max": e.date_max.isoformat(), "cause": e.cause,
            "fresh_gain_db": round(float(world.fresh_gain_db[k]), 3),
        }
        for cols in orbit_columns:
            row.update({name: values[k] for name, values in cols.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _conditions_row(world: SynthWorld, i: int, d: dt.date, snow=None) -> dict:
    """One row of ``truth_conditions.csv`` (``snow``: the date's ``SnowState`` when already computed)."""
    o = world.preset.orbits[i]
    if d not in winter_dates(world.preset, i):
        return {"orbit": o.id, "date": d.isoformat(), "kind": "summer", "wet_fraction": 0.0, "crust_fraction": 0.0,
                "freezing_level_m": np.nan, "snowfall_cm_since_prev": np.nan}
    s = snow if snow is not None else world.snow(d, i)
    dates = winter_dates(world.preset, i)
    k = world.weather.day(d)
    j = dates.index(d)
    k0 = world.weather.day(dates[j - 1]) + 1 if j else max(k - world.preset.repeat_days + 1, 0)
    return {"orbit": o.id, "date": d.isoformat(), "kind": "winter",
            "wet_fraction": round(s.wet_fraction, 4), "crust_fraction": round(float(s.crust.mean()), 4),
            "freezing_level_m": round(float(world.weather.freezing_m[k]), 0),
            "snowfall_cm_since_prev": round(float(world.weather.snowfall_cm[k0:k + 1].sum()), 1)}


def scene_db(world: SynthWorld, geom: radar.OrbitGeometry, d: dt.date, summer: bool,
             orbit_index: int) -> tuple[np.ndarray, np.ndarray, object]:
    """Noise-free VV and VH sigma0 (dB) of one orbit and date, debris included, and the snow state
    (None in summer)."""
    phys = world.preset.physics
    vv = geom.base_vv_db.copy()
    vh = geom.base_vh_db.copy()
    if summer:
        # snow-free ground and vegetation: broad static differences to the snow-covered winter,
        # plus a little date-to-date soil-moisture variability
        static = rng_for(world.seed, "summer-static")
        change = phys.summer_offset_db + phys.summer_change_db * smooth_field(static, world.terrain.shape, 40.0)
        jitter = 0.3 * smooth_field(rng_for(world.seed, "summer", d.toordinal()), world.terrain.shape, 60.0)
        vv += change + jitter
        vh += 1.2 * change + jitter
        return vv, vh, None
    s = world.snow(d, orbit_index)
    vv += s.vv_db(phys)
    vh += s.vh_db(phys)
    # clutter of the snow surface on this date: wind patches (more after snowfall), pistes, tracks
    k = world.weather.day(d)
    recent_cm = float(world.weather.snowfall_cm[max(k - world.preset.repeat_days + 1, 0):k + 1].sum())
    wind = clutter.wind_patches_db(rng_for(world.seed, "wind", d.toordinal()), world.terrain.shape,
                                   phys.wind_patch_px, phys.wind_db, 0.3 + min(recent_cm / 30.0, 1.0))
    prng = rng_for(world.seed, "piste-change", d.toordinal())
    lines = world.pistes.render_db(prng.normal(0.0, phys.piste_change_db, len(world.pistes.pixels)))
    trng = rng_for(world.seed, "tracks", d.toordinal())
    tracks = clutter.make_linear_features(trng, world.terrain.shape, int(trng.poisson(phys.tracks_per_km2 * world.area_km2)),
                                          (20.0, 100.0), 1.0)
    lines += tracks.render_db(np.full(len(tracks.pixels), phys.track_db))
    vv += wind + lines
    vh += wind + lines
    del wind, lines
    for k, (ev, fp) in enumerate(zip(world.events.itertuples(), world.footprints, strict=False)):
        if ev.date > d:
            continue
        g = debris.aged_gain_db(float(world.fresh_gain_db[k]), ev.date, d, world.weather, phys)
        if g > 0:
            debris.add_debris(vv, vh, fp.r0, fp.c0, fp.weights, g, geom.visibility, phys)
    return vv, vh, s


def observe_scene(world: SynthWorld, vv_db: np.ndarray, vh_db: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free dB scene -> the product the SNAP graph writes (linear sigma0, float32).

    Static K texture and transient bright scatterers (dB), then per-date misregistration of the
    whole scene, the noise floor, raw speckle at ``enl_raw`` and the graph's speckle filter.
    """
    phys = world.preset.physics
    tex = world.texture_db()
    bright = clutter.bright_scatterers_db(rng, world.terrain.shape, phys.bright_per_km2, world.preset.pixel_m,
                                          phys.bright_db)
    shift_seed = int(rng.integers(0, 2**31))
    out = []
    for db, nesz in ((vv_db, phys.nesz_vv_db), (vh_db, phys.nesz_vh_db)):
        lin = np.power(np.float32(10.0), (db + tex + bright) / np.float32(10.0))
        lin = clutter.misregister(lin, np.random.default_rng(shift_seed), phys.misreg_px)  # same shift, VV and VH
        obs = radar.observe_linear(lin, nesz, rng, phys.enl_raw)
        if phys.speckle_filter == "refined_lee":
            obs = clutter.refined_lee(obs)
        elif phys.speckle_filter != "none":
            raise ConfigError(f"unknown speckle_filter {phys.speckle_filter!r} -> 'refined_lee' or 'none'")
        out.append(obs)
    return out[0], out[1]


def _write_scene(study: Study, world: SynthWorld, i: int, geom: radar.OrbitGeometry, d: dt.date,
                 summer: bool) -> dict:
    """Write the three rasters of one orbit and date; returns its ``truth_conditions.csv`` row."""
    p = world.preset
    o = p.orbits[i]
    vv_db, vh_db, snow = scene_db(world, geom, d, summer, i)
    conditions = _conditions_row(world, i, d, snow)
    del snow
    rng = rng_for(world.seed, o.id, d.toordinal())
    vv, vh = observe_scene(world, vv_db, vh_db, rng)
    del vv_db, vh_db
    nodata = NODATA[o.units]
    if o.units == "dB":
        vv = (10.0 * np.log10(vv)).astype(np.float32)
        vh = (10.0 * np.log10(vh)).astype(np.float32)
    mask = geom.mask.copy()
    if o.nodata_cols:
        vv[:, -o.nodata_cols:] = nodata
        vh[:, -o.nodata_cols:] = nodata
    tags = {"UNITS": o.units, "ORBIT": o.id, "DATE": d.isoformat(), "KIND": "summer" if summer else "winter",
            "QUANTITY": "sigma0"}
    for band, arr in (("VV", vv), ("VH", vh)):
        _write_raster(study.scene_path(o.id, d, band), arr, world.terrain, nodata, {**tags, "POLARISATION": band})
    _write_raster(study.scene_path(o.id, d, LAYOVER_SHADOW), mask, world.terrain, None,
                  {"CODES": "0 valid, 1 layover, 2 shadow, 3 both", "ORBIT": o.id})
    return conditions


def _scene_complete(study: Study, orbit: str, d: dt.date) -> bool:
    return all(study.scene_path(orbit, d, b).is_file() for b in ("VV", "VH", LAYOVER_SHADOW))


def _refuse_links(root: Path) -> None:
    """Before ``--overwrite`` deletes anything: refuse when an owned file or folder is a symbolic link.

    Deleting through a link (``work -> /scratch/...``) would remove files outside the study, and
    ``shutil.rmtree`` refuses links only after the files before it are gone: check everything first.
    """
    links = [root / n for n in (*_OWNED_FILES, *_OWNED_DIRS) if (root / n).is_symlink()]
    if links:
        shown = ", ".join(f"{p.name} -> {os.readlink(p)}" for p in links)
        raise ConfigError(f"{root}: --overwrite would delete through symbolic link(s) {shown}; nothing was deleted "
                          f"-> remove the link(s) yourself (rm {' '.join(str(p) for p in links)}) or empty their "
                          f"targets, then re-run")


def _marker(preset: Preset, seed: int) -> dict:
    """What ``.synth.json`` records: the generation's settings (compared on every re-run)."""
    marker = {"generator": "avalanche-hpc synth", "version": GENERATOR_VERSION, "preset": preset.name, "seed": seed,
              "physics": dataclasses.asdict(preset.physics)}
    if preset.seasons:
        marker["seasons"] = list(preset.seasons)
    return json.loads(json.dumps(marker))  # tuples -> lists, as read back


def generation_is_complete(root: Path, preset: str | Preset, seed: int) -> bool:
    """Whether ``root`` holds a finished generation of exactly this preset and seed.

    The marker (the generation's settings) must match and ``truth.csv``, written last, must exist.
    """
    root = Path(root)
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    try:
        same = json.loads((root / MARKER).read_text(encoding="utf-8")) == _marker(p, seed)
    except (OSError, ValueError):
        return False
    return same and (root / "truth.csv").is_file() and (root / "truth_conditions.csv").is_file()


def _prepare_root(root: Path, preset: Preset, seed: int, overwrite: bool) -> bool:
    """Check/claim ``root``; True when an existing generation gains seasons (its tables are rewritten)."""
    marker = _marker(preset, seed)
    mpath = root / MARKER
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a directory -> choose another study path")
    extend = False
    if root.is_dir() and any(root.iterdir()):
        old = json.loads(mpath.read_text(encoding="utf-8")) if mpath.is_file() else None
        same = old == marker
        # the same generation over more seasons: existing scenes stay, new seasons are added
        extend = (not same and old is not None and bool(preset.seasons)
                  and {k: v for k, v in old.items() if k != "seasons"} == {k: v for k, v in marker.items()
                                                                            if k != "seasons"}
                  and set(old.get("seasons", [])) < set(preset.seasons))
        same = same or extend
        if overwrite:
            _refuse_links(root)
            for name in _OWNED_FILES:
                (root / name).unlink(missing_ok=True)
            for name in _OWNED_DIRS:
                if (root / name).is_dir():
                    shutil.rmtree(root / name)
        elif not same:
            raise ConfigError(
                f"{root} is not empty and does not hold an unfinished '{preset.name}' seed {seed} generation "
                f"-> pass --overwrite to replace it (this deletes its scenes, work/, runs/ and reports/), "
                f"or choose another directory")
    root.mkdir(parents=True, exist_ok=True)
    write_json(mpath, marker)
    return extend and not overwrite


def _lists_seasons(study: Study) -> bool:
    """Whether the study.toml on disk lists every season of ``study.config`` (False when absent/unreadable)."""
    try:
        on_disk = [s.id for s in Study.load(study.root).config.seasons]
    except AvalancheError:  # absent or half-edited: rewritten
        return False
    return on_disk == [s.id for s in study.config.seasons]


def generate_study(root: Path, preset: str | Preset = "demo", seed: int = 0, overwrite: bool = False, *,
                   progress: bool = False, on_date: Callable[[str, dt.date], None] | None = None) -> Path:
    """Write a synthetic study to ``root`` and return ``root``.

    ``preset``: ``tiny``, ``demo`` or ``alps`` (see ``presets.PRESETS``), or a ``Preset`` (e.g.
    ``PRESETS["demo"].with_physics(debris_db=3.0)`` for a sensitivity study). The same seed gives
    byte-identical rasters and CSV tables. Re-running the same preset and seed on an existing
    (possibly interrupted) generation writes only the missing files (existing ones are complete:
    every write is atomic); any other non-empty directory needs ``overwrite=True``. ``progress``
    shows a rich progress bar over the scene dates; ``on_date(orbit, date)`` is called after each
    date is written (or found complete).
    """
    root = Path(root)
    p = preset if isinstance(preset, Preset) else get_preset(preset)
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    extend = _prepare_root(root, p, seed, overwrite)
    season_presets = p.season_presets()
    world = build_world(season_presets[0], seed)
    worlds = [world] + [build_world(sp, seed, world.terrain, world.corridors) for sp in season_presets[1:]]
    multi = bool(p.seasons)
    study = Study(root, _study_config(world, worlds if multi else None))
    # every file is deterministic and written atomically: one that exists (resuming) is complete
    # study.toml and inventory.csv list every season: when seasons are added (extend), they are
    # rewritten, first the inventory, then study.toml; a run killed in between is finished by the
    # next one, which finds study.toml without the new seasons and writes both again
    if extend or (multi and not _lists_seasons(study)):
        with atomic_path(study.inventory_path) as tmp:
            pd.concat([w.inventory for w in worlds], ignore_index=True).to_csv(tmp, index=False)
        Study.write_config(root, study.config)
    if not study.study_toml.is_file():
        Study.write_config(root, study.config)
    if not study.dem_path.is_file():
        _write_dem(study, world.terrain)
    if not study.corridors_path.is_file():
        _write_corridors(study, world)
    if not study.inventory_path.is_file():
        with atomic_path(study.inventory_path) as tmp:
            pd.concat([w.inventory for w in worlds], ignore_index=True).to_csv(tmp, index=False)
    # (season index, orbit index, date, summer?)
    jobs = [(s, i, d, True) for s, w in enumerate(worlds) for i in range(len(p.orbits))
            for d in summer_dates(w.preset, i)]
    jobs += [(s, i, d, False) for s, w in enumerate(worlds) for i in range(len(p.orbits))
             for d in winter_dates(w.preset, i)]
    jobs.sort(key=lambda j: (j[1], j[0], not j[3], j[2]))
    # one orbit's geometry in memory at a time (jobs are grouped by orbit)
    cache: dict[int, radar.OrbitGeometry] = {}
    orbit_columns: list[list[dict[str, list[float]] | None]] = [[None] * len(p.orbits) for _ in worlds]

    def geometry(i: int) -> radar.OrbitGeometry:
        if i not in cache:
            cache.clear()
            oc = world.orbit_config(i)
            cache[i] = radar.orbit_geometry(world.terrain, oc.look_azimuth_deg, oc.incidence_deg, p.physics, seed)
            for s, w in enumerate(worlds):
                orbit_columns[s][i] = _orbit_truth(w, cache[i], oc.id)
        return cache[i]

    conditions: list[dict] = []

    def run(advance: Callable[[], None]) -> None:
        for s, i, d, summer in jobs:
            oid = p.orbits[i].id
            w = worlds[s]
            if not _scene_complete(study, oid, d):
                row = _write_scene(study, w, i, geometry(i), d, summer)
            else:
                row = _conditions_row(w, i, d)
            conditions.append({"season": w.preset.season_id, **row} if multi else row)
            advance()
            if on_date is not None:
                on_date(oid, d)

    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("synth", total=len(jobs), detail=f"{p.name} scenes")
        run(lambda: bar.advance(task))
    for i in range(len(p.orbits)):
        if orbit_columns[0][i] is None:  # every date of the orbit was already written (resuming)
            geometry(i)
    cache.clear()
    tables = []
    for w, cols in zip(worlds, orbit_columns, strict=True):
        t = _truth_table(w, [c or {} for c in cols])  # every entry is set by now
        if multi:
            t.insert(0, "season", w.preset.season_id)
        tables.append(t)
    truth = pd.concat(tables, ignore_index=True) if multi else tables[0]
    with atomic_path(root / "truth_conditions.csv") as tmp:
        pd.DataFrame(conditions).to_csv(tmp, index=False)
    with atomic_path(study.truth_path) as tmp:
        truth.to_csv(tmp, index=False)
    log.info("synthetic study %s: %d season(s), %d corridors, %d events (%d in the inventory), %d scene dates",
             root, len(worlds), len(world.corridors), sum(len(w.events) for w in worlds),
             sum(len(w.inventory) for w in worlds), len(jobs))
    return root
