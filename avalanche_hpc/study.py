"""The study directory: the input contract, as typed objects, and every path derived from it.

A *study* is a directory (see ``docs/data-contract.md``)::

    STUDY/
      study.toml        StudyConfig below
      dem.tif           elevation (m), study CRS
      corridors.gpkg    layer "corridors": path_id, massif, geometry
      inventory.csv     event_id, path_id, date_min, date_max, deposit_area_m2, ...
      scenes/{orbit}/{YYYYMMDD}/VV.tif, VH.tif [, layover_shadow.tif]
      truth.csv         (synthetic studies only) every simulated deposit
      work/             shards, patch store, deposition zones, summer references
      runs/{experiment}/...      RunPaths below (docs/architecture.md, "Runs layout")
      reports/{experiment}/...

``Study`` is the one object that knows where every file lives (as submitit's
``JobPaths`` does for job files): stages ask it for paths and never build them. The runs of an
experiment are handed out by ``Study.runs(experiment)`` (a ``RunPaths``), the files of one run
directory by ``RunFiles``.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, ValidationError, field_validator, model_validator

from avalanche_hpc.config import StrictModel, config_problems
from avalanche_hpc.errors import ArgumentError, ConfigError, InputError, MissingInputError, Problem, UnknownKeyError
from avalanche_hpc.ids import check_id

POLARISATIONS = ("VV", "VH")
LAYOVER_SHADOW = "layover_shadow"
LAYOVER_SHADOW_CODES = (0, 1, 2, 3)  # valid, layover, shadow, both (SNAP terrain-correction encoding)
CORRIDOR_LAYER = "corridors"
INVENTORY_COLUMNS = ("event_id", "path_id", "date_min", "date_max", "deposit_area_m2")
DATE_DIR_RE = re.compile(r"^\d{8}$")

# Patches with less than this share of valid pixels are left out of learning (study.toml min_valid_fraction):
# half the patch is the smallest share at which the deposition zone is still mostly seen.
DEFAULT_MIN_VALID_FRACTION = 0.5

# Label codes used in label maps, shards and the store.
LABEL_POSITIVE = 1
LABEL_NEGATIVE = 0
LABEL_UNKNOWN = -1
LABEL_NAMES = {LABEL_POSITIVE: "positive", LABEL_NEGATIVE: "negative", LABEL_UNKNOWN: "unknown"}


def parse_yyyymmdd(text: str) -> dt.date:
    return dt.datetime.strptime(text, "%Y%m%d").date()


def fmt_yyyymmdd(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


class OrbitConfig(StrictModel):
    """One Sentinel-1 relative orbit (a track), the folder name under ``scenes/``."""

    id: str = Field(description="folder name under scenes/, e.g. 'D139' or 'A161'")
    direction: Literal["ascending", "descending"]
    relative_orbit: int = Field(ge=1, le=175)
    heading_deg: float | None = Field(
        default=None,
        description="satellite heading, degrees clockwise from north; default 350 (ascending) / 190 (descending)",
    )
    incidence_deg: float = Field(default=39.0, gt=15, lt=50, description="mid-swath incidence angle over the study")

    @field_validator("id")
    @classmethod
    def _id_is_a_folder_name(cls, v: str) -> str:
        return check_id(v, "orbit id")

    @property
    def heading(self) -> float:
        if self.heading_deg is not None:
            return self.heading_deg
        return 350.0 if self.direction == "ascending" else 190.0

    @property
    def look_azimuth_deg(self) -> float:
        """Azimuth the radar looks towards (Sentinel-1 is right-looking): heading + 90 degrees.

        Descending (heading ~190) looks ~280 (west); ascending (heading ~350) looks ~80 (east).
        """
        return (self.heading + 90.0) % 360.0


class SeasonConfig(StrictModel):
    """One winter season: its acquisition window and snow-free summer references per orbit."""

    id: str = Field(description="e.g. '2017-2018'")
    start: dt.date
    end: dt.date
    summer: dict[str, list[dt.date]] = Field(
        description="orbit id -> snow-free summer reference dates (scenes must exist for them)"
    )
    dates: dict[str, list[dt.date]] | None = Field(
        default=None,
        description="orbit id -> winter acquisition dates; when absent they are discovered from scenes/",
    )

    @field_validator("id")
    @classmethod
    def _id_is_a_folder_name(cls, v: str) -> str:
        # the id names folders (work/shards/{season}/, work/summer/{season}/) and splits (season-{id})
        return check_id(v, "season id")

    @model_validator(mode="after")
    def _window(self) -> SeasonConfig:
        if self.end <= self.start:
            raise ConfigError(f"season {self.id}: end {self.end} must be after start {self.start}")
        return self


class StudyConfig(StrictModel):
    """Contents of ``study.toml``."""

    name: str
    crs_epsg: int = Field(description="EPSG code of every raster and vector of the study")
    pixel_size_m: float = Field(gt=0)
    units: Literal["linear", "dB"] = Field(
        default="linear", description="sigma0 units of the scenes unless a raster's UNITS tag says otherwise"
    )
    massifs: list[str] = Field(min_length=1)
    focus_massif: str | None = None
    patch_size: int = Field(default=64, ge=16, le=256)
    min_valid_fraction: float = Field(
        default=DEFAULT_MIN_VALID_FRACTION, ge=0, le=1,
        description="patches with a smaller share of valid pixels (not nodata, layover or shadow) are left out "
                    "of splits, training, the baseline and detection (counted in split.json)",
    )
    orbits: list[OrbitConfig] = Field(min_length=1)
    seasons: list[SeasonConfig] = Field(min_length=1)
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        ids = [o.id for o in self.orbits]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"orbit ids must be unique, got {ids}")
        sids = [s.id for s in self.seasons]
        if len(set(sids)) != len(sids):
            raise ConfigError(f"season ids must be unique, got {sids}")
        if self.focus_massif is not None and self.focus_massif not in self.massifs:
            raise ConfigError(f"focus_massif {self.focus_massif!r} is not in massifs {self.massifs}")
        for s in self.seasons:
            for table, name in ((s.summer, "summer"), (s.dates or {}, "dates")):
                unknown = set(table) - set(ids)
                if unknown:
                    raise ConfigError(f"season {s.id}: {name} names unknown orbit(s) {sorted(unknown)}; orbits are {ids}")
        return self

    def orbit(self, orbit_id: str) -> OrbitConfig:
        for o in self.orbits:
            if o.id == orbit_id:
                return o
        raise UnknownKeyError(f"unknown orbit {orbit_id!r}; study orbits are {[o.id for o in self.orbits]}")

    def season(self, season_id: str) -> SeasonConfig:
        for s in self.seasons:
            if s.id == season_id:
                return s
        raise UnknownKeyError(f"unknown season {season_id!r}; study seasons are {[s.id for s in self.seasons]}")


@dataclass(frozen=True, order=True)
class Acquisition:
    """One preprocessing task: a winter acquisition of one orbit in one season."""

    season: str
    orbit: str
    date: dt.date
    prev_date: dt.date | None  # previous acquisition of the same orbit in the season; None for the first

    @property
    def key(self) -> str:
        return f"{self.season}/{self.orbit}/{fmt_yyyymmdd(self.date)}"

    @property
    def previous(self) -> dt.date:
        """``prev_date`` of a task that makes a shard (every acquisition but the first of a season)."""
        if self.prev_date is None:
            raise ArgumentError(f"{self.key} is the first acquisition of its season on orbit {self.orbit}: "
                                "it has no previous acquisition, so no change channels and no shard")
        return self.prev_date


def study_config_problems(err: ValidationError, file: Path) -> list[Problem]:
    """The problems of a ``study.toml`` that does not validate (one per key)."""
    return config_problems(err, file, StudyConfig, doc="docs/data-contract.md")


def parse_study_toml(raw: dict) -> StudyConfig:
    """``StudyConfig`` from parsed TOML, strictly: TOML has typed values, so a quoted number or date
    (``crs_epsg = "32632"``, ``start = "2017-11-15"``) or a boolean where a number belongs
    (``patch_size = true``) is refused instead of being coerced (Python callers may pass either)."""
    return StudyConfig.model_validate(raw, strict=True)


@dataclass(frozen=True)
class RunFiles:
    """The files of one run directory: a CNN seed (``cnn/seed{N}``) or a split's ``baseline``."""

    dir: Path

    @property
    def config(self) -> Path:  # CNN: every setting of the run
        return self.dir / "config.json"

    @property
    def params(self) -> Path:  # baseline: tuned thresholds
        return self.dir / "params.json"

    @property
    def history(self) -> Path:
        return self.dir / "history.csv"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.pt"

    @property
    def best(self) -> Path:
        return self.dir / "best.pt"

    @property
    def predictions(self) -> Path:
        return self.dir / "predictions.csv"

    @property
    def metrics(self) -> Path:  # written last: its presence marks a finished run
        return self.dir / "metrics.json"


@dataclass(frozen=True)
class RunPaths:
    """Every path under ``runs/{experiment}/`` (as submitit's ``JobPaths``; layout: docs/architecture.md)."""

    root: Path

    SEED_PREFIX = "seed"

    @property
    def experiment_json(self) -> Path:
        return self.root / "experiment.json"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def split_dir(self, split: str) -> Path:
        return self.root / check_id(split, "split name")

    def split_csv(self, split: str) -> Path:
        return self.split_dir(split) / "split.csv"

    def cnn_dir(self, split: str) -> Path:
        return self.split_dir(split) / "cnn"

    def cnn(self, split: str, seed: int) -> RunFiles:
        return RunFiles(self.cnn_dir(split) / f"{self.SEED_PREFIX}{seed}")

    def baseline(self, split: str, variant: str = "paper") -> RunFiles:
        """The paper's baseline in ``baseline/``, another variant (``tuned``) in ``baseline-{variant}/``."""
        return RunFiles(self.split_dir(split) / ("baseline" if variant == "paper" else f"baseline-{variant}"))

    def split_names(self) -> list[str]:
        """Folders directly under the experiment (sorted): the splits, and ``features`` and the like."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def cnn_seeds(self, split: str) -> list[int]:
        """Seeds with a ``cnn/seed{N}`` folder in this split (sorted)."""
        d = self.cnn_dir(split)
        if not d.is_dir():
            return []
        tails = [p.name[len(self.SEED_PREFIX):] for p in d.iterdir() if p.is_dir() and p.name.startswith(self.SEED_PREFIX)]
        return sorted(int(t) for t in tails if t.isdigit())

    def all_metrics(self) -> list[Path]:
        """Every run's ``metrics.json`` of the experiment."""
        return sorted(self.root.glob("*/cnn/*/metrics.json")) + sorted(self.root.glob("*/baseline*/metrics.json"))


class Study:
    """A study directory: its configuration and every path of the contract and of the outputs."""

    def __init__(self, root: str | Path, config: StudyConfig):
        self.root = Path(root)
        self.config = config

    # -- loading / writing ------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path) -> Study:
        root = Path(root)
        toml_path = root / "study.toml"
        if not root.is_dir():
            raise MissingInputError(
                f"study directory {root} does not exist -> create it, or make a synthetic one with "
                f"'avalanche-hpc synth {root} --preset demo'"
            )
        if not toml_path.is_file():
            raise MissingInputError(f"{toml_path} is missing -> every study needs a study.toml; see docs/data-contract.md")
        try:
            raw = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise InputError(Problem(str(toml_path), "", f"not valid TOML: {e}", "fix the TOML syntax")) from e
        try:
            cfg = parse_study_toml(raw)
        except ValidationError as e:
            raise InputError(study_config_problems(e, toml_path)) from e
        return cls(root, cfg)

    @staticmethod
    def write_config(root: str | Path, config: StudyConfig) -> Path:
        from avalanche_hpc.atomic import write_text

        path = Path(root) / "study.toml"
        data = config.model_dump(mode="python", exclude_none=True)
        write_text(path, tomli_w.dumps(data))
        return path

    # -- the input contract -------------------------------------------------------------------
    @property
    def study_toml(self) -> Path:
        return self.root / "study.toml"

    @property
    def dem_path(self) -> Path:
        return self.root / "dem.tif"

    @property
    def corridors_path(self) -> Path:
        return self.root / "corridors.gpkg"

    @property
    def inventory_path(self) -> Path:
        return self.root / "inventory.csv"

    @property
    def truth_path(self) -> Path:
        return self.root / "truth.csv"

    @property
    def scenes_dir(self) -> Path:
        return self.root / "scenes"

    def scene_dir(self, orbit: str, date: dt.date) -> Path:
        return self.scenes_dir / check_id(orbit, "orbit id") / fmt_yyyymmdd(date)

    def scene_path(self, orbit: str, date: dt.date, band: str) -> Path:
        """``band`` is 'VV', 'VH' or 'layover_shadow'."""
        return self.scene_dir(orbit, date) / f"{band}.tif"

    # -- outputs ----------------------------------------------------------------------------
    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    @property
    def deposition_path(self) -> Path:
        return self.work_dir / "deposition.gpkg"

    def summer_ref_path(self, season: str, orbit: str) -> Path:
        return self.work_dir / "summer" / check_id(season, "season id") / f"{check_id(orbit, 'orbit id')}.h5"

    def shard_path(self, season: str, orbit: str, date: dt.date) -> Path:
        return self.shards_dir / check_id(season, "season id") / check_id(orbit, "orbit id") / f"{fmt_yyyymmdd(date)}.h5"

    @property
    def store_path(self) -> Path:
        return self.work_dir / "patches.h5"

    @property
    def shards_dir(self) -> Path:
        return self.work_dir / "shards"

    def runs(self, experiment: str) -> RunPaths:
        """The runs layout of one experiment: ``runs/{experiment}/...``."""
        return RunPaths(self.root / "runs" / check_id(experiment, "experiment name"))

    def runs_dir(self, experiment: str) -> Path:
        return self.runs(experiment).root

    def reports_dir(self, experiment: str) -> Path:
        return self.root / "reports" / check_id(experiment, "experiment name")

    def report_index(self, experiment: str) -> Path:
        """``reports/{experiment}/index.html`` (written last: its presence means a complete report)."""
        return self.reports_dir(experiment) / "index.html"

    def detection_paths(self, experiment: str) -> DetectionPaths:
        """Every path of the detection product of an experiment (``STUDY/detections/{experiment}/``)."""
        return DetectionPaths(self.root / "detections" / experiment)

    # -- acquisitions -----------------------------------------------------------------------
    def scene_dates(self, orbit: str) -> list[dt.date]:
        """Dates with a scene folder for this orbit (sorted); folders that are not YYYYMMDD are ignored."""
        d = self.scenes_dir / orbit
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            if p.is_dir() and DATE_DIR_RE.match(p.name):
                try:
                    out.append(parse_yyyymmdd(p.name))
                except ValueError:
                    continue
        return sorted(out)

    def winter_dates(self, season: str, orbit: str) -> list[dt.date]:
        """Winter acquisition dates of one (season, orbit): listed in study.toml, else discovered."""
        s = self.config.season(season)
        self.config.orbit(orbit)  # raises on an unknown orbit
        if s.dates is not None and orbit in s.dates:
            dates = sorted(set(s.dates[orbit]))
        else:
            summer = set(s.summer.get(orbit, []))
            dates = [d for d in self.scene_dates(orbit) if s.start <= d <= s.end and d not in summer]
        return dates

    def acquisitions(
        self, season: str | None = None, orbit: str | None = None, include_first: bool = True
    ) -> list[Acquisition]:
        """Every (season, orbit, date) task, with the previous acquisition of the same orbit."""
        out: list[Acquisition] = []
        for s in self.config.seasons:
            if season is not None and s.id != season:
                continue
            for o in self.config.orbits:
                if orbit is not None and o.id != orbit:
                    continue
                prev = None
                for d in self.winter_dates(s.id, o.id):
                    if include_first or prev is not None:
                        out.append(Acquisition(s.id, o.id, d, prev))
                    prev = d
        return out

    def summer_dates(self, season: str, orbit: str) -> list[dt.date]:
        return sorted(self.config.season(season).summer.get(orbit, []))

    # -- tables -----------------------------------------------------------------------------
    def read_corridors(self):
        """Corridor polygons as a GeoDataFrame (path_id, massif, geometry)."""
        import geopandas as gpd

        if not self.corridors_path.is_file():
            raise MissingInputError(f"{self.corridors_path} is missing -> see docs/data-contract.md (corridors)")
        try:
            return gpd.read_file(self.corridors_path, layer=CORRIDOR_LAYER)
        except Exception as e:  # pyogrio raises several types for unreadable files
            raise InputError(
                Problem(str(self.corridors_path), f"layer {CORRIDOR_LAYER}", f"cannot be read: {e}",
                        "write a GeoPackage with a layer named 'corridors'")
            ) from e

    def read_inventory(self):
        """Inventory rows with ``date_min``/``date_max`` parsed to ``datetime.date``.

        Raises ``InputError`` listing every unparsable or inverted date window (row numbers are
        1-based data rows, as a spreadsheet shows them minus the header).
        """
        import pandas as pd

        if not self.inventory_path.is_file():
            raise MissingInputError(f"{self.inventory_path} is missing -> see docs/data-contract.md (inventory)")
        try:
            df = pd.read_csv(self.inventory_path, dtype={"event_id": str, "path_id": str}, encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(Problem(str(self.inventory_path), f"byte {e.start}", f"is not UTF-8 text ({e.reason})",
                                     "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)")) from e
        missing = [c for c in INVENTORY_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(Problem(str(self.inventory_path), "header", f"missing column(s) {missing}",
                                     f"the header must contain {list(INVENTORY_COLUMNS)}"))
        dates, problems = inventory_dates(df, self.inventory_path)
        for col, parsed in dates.items():
            df[col] = parsed.dt.date
        if problems:
            raise InputError(problems)
        return df


@dataclass(frozen=True)
class DetectionPaths:
    """The files of ``STUDY/detections/{experiment}/`` (layout: docs/data-contract.md, "Detections")."""

    root: Path

    @property
    def model(self) -> Path:
        """The detector record: runs used, their sha256, thresholds, precision; written before any part."""
        return self.root / "model.json"

    @property
    def parts_dir(self) -> Path:
        return self.root / "parts"

    def part(self, season: str, orbit: str, date: dt.date) -> Path:
        """Scores of one (season, orbit, date): the output of one array task."""
        return self.parts_dir / season / orbit / f"{fmt_yyyymmdd(date)}.csv"

    @property
    def geopackage(self) -> Path:
        return self.root / "detections.gpkg"

    @property
    def activity(self) -> Path:
        return self.root / "activity.csv"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation.csv"

    @property
    def fusion_evaluation(self) -> Path:
        """Orbit fusion (studies with several orbits): single orbits, directions, fused methods evaluated."""
        return self.root / "fusion.csv"

    @property
    def fusion_model(self) -> Path:
        """Orbit fusion: thresholds, stacker coefficients, the product method."""
        return self.root / "fusion.json"

    @property
    def provenance(self) -> Path:
        """Written last by the publish step: its presence means the products above are complete."""
        return self.root / "provenance.json"


def inventory_dates(df: Any, file: str | Path, row: Callable[[int], str] = lambda i: f"row {i + 1}",
                    ) -> tuple[dict[str, Any], list[Problem]]:
    """``date_min``/``date_max`` of an inventory table parsed (ISO ``YYYY-MM-DD``, surrounding spaces
    ignored; NaT where unparsable), and the problems: each unparsable date, each inverted window.

    The one parser of inventory dates (``Study.read_inventory`` and ``inputs check``); ``row(i)``
    names a row (1-based data rows). Columns that are absent are left out.
    """
    import pandas as pd

    dates: dict[str, Any] = {}
    problems: list[Problem] = []
    for col in ("date_min", "date_max"):
        if col not in df.columns:
            continue
        parsed = pd.to_datetime(df[col].astype("string").str.strip(), format="%Y-%m-%d", errors="coerce")
        for i in df.index[parsed.isna()]:
            problems.append(Problem(str(file), f"{row(i)}, {col}", f"unparsable date {df.at[i, col]!r}",
                                    "write ISO dates, YYYY-MM-DD"))
        dates[col] = parsed
    if len(dates) == 2:
        lo, hi = dates["date_min"], dates["date_max"]
        for i in df.index[lo.notna() & hi.notna() & (hi < lo)]:
            problems.append(Problem(str(file), f"{row(i)}, date_max",
                                    f"date_max {hi[i].date()} is before date_min {lo[i].date()}",
                                    "swap the two dates or correct the window"))
    return dates, problems
