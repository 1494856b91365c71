"""The detector of an experiment: its trained CNN seeds and its baseline, checked, thresholded, recorded.

``prepare_model(study, experiment, split)`` validates everything before any detection is written
and records the result in ``STUDY/detections/{experiment}/model.json``:

- the complete CNN runs of the split (``runs/{experiment}/{split}/cnn/seed*/`` with ``best.pt``
  and ``metrics.json``) and the baseline (``.../baseline/params.json``), with their sha256;
- the store holds the data the model was trained on: the patches of every ``split.csv`` row,
  found by key ``(season, orbit, date, path_id)`` in the current store (rows may have moved when
  dates were added), hash to the runs' ``data_sha256`` (else the store is older than, or other
  than, the model's);
- decision thresholds of the CNN (mean probability over the seeds) and of the baseline (share of
  above-threshold pixels), by ``threshold.RULE``, from the validation rows of the runs'
  ``predictions.csv``;
- the precision of the backbone: ``precision="auto"`` scores in the mode the runs were trained
  in (their ``config.json``; training's "auto" measured it on the machine, ``learn/precision.py``:
  bfloat16 where faster and accurate, else float32), after checking that this mode reproduces the
  training's validation predictions here; ``fp32``/``bf16`` force a mode, and its agreement with
  the training's decisions is recorded.

``model_digest`` hashes what a score depends on (checkpoints, baseline parameters, thresholds,
precision, crop); every part records it, so a changed model re-scores every date and an
unchanged one skips them. ``inputs_fingerprint`` (sizes and mtimes of the run files, the store's
digest) lets an array task check the record cheaply; when it differs the record is rebuilt.

``Detector`` scores patches: one backbone pass for all seeds, the heads averaged, the baseline
on the same centre window.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from avalanche_hpc import __version__
from avalanche_hpc.atomic import write_json
from avalanche_hpc.detect.threshold import choose_threshold
from avalanche_hpc.digest import digest_json, sha256_file
from avalanche_hpc.errors import ConfigError, MissingInputError, StageError
from avalanche_hpc.learn.baseline import apply_baseline
from avalanche_hpc.learn.features import centre_views, crop_batch, prepare_patches
from avalanche_hpc.learn.model import Backbone, Head, build_vgg16
from avalanche_hpc.learn.splits import read_split, validate_split
from avalanche_hpc.learn.weights import ResolvedWeights, resolve_weights
from avalanche_hpc.store.layout import KEY_COLUMNS, read_attrs, read_meta, read_patches
from avalanche_hpc.study import Study

log = logging.getLogger(__name__)

DETECT_VERSION = 1
PRECISIONS = ("auto", "fp32", "bf16")
BF16_MAX_DPROB = 0.02  # largest |p_bf16 - p_fp32| accepted on the validation rows
BF16_MIN_AGREEMENT = 0.99  # share of validation decisions that must agree
REPRODUCE_TOL = 1e-3  # fp32 here vs the training's predictions.csv (validation rows)
CHECK_ROWS = 256  # validation rows used for the precision check
POOL_CHUNK = 256  # rows per read when hashing the training pool


@dataclass(frozen=True)
class Runs:
    """The files of an experiment's split that detection uses."""

    split_csv: Path
    cnn: list[Path]  # seed directories, complete
    baseline: Path

    def files(self) -> list[Path]:
        out = [self.split_csv, self.baseline / "params.json", self.baseline / "predictions.csv"]
        for d in self.cnn:
            out += [d / "best.pt", d / "config.json", d / "predictions.csv"]
        return out


def find_runs(study: Study, experiment: str, split: str) -> Runs:
    """The complete CNN seeds and the baseline of ``split``; MissingInputError naming the fix otherwise."""
    validate_split(split, study.config.massifs)
    exp_dir = study.runs_dir(experiment)
    root = study.root
    if not exp_dir.is_dir():
        raise MissingInputError(f"experiment {experiment!r} has no runs ({exp_dir} does not exist) -> train it first: "
                                f"'avalanche-hpc train {root} -e {experiment}' and 'avalanche-hpc baseline {root} -e "
                                f"{experiment}' (or run the job's train and baseline stages)")
    split_dir = exp_dir / split
    seeds = sorted((d for d in (split_dir / "cnn").glob("seed*") if d.is_dir()),
                   key=lambda d: int(d.name[4:]) if d.name[4:].isdigit() else -1)
    complete = [d for d in seeds if (d / "best.pt").is_file() and (d / "metrics.json").is_file()
                and (d / "predictions.csv").is_file() and (d / "config.json").is_file()]
    if not complete:
        found = f" ({len(seeds)} unfinished seed folder(s))" if seeds else ""
        raise MissingInputError(f"experiment {experiment!r} has no trained CNN run in split {split!r}: no "
                                f"{split_dir / 'cnn' / 'seedN'} with best.pt and metrics.json{found} -> "
                                f"'avalanche-hpc train {root} -e {experiment} --split {split}'")
    base = split_dir / "baseline"
    if not ((base / "params.json").is_file() and (base / "predictions.csv").is_file()):
        raise MissingInputError(f"experiment {experiment!r} has no baseline in split {split!r} ({base}/params.json) "
                                f"-> 'avalanche-hpc baseline {root} -e {experiment} --split {split}'")
    split_csv = split_dir / "split.csv"
    if not split_csv.is_file():
        raise MissingInputError(f"{split_csv} is missing: no validation set to choose the decision threshold on -> "
                                f"retrain: 'avalanche-hpc train {root} -e {experiment} --split {split} --force'")
    return Runs(split_csv, complete, base)


def _store_digest(study: Study) -> str:
    if not study.store_path.is_file():
        raise MissingInputError(f"patch store {study.store_path} does not exist -> 'avalanche-hpc store merge "
                                f"{study.root}'")
    return str(read_attrs(study.store_path).get("digest", ""))


def inputs_fingerprint(study: Study, runs: Runs) -> dict[str, Any]:
    """Cheap identity of the record's inputs: (size, mtime) of every run file and the store's digest."""
    out: dict[str, Any] = {"store_digest": _store_digest(study)}
    for f in runs.files():
        st = f.stat()
        out[str(f.relative_to(study.root))] = [st.st_size, st.st_mtime_ns]
    return out


def _resolved(record: dict) -> ResolvedWeights:
    if record.get("kind") == "none" or not record.get("path"):
        return ResolvedWeights(str(record.get("requested", "none")), "none")
    return resolve_weights(str(record["path"]), record.get("sha256"))


def _mean_seed_probs(runs: Runs) -> pd.DataFrame:
    """store_row, label, set and the CNN probability averaged over seeds (from predictions.csv)."""
    frames = [pd.read_csv(d / "predictions.csv", usecols=["store_row", "set", "label", "prob"]) for d in runs.cnn]
    base = frames[0][["store_row", "set", "label"]].copy()
    for f in frames[1:]:
        if not np.array_equal(f["store_row"].to_numpy(), base["store_row"].to_numpy()):
            raise ConfigError(f"the CNN seeds of {runs.cnn[0].parent} were trained on different splits -> retrain them "
                              f"with one split seed (--force)")
    base["prob"] = np.mean([f["prob"].to_numpy(dtype=float) for f in frames], axis=0)
    return base


def _key_index(meta: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_frame(meta[list(KEY_COLUMNS)].astype(str))


def _check_pool(study: Study, meta: pd.DataFrame, split_table: pd.DataFrame, data_sha: str) -> None:
    """The store holds the training pool's patches (by key) with the bytes the model was trained on."""
    import hashlib

    pos = _key_index(meta).get_indexer(_key_index(split_table))
    if (pos < 0).any():
        first = split_table.iloc[int(np.flatnonzero(pos < 0)[0])]
        raise StageError(f"the patch store {study.store_path} lacks {int((pos < 0).sum())} patch(es) the model was "
                         f"trained on (first: {first['season']}/{first['orbit']}/{first['date']}/{first['path_id']}): the "
                         f"store is older than, or other than, the model's -> re-run preprocess and 'avalanche-hpc store "
                         f"merge', or retrain the experiment on this store (--force)")
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(split_table["store_row"].to_numpy(), dtype=np.int64).tobytes())
    for a in range(0, len(pos), POOL_CHUNK):
        h.update(np.ascontiguousarray(prepare_patches(read_patches(study.store_path, pos[a:a + POOL_CHUNK])),
                                      dtype=np.float32).tobytes())
    if h.hexdigest() != data_sha:
        raise StageError(f"the patches of the training pool in {study.store_path} differ from those the model was "
                         f"trained on (data_sha256 {data_sha[:12]}... in the runs' config.json): the store is older "
                         f"than, or other than, the model's -> re-run 'avalanche-hpc store merge' on the inputs the "
                         f"model was trained on, or retrain the experiment on this store (--force)")


def _neg_weight(meta: pd.DataFrame, split_table: pd.DataFrame) -> tuple[float, dict[str, int]]:
    """Negatives / positives among the labelled store rows of the training and validation corridors."""
    corridors = set(split_table.loc[split_table["set"].isin(["train", "val"]), "path_id"])
    lab = meta.loc[meta["path_id"].isin(corridors), "label"].to_numpy()
    n_pos, n_neg = int((lab == 1).sum()), int((lab == 0).sum())
    return (n_neg / n_pos if n_pos else 1.0), {"positive": n_pos, "negative": n_neg}


def bf16_supported(device: torch.device) -> bool:
    """Native bfloat16 on this machine: a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX (oneDNN)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class Detector:
    """The CNN (frozen backbone, one head per seed) and the baseline of a model record, ready to score."""

    def __init__(self, record: dict, root: Path, device: torch.device | None = None, mode: str | None = None):
        self.record = record
        self.device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        cnn = record["cnn"]
        self.crop = int(cnn["crop"])
        # the backbone's mode, as training runs it (learn/precision.py): fp32, fp32-cl (channels-last) or bf16
        self.mode = mode or record["precision"]["mode"]
        self.backbone = Backbone(build_vgg16(_resolved(cnn["weights"]))).to(self.device).set_precision(self.mode)
        self.heads = []
        for run in cnn["runs"]:
            head = Head()
            head.load_state_dict(torch.load(Path(root) / run["best_pt"], map_location="cpu",
                                            weights_only=True)["head"])
            self.heads.append(head.to(self.device).eval())
        self.baseline_params = record["baseline"]["params"]

    def features(self, patches: np.ndarray) -> torch.Tensor:
        """Backbone features (n, 512), float32, of the centre crops of ``patches`` (n, 3, P, P; NaN allowed)."""
        prepared = prepare_patches(patches)
        x = crop_batch(prepared, np.arange(len(prepared)), centre_views(len(prepared), prepared.shape[-1], self.crop)[:, 0],
                       self.crop)
        return self.backbone(x).float()

    def cnn_prob(self, patches: np.ndarray) -> np.ndarray:
        if len(patches) == 0:
            return np.empty(0)
        feats = self.features(patches)
        with torch.inference_mode():
            probs = [torch.softmax(h(feats), dim=1)[:, 1] for h in self.heads]
        return torch.stack(probs).mean(0).cpu().numpy().astype(float)

    def baseline_prob(self, patches: np.ndarray) -> np.ndarray:
        if len(patches) == 0:
            return np.empty(0)
        prob, _ = apply_baseline(patches, self.baseline_params)
        return prob.astype(float)


def _precision_check(record: dict, root: Path, val_patches: np.ndarray, val_ref: np.ndarray, threshold: float,
                     requested: str, trained: str, device: torch.device) -> dict:
    """The training's backbone mode must reproduce its validation predictions here; then the mode used.

    ``trained``: the mode the runs were trained in (their ``config.json``; "auto" was resolved by a
    measurement at training time, learn/precision.py). "auto" scores in that mode; an explicit
    request is used as given, with its difference from the training's predictions recorded.
    """
    out: dict[str, Any] = {"requested": requested, "trained": trained, "device": str(device),
                           "bf16_native": bf16_supported(device), "n_rows": len(val_patches)}
    tol = REPRODUCE_TOL if trained != "bf16" else BF16_MAX_DPROB / 4
    probs: dict[str, np.ndarray] = {}
    for mode in dict.fromkeys((trained, "fp32" if requested == "auto" else requested)):
        det = Detector(record, root, device, mode=mode)
        det.cnn_prob(val_patches[:8])  # warm-up
        t0 = time.perf_counter()
        probs[mode] = det.cnn_prob(val_patches)
        out[f"{mode}_s"] = time.perf_counter() - t0
        out[f"{mode}_vs_training_max_abs_dprob"] = float(np.max(np.abs(probs[mode] - val_ref))) if len(val_ref) else 0.0
    dp = out[f"{trained}_vs_training_max_abs_dprob"]
    if dp > tol:
        raise StageError(f"the CNN does not reproduce its training's validation predictions here in its training "
                         f"precision {trained} (max |dp| = {dp:.2e} > {tol:.1e}): the backbone weights or the model "
                         f"code changed since training -> retrain the experiment (--force)")
    mode = trained if requested == "auto" else requested
    if mode != trained:
        out["decision_agreement_with_training"] = float(np.mean((probs[mode] >= threshold) == (val_ref >= threshold)))
    out["mode"] = mode
    out["rule"] = ("auto: the backbone precision the runs were trained in (measured at training time, "
                   f"learn/precision.py), checked to reproduce the validation predictions (max |dp| <= {tol:.1e}); "
                   "fp32/bf16: as requested")
    return out


def _build_record(study: Study, experiment: str, split: str, runs: Runs, precision: str,
                  device: torch.device) -> dict:
    configs = [json.loads((d / "config.json").read_text(encoding="utf-8")) for d in runs.cnn]
    for key in ("weights", "data_sha256"):
        vals = {json.dumps(c.get(key), sort_keys=True) for c in configs}
        if len(vals) > 1:
            raise ConfigError(f"the CNN seeds of {runs.cnn[0].parent} differ in {key!r} -> retrain them with the same "
                              f"settings (--force)")
    crops = {int(c.get("settings", {}).get("crop", 50)) for c in configs}
    if len(crops) > 1:
        raise ConfigError(f"the CNN seeds of {runs.cnn[0].parent} were trained with different crops {sorted(crops)}")
    split_table = read_split(runs.split_csv)
    meta = read_meta(study.store_path)
    _check_pool(study, meta, split_table, configs[0]["data_sha256"])
    neg_weight, prevalence = _neg_weight(meta, split_table)

    cnn_pred = _mean_seed_probs(runs)
    base_pred = pd.read_csv(runs.baseline / "predictions.csv", usecols=["store_row", "set", "label", "prob"])
    val = cnn_pred[cnn_pred["set"] == "val"]
    what = f"{runs.split_csv} (split {split!r})"
    cnn_thr = choose_threshold(val["prob"].to_numpy(), val["label"].to_numpy(), neg_weight, what)
    bval = base_pred[base_pred["set"] == "val"]
    base_thr = choose_threshold(bval["prob"].to_numpy(), bval["label"].to_numpy(), neg_weight, what)
    params = json.loads((runs.baseline / "params.json").read_text(encoding="utf-8"))
    keep = ("channel", "pixel_threshold_db", "count_threshold", "crop", "n_pixels")
    missing = [k for k in keep if k not in params]
    if missing:
        raise ConfigError(f"{runs.baseline / 'params.json'} lacks {missing} -> rerun the baseline (--force)")

    record: dict[str, Any] = {
        "version": DETECT_VERSION, "experiment": experiment, "split": split, "study": study.config.name,
        "cnn": {
            "runs": [{"seed": int(d.name[4:]), "dir": str(d.relative_to(study.root)),
                      "best_pt": str((d / "best.pt").relative_to(study.root)),
                      "best_pt_sha256": sha256_file(d / "best.pt"),
                      "best_epoch": json.loads((d / "metrics.json").read_text(encoding="utf-8")).get("best_epoch")}
                     for d in runs.cnn],
            "weights": configs[0]["weights"], "crop": crops.pop(), "data_sha256": configs[0]["data_sha256"],
            "score": "mean over the seeds of the softmax probability of 'debris' on the centre crop",
            "threshold": cnn_thr,
        },
        "baseline": {
            "dir": str(runs.baseline.relative_to(study.root)),
            "params_sha256": sha256_file(runs.baseline / "params.json"),
            "params": {k: params[k] for k in keep},
            "own_decision": f"count >= {params['count_threshold']} px (tuned for validation accuracy)",
            "score": "share of the centre window's pixels whose change exceeds the pixel threshold",
            "threshold": base_thr,
        },
        "split_csv_sha256": sha256_file(runs.split_csv),
        "prevalence": {**prevalence, "neg_weight": neg_weight,
                       "from": "labelled store rows of the training and validation corridors"},
        "store": {"path": str(study.store_path.relative_to(study.root)), "digest": _store_digest(study),
                  "pool_check": "the training pool's patches, found by key, hash to the runs' data_sha256"},
        "code_version": __version__, "torch_version": torch.__version__,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    # precision: float32 must reproduce training; bfloat16 where native and accurate
    val_rows = val.sort_values("store_row")
    if len(val_rows) > CHECK_ROWS:
        val_rows = val_rows.iloc[np.linspace(0, len(val_rows) - 1, CHECK_ROWS).astype(int)]
    store_rows = _store_rows_of(meta, split_table, val_rows["store_row"].to_numpy())
    patches = read_patches(study.store_path, store_rows)
    record["precision"] = {"mode": "fp32"}
    trained = {c.get("settings", {}).get("precision", "fp32") for c in configs}
    if len(trained) != 1:
        raise ConfigError(f"the seeds of split {split!r} were trained in different backbone precisions {sorted(trained)} "
                          f"-> retrain them with one (train --force)")
    record["precision"] = _precision_check(record, study.root, patches, val_rows["prob"].to_numpy(), cnn_thr["threshold"],
                                           precision, trained.pop(), device)
    record["model_digest"] = digest_json({
        "version": DETECT_VERSION, "cnn": [r["best_pt_sha256"] for r in record["cnn"]["runs"]],
        "weights": record["cnn"]["weights"].get("sha256"), "crop": record["cnn"]["crop"],
        "baseline": record["baseline"]["params_sha256"], "thresholds": [cnn_thr["threshold"], base_thr["threshold"]],
        "mode": record["precision"]["mode"]})
    return record


def _store_rows_of(meta: pd.DataFrame, split_table: pd.DataFrame, split_rows: np.ndarray) -> np.ndarray:
    """Current store rows of the split rows ``split_rows`` (by key; rows move when dates are added)."""
    sub = split_table.set_index("store_row").loc[split_rows].reset_index()
    return _key_index(meta).get_indexer(_key_index(sub))


def load_record(study: Study, experiment: str) -> dict | None:
    path = study.detection_paths(experiment).model
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def current_record(study: Study, experiment: str, split: str, precision: str) -> dict | None:
    """The recorded model when its inputs are unchanged (cheap: stat calls and one HDF5 attribute)."""
    rec = load_record(study, experiment)
    if rec is None or rec.get("split") != split or rec.get("precision", {}).get("requested") != precision:
        return None
    try:
        fp = inputs_fingerprint(study, find_runs(study, experiment, split))
    except (MissingInputError, OSError):
        return None
    return rec if rec.get("inputs_fingerprint") == fp else None


def prepare_model(study: Study, experiment: str, split: str = "random", precision: str = "auto",
                  force: bool = False, device: torch.device | None = None) -> dict:
    """The model record (``model.json``), rebuilt when its inputs changed; every check before any write."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if not force:
        rec = current_record(study, experiment, split, precision)
        if rec is not None:
            return rec
    runs = find_runs(study, experiment, split)
    fp = inputs_fingerprint(study, runs)
    device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    rec = _build_record(study, experiment, split, runs, precision, device)
    rec["inputs_fingerprint"] = fp
    old = load_record(study, experiment)
    if old is not None and not force and old.get("model_digest") != rec["model_digest"]:
        log.info("detector of %s changed (model digest %s -> %s): every date will be scored again", experiment,
                 old.get("model_digest"), rec["model_digest"])
    write_json(study.detection_paths(experiment).model, rec)
    log.info("detector %s/%s: %d CNN seed(s), thresholds CNN %.4f, baseline %.4f, %s", experiment, split,
             len(rec["cnn"]["runs"]), rec["cnn"]["threshold"]["threshold"], rec["baseline"]["threshold"]["threshold"],
             rec["precision"]["mode"])
    return rec


_DETECTORS: dict[str, Detector] = {}


def get_detector(record: dict, root: Path) -> Detector:
    """One ``Detector`` per process and model digest (an in-process run over many dates loads it once)."""
    key = record["model_digest"]
    if key not in _DETECTORS:
        _DETECTORS.clear()
        _DETECTORS[key] = Detector(record, root)
    return _DETECTORS[key]
