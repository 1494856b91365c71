"""The study contract as typed objects: StudyConfig/Study loading, round trip, acquisitions, paths, bad keys."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from avalanche_hpc.errors import ArgumentError, InputError, MissingInputError
from avalanche_hpc.study import Acquisition, Study, StudyConfig

STUDY_TOML = """\
name = "two-orbits"
crs_epsg = 32632
pixel_size_m = 20.0
units = "dB"
massifs = ["Haute-Maurienne", "Vanoise"]
focus_massif = "Haute-Maurienne"

[[orbits]]
id = "D139"
direction = "descending"
relative_orbit = 139

[[orbits]]
id = "A088"
direction = "ascending"
relative_orbit = 88
incidence_deg = 41.5

[[seasons]]
id = "2017-2018"
start = 2017-11-01
end = 2018-05-31

[seasons.summer]
D139 = [2017-08-10, 2017-08-22]
A088 = [2017-08-12]

[seasons.dates]
A088 = [2018-01-09, 2017-12-28, 2018-01-03]
"""


def _write_study(root: Path, text: str = STUDY_TOML) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.toml").write_text(text, encoding="utf-8")
    return root


def _scene_folders(root: Path, orbit: str, names: list[str]) -> None:
    for n in names:
        (root / "scenes" / orbit / n).mkdir(parents=True)


def test_load_types_every_key(tmp_path: Path):
    s = Study.load(_write_study(tmp_path / "s"))
    c = s.config
    assert (c.name, c.crs_epsg, c.pixel_size_m, c.units, c.focus_massif) == (
        "two-orbits", 32632, 20.0, "dB", "Haute-Maurienne")
    assert [o.id for o in c.orbits] == ["D139", "A088"]
    assert c.orbit("A088").incidence_deg == 41.5 and c.orbit("D139").incidence_deg == 39.0  # default
    assert c.orbit("D139").look_azimuth_deg == pytest.approx(280.0)  # descending looks west
    assert c.orbit("A088").look_azimuth_deg == pytest.approx(80.0)  # ascending looks east
    season = c.season("2017-2018")
    assert season.start == dt.date(2017, 11, 1) and season.summer["D139"][1] == dt.date(2017, 8, 22)
    with pytest.raises(KeyError, match="D139"):  # the message lists the real orbits
        c.orbit("X1")


def test_write_config_round_trip(tmp_path: Path):
    cfg = Study.load(_write_study(tmp_path / "a")).config
    out = tmp_path / "b"
    out.mkdir()
    path = Study.write_config(out, cfg)
    assert path == out / "study.toml"
    again = Study.load(out).config
    assert again == cfg
    assert again.season("2017-2018").dates["A088"][0] == dt.date(2018, 1, 9)  # dates survive as dates
    assert not list(out.glob("*.tmp-*"))  # written atomically, nothing left behind


def test_paths(tmp_path: Path):
    s = Study.load(_write_study(tmp_path / "s"))
    d = dt.date(2018, 1, 3)
    assert s.scene_path("A088", d, "VV") == tmp_path / "s" / "scenes" / "A088" / "20180103" / "VV.tif"
    assert s.scene_path("A088", d, "layover_shadow").name == "layover_shadow.tif"
    assert s.shard_path("2017-2018", "A088", d) == tmp_path / "s" / "work" / "shards" / "2017-2018" / "A088" / "20180103.h5"
    assert s.store_path == tmp_path / "s" / "work" / "patches.h5"
    assert s.runs_dir("e1") == tmp_path / "s" / "runs" / "e1"


def test_runs_layout(tmp_path: Path):
    """Every runs/ path comes from Study.runs(experiment) (docs/architecture.md, "Runs layout")."""
    s = Study.load(_write_study(tmp_path / "s"))
    runs = s.runs("e1")
    exp = tmp_path / "s" / "runs" / "e1"
    assert runs.root == exp and runs.experiment_json == exp / "experiment.json"
    assert runs.features_dir == exp / "features" and runs.split_csv("random") == exp / "random" / "split.csv"
    cnn = runs.cnn("holdout-vanoise", 3)
    assert cnn.dir == exp / "holdout-vanoise" / "cnn" / "seed3"
    assert (cnn.config.name, cnn.history.name, cnn.checkpoint.name, cnn.best.name) == (
        "config.json", "history.csv", "checkpoint.pt", "best.pt")
    base = runs.baseline("random")
    assert base.dir == exp / "random" / "baseline"
    assert (base.params.name, base.predictions.name, base.metrics.name) == ("params.json", "predictions.csv",
                                                                           "metrics.json")
    assert runs.split_names() == [] and runs.cnn_seeds("random") == []
    for seed in (10, 2):
        runs.cnn("random", seed).dir.mkdir(parents=True)
    (runs.cnn_dir("random") / "seedling").mkdir()
    runs.features_dir.mkdir()
    assert runs.split_names() == ["features", "random"] and runs.cnn_seeds("random") == [2, 10]
    assert s.report_index("e1") == tmp_path / "s" / "reports" / "e1" / "index.html"


def test_winter_dates_discovered_vs_listed(tmp_path: Path):
    root = _write_study(tmp_path / "s")
    # D139 has no listed dates: discovered from folders inside the season window, summer dates excluded
    _scene_folders(root, "D139", ["20170810", "20170822", "20171203", "20171209", "20180601", "notes", "20171215"])
    # A088 lists its dates: folders are not consulted
    _scene_folders(root, "A088", ["20171222", "20180103"])
    s = Study.load(root)
    assert s.winter_dates("2017-2018", "D139") == [dt.date(2017, 12, 3), dt.date(2017, 12, 9), dt.date(2017, 12, 15)]
    assert s.winter_dates("2017-2018", "A088") == [dt.date(2017, 12, 28), dt.date(2018, 1, 3), dt.date(2018, 1, 9)]
    assert s.summer_dates("2017-2018", "D139") == [dt.date(2017, 8, 10), dt.date(2017, 8, 22)]
    assert s.scene_dates("D139")[0] == dt.date(2017, 8, 10)  # every dated folder, summer included


def test_acquisitions_chain_prev_dates(tmp_path: Path):
    root = _write_study(tmp_path / "s")
    _scene_folders(root, "D139", ["20171203", "20171209", "20171215"])
    s = Study.load(root)
    acq = s.acquisitions(orbit="D139")
    assert acq == [
        Acquisition("2017-2018", "D139", dt.date(2017, 12, 3), None),
        Acquisition("2017-2018", "D139", dt.date(2017, 12, 9), dt.date(2017, 12, 3)),
        Acquisition("2017-2018", "D139", dt.date(2017, 12, 15), dt.date(2017, 12, 9)),
    ]
    assert acq[1].key == "2017-2018/D139/20171209"
    tasks = s.acquisitions(include_first=False)  # what preprocess runs: every date with a previous one
    assert [(a.orbit, a.date, a.prev_date) for a in tasks] == [
        ("D139", dt.date(2017, 12, 9), dt.date(2017, 12, 3)),
        ("D139", dt.date(2017, 12, 15), dt.date(2017, 12, 9)),
        ("A088", dt.date(2018, 1, 3), dt.date(2017, 12, 28)),
        ("A088", dt.date(2018, 1, 9), dt.date(2018, 1, 3)),
    ]
    assert s.acquisitions(season="1999-2000") == []
    assert all(a.previous == a.prev_date for a in tasks)
    with pytest.raises(ArgumentError, match="first acquisition of its season"):  # makes no shard
        _ = acq[0].previous


def test_read_inventory_parses_dates_like_the_check(tmp_path: Path):
    root = _write_study(tmp_path / "s")
    header = "event_id,path_id,date_min,date_max,deposit_area_m2\n"
    (root / "inventory.csv").write_text(header + "e1,p1, 2018-01-02 ,2018-01-03,\n", encoding="utf-8")
    inv = Study.load(root).read_inventory()  # surrounding spaces are ignored, as 'inputs check' does
    assert (inv.at[0, "date_min"], inv.at[0, "date_max"]) == (dt.date(2018, 1, 2), dt.date(2018, 1, 3))
    (root / "inventory.csv").write_text(header + "e1,p1,2018-01-05,2018-01-03,\ne2,p1,2018-13-01,2018-01-03,\n",
                                        encoding="utf-8")
    with pytest.raises(InputError) as e:
        Study.load(root).read_inventory()
    assert [(p.where, p.what) for p in e.value.problems] == [
        ("row 2, date_min", "unparsable date '2018-13-01'"),
        ("row 1, date_max", "date_max 2018-01-03 is before date_min 2018-01-05"),
    ]


@pytest.mark.parametrize("edit, key", [
    (lambda t: t.replace('name = "two-orbits"', 'nmae = "two-orbits"'), "nmae"),  # unknown key
    (lambda t: t.replace('name = "two-orbits"\n', ""), "name"),  # missing key
    (lambda t: t.replace('direction = "descending"', 'direction = "west"'), "orbits.0.direction"),
    (lambda t: t.replace("relative_orbit = 88", "relative_orbit = 300"), "orbits.1.relative_orbit"),
    (lambda t: t.replace("pixel_size_m = 20.0", "pixel_size_m = -20.0"), "pixel_size_m"),
    (lambda t: t.replace('units = "dB"', 'units = "decibel"'), "units"),
    (lambda t: t.replace('focus_massif = "Haute-Maurienne"', 'focus_massif = "Chartreuse"'), "Chartreuse"),
    (lambda t: t.replace("end = 2018-05-31", "end = 2017-10-01"), "2017-10-01"),
    (lambda t: t.replace("A088 = [2017-08-12]", "A088 = [2017-08-12]\nX9 = [2017-08-12]"), "X9"),
    (lambda t: t.replace("start = 2017-11-01", "start = 2017-13-01"), "line"),  # TOML syntax: names the line
])
def test_bad_study_toml_names_the_key(tmp_path: Path, edit, key: str):
    root = _write_study(tmp_path / "s", edit(STUDY_TOML))
    with pytest.raises(InputError) as e:
        Study.load(root)
    msg = str(e.value)
    assert "study.toml" in msg and key in msg
    assert all(p.fix for p in e.value.problems)


def test_every_bad_key_is_reported(tmp_path: Path):
    text = STUDY_TOML.replace("crs_epsg = 32632", 'crs_epsg = "utm"').replace('units = "dB"', 'units = "x"')
    with pytest.raises(InputError) as e:
        Study.load(_write_study(tmp_path / "s", text))
    assert {p.where for p in e.value.problems} == {"key crs_epsg", "key units"}


def test_missing_study_is_a_clear_error(tmp_path: Path):
    with pytest.raises(MissingInputError, match="does not exist"):
        Study.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError, match="study.toml"):
        Study.load(tmp_path / "empty")


def test_config_validates_in_python_too():
    base = StudyConfig.model_validate({
        "name": "x", "crs_epsg": 2154, "pixel_size_m": 10, "massifs": ["A"],
        "orbits": [{"id": "D1", "direction": "descending", "relative_orbit": 1}],
        "seasons": [{"id": "s", "start": "2020-11-01", "end": "2021-05-01", "summer": {"D1": ["2020-08-01"]}}],
    })
    assert base.units == "linear" and base.patch_size == 64  # defaults
    with pytest.raises(ValueError, match="unique"):
        StudyConfig.model_validate(base.model_dump() | {"orbits": [base.orbits[0].model_dump()] * 2})


def test_synthetic_tiny_study_loads(tiny_study: Path, tmp_path: Path):
    """The generator's output is a Study like any other: listed dates, chained acquisitions, config round trip."""
    s = Study.load(tiny_study)
    for o in s.config.orbits:
        season = s.config.seasons[0]
        listed = sorted(season.dates[o.id]) if season.dates and o.id in season.dates else None
        dates = s.winter_dates(season.id, o.id)
        assert dates == (listed if listed is not None else dates) and len(dates) >= 2
        acq = s.acquisitions(season=season.id, orbit=o.id)
        assert [a.prev_date for a in acq] == [None, *dates[:-1]]
        assert all(s.scene_path(o.id, d, "VV").is_file() for d in dates)
    Study.write_config(tmp_path, s.config)
    assert Study.load(tmp_path).config == s.config
