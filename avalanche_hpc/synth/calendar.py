"""Acquisition calendar of the Sentinel-1 constellation: which dates a relative orbit is seen on.

One satellite repeats its orbit every 12 days; two satellites 180 degrees apart on the same
orbital plane see every relative orbit every 6 days. The constellation changed three times
since the archive opened (sources: docs/data-contract.md "Seasons and the constellation"):

- Sentinel-1A alone from the opening of data access on 3 October 2014 (ESA, Sentinel-1
  production scenario page): 12-day repeat;
- Sentinel-1B operational from its in-orbit commissioning review on 14 September 2016 (ESA,
  "Flying colours for Sentinel-1B"): 6-day repeat;
- Sentinel-1B failed on 23 December 2021 (ESA, "Mission ends for Copernicus Sentinel-1B
  satellite"): 12-day repeat again from that day (the failure was in the early morning UTC, so
  that day's B passes are gone);
- Sentinel-1C, launched 5 December 2024 (NASA Earthdata catalogue), took Sentinel-1B's slot;
  its data are in the archive from January 2025 (eo-atlas mission page). The exact first day of
  its IW GRD over the Alps was not found in the sources available here: ``S1C_START`` is that
  month-level date, a choice to check against the archive. Real studies list their dates from
  ``scenes/``; the calendar only drives the synthetic generator and the campaign sizing.

The model: every relative orbit has an *anchor* date (a pass of the first satellite); the
candidate dates are ``anchor + 6 k``; even ``k`` belong to the first satellite (S1A), odd ``k``
to the second slot (S1B, later S1C), and a date is acquired when its satellite was operational
on that day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = [
    "S1A_START",
    "S1B_END",
    "S1B_START",
    "S1C_START",
    "Pass",
    "acquisition_dates",
    "passes",
    "repeat_days_on",
    "satellites_on",
]

REPEAT_ONE_SATELLITE_DAYS = 12
HALF_REPEAT_DAYS = 6
S1A_START = dt.date(2014, 10, 3)
S1B_START = dt.date(2016, 9, 14)
S1B_END = dt.date(2021, 12, 23)  # first day without Sentinel-1B data
S1C_START = dt.date(2025, 1, 1)  # month-level (see the module docstring)


@dataclass(frozen=True)
class Pass:
    """One acquisition of a relative orbit: its date and the satellite that made it."""

    date: dt.date
    satellite: str  # "S1A", "S1B" or "S1C"


def _second_slot(d: dt.date) -> str | None:
    """The satellite flying in the slot 180 degrees from S1A on day ``d`` (None: nobody)."""
    if S1B_START <= d < S1B_END:
        return "S1B"
    if d >= S1C_START:
        return "S1C"
    return None


def satellites_on(d: dt.date) -> tuple[str, ...]:
    """Operational satellites on day ``d``."""
    out = []
    if d >= S1A_START:
        out.append("S1A")
    second = _second_slot(d)
    if second:
        out.append(second)
    return tuple(out)


def repeat_days_on(d: dt.date) -> int | None:
    """Repeat interval of one relative orbit on day ``d``: 6 (two satellites), 12 (one), None (none)."""
    n = len(satellites_on(d))
    return {0: None, 1: REPEAT_ONE_SATELLITE_DAYS, 2: HALF_REPEAT_DAYS}[n]


def passes(anchor: dt.date, start: dt.date, end: dt.date) -> list[Pass]:
    """Every pass of the relative orbit anchored at ``anchor`` (an S1A pass) in ``[start, end]``."""
    if end < start:
        return []
    k = -((anchor - start).days // HALF_REPEAT_DAYS)  # first k with anchor + 6k >= start
    out: list[Pass] = []
    while True:
        d = anchor + dt.timedelta(days=HALF_REPEAT_DAYS * k)
        if d > end:
            return out
        if d >= start:
            sat = ("S1A" if d >= S1A_START else None) if k % 2 == 0 else _second_slot(d)
            if sat:
                out.append(Pass(d, sat))
        k += 1


def acquisition_dates(anchor: dt.date, start: dt.date, end: dt.date) -> list[dt.date]:
    """Dates of ``passes(anchor, start, end)``."""
    return [p.date for p in passes(anchor, start, end)]
