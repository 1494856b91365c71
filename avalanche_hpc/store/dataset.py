"""PyTorch access to the patch store: a ``Dataset`` and a class-balanced sampler.

``PatchDataset`` keeps only the store path and the (small) metadata table in ``__init__``; the
HDF5 file is opened lazily, once per process, on first item access (as torchgeo's datasets
do). A dataset object can therefore be pickled to DataLoader workers and DDP ranks, and each
process gets its own file handle. Set ``HDF5_USE_FILE_LOCKING=FALSE`` when the store lies on
a shared filesystem (NFS, Lustre, GPFS) that does not support the HDF5 lock; reads never need
it, and ``open_store_readonly`` sets it for the process when unset.

Items are ``(x, y)``: ``x`` float32 ``(3, crop, crop)`` in dB with NaN (invalid pixels) set to
0 dB ("no change"), ``y`` the int64 label (1 positive, 0 negative, -1 unknown). Training
(``augment=True``): a random ``crop x crop`` window and random flips of both axes, drawn
from torch's RNG (seeded per worker by the DataLoader). Evaluation: the centre crop.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from avalanche_hpc.errors import ArgumentError, MissingInputError
from avalanche_hpc.store.layout import open_h5, read_meta

__all__ = ["BalancedSampler", "PatchDataset", "open_store_readonly"]


def open_store_readonly(path: str | os.PathLike[str]) -> h5py.File:
    """Open a store for reading without HDF5 file locking (``store.open_h5``).

    Readers never need the lock (stores are written once, atomically) and shared filesystems
    often refuse it (errno 38/524).
    """
    return open_h5(path)


def _as_list(v: str | Sequence[str] | None) -> list[str] | None:
    if v is None:
        return None
    return [v] if isinstance(v, str) else list(v)


class PatchDataset(Dataset):
    """Patches of the store, optionally restricted to store rows and filtered by metadata.

    Args:
        store_path: ``STUDY/work/patches.h5`` (or a shard: same layout).
        rows: store row indices to use (e.g. the ``store_row`` column of a split); all when None.
        augment: random ``crop`` window + random flips of both axes (training); otherwise the
            centre ``crop`` window (evaluation).
        crop: side of the returned window in pixels (50 in the paper); None = the full patch.
        massif, season, orbit: keep only rows with these values (one value or a list).
        labelled_only: keep only rows with label 0 or 1.
    After filtering, ``self.rows`` holds the store rows in use (item i is store row
    ``rows[i]``) and ``self.meta`` their metadata (index reset, column ``store_row`` added).
    """

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        rows: Sequence[int] | np.ndarray | None = None,
        augment: bool = False,
        crop: int | None = 50,
        massif: str | Sequence[str] | None = None,
        season: str | Sequence[str] | None = None,
        orbit: str | Sequence[str] | None = None,
        labelled_only: bool = False,
    ):
        self.store_path = Path(store_path)
        if not self.store_path.is_file():
            raise MissingInputError(
                f"patch store {self.store_path} does not exist -> run 'avalanche-hpc preprocess STUDY' "
                f"then 'avalanche-hpc store merge STUDY'"
            )
        meta = read_meta(self.store_path)
        meta.insert(0, "store_row", np.arange(len(meta), dtype=np.int64))
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            bad = rows[(rows < 0) | (rows >= len(meta))]
            if len(bad):
                raise IndexError(f"store rows {bad[:5].tolist()} out of range 0..{len(meta) - 1} in {self.store_path}")
            meta = meta.iloc[rows]
        keep = np.ones(len(meta), dtype=bool)
        for col, want in (("massif", massif), ("season", season), ("orbit", orbit)):
            values = _as_list(want)
            if values is not None:
                keep &= meta[col].isin(values).to_numpy()
        if labelled_only:
            keep &= (meta["label"] >= 0).to_numpy()
        self.meta: pd.DataFrame = meta[keep].reset_index(drop=True)
        self.rows: np.ndarray = self.meta["store_row"].to_numpy(dtype=np.int64)
        self.labels: np.ndarray = self.meta["label"].to_numpy(dtype=np.int64)
        self.augment = augment
        self.crop = crop
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self.patch_size = self._read_patch_size()
        if crop is not None and not (1 <= crop <= self.patch_size):
            raise ArgumentError(f"crop={crop} must be between 1 and the patch size {self.patch_size}")

    def _read_patch_size(self) -> int:
        with open_store_readonly(self.store_path) as f:
            return int(f["patches"].shape[-1])

    # The file handle is per process: never pickled, reopened after a fork/spawn.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def _patches(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            self._file = open_store_readonly(self.store_path)
            self._pid = os.getpid()
        return self._file["patches"]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __del__(self) -> None:  # best effort; h5py also closes at exit
        with contextlib.suppress(Exception):
            self.close()

    def __len__(self) -> int:
        return len(self.rows)

    def _window(self) -> tuple[int, int]:
        p, c = self.patch_size, self.crop or self.patch_size
        if self.augment and c < p:
            r0, c0 = torch.randint(0, p - c + 1, (2,)).tolist()
            return r0, c0
        return (p - c) // 2, (p - c) // 2

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i < 0:
            i += len(self)
        row = int(self.rows[i])
        c = self.crop or self.patch_size
        r0, c0 = self._window()
        x = self._patches()[row, :, r0:r0 + c, c0:c0 + c]
        x = torch.from_numpy(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False))
        if self.augment:
            flips = torch.rand(2) < 0.5
            dims = [d for d, f in zip((1, 2), flips.tolist(), strict=False) if f]
            if dims:
                x = torch.flip(x, dims)
        return x, torch.tensor(int(self.labels[i]), dtype=torch.int64)


class BalancedSampler(Sampler[int]):
    """Class-balanced sampling of dataset positions, deterministic per (seed, epoch).

    Each epoch draws the same number of items from every class present in ``labels``:
    ``mode="undersample"`` (the paper: all of the smallest class and as many random items of
    each larger class) or ``mode="oversample"`` (the largest class size, smaller classes drawn
    with replacement). ``num_replicas``/``rank`` split the epoch between DDP ranks (each rank
    gets the same number of items, padding by repetition); call ``set_epoch`` every epoch.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        mode: str = "undersample",
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
    ):
        if mode not in ("undersample", "oversample"):
            raise ArgumentError(f"mode={mode!r}: use 'undersample' or 'oversample'")
        if not 0 <= rank < num_replicas:
            raise ArgumentError(f"rank {rank} must be in [0, {num_replicas})")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = np.unique(self.labels)
        if len(self.classes) == 0:
            raise ArgumentError("BalancedSampler needs at least one labelled item")
        self.mode, self.seed, self.shuffle = mode, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        counts = [int((self.labels == c).sum()) for c in self.classes]
        self.per_class = min(counts) if mode == "undersample" else max(counts)
        total = self.per_class * len(self.classes)
        self.num_samples = math.ceil(total / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        parts = []
        for c in self.classes:
            idx = np.flatnonzero(self.labels == c)
            if len(idx) >= self.per_class:
                parts.append(rng.choice(idx, size=self.per_class, replace=False))
            else:
                parts.append(np.concatenate([idx, rng.choice(idx, size=self.per_class - len(idx), replace=True)]))
        out = np.concatenate(parts)
        if self.shuffle:
            rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[int]:
        idx = self._epoch_indices()
        total = self.num_samples * self.num_replicas
        if total > len(idx):
            idx = np.concatenate([idx, idx[: total - len(idx)]])
        return iter(idx[self.rank:total:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
