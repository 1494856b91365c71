"""Label maps: every edge of the window rule, on hand-built inventories.

Acquisitions t0 = 2018-01-07 and t1 = 2018-01-13: the window of the label is (t0, t1].
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from avalanche_hpc.preprocess.labels import label_map
from avalanche_hpc.study import LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_UNKNOWN

T0, T1 = dt.date(2018, 1, 7), dt.date(2018, 1, 13)


def d(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


def inventory(rows: list[tuple[str, str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(e, p, d(a), d(b), area) for e, p, a, b, area in rows],
        columns=["event_id", "path_id", "date_min", "date_max", "deposit_area_m2"],
    )


def corridors(*paths: str, monitored=None) -> pd.DataFrame:
    df = pd.DataFrame({"path_id": list(paths), "massif": "Vanoise"})
    if monitored is not None:
        df["monitored"] = monitored
    return df


def one(window: tuple[str, str]) -> int:
    inv = inventory([("e1", "p1", window[0], window[1], 100.0)])
    return int(label_map(inv, corridors("p1"), T0, T1)["label"].iloc[0])


@pytest.mark.parametrize(
    ("window", "expected", "why"),
    [
        (("2018-01-10", "2018-01-10"), LABEL_POSITIVE, "one day inside"),
        (("2018-01-08", "2018-01-13"), LABEL_POSITIVE, "the whole gap, ending exactly at t1"),
        (("2018-01-13", "2018-01-13"), LABEL_POSITIVE, "on the day of t1"),
        (("2018-01-07", "2018-01-09"), LABEL_UNKNOWN, "starting exactly at t0: may predate t0"),
        (("2018-01-07", "2018-01-07"), LABEL_NEGATIVE, "on the day of t0: belongs to the previous window"),
        (("2018-01-05", "2018-01-09"), LABEL_UNKNOWN, "straddles t0"),
        (("2018-01-11", "2018-01-15"), LABEL_UNKNOWN, "straddles t1"),
        (("2018-01-14", "2018-01-14"), LABEL_NEGATIVE, "the day after t1: the next window"),
        (("2018-01-01", "2018-01-20"), LABEL_UNKNOWN, "wider than the gap"),
        (("2017-12-20", "2018-01-06"), LABEL_NEGATIVE, "before t0"),
    ],
)
def test_window_rule(window, expected, why):
    assert one(window) == expected, why


def test_monitored_and_unmonitored_corridors():
    inv = inventory([("e1", "p1", "2018-01-09", "2018-01-10", 100.0),
                     ("e2", "p3", "2018-01-09", "2018-01-10", 100.0)])
    out = label_map(inv, corridors("p1", "p2", "p3", monitored=[True, True, False]), T0, T1)
    assert list(out["path_id"]) == ["p1", "p2", "p3"]
    # p2: monitored, no event -> negative; p3: unmonitored -> unknown even with an event inside
    assert list(out["label"]) == [LABEL_POSITIVE, LABEL_NEGATIVE, LABEL_UNKNOWN]
    assert list(out["event_id"]) == ["e1", "", ""]
    # no 'monitored' column: every corridor is monitored
    out = label_map(inv.iloc[:0], corridors("p1", "p2"), T0, T1)
    assert list(out["label"]) == [LABEL_NEGATIVE, LABEL_NEGATIVE]
    assert np.isnan(out["deposit_area_m2"]).all()


def test_two_events():
    inv = inventory([
        ("e1", "p1", "2018-01-08", "2018-01-09", 100.0),  # inside
        ("e2", "p1", "2018-01-11", "2018-01-12", 250.0),  # inside
        ("e3", "p2", "2018-01-09", "2018-01-09", 40.0),  # inside
        ("e4", "p2", "2018-01-01", "2018-01-20", 999.0),  # wider than the gap
        ("e5", "p3", "2018-01-01", "2018-01-20", 50.0),  # wider than the gap
        ("e6", "p3", "2018-01-20", "2018-01-21", 50.0),  # the next window
        ("e7", "p4", "2018-01-02", "2018-01-03", 50.0),  # the previous window
        ("e8", "p4", "2018-01-15", "2018-01-16", 50.0),  # the next window
    ])
    out = label_map(inv, corridors("p1", "p2", "p3", "p4"), T0, T1).set_index("path_id")
    # two events inside: positive, both listed, areas summed
    assert out.at["p1", "label"] == LABEL_POSITIVE
    assert out.at["p1", "event_id"] == "e1;e2"
    assert out.at["p1", "deposit_area_m2"] == pytest.approx(350.0)
    # an event inside wins over an uncertain one: a new deposit is there either way
    assert out.at["p2", "label"] == LABEL_POSITIVE and out.at["p2", "event_id"] == "e3"
    assert out.at["p2", "deposit_area_m2"] == pytest.approx(40.0)
    assert out.at["p3", "label"] == LABEL_UNKNOWN and out.at["p3", "event_id"] == ""
    assert out.at["p4", "label"] == LABEL_NEGATIVE


def test_unknown_area_and_unknown_path_ids():
    inv = inventory([("e1", "p1", "2018-01-09", "2018-01-09", np.nan),
                     ("e2", "gone", "2018-01-09", "2018-01-09", 10.0)])
    out = label_map(inv, corridors("p1"), T0, T1)
    assert len(out) == 1 and out["label"].iloc[0] == LABEL_POSITIVE
    assert np.isnan(out["deposit_area_m2"].iloc[0])


def test_text_monitored_flags_are_refused():
    with pytest.raises(ValueError, match="holds text"):
        label_map(inventory([]), corridors("p1", monitored=["false"]), T0, T1)


def test_acquisitions_must_be_ordered():
    with pytest.raises(ValueError, match="must be before"):
        label_map(inventory([]), corridors("p1"), T1, T0)
