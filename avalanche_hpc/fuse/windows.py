"""Release windows: intersections and the common timeline of several orbits.

A window ``(start, end]`` holds the days ``start + 1 .. end`` (as per-orbit windows ``(prev_date,
date]``: an event dated ``start`` belongs to the previous window). Its width is ``end - start``
days. Two windows that only touch (``(a, b]`` and ``(b, c]``) share no day: their intersection is
empty.

The *units* of fusion are the elementary intervals of the union of the orbits' acquisition dates
(``elementary_intervals``): between two consecutive dates of any orbit, every orbit's window
either covers the whole interval or none of it, so each unit has at most one window per orbit
(``covering_window``). A unit is the finest release window the acquisitions can resolve.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Sequence

Window = tuple[dt.date, dt.date]  # (start, end]: exclusive start, inclusive end


def width_days(w: Window) -> int:
    return (w[1] - w[0]).days


def contains(w: Window, day: dt.date) -> bool:
    """Whether the event day ``day`` lies in ``(start, end]``."""
    return w[0] < day <= w[1]


def intersect(windows: Iterable[Window]) -> Window | None:
    """The intersection of ``(start, end]`` windows; None when empty (disjoint or touching) or no window."""
    ws = list(windows)
    if not ws:
        return None
    lo = max(w[0] for w in ws)
    hi = min(w[1] for w in ws)
    return (lo, hi) if lo < hi else None


def elementary_intervals(dates_by_orbit: dict[str, Sequence[dt.date]]) -> list[Window]:
    """Consecutive pairs of the union of the orbits' dates, from the earliest window start on.

    Each orbit's dates are its acquisitions (the first one opens its first window). Intervals
    covered by no orbit's window (before every orbit's first date) do not exist here.
    """
    union = sorted({d for ds in dates_by_orbit.values() for d in ds})
    return list(itertools.pairwise(union))


def covering_window(dates: Sequence[dt.date], unit: Window) -> Window | None:
    """The window ``(dates[k-1], dates[k]]`` of one orbit (sorted dates) that contains ``unit``; None
    when the unit lies before the orbit's first date or after its last one."""
    import bisect

    k = bisect.bisect_left(list(dates), unit[1])  # first date >= the unit's end
    if k == 0 or k >= len(dates):
        return None
    w = (dates[k - 1], dates[k])
    return w if w[0] <= unit[0] and unit[1] <= w[1] else None
