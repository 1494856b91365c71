"""The block-by-block channel arithmetic (``preprocess/channels.py``) against whole-array numpy.

The references below are written out here, independently of the module, as the arithmetic was
before blocking (one numpy pass per operation over all windows). Blocking must change no value:
every comparison is bit for bit (NaN in the same places), over several blocks and a short last one.
"""

from __future__ import annotations

import numpy as np
import pytest

from avalanche_hpc.preprocess import channels
from avalanche_hpc.preprocess.channels import (
    block_rows,
    cache_blocks,
    compute_channels_db,
    db_in_place,
    mark_invalid,
    to_db,
)


def ref_mark_invalid(vv, vh, invalid=None):
    with np.errstate(invalid="ignore", over="ignore"):
        nan0 = (vv + vh) * np.float32(0.0)
    if invalid is not None:
        nan0[invalid] = np.nan
    return vv + nan0, vh + nan0


def ref_channels(vv1, vh1, vv0, vh0, vvs, vhs):
    n, size = len(vv1), vv1[0].size
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.stack([vv1 - vvs, vv0 - vvs, vh1 - vh0], axis=1)
        nan0 = (out[:, 0] + out[:, 1]) * np.float32(0.0)
        out += nan0[:, None]
    frac = ((size - np.isnan(nan0).reshape(n, -1).sum(axis=1)) / size).astype(np.float32)
    return out, frac


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 3 windows of 8 x 8, so that 20 windows make 7 blocks, the last one of 2."""
    monkeypatch.setattr(channels, "BLOCK_BYTES", 3 * 8 * 8 * 4)
    assert block_rows(8 * 8 * 4) == 3


def dates(rng, n=20, p=8):
    """dB windows of three dates with every kind of invalid pixel: NaN, +-inf, and a mask."""
    arrs = [rng.normal(-12, 4, size=(n, p, p)).astype(np.float32) for _ in range(6)]
    for a in arrs:
        idx = rng.random(a.shape) < 0.04
        a[idx] = rng.choice([np.nan, np.inf, -np.inf], size=int(idx.sum())).astype(np.float32)
    invalid = rng.random((n, p, p)) < 0.05
    return arrs, invalid


def test_blocks_cover_every_row_once(small_blocks):
    slices = list(cache_blocks(20, 8 * 8 * 4))
    assert [s.stop - s.start for s in slices] == [3, 3, 3, 3, 3, 3, 2]
    assert np.array_equal(np.concatenate([np.arange(20)[s] for s in slices]), np.arange(20))
    assert list(cache_blocks(0, 256)) == []
    assert [s.stop - s.start for s in cache_blocks(2, 10**9)] == [1, 1]  # a row larger than a block: one row each


def test_blocked_marking_and_channels_equal_whole_array_numpy(small_blocks):
    rng = np.random.default_rng(7)
    (vv1, vh1, vv0, vh0, vvs, vhs), invalid = dates(rng)
    refs = [ref_mark_invalid(vv1, vh1, invalid), ref_mark_invalid(vv0, vh0), ref_mark_invalid(vvs, vhs)]
    for (vv, vh), inv in zip([(vv1, vh1), (vv0, vh0), (vvs, vhs)], [invalid, None, None], strict=True):
        mark_invalid(vv, vh, inv)
    for (vv, vh), (rvv, rvh) in zip([(vv1, vh1), (vv0, vh0), (vvs, vhs)], refs, strict=True):
        assert np.array_equal(vv, rvv, equal_nan=True) and np.array_equal(vh, rvh, equal_nan=True)
        assert np.array_equal(np.isnan(vv), np.isnan(vh))  # a date is invalid in both bands at once
        assert np.isfinite(vv[~np.isnan(vv)]).all()  # every inf became NaN
    out, frac = compute_channels_db(vv1, vh1, vv0, vh0, vvs, vhs)
    rout, rfrac = ref_channels(vv1, vh1, vv0, vh0, vvs, vhs)
    assert out.shape == (20, 3, 8, 8) and out.dtype == np.float32 and frac.dtype == np.float32
    assert np.array_equal(out, rout, equal_nan=True)
    assert np.array_equal(frac, rfrac)
    # the float16 store: each block rounded in cache, the same values as rounding the float32 result
    out16, frac16 = compute_channels_db(vv1, vh1, vv0, vh0, vvs, vhs, dtype="float16")
    assert out16.dtype == np.float16 and np.array_equal(frac16, frac)
    assert np.array_equal(out16, out.astype(np.float16), equal_nan=True)
    # a pixel is NaN in all three channels or in none, and the valid fraction counts the others
    nan = np.isnan(out)
    assert (nan.all(axis=1) == nan.any(axis=1)).all()
    assert np.allclose(frac, 1 - nan[:, 0].reshape(20, -1).mean(axis=1))
    assert 0 < frac.min() < frac.max() < 1


@pytest.mark.parametrize("units", ["linear", "dB"])
def test_db_in_place_handles_nodata_by_units(small_blocks, units):
    rng = np.random.default_rng(3)
    lin = rng.gamma(2.0, 0.05, size=(20, 8, 8)).astype(np.float32)
    raw = lin.copy() if units == "linear" else (10 * np.log10(lin)).astype(np.float32)
    raw[0, 0, 0] = -9999.0  # nodata
    raw[1, 0, 0] = np.nan
    raw[2, 0, 0] = np.inf
    if units == "linear":
        raw[3, 0, 0] = 0.0  # non-positive power
    expect = to_db(np.where(raw == np.float32(-9999.0), np.float32(np.nan), raw).astype(np.float32), units)
    got = db_in_place(raw.copy(), units, nodata=-9999.0)
    assert np.isnan(got[0, 0, 0]) and np.isnan(got[1, 0, 0]) and got[2, 0, 0] == np.inf
    assert np.array_equal(got, expect, equal_nan=True)
    ok = np.isfinite(got)
    ok[:4, 0, 0] = False
    assert np.allclose(got[ok], (10 * np.log10(lin))[ok], atol=1e-4)
    if units == "linear":
        assert got[3, 0, 0] == -np.inf
        # a positive nodata value is replaced before the logarithm (it would be a valid power)
        raw2 = lin.copy()
        raw2[5, 1, 1] = np.float32(1.5)
        assert np.isnan(db_in_place(raw2, "linear", nodata=1.5)[5, 1, 1])
    with pytest.raises(TypeError, match="float32"):
        db_in_place(raw.astype(np.float64), units)
