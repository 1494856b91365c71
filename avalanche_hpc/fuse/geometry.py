"""Viewing geometry of one orbit over one slope (the deposition zone of a corridor).

With the slope ``beta`` and aspect ``alpha`` (downslope direction, degrees from north) of the
deposition zone, the unit normal is ``n = (sin b sin a, sin b cos a, cos b)`` (east, north, up);
the unit vector from the ground to the sensor of an orbit looking towards azimuth ``phi`` at
incidence ``theta`` is ``s = (-sin t sin p, -sin t cos p, cos t)`` (as ``synth/radar.py``). Then:

- ``cos_local = n . s``: the local incidence angle's cosine (small or negative: grazing or shadow);
- ``faces_sensor``: the slope's horizontal normal points towards the sensor (``cos(alpha - phi -
  180) > 0``): east-facing slopes for a descending (west-looking) orbit, west-facing ones for an
  ascending orbit; foreshortened, the paper's misses.

The layover/shadow share of a window comes from the patch itself (``1 - valid_fraction``).
"""

from __future__ import annotations

import numpy as np


def cos_local_incidence(slope_deg, aspect_deg, look_azimuth_deg: float, incidence_deg: float) -> np.ndarray:
    b = np.radians(np.asarray(slope_deg, dtype=float))
    a = np.radians(np.asarray(aspect_deg, dtype=float))
    t, p = np.radians(incidence_deg), np.radians(look_azimuth_deg)
    n = (np.sin(b) * np.sin(a), np.sin(b) * np.cos(a), np.cos(b))
    s = (-np.sin(t) * np.sin(p), -np.sin(t) * np.cos(p), np.cos(t))
    return n[0] * s[0] + n[1] * s[1] + n[2] * s[2]


def faces_sensor(aspect_deg, look_azimuth_deg: float) -> np.ndarray:
    a = np.radians(np.asarray(aspect_deg, dtype=float))
    return np.cos(a - np.radians(look_azimuth_deg + 180.0)) > 0
