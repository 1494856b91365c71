"""The preprocess arithmetic: sigma0 units, invalid pixels, and the three dB channels of a patch.

Every function is elementwise over (n, P, P) windows and runs **block by block** over the
windows (``cache_blocks``: a few patches at a time), so that the temporaries of one block stay
in the core's cache instead of making a full pass through memory for each operation. Blocking
changes no value: the same float32 operations run on every element, in the same order.

Channels, in dB, as the paper (``store.CHANNELS``)::

    VV*     = 10 log10(VV(t1) / VV_summer)      = VV_dB(t1) - VV_dB(summer)
    VV*_old = 10 log10(VV(t0) / VV_summer)      = VV_dB(t0) - VV_dB(summer)
    VHdiff  = VH*(t1) - VH*(t0)                 = VH_dB(t1) - VH_dB(t0)

A pixel is valid when all six inputs are finite and positive (linear power) and neither date
marks it as layover/shadow; invalid pixels are NaN in all three channels.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = [
    "BLOCK_BYTES",
    "block_rows",
    "cache_blocks",
    "compute_channels",
    "compute_channels_db",
    "db_in_place",
    "mark_invalid",
    "to_db",
    "to_linear",
]

BLOCK_BYTES = 1 << 18  # per input array and block: ~10 such arrays fit a 2-4 MiB L2 cache
_ZERO = np.float32(0.0)


def block_rows(row_bytes: int) -> int:
    """Rows per block: about ``BLOCK_BYTES`` (at least one row)."""
    return max(1, BLOCK_BYTES // max(int(row_bytes), 1))


def cache_blocks(n: int, row_bytes: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of ``block_rows(row_bytes)`` rows each (the last one shorter)."""
    step = block_rows(row_bytes)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def to_linear(values: np.ndarray, units: str) -> np.ndarray:
    """sigma0 in linear power (float32); NaN stays NaN.

    Linear values are returned as they are (no copy): non-positive power is invalid, and the
    consumers treat it so (its log is not finite; the summer mean skips it).
    """
    v = values.astype(np.float32, copy=False)
    if units == "dB":
        with np.errstate(over="ignore", invalid="ignore"):
            v = np.power(np.float32(10.0), v / np.float32(10.0))
    return v


def to_db(values: np.ndarray, units: str) -> np.ndarray:
    """sigma0 in dB (float32); NaN stays NaN; non-positive linear power gives -inf or NaN (invalid).

    dB values are returned as they are (no copy); linear ones are converted into a new array."""
    v = values.astype(np.float32, copy=False)
    if units == "dB":
        return v
    return db_in_place(np.array(v, dtype=np.float32), "linear")


def db_in_place(values: np.ndarray, units: str, nodata: float | None = None) -> np.ndarray:
    """Float32 ``values`` converted to dB in place (and returned): pixels equal to ``nodata`` become
    NaN first; linear power becomes ``10 log10(x)`` (non-positive -> -inf or NaN; inf stays inf).

    Non-finite results are left as they are: ``mark_invalid`` turns every one of them into NaN.
    A linear scene's non-positive ``nodata`` needs no replacement (its log is not finite).
    """
    if values.dtype != np.float32 or not values.flags.c_contiguous:
        raise TypeError(f"db_in_place needs a C-contiguous float32 array, got {values.dtype}")
    replace = nodata is not None and not np.isnan(nodata) and (units == "dB" or nodata > 0)
    nd = np.float32(nodata) if replace else None
    flat = values.reshape(-1)  # a view: the blocks are runs of elements
    with np.errstate(divide="ignore", invalid="ignore"):
        for sl in cache_blocks(flat.size, 4):
            b = flat[sl]
            if nd is not None:
                b[b == nd] = np.nan
            if units != "dB":
                np.log10(b, out=b)
                b *= np.float32(10.0)
    return values


def mark_invalid(vv: np.ndarray, vh: np.ndarray, invalid: np.ndarray | None = None) -> None:
    """In place: NaN in both bands of a date's dB windows wherever either band is not finite or
    ``invalid`` (layover/shadow) is set, so that the channel arithmetic needs no validity mask.
    Done once per date (and per summer reference), not per task."""
    n = len(vv)
    row = int(np.prod(np.shape(vv)[1:], dtype=np.int64))
    scratch = np.empty((min(n, block_rows(row * 4)), *np.shape(vv)[1:]), dtype=np.float32)
    has_invalid = invalid is not None and bool(invalid.any())
    with np.errstate(invalid="ignore", over="ignore"):
        for sl in cache_blocks(n, row * 4):
            z = scratch[: sl.stop - sl.start]
            np.add(vv[sl], vh[sl], out=z)  # NaN or inf where either band is invalid
            z *= _ZERO  # -> NaN there, 0 elsewhere
            if has_invalid:
                np.copyto(z, np.float32(np.nan), where=invalid[sl])  # type: ignore[index]
            vv[sl] += z
            vh[sl] += z


def compute_channels(
    vv1: np.ndarray, vh1: np.ndarray, vv0: np.ndarray, vh0: np.ndarray,
    vv_summer: np.ndarray, vh_summer: np.ndarray, invalid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Channels (n, 3, P, P) float32 in dB and the valid fraction (n,) from linear-power windows.

    Inputs are (n, P, P) linear power with NaN where invalid; ``invalid`` (bool, same shape)
    adds layover/shadow. Channel order is ``store.CHANNELS``: VV*, VV*_old, VHdiff.
    """
    a, b, c, d, e, f = (to_db(np.array(x, dtype=np.float32), "linear") for x in (vv1, vh1, vv0, vh0, vv_summer, vh_summer))
    mark_invalid(a, b, invalid)
    mark_invalid(c, d, invalid)
    mark_invalid(e, f)
    return compute_channels_db(a, b, c, d, e, f)


def compute_channels_db(
    vv1: np.ndarray, vh1: np.ndarray, vv0: np.ndarray, vh0: np.ndarray,
    vv_summer: np.ndarray, vh_summer: np.ndarray, dtype: str | np.dtype = "float32",
) -> tuple[np.ndarray, np.ndarray]:
    """``compute_channels`` on dB windows already passed through ``mark_invalid`` (each pair): the
    ratios are differences, and NaN marks every invalid pixel of a date in both of its bands.

    Each date is converted to dB and marked once (a task's t1 is the next task's t0), the summer
    reference once per (season, orbit); per task and block: three differences, one NaN-propagating
    sum added to every channel, and its NaN count. The arithmetic is float32; ``dtype`` float16
    (the store's ``patch_dtype``) rounds each block while it is in cache, to the same values as
    ``astype(float16)`` of the float32 result.
    """
    n = len(vv1)
    shape = tuple(np.shape(vv1)[1:])
    size = int(np.prod(shape, dtype=np.int64))
    out_dtype = np.dtype(dtype)
    out = np.empty((n, 3, *shape), dtype=out_dtype)
    frac = np.empty(n, dtype=np.float32)
    step = min(n, block_rows(size * 4))
    z_all = np.empty((step, *shape), dtype=np.float32)
    nan_all = np.empty((step, size), dtype=bool)
    o32_all = None if out_dtype == np.float32 else np.empty((step, 3, *shape), dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        for sl in cache_blocks(n, size * 4):
            k = sl.stop - sl.start
            o = out[sl] if o32_all is None else o32_all[:k]
            z, isnan = z_all[:k], nan_all[:k]
            np.subtract(vv1[sl], vv_summer[sl], out=o[:, 0])  # VV*
            np.subtract(vv0[sl], vv_summer[sl], out=o[:, 1])  # VV*_old
            np.subtract(vh1[sl], vh0[sl], out=o[:, 2])  # VHdiff
            np.add(o[:, 0], o[:, 1], out=z)  # NaN where t1, t0 or the summer reference is invalid
            z *= _ZERO  # (inf from overflow -> NaN too)
            o += z[:, None]  # an invalid pixel is NaN in every channel
            np.isnan(z.reshape(k, size), out=isnan)
            frac[sl] = (size - np.count_nonzero(isnan, axis=1)) / max(size, 1)
            if o32_all is not None:
                out[sl] = o  # rounded to the store's dtype (nearest; NaN stays NaN)
    return out, frac
