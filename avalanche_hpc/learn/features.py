"""Feature bank: frozen-backbone features of K augmented views of every pool patch, computed once.

The backbone is frozen, so its output for a given view never changes during training. The bank
stores, for each store row of the experiment's pool (every split of an experiment partitions
the same pool, see ``splits.py``), the 512 VGG16 features of

- view 0: the centre ``crop x crop`` window (evaluation), and
- views 1..K: random ``crop x crop`` windows with random flips of both axes (training),
  drawn from ``numpy.random.default_rng([view_seed, store_row])``: a row's views do not
  depend on which other rows are computed, nor on batch sizes or ranks.

Training then samples one of the K views per sample and epoch and trains only the FC layers
(~40 MFLOP per image forward instead of ~0.75 GFLOP through the backbone at 50x50).

Cache: ``STUDY/runs/{experiment}/features/bank-{key}.h5`` where ``key`` hashes the pool rows,
their patch bytes, the backbone weights' sha256 (or 'none'), K, the crop, the view seed and
the input mapping (``inputs.MAPPING_ID``): a changed store or weights file gives a new file, never a stale one. Every
seed and hold-out of the experiment reuses it. Written atomically (concurrent writers produce
identical files; the last rename wins).

Trade-off against per-epoch augmentation (``--no-feature-bank``): per-epoch passes see a
fresh crop/flip out of 15 x 15 x 4 = 900 possible views every epoch, the bank only K of them,
but the bank costs (K + 1) backbone passes per sample once per experiment instead of one pass
per sample and epoch for every run. See docs/benchmarks.md for measured figures.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from avalanche_hpc.atomic import atomic_path
from avalanche_hpc.digest import sha256_text
from avalanche_hpc.errors import UnknownKeyError
from avalanche_hpc.learn.inputs import MAPPING_ID, map_input
from avalanche_hpc.learn.model import FEATURE_DIM, Backbone
from avalanche_hpc.progress import progress_bar

log = logging.getLogger(__name__)

DEFAULT_VIEWS = 16
VIEW_SEED = 20240101
BANK_VERSION = 1


@dataclass
class FeatureBank:
    rows: np.ndarray  # (n,) int64 store rows, sorted
    feats: np.ndarray  # (n, K + 1, 512) float32; view 0 = centre crop
    path: Path | None = None

    @property
    def n_views(self) -> int:
        return self.feats.shape[1] - 1

    def positions(self, store_rows: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.rows, store_rows)
        if np.any(pos >= len(self.rows)) or np.any(self.rows[np.minimum(pos, len(self.rows) - 1)] != store_rows):
            raise UnknownKeyError("feature bank lacks some store rows (built for another pool?)")
        return pos


def prepare_patches(patches: np.ndarray) -> np.ndarray:
    """NaN (invalid pixels) -> 0 dB, as the store's consumers do; float32."""
    return np.nan_to_num(patches, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


def random_views(rows: np.ndarray, n_views: int, patch: int, crop: int, seed: int = VIEW_SEED) -> np.ndarray:
    """(n, n_views, 4) int: row offset, column offset, flip rows, flip columns, per row and view."""
    out = np.empty((len(rows), n_views, 4), dtype=np.int64)
    for i, r in enumerate(rows):
        rng = np.random.default_rng([seed, int(r)])
        out[i, :, :2] = rng.integers(0, patch - crop + 1, size=(n_views, 2))
        out[i, :, 2:] = rng.integers(0, 2, size=(n_views, 2))
    return out


def centre_views(n: int, patch: int, crop: int) -> np.ndarray:
    v = np.zeros((n, 1, 4), dtype=np.int64)
    v[:, :, :2] = (patch - crop) // 2
    return v


def crop_batch(patches: np.ndarray, index: np.ndarray, views: np.ndarray, crop: int) -> torch.Tensor:
    """Crops ``views[k] = (r0, c0, flip_r, flip_c)`` of ``patches[index[k]]`` -> backbone inputs (B, 3, crop, crop)
    (the documented mapping of ``inputs.map_input``)."""
    out = np.empty((len(index), patches.shape[1], crop, crop), dtype=np.float32)
    for k, (i, (r0, c0, fr, fc)) in enumerate(zip(index, views, strict=False)):
        w = patches[i, :, r0:r0 + crop, c0:c0 + crop]
        if fr:
            w = w[:, ::-1, :]
        if fc:
            w = w[:, :, ::-1]
        out[k] = w
    return map_input(out)


def backbone_features(backbone: Backbone, patches: np.ndarray, views: np.ndarray, crop: int,
                      batch_size: int = 64, progress: bool = False, label: str = "backbone") -> np.ndarray:
    """Features (n, V, 512) of ``views`` (n, V, 4) of ``patches`` (n, 3, P, P)."""
    n, n_v = views.shape[:2]
    flat_index = np.repeat(np.arange(n), n_v)
    flat_views = views.reshape(-1, 4)
    out = np.empty((n * n_v, FEATURE_DIM), dtype=np.float32)
    starts = range(0, n * n_v, batch_size)
    with progress_bar(enabled=progress, transient=True) as bar:
        task = bar.add_task(label, total=n * n_v)
        for s in starts:
            e = min(s + batch_size, n * n_v)
            out[s:e] = backbone(crop_batch(patches, flat_index[s:e], flat_views[s:e], crop)).cpu().numpy()
            bar.update(task, advance=e - s)
    return out.reshape(n, n_v, FEATURE_DIM)


def data_digest(rows: np.ndarray, patches: np.ndarray) -> str:
    """sha256 of the pool's store rows and patch bytes (the data a run trains on)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(patches, dtype=np.float32).tobytes())
    return h.hexdigest()


def bank_key(data_sha: str, weights_ident: str, n_views: int, crop: int) -> str:
    text = f"v{BANK_VERSION}|{data_sha}|{weights_ident}|K{n_views}|crop{crop}|seed{VIEW_SEED}|{MAPPING_ID}"
    return sha256_text(text)[:20]


def bank_path(features_dir: Path, key: str) -> Path:
    return Path(features_dir) / f"bank-{key}.h5"


def read_bank(path: Path) -> FeatureBank:
    with h5py.File(path, "r") as f:
        return FeatureBank(f["rows"][()], f["feats"][()], Path(path))


def build_bank(backbone: Backbone, rows: np.ndarray, patches: np.ndarray, n_views: int, crop: int,
               progress: bool = True) -> FeatureBank:
    """Compute the bank (no caching): view 0 = centre, views 1..K random."""
    p = patches.shape[-1]
    views = np.concatenate([centre_views(len(rows), p, crop), random_views(rows, n_views, p, crop)], axis=1)
    feats = backbone_features(backbone, patches, views, crop, progress=progress,
                              label=f"feature bank ({len(rows)} patches x {n_views + 1} views)")
    return FeatureBank(np.asarray(rows, dtype=np.int64), feats)


def write_bank(bank: FeatureBank, path: Path, attrs: dict) -> Path:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("rows", data=bank.rows)
        f.create_dataset("feats", data=bank.feats)
        f["feats"].attrs["axes"] = ["row", "view (0 = centre crop)", "feature"]
        f["feats"].attrs["units"] = "VGG16 conv5 activations (after ReLU and max-pool), unitless"
        for k, v in attrs.items():
            f.attrs[k] = v
    return path


def load_or_build_bank(features_dir: Path, backbone_factory, rows: np.ndarray, patches: np.ndarray,
                       data_sha: str, weights_ident: str, n_views: int = DEFAULT_VIEWS, crop: int = 50,
                       progress: bool = True) -> FeatureBank:
    """The cached bank for these rows/patches/weights, computed and written when absent."""
    path = bank_path(features_dir, bank_key(data_sha, weights_ident, n_views, crop))
    if path.is_file():
        try:
            bank = read_bank(path)
            if bank.feats.shape == (len(rows), n_views + 1, FEATURE_DIM) and np.array_equal(bank.rows, rows):
                log.info("feature bank: reusing %s", path)
                return bank
        except OSError as e:
            log.warning("feature bank %s unreadable (%s): recomputing", path, e)
    log.info("feature bank: computing %d patches x %d views -> %s", len(rows), n_views + 1, path)
    bank = build_bank(backbone_factory(), rows, patches, n_views, crop, progress=progress)
    write_bank(bank, path, {"data_sha256": data_sha, "weights": weights_ident, "views": n_views, "crop": crop,
                            "view_seed": VIEW_SEED, "input_mapping": MAPPING_ID, "version": BANK_VERSION})
    bank.path = path
    return bank
