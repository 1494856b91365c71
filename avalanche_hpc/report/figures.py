"""Report figures (matplotlib, Agg backend), each written atomically as a PNG file.

Every function takes the experiment (or analysis data) and an output path and returns the
path, or ``None`` when the data for that figure is absent (e.g. no history.csv).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import matplotlib

matplotlib.use("Agg")  # no display on clusters; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np

from avalanche_hpc.atomic import atomic_path
from avalanche_hpc.report.analysis import OCTANTS
from avalanche_hpc.report.collect import Experiment, metrics_of

if TYPE_CHECKING:
    from matplotlib.projections.polar import PolarAxes

log = logging.getLogger(__name__)
DPI = 100
CNN_COLOR, BASE_COLOR, TP_COLOR, FN_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_confusion(exp: Experiment, path: Path) -> Path | None:
    """Confusion matrices on the main split's test set: CNN (summed over seeds) and baseline."""
    split = exp.main_split
    panels = []
    for scope, sel in (("all massifs", lambda t: t), (exp.focus_massif, lambda t: t[t["massif"] == exp.focus_massif])):
        if split.cnn:
            cm = np.sum([np.asarray(metrics_of(sel(r.test))["confusion"]) for r in split.cnn], axis=0)
            panels.append((f"CNN, {scope}\n(summed over {len(split.cnn)} seed(s))", cm))
        if split.baseline:
            panels.append((f"Baseline, {scope}", np.asarray(metrics_of(sel(split.baseline.test))["confusion"])))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for ax, (title, cm) in zip(np.atleast_1d(axes), panels, strict=False):
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=12)
        ax.set_xticks([0, 1], ["no avalanche", "avalanche"])
        ax.set_yticks([0, 1], ["no avalanche", "avalanche"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("label")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_roc_pr(exp: Experiment, path: Path) -> Path | None:
    """ROC and precision-recall curves of every CNN seed and of the baseline (main split, test set)."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    split = exp.main_split
    runs = [r for r in split.runs if r.test["label"].nunique() == 2]
    if not runs:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for r in runs:
        color = CNN_COLOR if r.kind == "cnn" else BASE_COLOR
        y, p = r.test["label"].to_numpy(), r.test["prob"].to_numpy()
        fpr, tpr, _ = roc_curve(y, p)
        prec, rec, _ = precision_recall_curve(y, p)
        ax1.plot(fpr, tpr, color=color, alpha=0.8, label=f"{r.name} (AUC {auc(fpr, tpr):.2f})")
        ax2.plot(rec, prec, color=color, alpha=0.8, label=r.name)
    ax1.plot([0, 1], [0, 1], ls=":", color="grey")
    ax1.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test set)", xlim=(0, 1),
            ylim=(0, 1.02))
    base_rate = float(np.mean(runs[0].test["label"]))
    ax2.axhline(base_rate, ls=":", color="grey", label=f"chance ({base_rate:.2f})")
    ax2.set(xlabel="recall", ylabel="precision", title="Precision-recall (test set)", xlim=(0, 1), ylim=(0, 1.02))
    ax1.legend(fontsize=8, loc="lower right")
    ax2.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(exp: Experiment, path: Path) -> Path | None:
    """Loss and validation accuracy per epoch (history.csv) of every CNN seed of the main split."""
    runs = [r for r in exp.main_split.cnn if r.history is not None and "epoch" in r.history.columns]
    if not runs:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, r in enumerate(runs):
        h, c = r.history, colors[k % len(colors)]
        if h is None:  # filtered out above; tells the type checker
            continue
        if "train_loss" in h.columns:
            ax1.plot(h["epoch"], h["train_loss"], color=c, label=f"seed {r.seed} train")
        if "val_loss" in h.columns:
            ax1.plot(h["epoch"], h["val_loss"], color=c, ls="--", label=f"seed {r.seed} val")
        for col, ls in (("val_accuracy", "-"), ("train_accuracy", ":")):
            if col in h.columns:
                ax2.plot(h["epoch"], h[col], color=c, ls=ls, label=f"seed {r.seed} {col.split('_')[0]}")
        best = (r.saved_metrics or {}).get("best_epoch")
        if best is not None:
            ax1.axvline(best, color=c, alpha=0.3, lw=1)
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss (vertical line: best epoch)")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_aspect_polar(aspect: dict[str, Any], path: Path) -> Path | None:
    """Share of TP and of FN in each of the 8 aspect octants (polar bars, north up, clockwise)."""
    classes = {c["class"]: c for c in aspect.get("classes", [])}
    tp_n, fn_n = aspect.get("tp_total", 0), aspect.get("fn_total", 0)
    if not (tp_n or fn_n):
        return None
    theta = np.deg2rad(np.arange(8) * 45.0)
    tp = np.array([classes.get(o, {}).get("tp", 0) for o in OCTANTS]) / max(tp_n, 1)
    fn = np.array([classes.get(o, {}).get("fn", 0) for o in OCTANTS]) / max(fn_n, 1)
    fig = plt.figure(figsize=(5, 5))
    ax = cast("PolarAxes", fig.add_subplot(projection="polar"))
    ax.set_theta_zero_location("N")
    ax.set_theta_direction(-1)
    w = np.deg2rad(18)
    ax.bar(theta - w / 2, tp, width=w, color=TP_COLOR, alpha=0.8, label=f"TP (n={tp_n})")
    ax.bar(theta + w / 2, fn, width=w, color=FN_COLOR, alpha=0.8, label=f"FN (n={fn_n})")
    ax.set_xticks(theta, list(OCTANTS))
    ax.set_title("Share of TP and FN per aspect octant", pad=18)
    ax.legend(loc="upper right", bbox_to_anchor=(1.25, 1.1), fontsize=8)
    return _save(fig, path)


def plot_class_bars(analysis: dict[str, Any], path: Path) -> Path | None:
    """Counts of TP and FN per deposit size class, month and slope class (side-by-side bars)."""
    parts = [(k, t) for k, t in (("size", "deposit size"), ("month", "month"), ("slope", "local slope"))
             if analysis.get(k, {}).get("classes")]
    if not parts:
        return None
    fig, axes = plt.subplots(1, len(parts), figsize=(4.6 * len(parts), 3.8))
    for ax, (key, title) in zip(np.atleast_1d(axes), parts, strict=False):
        cls = analysis[key]["classes"]
        x = np.arange(len(cls))
        ax.bar(x - 0.2, [c["tp"] for c in cls], 0.4, color=TP_COLOR, label="TP")
        ax.bar(x + 0.2, [c["fn"] for c in cls], 0.4, color=FN_COLOR, label="FN")
        ax.set_xticks(x, [c["class"] for c in cls], rotation=30, ha="right", fontsize=8)
        ax.set(ylabel="positive test patches", title=f"TP vs FN by {title}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_holdouts(exp: Experiment, path: Path) -> Path | None:
    """Accuracy per held-out massif: CNN (mean, std error bars) and baseline."""
    from avalanche_hpc.report.collect import split_stats

    if not exp.holdouts:
        return None
    names, cnn_m, cnn_s, base = [], [], [], []
    for s in exp.holdouts:
        st = split_stats(s)
        names.append(s.held_out(exp.study.config.massifs) or s.name)
        cnn_m.append(st["cnn"]["accuracy"].mean or 0.0)
        cnn_s.append(st["cnn"]["accuracy"].std or 0.0)
        base.append(st["baseline"]["accuracy"].mean or 0.0)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.6))
    ax.bar(x - 0.2, cnn_m, 0.4, yerr=cnn_s, color=CNN_COLOR, label="CNN", capsize=3)
    ax.bar(x + 0.2, base, 0.4, color=BASE_COLOR, label="baseline")
    ax.axhline(0.5, ls=":", color="grey")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.set(ylim=(0, 1), ylabel="accuracy (test = held-out massif)", title="Hold-out massifs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
