"""Clutter of the synthetic scenes: SNAP's Refined Lee, texture, misregistration, patches, lines."""

from __future__ import annotations

import numpy as np
import pytest

from avalanche_hpc.synth import clutter


def _refined_lee_pixel(w: np.ndarray) -> float:
    """Direct port of SNAP RefinedLee.getRefinedLeeValueUsingEdgeThreshold for one full 7x7 window."""
    sub = np.array([[w[2 * j:2 * j + 3, 2 * i:2 * i + 3].mean() for i in range(3)] for j in range(3)])
    grads = [abs(sub[1, 0] - sub[1, 2]), abs(sub[0, 2] - sub[2, 0]), abs(sub[0, 1] - sub[2, 1]),
             abs(sub[0, 0] - sub[2, 2])]
    direction = int(np.argmax(grads))
    c = sub[1, 1]
    if direction == 0:
        d = 4 if abs(sub[1, 0] - c) < abs(c - sub[1, 2]) else 0
    elif direction == 1:
        d = 1 if abs(sub[0, 2] - c) < abs(c - sub[2, 0]) else 5
    elif direction == 2:
        d = 2 if abs(sub[0, 1] - c) < abs(c - sub[2, 1]) else 6
    else:
        d = 3 if abs(sub[0, 0] - c) < abs(c - sub[2, 2]) else 7
    rows = {0: [(y, x) for y in range(7) for x in range(3, 7)], 1: [(y, x) for y in range(7) for x in range(y, 7)],
            2: [(y, x) for y in range(4) for x in range(7)], 3: [(y, x) for y in range(7) for x in range(7 - y)],
            4: [(y, x) for y in range(7) for x in range(4)], 5: [(y, x) for y in range(7) for x in range(y + 1)],
            6: [(y, x) for y in range(3, 7) for x in range(7)], 7: [(y, x) for y in range(7) for x in range(6 - y, 7)]}
    px = np.array([w[y, x] for y, x in rows[d]])
    assert len(px) == 28
    mean_y, var_y = px.mean(), px.var(ddof=1)
    nv = []
    for j in range(3):
        for i in range(3):
            a = w[2 * j:2 * j + 3, 2 * i:2 * i + 3]
            nv.append(a.var(ddof=1) / a.mean() ** 2 if a.mean() > 0 else 0.0)
    nv[:8] = sorted(nv[:8])  # SNAP sorts the first numSubArea - 1 entries
    sigma_v = float(np.mean(nv[:5]))
    var_x = max((var_y - mean_y**2 * sigma_v) / (1 + sigma_v), 0.0)
    return float(mean_y + var_x / var_y * (w[3, 3] - mean_y)) if var_y > 0 else 0.0


def test_refined_lee_matches_a_direct_port_of_snap():
    rng = np.random.default_rng(3)
    img = (rng.standard_gamma(4.4, (24, 26)) / 4.4).astype(np.float32)
    img[:, 13:] *= 4.0  # an edge
    out = clutter.refined_lee(img)
    for r in range(3, 21):
        for c in range(3, 23):
            assert out[r, c] == pytest.approx(_refined_lee_pixel(img[r - 3:r + 4, c - 3:c + 4].astype(np.float64)),
                                              rel=2e-4, abs=1e-6), (r, c)


def test_refined_lee_raises_enl_and_keeps_edges():
    rng = np.random.default_rng(0)
    raw = (rng.standard_gamma(4.4, (256, 256)) / 4.4).astype(np.float32)
    truth = np.ones((256, 256), np.float32)
    truth[:, 128:] = 8.0  # a 9 dB step
    out = clutter.refined_lee(raw * truth)
    flat = out[20:236, 20:100]
    enl = flat.mean() ** 2 / flat.var()
    assert raw.mean() ** 2 / raw.var() == pytest.approx(4.4, rel=0.05)
    assert enl > 4 * 4.4                      # speckle strongly reduced in flat areas
    assert abs(flat.mean() - 1.0) < 0.03      # the mean is kept
    # the edge stays sharp: two pixels from it the level is within 10 % of each side's
    assert out[20:236, 125].mean() == pytest.approx(1.0, rel=0.1)
    assert out[20:236, 130].mean() == pytest.approx(8.0, rel=0.1)
    # spatially correlated output: neighbours correlate, unlike the raw speckle
    r_raw = np.corrcoef(raw[:, :100].ravel()[:-1], raw[:, :100].ravel()[1:])[0, 1]
    r_out = np.corrcoef(flat[:, :-1].ravel(), flat[:, 1:].ravel())[0, 1]
    assert abs(r_raw) < 0.05 and r_out > 0.15


def test_texture_is_heavy_tailed_and_unit_mean():
    tex = clutter.k_texture_db(np.random.default_rng(1), (400, 400), 3.0)
    lin = 10 ** (tex / 10)
    assert lin.mean() == pytest.approx(1.0, rel=0.02)
    # gamma(3) texture: 1 % of pixels above ~2.8x the mean (a Gaussian of this std would give fewer)
    assert np.mean(lin > 2.8) > 0.008


def test_misregistration_shifts_by_up_to_one_pixel():
    img = np.zeros((64, 64), np.float32)
    img[32, 32] = 1.0
    for s in range(20):
        out = clutter.misregister(img, np.random.default_rng(s), (0.1, 1.0))
        yy, xx = np.mgrid[0:64, 0:64]
        cy, cx = (out * yy).sum() / out.sum(), (out * xx).sum() / out.sum()
        assert 0.09 < np.hypot(cy - 32, cx - 32) < 1.01


def test_wind_patches_and_lines_are_small_scale_and_deterministic():
    shape = (300, 300)
    w1 = clutter.wind_patches_db(np.random.default_rng(5), shape, (5.0, 20.0), 2.5, 1.0)
    w2 = clutter.wind_patches_db(np.random.default_rng(5), shape, (5.0, 20.0), 2.5, 1.0)
    assert np.array_equal(w1, w2)
    share = np.mean(w1 != 0)
    assert 0.03 < share < 0.2 and w1.max() > 1.0 and w1.min() < -0.3
    from scipy import ndimage

    lab, n = ndimage.label(w1 > 0)
    sizes = ndimage.sum(np.ones_like(w1), lab, range(1, n + 1))
    assert n >= 5 and np.median(sizes) < 20 * 20      # patches, not slope-scale fields
    lines = clutter.make_linear_features(np.random.default_rng(2), shape, 5, (40.0, 150.0), 2.0)
    img = lines.render_db(np.ones(5))
    assert 5 * 40 < (img > 0).sum() < 5 * 150 * 3 + 1  # about length x width pixels per line
