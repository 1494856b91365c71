"""Synthetic Sentinel-1 season: a study that satisfies the input contract, with known truth.

One module per concern: ``terrain`` (DEM, massifs), ``corridors`` (release zones, paths,
deposit footprints), ``snowpack`` (weather, wet snow, crust), ``radar`` (geometry, layover and
shadow, sigma0, speckle), ``debris`` (deposit signal and fading), ``inventory`` (events and the
imperfect inventory), ``presets`` (sizes and physics knobs), ``generate`` (writing the study).
"""

from avalanche_hpc.synth.generate import generate_study
from avalanche_hpc.synth.presets import PRESETS, Physics, Preset, get_preset

__all__ = ["PRESETS", "Physics", "Preset", "generate_study", "get_preset"]
