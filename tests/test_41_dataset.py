"""PatchDataset and BalancedSampler over a real merged store (the hand-built study)."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avalanche_hpc.preprocess.tasks import preprocess_all
from avalanche_hpc.store.dataset import BalancedSampler, PatchDataset
from avalanche_hpc.store.layout import read_patches
from avalanche_hpc.store.merge import merge_store
from tests.test_31_preprocess import PATCH, build_hand_study


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = build_hand_study(tmp_path_factory.mktemp("ds") / "s")
    preprocess_all(root, progress=False)
    return merge_store(root)


def test_filters_and_rows(store):
    # labels by hand: 01-07 [1, -1, -1], 01-13 [0, -1, -1], 01-19 [0, 0, -1]
    assert len(PatchDataset(store, crop=None)) == 9
    labelled = PatchDataset(store, labelled_only=True, crop=10)
    assert sorted(labelled.labels.tolist()) == [0, 0, 0, 1]
    assert labelled.rows.tolist() == [0, 3, 6, 7]
    assert len(PatchDataset(store, massif="Belledonne", crop=10)) == 3
    assert len(PatchDataset(store, massif=["Belledonne", "Vanoise"], labelled_only=True, crop=10)) == 4
    assert len(PatchDataset(store, season="1999-2000", crop=10)) == 0
    assert len(PatchDataset(store, orbit="D139", crop=10)) == 9
    sub = PatchDataset(store, rows=[8, 6, 0], labelled_only=True, crop=10)
    assert sub.rows.tolist() == [6, 0] and sub.meta["path_id"].tolist() == ["p1", "p1"]
    with pytest.raises(IndexError, match="out of range"):
        PatchDataset(store, rows=[9], crop=10)
    with pytest.raises(ValueError, match="crop=20"):
        PatchDataset(store, crop=20)


def test_centre_crop_and_nan_to_zero(store):
    full = read_patches(store)
    assert np.isnan(full[0]).any()  # p1's window reaches beyond the scene's western edge
    ds = PatchDataset(store, crop=10)
    x, y = ds[0]
    assert x.shape == (3, 10, 10) and x.dtype == torch.float32 and y.item() == 1
    want = np.nan_to_num(full[0][:, 3:13, 3:13], nan=0.0)
    np.testing.assert_array_equal(x.numpy(), want)
    assert not torch.isnan(x).any()
    xf, _ = PatchDataset(store, crop=None)[0]
    assert xf.shape == (3, PATCH, PATCH) and (xf.numpy()[np.isnan(full[0])] == 0).all()


def test_augment_is_a_flipped_sub_window(store):
    full = np.nan_to_num(read_patches(store, [3])[0], nan=0.0)
    ds = PatchDataset(store, rows=[3], augment=True, crop=10)
    candidates = []
    for r in range(PATCH - 10 + 1):
        for c in range(PATCH - 10 + 1):
            w = full[:, r:r + 10, c:c + 10]
            candidates += [w, w[:, ::-1], w[:, :, ::-1], w[:, ::-1, ::-1]]
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        x = ds[0][0].numpy()
        matches = [i for i, cand in enumerate(candidates) if np.array_equal(x, cand)]
        assert matches, "augmented item is not a crop/flip of the stored patch"
        seen.add(matches[0])
    assert len(seen) > 1  # the windows vary


def test_lazy_handle_pickles_and_workers(store):
    ds = PatchDataset(store, labelled_only=True, crop=10)
    assert ds._file is None  # nothing opened in __init__
    ds[0]
    assert ds._file is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._file is None
    np.testing.assert_array_equal(clone[1][0].numpy(), ds[1][0].numpy())
    loader = DataLoader(ds, batch_size=2, num_workers=2, sampler=BalancedSampler(ds.labels, seed=0))
    batches = list(loader)
    assert sum(len(b[1]) for b in batches) == 2
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == [0, 1]


def test_balanced_sampler():
    labels = np.array([1] * 10 + [0] * 90)
    s = BalancedSampler(labels, seed=3)
    idx = list(s)
    assert len(idx) == len(s) == 20
    assert Counter(labels[idx].tolist()) == {0: 10, 1: 10}
    assert len(set(idx)) == 20  # undersampling draws without replacement
    assert list(BalancedSampler(labels, seed=3)) == idx  # deterministic for a seed and epoch
    s.set_epoch(1)
    assert list(s) != idx  # a fresh draw of negatives each epoch
    over = list(BalancedSampler(labels, mode="oversample", seed=0))
    assert Counter(labels[over].tolist()) == {0: 90, 1: 90}
    # DDP: ranks get disjoint, equal shares of the same epoch
    ranks = [list(BalancedSampler(labels, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(r) for r in ranks] == [7, 7, 7]
    assert set(ranks[0] + ranks[1] + ranks[2]) == set(idx)
    with pytest.raises(ValueError, match="rank 3"):
        BalancedSampler(labels, num_replicas=3, rank=3)
