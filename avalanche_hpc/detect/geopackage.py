"""The detections GeoPackage: one layer of corridor polygons, one of deposition points.

Both layers hold one feature per observed (corridor, season, orbit, date) with the same
attributes (``GPKG_COLUMNS``), in the study CRS: QGIS opens either; its temporal controller can
use ``prev_date``/``date`` (the window ``(prev_date, date]``). ``label`` is the inventory label
(1 positive, 0 negative) and NULL where there is none (unmonitored corridor, or an event
window wider than the acquisition gap); ``event_id`` lists the inventory events (``e1;e2``).

Layers are appended part by part (``append_part``), so writing the product needs memory for
one date's rows plus the corridor geometries, whatever the number of dates.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from shapely import points

from avalanche_hpc.atomic import tmp_path_for

logging.getLogger("pyogrio").setLevel(logging.WARNING)  # one INFO line per appended part otherwise

POLYGON_LAYER, POINT_LAYER = "corridors", "deposition"
GPKG_COLUMNS = ["path_id", "massif", "season", "orbit", "prev_date", "date", "window_days", "cnn_prob",
                "baseline_prob", "cnn_detected", "baseline_detected", "detected", "valid_fraction", "label",
                "event_id", "deposit_area_m2", "elevation", "slope", "aspect"]


@contextlib.contextmanager
def gpkg_atomic_path(target: Path) -> Iterator[Path]:
    """As ``atomic.atomic_path``, with a temporary name ending in ``.gpkg`` (GDAL wants the extension);
    SQLite side files (``-journal``, ``-wal``) of a killed writer are removed with the temporary file."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{tmp_path_for(target)}.gpkg")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        for p in (tmp, tmp.with_name(tmp.name + "-journal"), tmp.with_name(tmp.name + "-wal"),
                  tmp.with_name(tmp.name + "-shm")):
            p.unlink(missing_ok=True)


def attribute_table(part: pd.DataFrame) -> pd.DataFrame:
    """The GeoPackage attributes of a part's observed rows (``GPKG_COLUMNS``)."""
    obs = part[part["observed"].to_numpy(dtype=bool)].reset_index(drop=True)
    out = obs[["path_id", "massif", "season", "orbit"]].copy()
    prev = pd.to_datetime(obs["prev_date"], format="%Y-%m-%d")
    date = pd.to_datetime(obs["date"], format="%Y-%m-%d")
    out["prev_date"] = prev.astype("datetime64[ms]")
    out["date"] = date.astype("datetime64[ms]")
    out["window_days"] = (date - prev).dt.days.astype("int32")
    out["cnn_prob"] = obs["cnn_prob"].astype(float)
    out["baseline_prob"] = obs["baseline_prob"].astype(float)
    out["cnn_detected"] = obs["cnn_detected"].astype(bool)
    out["baseline_detected"] = obs["baseline_detected"].astype(bool)
    out["detected"] = out["cnn_detected"]
    out["valid_fraction"] = obs["valid_fraction"].astype(float)
    label = obs["label"].to_numpy()
    out["label"] = pd.array(np.where(label >= 0, label, 0), dtype="Int16")
    out.loc[label < 0, "label"] = pd.NA
    ev = obs["event_id"].fillna("").astype(str)
    out["event_id"] = ev.where(ev != "", None)
    for c in ("deposit_area_m2", "elevation", "slope", "aspect"):
        out[c] = obs[c].astype(float)
    return out[GPKG_COLUMNS]


def append_part(path: Path, part: pd.DataFrame, polygons: gpd.GeoSeries, crs, first: bool) -> int:
    """Append a part's observed rows to both layers of ``path``; returns the number of rows written.

    ``polygons``: corridor geometries indexed by ``path_id``. ``first`` creates the layers.
    """
    attrs = attribute_table(part)
    missing = sorted(set(attrs["path_id"]) - set(polygons.index))
    if missing:
        from avalanche_hpc.errors import StageError

        raise StageError(f"detections name corridors absent from corridors.gpkg: {missing[:5]} -> the store was made "
                         f"from other corridors; re-run preprocess and merge")
    poly = gpd.GeoDataFrame(attrs, geometry=polygons.loc[attrs["path_id"]].to_numpy(), crs=crs)
    pts = gpd.GeoDataFrame(attrs.copy(), geometry=points(part.loc[part["observed"].to_numpy(dtype=bool), "x"].to_numpy(),
                                                         part.loc[part["observed"].to_numpy(dtype=bool), "y"].to_numpy()),
                           crs=crs)
    for layer, frame in ((POLYGON_LAYER, poly), (POINT_LAYER, pts)):
        if first or len(frame):
            pyogrio.write_dataframe(frame, path, layer=layer, driver="GPKG", append=not first,
                                    promote_to_multi=layer == POLYGON_LAYER)
    return len(attrs)


def read_layer(path: Path, layer: str = POINT_LAYER) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer=layer)
