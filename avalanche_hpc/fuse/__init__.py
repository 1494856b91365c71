"""Orbit fusion: per corridor, the orbits' detections combined -> more avalanches found, release dates narrowed.

Modules (plain functions; run by ``detect.publish`` when the study has more than one orbit):

- ``windows``: ``(start, end]`` release windows, their intersection, the units of several orbits;
- ``geometry``: an orbit's local incidence over a slope, whether the slope faces the sensor;
- ``units``: the fusion table, one row per (season, corridor, unit) with every orbit's evidence;
- ``appearance``: the windows in which an orbit saw a deposit appear (not merely persist);
- ``methods``: rules (``max``, ``noisy_or``, ``or``, ``or_appear``, ``vote_appear``), fused detections and their
  windows, the threshold rule;
- ``stacker``: the logistic-regression stacker trained on the validation corridors;
- ``evaluation``: single orbits, directions and fused methods on the evaluation corridors;
- ``selection``: the product method, chosen by the goal on the validation corridors' event POD / FAR;
- ``fusion``: ``fuse_parts`` (all of the above) -> ``FusionResult``;
- ``product``: the GeoPackage's ``fused`` layer, ``fusion.csv``, ``fusion.json``.
"""

from avalanche_hpc.fuse.fusion import FusionResult, fuse_parts

__all__ = ["FusionResult", "fuse_parts"]
