"""Fusion outputs: the GeoPackage's ``fused`` layer, ``fusion.csv`` and ``fusion.json``.

Layer ``fused`` (corridor polygons, study CRS): one feature per fused detection of every
all-orbit method (``method``: max, noisy_or, stacker, or, or_appear, vote_appear; ``product`` true for the
product method, chosen on the validation corridors: ``selection``): ``start``, ``end`` (the fused release window ``(start, end]``), ``width_days``,
``score``, ``orbits`` (those that saw the deposit appear, ``;``-separated), ``n_orbits``,
``label`` (inventory label of the window by the per-orbit rule: 1, 0 or NULL) and ``event_id``.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from avalanche_hpc.atomic import write_json, write_text
from avalanche_hpc.fuse.fusion import FusionResult

FUSED_LAYER = "fused"


def append_fused_layer(path: Path, result: FusionResult, polygons: gpd.GeoSeries, crs) -> int:
    """Write the ``fused`` layer into the (temporary) GeoPackage ``path``; returns its feature count."""
    d = result.detections.copy()
    d["start"] = pd.to_datetime(d["start"], format="%Y-%m-%d").astype("datetime64[ms]")
    d["end"] = pd.to_datetime(d["end"], format="%Y-%m-%d").astype("datetime64[ms]")
    d["width_days"] = d["width_days"].astype("int32")
    d["n_orbits"] = d["n_orbits"].astype("int32")
    d["product"] = d["product"].astype(bool)
    d["score"] = d["score"].astype(float)
    frame = gpd.GeoDataFrame(d, geometry=polygons.loc[d["path_id"]].to_numpy() if len(d) else [], crs=crs)
    pyogrio.write_dataframe(frame, path, layer=FUSED_LAYER, driver="GPKG", append=True, promote_to_multi=True)
    return len(frame)


def write_fusion_files(evaluation_path: Path, model_path: Path, result: FusionResult) -> None:
    write_text(evaluation_path, result.evaluation.to_csv(index=False, lineterminator="\n"))
    write_json(model_path, result.model)


def read_fused_layer(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer=FUSED_LAYER)
