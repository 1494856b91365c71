"""The learned stacker: P(a deposit appeared in this unit | every orbit's evidence and geometry).

Features per orbit ``o`` (in the study's orbit order; an orbit with no observed window has a
probability of 0.5, i.e. logit 0, and ``observed_o = 0``):

- ``logit(p_o)`` (clipped to +-8), ``observed_o``;
- viewing geometry of the corridor's deposition zone: ``cos_local_o``, ``faces_o`` (slope faces
  the sensor), ``masked_o`` (layover/shadow share of the patch), and ``logit(p_o) x faces_o``
  (a score's worth depends on the geometry);
- the age of the window: ``age_o / width_o`` (0 when the orbit's image follows the unit at once,
  near 1 when the debris aged through most of the window) and ``logit(p_o) x age_o / width_o``;
- ``width_o`` (days).

Model: standardised features -> logistic regression (scikit-learn, L2, C = 1), trained on the
labelled units (0/1) of the *validation* corridors of the experiment's split only (the CNN has
seen its training corridors; the test corridors are for evaluation). A small, regularised
linear model because the validation set is small (a few hundred positive units); its
coefficients are written to ``fusion.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avalanche_hpc.errors import MissingInputError
from avalanche_hpc.fuse.units import UnitTable

CLIP = 8.0


def features(units: UnitTable) -> tuple[np.ndarray, list[str]]:
    f = units.frame
    cols, names = [], []
    for o in units.orbits:
        p = f[f"s_{o}"].to_numpy(dtype=float)
        obs = np.isfinite(p)
        pc = np.clip(np.where(obs, p, 0.5), 1e-6, 1 - 1e-6)
        logit = np.clip(np.log(pc / (1 - pc)), -CLIP, CLIP)
        faces = f[f"faces_{o}"].to_numpy(dtype=float)
        width = f[f"width_{o}"].to_numpy(dtype=float)
        age = np.divide(f[f"age_{o}"].to_numpy(dtype=float), width, out=np.zeros_like(width),
                        where=np.isfinite(width) & (width > 0))
        age = np.where(obs, np.nan_to_num(age), 0.0)
        masked = np.where(obs, np.nan_to_num(f[f"masked_{o}"].to_numpy(dtype=float)), 1.0)
        for name, v in (("logit", logit), ("observed", obs.astype(float)),
                        ("cos_local", f[f"cosloc_{o}"].to_numpy(dtype=float)), ("faces", faces),
                        ("masked", masked), ("logit_x_faces", logit * faces), ("age_frac", age),
                        ("logit_x_age", logit * age), ("width", np.where(obs, np.nan_to_num(width), 0.0))):
            cols.append(v)
            names.append(f"{name}_{o}")
    return np.column_stack(cols), names


class Stacker:
    """Logistic regression over ``features``; ``fit`` on the validation units only."""

    def __init__(self, C: float = 1.0):
        self.C = C
        self.model: Any = None
        self.names: list[str] = []

    def fit(self, units: UnitTable, mask: np.ndarray) -> Stacker:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x, self.names = features(units)
        y = units.frame["unit_label"].to_numpy()
        use = mask & (y >= 0) & units.frame["observed"].to_numpy(dtype=bool)
        if (y[use] == 1).sum() < 2 or (y[use] == 0).sum() < 2:
            raise MissingInputError(f"the stacker needs labelled units of both classes on the validation corridors "
                                    f"({int((y[use] == 1).sum())} positive, {int((y[use] == 0).sum())} negative) -> "
                                    f"a study with more inventoried events, or use a fusion rule")
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
        self.model.fit(x[use], (y[use] == 1).astype(int))
        self.n_train = int(use.sum())
        self.n_train_positive = int((y[use] == 1).sum())
        return self

    def predict(self, units: UnitTable) -> np.ndarray:
        x, _ = features(units)
        p = self.model.predict_proba(x)[:, 1]
        return np.where(units.frame["observed"].to_numpy(dtype=bool), p, np.nan)

    def describe(self) -> dict[str, Any]:
        lr = self.model[-1]
        scaler = self.model[0]
        return {"model": f"standardised features -> logistic regression (L2, C={self.C:g})",
                "trained_on": "labelled units of the split's validation corridors",
                "n_train_units": self.n_train, "n_train_positive": self.n_train_positive,
                "intercept": float(lr.intercept_[0]),
                "coefficients": {n: float(c) for n, c in zip(self.names, lr.coef_[0], strict=True)},
                "feature_mean": {n: float(m) for n, m in zip(self.names, scaler.mean_, strict=True)},
                "feature_scale": {n: float(s) for n, s in zip(self.names, scaler.scale_, strict=True)}}
