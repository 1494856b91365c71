"""Clutter of real snow scenes that a one-pixel threshold cannot tell from debris.

Every piece is deterministic for (seed, keys) and documented with its source in
``docs/simulator.md`` (parameters live in ``presets.Physics``):

- ``refined_lee``: the speckle filter of the SNAP graph (``containers/graphs/grd_to_sigma0.xml``:
  ``Speckle-Filter`` with ``filter = Refined Lee``). SNAP's ``RefinedLee`` uses a fixed 7x7 window
  (its ``filterSizeX/Y`` apply only to the Boxcar/Lee/Frost/... filters): nine 3x3 sub-area means,
  the direction of the largest of four gradients, one of eight 28-pixel edge-aligned windows, the
  noise variance as the mean of the five smallest normalised sub-area variances, and the Lee
  update ``mean + b (x - mean)``. Raw speckle (gamma, ``Physics.enl_raw``) goes in; correlation
  and the filtered ENL follow from the filter.
- ``k_texture_db``: static heavy-tailed (gamma, i.e. K-distributed with the speckle) texture.
- ``bright_scatterers_db``: transient bright points of one date.
- ``misregister``: a per-date sub-pixel to one-pixel shift of the whole scene.
- ``wind_patches_db``: wind-drifted / scoured patches at 5-20 pixel scales.
- ``LinearFeatures``: ski pistes (static lines whose brightness changes every date) and tracks
  (new lines on each date).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from avalanche_hpc.synth.fields import smooth_field

__all__ = ["LinearFeatures", "bright_scatterers_db", "k_texture_db", "make_linear_features", "misregister",
           "refined_lee", "wind_patches_db"]

_W = 7  # SNAP RefinedLee window (fixed)


def _direction_masks() -> np.ndarray:
    """The eight 28-pixel non-edge windows of SNAP's RefinedLee, indexed [d, y, x] of the 7x7 window."""
    y, x = np.mgrid[0:_W, 0:_W]
    masks = [x >= 3, x >= y, y <= 3, x + y <= 6, x <= 3, x <= y, y >= 3, x + y >= 6]
    out = np.stack(masks).astype(np.float32)
    assert (out.sum(axis=(1, 2)) == 28).all()
    return out


_MASKS = _direction_masks()


class _Padded:
    """An image padded by 3 (edge replication) for cheap shifted views ``view(dy, dx)[r, c] = a[r + dy, c + dx]``."""

    P = 3

    def __init__(self, a: np.ndarray):
        self.h, self.w = a.shape
        self.a = np.pad(a, self.P, mode="edge")

    def view(self, dy: int, dx: int) -> np.ndarray:
        p = self.P
        return self.a[p + dy:p + dy + self.h, p + dx:p + dx + self.w]


class _WindowSums:
    """Sums of an image over the eight RefinedLee windows, from a summed-area table (float64)."""

    def __init__(self, a: np.ndarray):
        self.pad = _Padded(a)
        ap = self.pad.a.astype(np.float64)
        self.sat = np.zeros((ap.shape[0] + 1, ap.shape[1] + 1))
        self.sat[1:, 1:] = ap.cumsum(0).cumsum(1)
        self.h, self.w = a.shape

    def rect(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Sum over window rows y0..y1 and columns x0..x1 (0..6, inclusive)."""
        s, h, w = self.sat, self.h, self.w
        # window row y of pixel r sits at padded row r + y (pad 3, offset y - 3)
        return (s[y1 + 1:y1 + 1 + h, x1 + 1:x1 + 1 + w] - s[y0:y0 + h, x1 + 1:x1 + 1 + w]
                - s[y1 + 1:y1 + 1 + h, x0:x0 + w] + s[y0:y0 + h, x0:x0 + w])

    def diag(self, anti: bool) -> np.ndarray:
        out = np.zeros((self.h, self.w))
        for y in range(_W):
            x = _W - 1 - y if anti else y
            out += self.pad.view(y - 3, x - 3)
        return out

    def tri(self, k: int) -> np.ndarray:
        return ndimage.correlate(self.pad.a, _MASKS[k], mode="nearest")[3:3 + self.h, 3:3 + self.w].astype(np.float64)

    def all8(self) -> list[np.ndarray]:
        full = self.rect(0, 6, 0, 6)
        t1, t3 = self.tri(1), self.tri(3)
        return [self.rect(0, 6, 3, 6), t1, self.rect(0, 3, 0, 6), t3, self.rect(0, 6, 0, 3),
                full + self.diag(False) - t1, self.rect(3, 6, 0, 6), full + self.diag(True) - t3]


def refined_lee(img: np.ndarray) -> np.ndarray:
    """SNAP's Refined Lee filter (7x7, edge-aligned windows) of a linear intensity image (float32).

    Borders use edge replication (SNAP falls back to plain local statistics where the window
    leaves the image); otherwise the arithmetic follows ``RefinedLee.java`` step by step.
    """
    x = np.asarray(img, dtype=np.float32)
    m3 = ndimage.uniform_filter(x, 3, mode="nearest")
    s3 = ndimage.uniform_filter(x * x, 3, mode="nearest")
    v3 = np.maximum(s3 - m3 * m3, 0.0) * np.float32(9.0 / 8.0)     # sample variance of the 9 pixels
    nv3 = np.where(m3 > 0, v3 / np.maximum(m3 * m3, np.float32(1e-30)), 0.0).astype(np.float32)
    offs = (-2, 0, 2)
    pm, pn = _Padded(m3), _Padded(nv3)
    sub_m = [[pm.view(dy, dx) for dx in offs] for dy in offs]
    # noise variance: SNAP sorts the first 8 of the 9 normalised sub-area variances and averages the first 5
    nvs = np.stack([pn.view(dy, dx) for dy in offs for dx in offs][:8])
    sigma_v = np.partition(nvs, 4, axis=0)[:5].mean(axis=0)
    del nvs
    g = np.stack([np.abs(sub_m[1][0] - sub_m[1][2]), np.abs(sub_m[0][2] - sub_m[2][0]),
                  np.abs(sub_m[0][1] - sub_m[2][1]), np.abs(sub_m[0][0] - sub_m[2][2])])
    direction = np.argmax(g, axis=0)
    c = sub_m[1][1]
    d = np.select(
        [direction == 0, direction == 1, direction == 2],
        [np.where(np.abs(sub_m[1][0] - c) < np.abs(c - sub_m[1][2]), 4, 0),
         np.where(np.abs(sub_m[0][2] - c) < np.abs(c - sub_m[2][0]), 1, 5),
         np.where(np.abs(sub_m[0][1] - c) < np.abs(c - sub_m[2][1]), 2, 6)],
        np.where(np.abs(sub_m[0][0] - c) < np.abs(c - sub_m[2][2]), 3, 7))
    del g, direction, sub_m, pm, pn
    s1 = np.choose(d, _WindowSums(x).all8()) / 28.0
    s2 = np.choose(d, _WindowSums(x * x).all8()) / 28.0
    mean_y = s1.astype(np.float32)
    var_y = (np.maximum(s2 - s1 * s1, 0.0) * (28.0 / 27.0)).astype(np.float32)
    var_x = np.maximum((var_y - mean_y * mean_y * sigma_v) / (1.0 + sigma_v), 0.0)
    b = np.where(var_y > 0, var_x / np.maximum(var_y, np.float32(1e-30)), 0.0)
    return (mean_y + b * (x - mean_y)).astype(np.float32)


def k_texture_db(rng: np.random.Generator, shape: tuple[int, int], shape_nu: float) -> np.ndarray:
    """Static per-pixel texture (dB) of unit mean in power: gamma(nu)/nu (K-distributed with the speckle)."""
    return (10.0 * np.log10(rng.standard_gamma(shape_nu, size=shape).astype(np.float32) / np.float32(shape_nu)
                            + np.float32(1e-6))).astype(np.float32)


def bright_scatterers_db(rng: np.random.Generator, shape: tuple[int, int], per_km2: float, pixel_m: float,
                         db_range: tuple[float, float]) -> np.ndarray:
    """Transient bright points of one date (dB to add): Poisson count, 1-2 pixels each."""
    h, w = shape
    out = np.zeros(shape, dtype=np.float32)
    n = int(rng.poisson(per_km2 * h * w * (pixel_m / 1000.0) ** 2))
    if n == 0:
        return out
    r = rng.integers(0, h, n)
    c = rng.integers(0, w, n)
    g = rng.uniform(*db_range, n).astype(np.float32)
    out[r, c] = np.maximum(out[r, c], g)
    two = rng.random(n) < 0.5            # half of them cover two pixels
    c2 = np.minimum(c + 1, w - 1)
    out[r[two], c2[two]] = np.maximum(out[r[two], c2[two]], g[two] - 2.0)
    return out


def misregister(lin: np.ndarray, rng: np.random.Generator, px_range: tuple[float, float]) -> np.ndarray:
    """Shift a linear image by a random vector of length in ``px_range`` pixels (bilinear)."""
    mag = rng.uniform(*px_range)
    ang = rng.uniform(0.0, 2.0 * np.pi)
    return ndimage.shift(lin, (mag * np.sin(ang), mag * np.cos(ang)), order=1, mode="nearest").astype(np.float32)


def wind_patches_db(rng: np.random.Generator, shape: tuple[int, int], px_range: tuple[float, float],
                    amp_db: float, intensity: float) -> np.ndarray:
    """Wind-scoured (brighter) and drifted (darker) patches of one date, 5-20 px across (dB to add).

    A smooth field at a random scale in ``px_range`` is cut at +-1.6 std: about 5 % of the area
    each way; the excess (0..~1.5) times ``amp_db * intensity`` is the change.
    """
    scale = rng.uniform(*px_range)
    f = smooth_field(rng, shape, scale)
    pos = np.clip(f - 1.6, 0.0, None)
    neg = np.clip(-f - 1.6, 0.0, None)
    return (amp_db * intensity * (pos - 0.6 * neg)).astype(np.float32)


@dataclass
class LinearFeatures:
    """Rasterised lines: ``pixels[i]`` = (flat indices, weights) of line i."""

    pixels: list[tuple[np.ndarray, np.ndarray]]
    shape: tuple[int, int]

    def render_db(self, gains_db: np.ndarray) -> np.ndarray:
        out = np.zeros(self.shape[0] * self.shape[1], dtype=np.float32)
        for (idx, wts), g in zip(self.pixels, gains_db, strict=True):
            np.add.at(out, idx, (wts * g).astype(np.float32))
        return out.reshape(self.shape)


def make_linear_features(rng: np.random.Generator, shape: tuple[int, int], n: int,
                         length_px: tuple[float, float], width_px: float) -> LinearFeatures:
    """``n`` gently curving lines (random walks of heading) of the given length and width."""
    h, w = shape
    lines = []
    for _ in range(n):
        length = rng.uniform(*length_px)
        r, c = rng.uniform(0, h), rng.uniform(0, w)
        head = rng.uniform(0, 2 * np.pi)
        steps = int(length / 0.5)
        heads = head + np.cumsum(rng.normal(0.0, 0.04, steps))
        rr = r + np.cumsum(0.5 * np.sin(heads))
        cc = c + np.cumsum(0.5 * np.cos(heads))
        # a width_px-wide line: the centre pixel and, for width > 1, its across-track neighbours
        pts_r, pts_c, wts = [rr], [cc], [np.ones(steps)]
        if width_px > 1:
            nr, nc = np.cos(heads), -np.sin(heads)
            off = (width_px - 1) / 2.0
            for s in (-off, off):
                pts_r.append(rr + s * nr)
                pts_c.append(cc + s * nc)
                wts.append(np.full(steps, 0.7))
        pr = np.rint(np.concatenate(pts_r)).astype(np.int64)
        pc = np.rint(np.concatenate(pts_c)).astype(np.int64)
        wv = np.concatenate(wts)
        ok = (pr >= 0) & (pr < h) & (pc >= 0) & (pc < w)
        flat = pr[ok] * w + pc[ok]
        flat, first = np.unique(flat, return_index=True)
        lines.append((flat, wv[ok][first].astype(np.float32)))
    return LinearFeatures(lines, shape)
