"""float16 patch store (study.toml ``patch_dtype``): error bound, dtype recorded, readers, merge, verify."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from avalanche_hpc.preprocess.tasks import preprocess_all, task_is_complete
from avalanche_hpc.store.layout import META_COLUMNS, patch_dtype, read_attrs, read_patches, write_patches
from avalanche_hpc.store.merge import merge_store
from avalanche_hpc.store.verify import verify_store
from avalanche_hpc.study import Study
from tests.test_31_preprocess import ORBIT, SEASON, WINTER, build_hand_study


def _meta(n: int) -> pd.DataFrame:
    return pd.DataFrame({c: ([f"r{i}" for i in range(n)] if kind == "str" else np.zeros(n, kind))
                         for c, kind in META_COLUMNS.items()})


def test_float16_rounding_bound_and_readers(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-40, 40, size=(20, 3, 16, 16)).astype(np.float32)
    x[0, :, :2, :2] = np.nan
    x[1, 0, 0, :4] = [0.0, 1e-6, -1e-6, 40.0]
    p32 = write_patches(tmp_path / "a32.h5", x, _meta(20))
    p16 = write_patches(tmp_path / "a16.h5", x, _meta(20), dtype="float16")
    assert patch_dtype(p32) == "float32" and patch_dtype(p16) == "float16"
    with h5py.File(p16, "r") as f:
        assert f["patches"].dtype == np.float16 and f["patches"].attrs["stored_dtype"] == "float16"
    # readers give float32 for both, all rows or some (sorted or not)
    a, b = read_patches(p32), read_patches(p16)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(np.isnan(b), np.isnan(x))
    ok = np.isfinite(x)
    err = np.abs(b[ok] - x[ok])
    # round to nearest: at most half a unit in the last place, 2^-11 of the value (normal range),
    # i.e. <= 0.0078 dB below 16 dB, 0.0156 dB below 32 dB, 0.031 dB below 64 dB
    assert np.all(err <= np.abs(x[ok]) * 2.0**-11 + 2.0**-25)
    assert err.max() <= 0.031 and err.max() > 0
    rows = np.array([7, 2, 19])
    np.testing.assert_array_equal(read_patches(p16, rows), b[rows])
    with pytest.raises(ValueError, match="float64"):
        write_patches(tmp_path / "bad.h5", x, _meta(20), dtype="float64")


@pytest.mark.parametrize("layout", ["consolidated", "virtual"])
def test_float16_study_preprocess_merge_verify(tmp_path, layout):
    root = build_hand_study(tmp_path / "s")
    preprocess_all(root, progress=False)
    merge_store(root)
    ref = read_patches(root / "work" / "patches.h5")
    shard = root / "work" / "shards" / SEASON / ORBIT / "20180113.h5"
    size32 = shard.stat().st_size
    study = Study.load(root)
    Study.write_config(root, study.config.model_copy(update={"patch_dtype": "float16"}))
    # the dtype is part of the task digest: float32 shards are out of date now
    assert not task_is_complete(root, SEASON, ORBIT, WINTER[1])
    preprocess_all(root, progress=False)
    assert task_is_complete(root, SEASON, ORBIT, WINTER[1])
    assert patch_dtype(shard) == "float16" and shard.stat().st_size < size32
    assert '"patch_dtype": "float16"' in read_attrs(shard)["settings"]
    store = merge_store(root, layout=layout)
    assert patch_dtype(store) == "float16" and read_attrs(store)["patch_dtype"] == "float16"
    got = read_patches(store)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = np.isfinite(ref)
    assert np.all(np.abs(got[ok] - ref[ok]) <= np.abs(ref[ok]) * 2.0**-11 + 2.0**-25)
    assert verify_store(root) == []
