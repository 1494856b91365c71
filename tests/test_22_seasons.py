"""Several seasons: the constellation calendar, multi-season synthetic studies, season checks.

- the calendar gives 12-day repeats with one satellite and 6-day with two, switching on the
  documented dates (Sentinel-1B from 14 Sep 2016 to its failure on 23 Dec 2021, Sentinel-1C from 2025);
- ``tiny3`` holds three seasons with their own dates, weather, events and summer references;
  adding a season to an existing generation leaves the existing files (and shards) untouched;
- ``inputs check`` names overlapping windows, a date claimed by two seasons, a season without a
  summer reference for an orbit, and a season id that is not a safe folder name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from typer.testing import CliRunner

from avalanche_hpc.cli.main import app
from avalanche_hpc.errors import ConfigError
from avalanche_hpc.study import Study
from avalanche_hpc.synth import calendar
from avalanche_hpc.synth.presets import get_preset, parse_season_range

runner = CliRunner()
D = dt.date


def _gaps(dates: list[dt.date]) -> set[int]:
    return {(b - a).days for a, b in itertools.pairwise(dates)}


# -- calendar ------------------------------------------------------------------------------------
def test_calendar_repeat_follows_the_constellation() -> None:
    anchor = D(2017, 12, 3)
    assert _gaps(calendar.acquisition_dates(anchor, D(2015, 12, 1), D(2016, 4, 30))) == {12}  # S1A alone
    assert _gaps(calendar.acquisition_dates(anchor, D(2016, 12, 1), D(2017, 4, 30))) == {6}  # A + B
    assert _gaps(calendar.acquisition_dates(anchor, D(2022, 12, 1), D(2023, 4, 30))) == {12}  # B failed
    assert _gaps(calendar.acquisition_dates(anchor, D(2025, 12, 1), D(2026, 4, 30))) == {6}  # A + C
    # the switches fall on the documented days
    assert calendar.repeat_days_on(D(2016, 9, 13)) == 12 and calendar.repeat_days_on(D(2016, 9, 14)) == 6
    assert calendar.repeat_days_on(D(2021, 12, 22)) == 6 and calendar.repeat_days_on(D(2021, 12, 23)) == 12
    assert calendar.satellites_on(D(2024, 12, 31)) == ("S1A",)
    assert calendar.satellites_on(D(2025, 6, 1)) == ("S1A", "S1C")
    assert calendar.repeat_days_on(D(2014, 1, 1)) is None
    # winter 2021-2022: 6 days until 23 December, then 12
    p = calendar.passes(anchor, D(2021, 12, 1), D(2022, 2, 1))
    before = [x.date for x in p if x.date < D(2021, 12, 23)]
    after = [x.date for x in p if x.date >= D(2021, 12, 23)]
    assert _gaps(before) == {6} and _gaps(after) == {12}
    assert {x.satellite for x in p if x.date >= D(2021, 12, 23)} == {"S1A"}
    assert {x.satellite for x in p if x.date < D(2021, 12, 23)} == {"S1A", "S1B"}
    # every date is anchor + 6k: one relative orbit's ground track
    assert all((x.date - anchor).days % 6 == 0 for x in p)


def test_season_ranges() -> None:
    assert parse_season_range("2015-2016:2017-2018") == ("2015-2016", "2016-2017", "2017-2018")
    assert parse_season_range("2021-2022") == ("2021-2022",)
    assert parse_season_range("2016-2017,2021-2022") == ("2016-2017", "2021-2022")
    for bad in ("2017-2016:2018-2019", "2018-2019:2015-2016", "2015/2016", "2013-2014"):
        with pytest.raises(ConfigError, match="YYYY-YYYY|before the first"):
            parse_season_range(bad)
    ten = get_preset("campaign10")
    assert len(ten.seasons) == 10 and ten.seasons[0] == "2015-2016" and ten.seasons[-1] == "2024-2025"
    per = {sp.season_id: sp for sp in ten.season_presets()}
    d = list(per["2015-2016"].orbit_dates[0])
    assert _gaps(d) == {12} and d[0] >= D(2015, 12, 1) and d[-1] <= D(2016, 4, 30)
    assert _gaps(list(per["2018-2019"].orbit_dates[0])) == {6}
    assert len(per["2018-2019"].orbit_dates[0]) > 1.8 * len(per["2022-2023"].orbit_dates[0])


# -- multi-season synthetic study ----------------------------------------------------------------
def test_tiny3_has_three_seasons_each_with_its_own_weather_events_and_references(tiny3_study: Path) -> None:
    study = Study.load(tiny3_study)
    seasons = [s.id for s in study.config.seasons]
    assert seasons == ["2015-2016", "2016-2017", "2017-2018"]
    for s in study.config.seasons:
        for o in study.config.orbits:
            winter = study.winter_dates(s.id, o.id)
            summer = study.summer_dates(s.id, o.id)
            assert winter and all(s.start <= d <= s.end for d in winter)
            assert summer and all(d.year == s.start.year and d.month in (8, 9) for d in summer)
            assert _gaps(winter) == ({12} if s.id == "2015-2016" else {6})
            for d in winter + summer:
                assert study.scene_path(o.id, d, "VV").is_file()
    truth = pd.read_csv(tiny3_study / "truth.csv", dtype={"event_id": str})
    inv = pd.read_csv(tiny3_study / "inventory.csv", dtype={"event_id": str})
    assert truth["event_id"].is_unique and set(inv["event_id"]) <= set(truth["event_id"])
    for s in study.config.seasons:
        ev = truth[truth["season"] == s.id]
        assert len(ev) > 5 and ev["event_id"].str.startswith(f"E{s.start.year}-").all()
        dates = pd.to_datetime(ev["date"]).dt.date
        assert dates.max() <= s.end and dates.min() >= s.start - dt.timedelta(days=10)
    # each season has its own weather: the conditions differ between seasons on the same day of winter
    cond = pd.read_csv(tiny3_study / "truth_conditions.csv")
    winter = cond[cond["kind"] == "winter"]
    assert set(winter["season"]) == set(seasons)
    snow = winter.groupby("season")["snowfall_cm_since_prev"].sum()
    assert snow.nunique() == 3
    # per-season scenes differ (not one season copied three times)
    a = study.winter_dates("2016-2017", "D139")[2]
    b = study.winter_dates("2017-2018", "D139")[2]
    import rasterio

    with rasterio.open(study.scene_path("D139", a, "VV")) as x, rasterio.open(study.scene_path("D139", b, "VV")) as y:
        assert not np.allclose(x.read(1), y.read(1))


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "scenes").rglob("*.tif"))}


def test_adding_a_season_keeps_the_existing_files(tiny3_copy: Path) -> None:
    before = _digests(tiny3_copy)
    inv_before = pd.read_csv(tiny3_copy / "inventory.csv", dtype={"event_id": str})
    r = runner.invoke(app, ["synth", str(tiny3_copy), "--preset", "tiny3", "--seasons", "2015-2016:2018-2019"])
    assert r.exit_code == 0, r.output
    study = Study.load(tiny3_copy)
    assert [s.id for s in study.config.seasons][-1] == "2018-2019" and len(study.config.seasons) == 4
    after = _digests(tiny3_copy)
    assert {k: after[k] for k in before} == before  # nothing rewritten
    assert len(after) > len(before)
    inv = pd.read_csv(tiny3_copy / "inventory.csv", dtype={"event_id": str})
    assert inv.iloc[:len(inv_before)].equals(inv_before) and len(inv) > len(inv_before)
    # an extension killed after the inventory and before study.toml: the next run finishes it
    full = (tiny3_copy / "study.toml").read_text()
    data = tomllib.loads(full)
    data["seasons"] = data["seasons"][:3]
    (tiny3_copy / "study.toml").write_text(tomli_w.dumps(data))
    r = runner.invoke(app, ["synth", str(tiny3_copy), "--preset", "tiny3", "--seasons", "2015-2016:2018-2019"])
    assert r.exit_code == 0, r.output
    assert (tiny3_copy / "study.toml").read_text() == full
    # a different generation is still refused
    r = runner.invoke(app, ["synth", str(tiny3_copy), "--preset", "tiny3", "--seed", "1"])
    assert r.exit_code != 0 and "--overwrite" in str(r.exception)


# -- checks ------------------------------------------------------------------------------------
def test_check_passes_and_counts_seasons(tiny3_study: Path) -> None:
    from avalanche_hpc.inputs.checks import check_study_report

    report = check_study_report(tiny3_study)
    assert report.problems == [] and report.checked["seasons"] == 3


def _edit(root: Path, change) -> None:
    path = root / "study.toml"
    data = tomllib.loads(path.read_text())
    change(data)
    path.write_text(tomli_w.dumps(data))


def _problems(root: Path) -> list[str]:
    r = runner.invoke(app, ["inputs", "check", str(root)])
    assert r.exit_code == 1, r.output
    return [ln for ln in r.output.splitlines() if ln.lstrip().startswith("x ")]


def _has(lines: list[str], *needles: str) -> bool:
    return any(all(n in ln for n in needles) for ln in lines)


def test_check_overlapping_seasons_and_a_date_in_two_seasons(tiny3_copy: Path) -> None:
    def change(d):
        d["seasons"][1]["start"] = D(2016, 1, 10)  # 2016-2017 now starts inside 2015-2016's window

    _edit(tiny3_copy, change)
    lines = _problems(tiny3_copy)
    assert _has(lines, "study.toml", "seasons.2015-2016 and seasons.2016-2017", "overlap")


def test_check_winter_date_listed_in_two_seasons(tiny3_copy: Path) -> None:
    def change(d):
        d["seasons"][2]["summer"]["D139"] = [d["seasons"][1]["dates"]["D139"][-1]]  # a winter date as summer

    _edit(tiny3_copy, change)
    day = tomllib.loads((tiny3_copy / "study.toml").read_text())["seasons"][1]["dates"]["D139"][-1]
    lines = _problems(tiny3_copy)
    assert _has(lines, "study.toml", f"orbit D139, date {day}", "2016-2017 (winter)", "2017-2018 (summer)")


def test_check_season_without_summer_reference_for_an_orbit(tiny3_copy: Path) -> None:
    _edit(tiny3_copy, lambda d: d["seasons"][1]["summer"].pop("A161"))
    lines = _problems(tiny3_copy)
    assert _has(lines, "seasons.2016-2017.summer.A161", "orbit A161 in season 2016-2017")


@pytest.mark.parametrize("bad", ["2016/2017", "../2016", "", "2016 2017", ".hidden"])
def test_check_season_id_must_be_a_safe_folder_name(tiny3_copy: Path, bad: str) -> None:
    _edit(tiny3_copy, lambda d: d["seasons"][1].update(id=bad))
    lines = _problems(tiny3_copy)
    assert _has(lines, "study.toml", "seasons.1.id", "folder name")
