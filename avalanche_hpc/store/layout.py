"""The HDF5 patch store: every (season, orbit, date, path_id) patch of a study, with its metadata.

Layout of ``STUDY/work/patches.h5`` (and of each shard, which holds the rows of one date)::

    /patches            float32 (N, 3, P, P), dB, NaN where invalid (nodata, layover/shadow)
                        attrs: channels = ["VV*", "VV*_old", "VHdiff"], units = "dB"
    /meta/<column>      one 1-D dataset per metadata column (strings: UTF-8 variable length)
    attrs               schema_version, study name, created_by (version), inputs/settings digest

Metadata columns (``META_COLUMNS``); the key of a row is (season, orbit, date, path_id).

This module is the only place that knows the layout. Readers use ``read_meta`` and
``read_patches``; writers use ``write_patches`` or, for a store larger than memory,
``open_patch_writer`` (both atomic: temp file + fsync + rename). Every file is opened with
``open_h5`` (HDF5 file locking off: files are never modified after the rename, and shared
cluster filesystems often refuse the lock). The merged store may instead be an HDF5 virtual
dataset over the shards (``merge.py``); readers do not see the difference.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from avalanche_hpc.atomic import atomic_path
from avalanche_hpc.errors import ArgumentError

SCHEMA_VERSION = 1
CHANNELS = ("VV*", "VV*_old", "VHdiff")
KEY_COLUMNS = ("season", "orbit", "date", "path_id")
# column -> numpy kind: "str" or a numpy dtype
META_COLUMNS: dict[str, str] = {
    "path_id": "str",
    "massif": "str",
    "season": "str",
    "orbit": "str",
    "date": "str",  # YYYY-MM-DD
    "prev_date": "str",  # YYYY-MM-DD
    "label": "int8",  # 1 positive, 0 negative, -1 unknown
    "event_id": "str",  # "" when no event
    "deposit_area_m2": "float32",  # NaN when no event
    "elevation": "float32",  # m, deposition-zone centre
    "slope": "float32",  # degrees
    "aspect": "float32",  # degrees clockwise from north (direction the slope faces)
    "valid_fraction": "float32",  # share of the patch's pixels that are valid (0..1)
    "x": "float32",  # deposition-zone centre, study CRS
    "y": "float32",
}
_STR = h5py.string_dtype(encoding="utf-8")


def open_h5(path: str | os.PathLike[str], mode: str = "r") -> h5py.File:
    """Open a shard/store/cache file without HDF5 file locking.

    Every file of this layout is written once to a private temporary name and renamed into place
    (never modified afterwards), so the lock protects nothing, and shared cluster filesystems
    (NFS, Lustre, GPFS) often refuse it ("unable to lock file, errno 38/524"). This is what
    ``HDF5_USE_FILE_LOCKING=FALSE`` does, per file; that variable, when set, takes precedence.

    An existing file that HDF5 cannot open (truncated, overwritten) raises ``envfail.EnvironmentFault``
    (an ``OSError``) naming the file and the fix.
    """
    try:
        return h5py.File(path, mode, locking=False)
    except OSError as e:
        from avalanche_hpc.envfail import corrupt_file, fault_from

        fault = fault_from(e, path)
        if fault is not None:
            raise fault from e
        if mode == "r" and Path(path).is_file() and os.access(path, os.R_OK):
            raise corrupt_file(path, "HDF5 file", e, "delete it and re-run the stage that writes it (or re-run "
                                                     "that stage with --force)") from e
        raise


def _column_array(name: str, values: pd.Series) -> np.ndarray:
    kind = META_COLUMNS.get(name, "str" if values.dtype == object else str(values.dtype))
    if kind == "str":
        return np.asarray(values.fillna("").astype(str).to_numpy(), dtype=object)
    return values.to_numpy().astype(kind)


def _check_meta(meta: pd.DataFrame, n: int) -> None:
    if len(meta) != n:
        raise ArgumentError(f"{len(meta)} metadata rows for {n} patches")
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise ArgumentError(f"metadata lacks column(s) {missing}")


def _write_meta(f: h5py.File, meta: pd.DataFrame) -> None:
    g = f.create_group("meta")
    for col in meta.columns:
        arr = _column_array(col, meta[col])
        g.create_dataset(col, data=arr, dtype=_STR if arr.dtype == object else arr.dtype)


def _write_attrs(f: h5py.File, attrs: Mapping[str, Any] | None) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    for k, v in (attrs or {}).items():
        f.attrs[k] = v


def write_patches(
    path: str | os.PathLike[str],
    patches: np.ndarray,
    meta: pd.DataFrame,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write patches + metadata atomically to ``path`` (a shard or a consolidated store)."""
    path = Path(path)
    if patches.ndim != 4 or patches.shape[1] != len(CHANNELS) or patches.shape[2] != patches.shape[3]:
        raise ArgumentError(f"patches must be (N, {len(CHANNELS)}, P, P), got {patches.shape}")
    _check_meta(meta, patches.shape[0])
    with atomic_path(path) as tmp:
        with open_h5(tmp, "w") as f:
            # contiguous: one patch is one contiguous 3*P*P*4-byte run, so a random single-patch
            # read is one read, and writing a shard is one large write (no per-chunk overhead)
            f.create_dataset("patches", data=patches.astype(np.float32, copy=False))
            f["patches"].attrs["channels"] = list(CHANNELS)
            f["patches"].attrs["units"] = "dB"
            _write_meta(f, meta)
            _write_attrs(f, attrs)
    return path


@contextlib.contextmanager
def open_patch_writer(
    path: str | os.PathLike[str],
    n: int,
    patch_size: int,
    meta: pd.DataFrame,
    attrs: Mapping[str, Any] | None = None,
) -> Iterator[h5py.Dataset]:
    """Stream a large store: yields the empty ``/patches`` dataset (N, 3, P, P) to fill by slices.

    The file is written to a temporary path and renamed onto ``path`` only when the block exits
    without error (same layout and atomicity as ``write_patches``), so a consolidated store of
    any size never has to fit in memory.
    """
    path = Path(path)
    _check_meta(meta, n)
    with atomic_path(path) as tmp:
        with open_h5(tmp, "w") as f:
            ds = f.create_dataset("patches", shape=(n, len(CHANNELS), patch_size, patch_size), dtype=np.float32)
            ds.attrs["channels"] = list(CHANNELS)
            ds.attrs["units"] = "dB"
            _write_meta(f, meta)
            _write_attrs(f, attrs)
            yield ds


def read_meta(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The metadata table; row i describes ``/patches[i]``."""
    with open_h5(path) as f:
        g = f["meta"]
        data = {}
        for col in g:
            arr = g[col][()]
            if g[col].dtype.kind in ("O", "S"):
                arr = np.array([v.decode() if isinstance(v, bytes) else v for v in arr], dtype=object)
            data[col] = arr
    df = pd.DataFrame(data)
    ordered = [c for c in META_COLUMNS if c in df.columns] + [c for c in df.columns if c not in META_COLUMNS]
    return df[ordered]


def read_patches(path: str | os.PathLike[str], rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Patches for ``rows`` (all when None), float32 (n, 3, P, P)."""
    with open_h5(path) as f:
        ds = f["patches"]
        if rows is None:
            return ds[()]
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows)
        out = np.empty((len(rows), *ds.shape[1:]), dtype=np.float32)
        if len(rows):
            out[order] = ds[rows[order]] if np.all(np.diff(rows[order]) > 0) else np.stack([ds[i] for i in rows[order]])
        return out


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open_h5(path) as f:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
