"""Is the synthetic season hard in the right way? Prints figures (the paper's comparison, in miniature).

On a synthetic study (the ``demo`` preset, generated in a temporary directory, or ``--study``),
for every monitored corridor and acquisition with a previous one: the label (``labels.label_map``
on the inventory) and the three channels of the paper in the ``CROP x CROP`` window at the
deposition centre (``VV*``, ``VV*_old``, ``VHdiff``; dB against the mean summer reference;
layover/shadow -> 0). Positives and as many random negatives, 5-fold cross-validation grouped by
corridor:

- **threshold baseline**: per-pixel change ``VV* - VV*_old`` or ``VHdiff`` above a threshold,
  counted; (channel, threshold, count) tuned for accuracy on the training folds;
- **spatial proxy**: a logistic regression on a few pooled features of the Gaussian-smoothed
  channels (extremes and means in the centre), a stand-in for what a spatial model can see.

Targets (the paper: CNN 0.69-0.77, thresholding 0.53-0.58): baseline near chance + 0.05..0.1,
spatial proxy clearly above it; recall of east-facing deposits lower in the descending orbit.

    .venv/bin/python -m benchmarks.bench_synth_science [--study PATH] [--seed N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import rasterio
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from avalanche_hpc.preprocess.channels import to_linear
from avalanche_hpc.preprocess.deposition import compute_deposition, load_deposition
from avalanche_hpc.preprocess.labels import label_map
from avalanche_hpc.preprocess.raster import raster_units
from avalanche_hpc.study import LAYOVER_SHADOW, Study

CROP = 50


def _power(study: Study, orbit: str, d, band: str) -> np.ndarray:
    with rasterio.open(study.scene_path(orbit, d, band)) as src:
        a = src.read(1).astype(np.float32)
        units = raster_units(src, study.config.units)
        if src.nodata is not None:
            a[a == np.float32(src.nodata)] = np.nan
    return to_linear(a, units)


def collect(study: Study):
    dep = load_deposition(study.root)
    corridors = study.read_corridors()
    inv = study.read_inventory()
    half = CROP // 2
    X, y, groups, orbit, aspect = [], [], [], [], []
    for season in study.config.seasons:
        for o in study.config.orbits:
            with warnings.catch_warnings():  # all-NaN pixels (no data) stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                ref = {b: np.nanmean([_power(study, o.id, d, b) for d in study.summer_dates(season.id, o.id)],
                                     axis=0) for b in ("VV", "VH")}
            prev = None
            for acq in study.acquisitions(season=season.id, orbit=o.id):
                with rasterio.open(study.scene_path(o.id, acq.date, LAYOVER_SHADOW)) as src:
                    bad = src.read(1) != 0
                cur = {}
                for b in ("VV", "VH"):
                    with np.errstate(invalid="ignore", divide="ignore"):
                        cur[b] = 10 * np.log10(_power(study, o.id, acq.date, b) / ref[b])
                    cur[b][bad] = np.nan
                if prev is not None:
                    labels = label_map(inv, corridors, acq.prev_date, acq.date).set_index("path_id")["label"]
                    for r in dep.itertuples():
                        lab = int(labels.get(r.path_id, -1))
                        rr, cc = int(r.row), int(r.col)
                        if lab < 0 or rr < half or cc < half:
                            continue
                        sl = (slice(rr - half, rr + half), slice(cc - half, cc + half))
                        patch = np.stack([cur["VV"][sl], prev["VV"][sl], cur["VH"][sl] - prev["VH"][sl]])
                        if patch.shape[1:] != (CROP, CROP):
                            continue
                        X.append(np.nan_to_num(patch))
                        y.append(lab)
                        groups.append(r.path_id)
                        orbit.append(o.id)
                        aspect.append(r.aspect)
                prev = cur
    return np.array(X), np.array(y), np.array(groups), np.array(orbit), np.array(aspect)


def _features(x: np.ndarray) -> list[float]:
    out = []
    c = slice(CROP // 4, CROP - CROP // 4)
    for k in range(3):
        s = ndimage.gaussian_filter(x[k], 1.5)
        out += [s[c, c].max(), s[c, c].min(), s[c, c].mean(), s.mean(), np.percentile(s, 95)]
    d = ndimage.gaussian_filter(x[0] - x[1], 1.5)[c, c]
    return [*out, d.max(), np.percentile(d, 99)]


def _baseline_fit(changes: dict[str, np.ndarray], y: np.ndarray):
    best = (-1.0, None)
    for name, ch in changes.items():
        for thr in np.arange(0.5, 8.01, 0.5):
            cnt = (ch > thr).sum(axis=(1, 2))
            for c in np.unique(cnt):
                acc = ((cnt >= c) == y).mean()
                if acc > best[0]:
                    best = (acc, (name, thr, c))
    return best[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, default=None, help="an existing study (default: generate demo)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated demo study and of the sampling")
    args = ap.parse_args()
    tmp = None
    root = args.study
    if root is None:
        from avalanche_hpc.synth import generate_study

        tmp = Path(tempfile.mkdtemp(prefix="bench_science_"))
        root = generate_study(tmp / "demo", preset="demo", seed=args.seed)
    try:
        compute_deposition(root)
        X, y, groups, orbit, aspect = collect(Study.load(root))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    n_labelled = len(y)
    rng = np.random.default_rng(args.seed)
    pos = np.nonzero(y == 1)[0]
    neg = rng.choice(np.nonzero(y == 0)[0], len(pos), replace=False)
    idx = np.concatenate([pos, neg])
    X, y, groups, orbit, aspect = X[idx], y[idx], groups[idx], orbit[idx], aspect[idx]
    print(f"{len(pos)} positives among {n_labelled} labelled patches; balanced to {len(y)}")
    changes = {"VVdiff": X[:, 0] - X[:, 1], "VHdiff": X[:, 2]}
    feats = np.array([_features(x) for x in X])
    pred_base = np.zeros(len(y), int)
    pred_proxy = np.zeros(len(y), int)
    for train, test in GroupKFold(5).split(X, y, groups):
        name, thr, c = _baseline_fit({k: v[train] for k, v in changes.items()}, y[train])
        pred_base[test] = ((changes[name][test] > thr).sum(axis=(1, 2)) >= c).astype(int)
        model = LogisticRegression(max_iter=2000).fit(feats[train], y[train])
        pred_proxy[test] = model.predict(feats[test])
    print(f"accuracy, 5-fold grouped by corridor: threshold baseline {(pred_base == y).mean():.3f}, "
          f"spatial proxy {(pred_proxy == y).mean():.3f}")
    east = np.sin(np.radians(aspect)) > 0.3
    west = np.sin(np.radians(aspect)) < -0.3
    for o in np.unique(orbit):
        sel = (y == 1) & (orbit == o)
        print(f"recall of the spatial proxy, {o}: east-facing {pred_proxy[sel & east].mean():.2f} "
              f"(n={int((sel & east).sum())}), west-facing {pred_proxy[sel & west].mean():.2f} "
              f"(n={int((sel & west).sum())})")


if __name__ == "__main__":
    main()
