"""The product method, chosen on the validation corridors by the goal itself (decided before seeds 5-7).

Issue 15's goal: fused recall above every single orbit's at no more than its false-alarm rate.
On the *validation* corridors of the split (synthetic truth exists for every corridor; the
evaluation corridors are never read here), event-level POD and FAR (``evaluation.event_scores``)
of each all-orbit method and of each single orbit (raw: the detect product). The rule
(``select_product``):

1. the all-orbit methods whose validation FAR is <= the lowest validation FAR of the single orbits
   qualify; the product is the qualifying one with the highest validation POD (ties: lower FAR,
   then the order of ``methods.METHODS``);
2. if none qualifies, the method with the lowest validation FAR (ties: higher POD, then that order).

A method (or orbit) without detections on the validation corridors has no FAR (NaN): it never
qualifies and comes last in step 2; orbits without a FAR do not set the bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

RULE = ("chosen on the validation corridors by the goal (decided before seeds 5-7): among the all-orbit methods whose "
        "validation FAR is <= the lowest validation FAR of the single orbits (raw), the highest validation POD (ties: "
        "lower FAR); if none qualifies, the lowest validation FAR (ties: higher POD)")


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def select_product(methods: Mapping[str, Mapping[str, Any]], orbits: Mapping[str, Mapping[str, Any]],
                   order: Sequence[str]) -> dict[str, Any]:
    """The product by the module's rule.

    ``methods``: all-orbit method -> ``{"pod", "far", ...}`` on the validation corridors;
    ``orbits``: single orbit (raw) -> the same; ``order``: tie-break order of the methods.
    Returns ``{"method", "reason", "far_bound" (the lowest single-orbit FAR), "far_bound_orbit", "qualifying"}``.
    """
    if not methods:
        raise ValueError("product selection: no all-orbit method to choose from")
    rank = {m: i for i, m in enumerate(order)}
    names = sorted(methods, key=lambda m: rank.get(m, len(rank)))
    far = {m: _num(methods[m].get("far")) for m in names}
    pod = {m: _num(methods[m].get("pod")) for m in names}
    pod = {m: 0.0 if math.isnan(v) else v for m, v in pod.items()}
    orbit_fars = [f for f in (_num(o.get("far")) for o in orbits.values()) if not math.isnan(f)]
    bound = min(orbit_fars) if orbit_fars else math.nan
    best_orbit = min((o for o in orbits if not math.isnan(_num(orbits[o].get("far")))),
                     key=lambda o: _num(orbits[o].get("far")), default=None)
    qualifying = [m for m in names if not math.isnan(far[m]) and not math.isnan(bound) and far[m] <= bound]
    if qualifying:
        chosen = min(qualifying, key=lambda m: (-pod[m], far[m], rank.get(m, len(rank))))
        reason = "highest validation POD among the methods with validation FAR <= the lowest single-orbit FAR"
    else:
        chosen = min(names, key=lambda m: (math.isnan(far[m]), far[m] if not math.isnan(far[m]) else 0.0, -pod[m],
                                           rank.get(m, len(rank))))
        reason = "no method at or below the lowest single-orbit validation FAR: the lowest validation FAR"
    return {"method": chosen, "reason": reason, "far_bound": None if math.isnan(bound) else bound,
            "far_bound_orbit": best_orbit, "qualifying": qualifying}
