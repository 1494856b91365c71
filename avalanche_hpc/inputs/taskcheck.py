"""What each task entry point validates before it writes anything (``inputs check``, scoped).

``inputs check`` validates the whole study; a SLURM array of thousands of preprocess tasks must
not each rescan every scene, yet each must refuse what ``inputs check`` refuses. So:

- ``require_valid_task(root, season, orbit, date)`` (the one-task ``preprocess``): the tables
  (``study.toml``, ``dem.tif`` header, ``corridors.gpkg``, ``inventory.csv``: what every task reads)
  plus the scene headers this task reads (its date, the previous date, the summer references of
  its (season, orbit)) and the season's listed dates against its window. The same functions as
  ``inputs check`` (``checks.py``) produce the same problems.
- ``require_valid_tables(root, scenes=...)`` (``store merge``, ``store verify``): the tables, and
  with ``scenes=True`` every scene header (the full ``inputs check``; both run once per study).

Results are cached per process, keyed by each file's (size, mtime): the local executor's many
tasks check the tables once and every scene once, and an edited file is checked again.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from avalanche_hpc.errors import InputError, Problem
from avalanche_hpc.inputs import checks
from avalanche_hpc.inputs.grid import Grid
from avalanche_hpc.study import Study, StudyConfig

log = logging.getLogger(__name__)

__all__ = ["require_valid_tables", "require_valid_task", "table_report"]

TABLE_FILES = ("study.toml", "dem.tif", "corridors.gpkg", "inventory.csv")


@dataclass
class _Tables:
    key: tuple
    problems: list[Problem]
    config: StudyConfig | None
    dem: Grid | None


_TABLES: dict[Path, _Tables] = {}
_SCENES: dict[tuple, list[Problem]] = {}


def _stat_key(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def table_report(root: str | Path) -> _Tables:
    """The tables' problems (cached while none of the table files changes)."""
    root = Path(root).resolve()
    key = tuple(_stat_key(root / n) for n in TABLE_FILES)
    hit = _TABLES.get(root)
    if hit is not None and hit.key == key:
        return hit
    report = checks.CheckReport(root)
    if not root.is_dir():
        report.problems.append(Problem(str(root), "", "study directory does not exist",
                                       f"create it, or make a synthetic one with 'avalanche-hpc synth {root}'"))
        config = dem = None
    else:
        config = checks._check_config(root, report)
        dem = checks._check_dem(root, config, report)
        path_ids = checks._check_corridors(root, config, dem, report)
        checks._check_inventory(root, path_ids, report)
    out = _Tables(key, report.problems, config, dem)
    _TABLES[root] = out
    return out


def _scene_problems(path: Path, where: str, band: str, tables: _Tables) -> list[Problem]:
    key = (str(path), _stat_key(path), tables.key, band)
    if key not in _SCENES:
        report = checks.CheckReport(path.parent)
        checks._check_scene_raster(path, where, band, tables.config, tables.dem, report)
        _SCENES[key] = report.problems
    return _SCENES[key]


def require_valid_tables(root: str | Path, scenes: bool = False) -> None:
    """Raise ``InputError`` listing every problem of the tables (and, with ``scenes``, of every scene header)."""
    if scenes:
        problems = checks.check_study(root)
    else:
        problems = table_report(root).problems
    if problems:
        raise InputError(problems)


def require_valid_task(root: str | Path, season: str, orbit: str, date: dt.date) -> None:
    """Raise ``InputError`` listing every problem in what the task (season, orbit, date) reads."""
    tables = table_report(root)
    problems = list(tables.problems)
    if tables.config is not None:
        study = Study(Path(root), tables.config)
        try:
            study.config.season(season)
            study.config.orbit(orbit)
        except KeyError:
            pass  # the caller names the unknown season/orbit with the valid ones
        else:
            problems += _task_scene_problems(study, season, orbit, date, tables)
    if problems:
        raise InputError(problems)


def _task_scene_problems(study: Study, season: str, orbit: str, date: dt.date, tables: _Tables) -> list[Problem]:
    problems = checks.season_window_problems(study, season, orbit)
    winter = study.winter_dates(season, orbit)
    if date not in winter:
        return problems  # not an acquisition: the caller says so, with the valid dates
    dates: list[tuple[dt.date, str]] = [(date, "winter")]
    earlier = [d for d in winter if d < date]
    if earlier:
        dates.append((earlier[-1], "winter"))
    dates += [(d, "summer") for d in study.summer_dates(season, orbit)]
    scratch = checks.CheckReport(study.root)
    for d, kind in dates:
        for path, where, band in checks._scene_files(study, season, orbit, d, kind, scratch):
            problems += _scene_problems(path, where, band, tables)
    return problems + scratch.problems
