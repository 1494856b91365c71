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


S1_CYCLE_DAYS = 12.0  # one Sentinel-1 satellite repeats its 175 relative orbits every 12 days
S1_ORBITS = 175


def orbit_offset_days(relative_orbit: int, reference: int) -> float:
    """Days after relative orbit ``reference`` that orbit ``relative_orbit`` passes (modulo the 12-day cycle):
    consecutive relative orbits are one orbital period (12/175 days) apart."""
    return ((relative_orbit - reference) * S1_CYCLE_DAYS / S1_ORBITS) % S1_CYCLE_DAYS


def time_weighted_unit_widths(offsets_days: Sequence[float], repeat_days: float,
                              quantiles: Sequence[float] = (0.25, 0.5, 0.75)) -> list[float]:
    """Quantiles of the width of the unit that holds a uniformly random instant, for passes at ``offsets_days``
    (modulo ``repeat_days``: 12 with one satellite, 6 with S1A + S1B): the geometric floor of a fused window
    (continuous time; a unit of width w holds a share w / repeat of the instants)."""
    t = sorted({round(o % repeat_days, 9) for o in offsets_days})
    gaps = sorted([b - a for a, b in itertools.pairwise(t)] + [repeat_days - t[-1] + t[0]])
    cum = list(itertools.accumulate(g / repeat_days for g in gaps))
    return [next(g for g, c in zip(gaps, cum, strict=True) if c >= q - 1e-12) for q in quantiles]
