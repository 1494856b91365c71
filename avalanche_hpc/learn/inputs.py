"""The input mapping of the backbone: the paper's three dB channels -> what VGG16 expects.

VGG16 (ImageNet weights) expects RGB images in [0, 1] normalised per channel by ImageNet's
mean and std (``IMAGENET_MEAN``, ``IMAGENET_STD``, torchvision's ``IMAGENET1K_V1`` transform).
The store holds ``VV*``, ``VV*_old`` and ``VHdiff`` in dB. The mapping, per channel:

1. optional per-patch centring (``PATCH_CENTRING``): subtract the channel's mean over the crop
   (removes the broad offsets of wet snow, crust and the summer reference, which otherwise swamp
   the local debris contrast);
2. dB -> image range: ``x01 = clip(0.5 + x_db / (2 * DB_HALF_RANGE), 0, 1)``, i.e. -10..+10 dB
   onto 0..1 (10 dB covers the channels' physical range: wet snow about -3 to -5 dB, debris up to
   about +8 dB; beyond it values saturate as image pixels do);
3. ImageNet normalisation: ``(x01 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]``.

The same mapping is used with random weights (torchvision's VGG init also expects inputs of
about unit scale, which step 3 gives). ``PATCH_CENTRING`` is chosen on the validation set only
(``benchmarks/bench_inputs.py``: a linear probe on frozen centre-view features, fitted on the
training rows, scored on the validation rows of a development study; the rule and the figures
are in docs/benchmarks.md). ``MAPPING_ID`` names the mapping in feature-bank keys and run records,
so a changed mapping never reuses a stale bank.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["DB_HALF_RANGE", "IMAGENET_MEAN", "IMAGENET_STD", "MAPPING_ID", "PATCH_CENTRING", "map_input",
           "mapping_id"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DB_HALF_RANGE = 10.0      # dB mapped onto half the image range
PATCH_CENTRING = True     # chosen on validation (docs/benchmarks.md, "Backbone inputs")


def mapping_id(centre: bool = PATCH_CENTRING) -> str:
    return f"imagenet-db{DB_HALF_RANGE:g}" + ("-centred" if centre else "")


MAPPING_ID = mapping_id()


def map_input(x_db: np.ndarray | torch.Tensor, centre: bool = PATCH_CENTRING) -> torch.Tensor:
    """(B, 3, c, c) dB windows -> (B, 3, c, c) float32 backbone inputs (see the module docstring)."""
    x = torch.as_tensor(x_db, dtype=torch.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (batch, 3, h, w) dB windows, got shape {tuple(x.shape)}")
    if centre:
        x = x - x.mean(dim=(2, 3), keepdim=True)
    x01 = (0.5 + x / (2.0 * DB_HALF_RANGE)).clamp_(0.0, 1.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (x01 - mean) / std
