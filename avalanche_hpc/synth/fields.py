"""Random fields and seeding shared by the synthetic-season modules.

Every random draw comes from a ``numpy.random.Generator`` seeded by ``rng_for(seed, *keys)``, so
each piece (terrain, one date of one orbit, one event...) can be generated independently and in
any order with the same result.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

__all__ = ["fractal_noise", "rng_for", "smooth_field"]


def _key_int(k: object) -> int:
    if isinstance(k, (int, np.integer)):
        return int(k) & 0xFFFFFFFF
    return zlib.crc32(str(k).encode("utf-8"))


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A generator seeded by the study seed and any keys (strings are hashed with CRC32)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *(_key_int(k) for k in keys)])


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std float32 field, smooth over about ``scale_px`` pixels (cheap: coarse grid + zoom)."""
    h, w = shape
    step = max(scale_px / 2.0, 1.0)
    ch, cw = int(np.ceil(h / step)) + 2, int(np.ceil(w / step)) + 2
    coarse = ndimage.gaussian_filter(rng.standard_normal((ch, cw)), 0.8, mode="wrap")
    fine = ndimage.zoom(coarse, step, order=3, mode="nearest")[:h, :w]
    fine = fine - fine.mean()
    sd = fine.std()
    return (fine / (sd if sd > 0 else 1.0)).astype(np.float32)


def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float, lo_px: float,
                  hi_px: float = 2.0) -> np.ndarray:
    """Zero-mean, unit-std power-law noise (spectrum ~ f**-beta) between wavelengths ``hi_px`` and ``lo_px``."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2.0)
    amp[(f < 1.0 / lo_px)] *= np.exp(-((1.0 / lo_px - f[(f < 1.0 / lo_px)]) * lo_px * 4) ** 2)
    amp[f > 1.0 / hi_px] = 0.0
    amp[0, 0] = 0.0
    spec = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * amp
    out = np.fft.irfft2(spec, s=(h, w))
    out -= out.mean()
    return (out / out.std()).astype(np.float32)
