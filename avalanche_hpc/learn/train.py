"""Training of the VGG16 transfer model on one split and seed: ``train_run``.

Run directory ``Study.runs(experiment).cnn(split, seed)`` (layout: docs/architecture.md):
``config.json`` (written first), ``history.csv`` and ``checkpoint.pt`` (every epoch, atomic),
``best.pt`` (when the validation loss improves), then ``predictions.csv`` and ``metrics.json``
(written last: its presence marks the run complete; a complete run with the same settings is
skipped; ``run_is_complete`` is that same check, for the job executors).

Three parts: ``prepare_run`` (validation, the split, deleting a run with other settings, the
feature bank, head and optimizer, resuming), ``train_epochs`` (the loop) and ``write_results``;
``train_run`` (keywords, for the CLI and tests) and ``run_training`` (grouped settings) chain them.

The loop
- cross-entropy, Adam; early stopping on the validation loss (``patience`` epochs without
  improvement), at most ``max_epochs``; the best epoch's weights are kept and evaluated;
- deterministic for a seed: the epoch's sample order, the view of each sample (bank index or
  crop/flip) and the dropout masks are drawn from generators keyed by (seed, epoch[, batch]),
  not from a global RNG; the head's initial weights from ``seed``;
- resumable exactly: ``checkpoint.pt`` holds the head, the optimizer, the early-stopping state,
  the history and the torch RNG state; a run finding it continues at the next epoch and ends
  with the same metrics as an uninterrupted run (tested). Load with ``weights_only=True``.

Distributed data parallel (``dist``): the global batch order is the same on every rank; rank r
takes positions ``r::world_size`` of each global batch, with the dropout masks drawn for the
global batch. Each rank back-propagates ``sum(loss of its samples) / global batch size`` and the
gradients are summed with ``all_reduce``: the step equals the 1-rank step up to float
summation order (relative ~1e-7 per step), so 1-rank and N-rank runs give identical or
near-identical metrics (losses equal to ~1e-5 over tens of epochs). Every rank evaluates the
(small) validation set itself, so early-stopping decisions agree without communication; only
rank 0 writes files. The caller initialises the process group (``torch.distributed``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from avalanche_hpc import __version__
from avalanche_hpc.atomic import atomic_path, write_json, write_text
from avalanche_hpc.cleanup import clean_study_tmp
from avalanche_hpc.errors import ConfigError, StageError
from avalanche_hpc.learn.features import (
    DEFAULT_VIEWS,
    FeatureBank,
    backbone_features,
    centre_views,
    crop_batch,
    data_digest,
    load_or_build_bank,
    prepare_patches,
)
from avalanche_hpc.learn.inputs import MAPPING_ID
from avalanche_hpc.learn.metrics import focus_massif_of, metrics_report
from avalanche_hpc.learn.model import (
    DROPOUT,
    HIDDEN,
    Backbone,
    Head,
    build_vgg16,
    check_crop,
    init_head,
)
from avalanche_hpc.learn.precision import MODES
from avalanche_hpc.learn.splits import make_split, read_split, validate_split
from avalanche_hpc.learn.step import empty_batch, head_step
from avalanche_hpc.learn.weights import ResolvedWeights, resolve_weights
from avalanche_hpc.store.layout import read_meta, read_patches
from avalanche_hpc.study import RunFiles, Study

log = logging.getLogger(__name__)

ANALYSIS_COLUMNS = ["deposit_area_m2", "aspect", "slope", "elevation"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in a distributed run (None = a single process)."""

    rank: int
    world_size: int
    backend: str = "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class TrainSettings:
    """Every setting that changes a run's result (recorded in config.json)."""

    max_epochs: int = 250
    patience: int = 30  # epochs without a lower validation loss before stopping
    batch_size: int = 64  # global batch (all ranks together)
    lr: float = 1e-5  # Adam learning rate of the unfolded classifier (the folded fc1 gets x49)
    n_views: int = DEFAULT_VIEWS  # feature-bank views per sample (besides the centre view)
    crop: int = 50  # px
    feature_bank: bool = True
    precision: str = "auto"  # the backbone's (precision.py): fp32, fp32-cl, bf16, or auto (resolved before use)

    def validate(self) -> None:
        bad = []
        if self.max_epochs < 1:
            bad.append(f"max_epochs={self.max_epochs} must be >= 1")
        if self.patience < 1:
            bad.append(f"patience={self.patience} must be >= 1")
        if self.batch_size < 1:
            bad.append(f"batch_size={self.batch_size} must be >= 1")
        if not self.lr > 0:
            bad.append(f"lr={self.lr} must be > 0")
        if self.n_views < 1:
            bad.append(f"n_views={self.n_views} must be >= 1")
        if self.precision not in (*MODES, "auto"):
            bad.append(f"precision={self.precision!r} must be auto or one of {MODES}")
        if bad:
            raise ConfigError("; ".join(bad))
        check_crop(self.crop)


def resolve_settings_precision(settings: TrainSettings, experiment_dir: Path, weights: ResolvedWeights,
                               device: torch.device, measure: bool = True) -> TrainSettings:
    """``settings`` with "auto" precision replaced by the experiment's measured choice (precision.py).

    ``measure=False``: never probe (a completeness check): "auto" stays when nothing is recorded."""
    from avalanche_hpc.learn.precision import experiment_precision, recorded_precision

    if settings.precision != "auto":
        return settings
    if not measure:
        mode = recorded_precision(experiment_dir, device)
        return settings if mode is None else replace(settings, precision=mode)
    mode = experiment_precision(experiment_dir, settings.precision,
                                lambda: build_vgg16(weights).features.to(device), device, settings.crop)
    return replace(settings, precision=mode)


def select_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"device {device!r}: {e} -> use auto, cpu or cuda[:N]") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: no CUDA device here -> use auto or cpu")
    return dev


# -- distributed helpers ------------------------------------------------------------------------
def _world(dist: DistContext | None) -> tuple[int, int]:
    return (0, 1) if dist is None else (dist.rank, dist.world_size)


def _barrier(dist: DistContext | None) -> None:
    if dist is not None and dist.world_size > 1:
        torch.distributed.barrier()


def _all_reduce_(tensors: list[torch.Tensor], dist: DistContext | None) -> None:
    if dist is not None and dist.world_size > 1:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        i = 0
        for t in tensors:
            t.copy_(flat[i:i + t.numel()].view_as(t))
            i += t.numel()


# -- data -----------------------------------------------------------------------------------------
@dataclass
class RunData:
    table: pd.DataFrame  # split rows (store row order) + analysis columns
    patches: np.ndarray  # (n, 3, P, P) float32, NaN -> 0
    digest: str


def load_run_data(study: Study, split_csv: Path) -> RunData:
    table = read_split(split_csv)
    rows = table["store_row"].to_numpy(dtype=np.int64)
    meta = read_meta(study.store_path)
    for col in ANALYSIS_COLUMNS:
        table[col] = meta[col].to_numpy()[rows]
    patches = prepare_patches(read_patches(study.store_path, rows))
    return RunData(table, patches, data_digest(rows, patches))


class ViewSource:
    """Backbone features of training views and of centre views (bank or per-epoch backbone)."""

    def __init__(self, data: RunData, settings: TrainSettings, bank: FeatureBank | None,
                 backbone: Backbone | None, device: torch.device):
        self.data, self.s, self.bank, self.backbone, self.device = data, settings, bank, backbone, device
        if bank is not None:
            self.pos = bank.positions(data.table["store_row"].to_numpy(dtype=np.int64))
            self._centre = torch.from_numpy(bank.feats[self.pos, 0]).to(device)
        else:
            p = data.patches.shape[-1]
            self._centre = torch.from_numpy(backbone_features(
                self._backbone(), data.patches, centre_views(len(data.patches), p, settings.crop), settings.crop)[:, 0]
            ).to(device)

    def _backbone(self) -> Backbone:
        if self.backbone is None:
            raise StageError("ViewSource needs a feature bank or a backbone; it was given neither")
        return self.backbone

    def centre(self, index: np.ndarray) -> torch.Tensor:
        return self._centre[torch.from_numpy(index).to(self.device)]

    def standardisation_sample(self, index: np.ndarray) -> torch.Tensor:
        """Features of the rows ``index``: every bank view, or the centre view without a bank."""
        if self.bank is not None:
            return torch.from_numpy(self.bank.feats[self.pos[index]].reshape(-1, self.bank.feats.shape[-1])).to(self.device)
        return self.centre(index)

    def draw_views(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Per-sample view choice for an epoch: bank view index, or (r0, c0, flip_r, flip_c)."""
        if self.bank is not None:
            return rng.integers(1, self.bank.n_views + 1, size=n)
        p, c = self.data.patches.shape[-1], self.s.crop
        return np.concatenate([rng.integers(0, p - c + 1, size=(n, 2)), rng.integers(0, 2, size=(n, 2))], axis=1)

    def train_features(self, index: np.ndarray, views: np.ndarray) -> torch.Tensor:
        if self.bank is not None:
            return torch.from_numpy(self.bank.feats[self.pos[index], views]).to(self.device)
        return self._backbone()(crop_batch(self.data.patches, index, views, self.s.crop))


def write_experiment_record(study: Study, experiment: str, settings: dict) -> Path:
    """``runs/{experiment}/experiment.json``: the experiment's settings, written after each successful run.

    A run that fails (bad weights, full disk, killed) never writes it, and every successful run
    rewrites it (atomically, only when its content changes), so it always describes a run that
    finished. Parallel array tasks of one experiment share these settings; each run's own
    ``config.json`` is authoritative, and the run directories say which seeds/splits exist.
    """
    path = study.runs(experiment).experiment_json
    record = {"experiment": experiment, "study": study.config.name, **settings}
    try:
        if json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(record, default=str)):
            return path
    except (OSError, ValueError):
        pass
    write_json(path, record)
    return path


# -- checkpoints --------------------------------------------------------------------------------
def save_torch(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: Path) -> dict:
    """A checkpoint (weights only); a truncated or damaged file raises ``EnvironmentFault`` with the fix."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
        from avalanche_hpc.envfail import corrupt_file

        raise corrupt_file(path, "checkpoint", e, f"delete {path.name} (the run then restarts from its first epoch) "
                                                  f"or re-run with --force") from e


def _settings_record(study: Study, experiment: str, split: str, seed: int, split_seed: int,
                     weights: dict, settings: TrainSettings, digest: str) -> dict:
    return {
        "experiment": experiment, "split": split, "seed": seed, "split_seed": split_seed,
        "weights": weights, "settings": asdict(settings),
        "model": {"arch": "vgg16", "frozen": "features", "trained": "classifier (3 FC, folded fc1)",
                  "hidden": HIDDEN, "dropout": DROPOUT, "n_classes": 2, "input_mapping": MAPPING_ID,
                  "loss": "cross-entropy", "optimizer": "adam", "early_stopping": "validation loss",
                  "feature_standardisation": weights["kind"] == "none"},
        "data_sha256": digest, "store": str(study.store_path),
    }


def _same_settings(path: Path, record: dict) -> bool:
    import json

    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return all(old.get(k) == json.loads(json.dumps(v, default=str)) for k, v in record.items())


def _epoch_masks(seed: int, epoch: int, batch: int, n: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two dropout keep-masks (n, hidden) of a global batch, from numpy's generator keyed by
    (seed, epoch, batch). With p = 0.5 each unit is one random bit (exact Bernoulli(1/2)): ~0.3 ms
    per batch of 64, where ``torch.bernoulli`` took ~35 ms, as long as the head's step itself."""
    rng = np.random.default_rng([seed, epoch, batch, 11])
    size = 2 * n * hidden
    keep: np.ndarray
    if DROPOUT == 0.5:
        keep = np.unpackbits(np.frombuffer(rng.bytes((size + 7) // 8), dtype=np.uint8), count=size)
    else:
        keep = rng.random(size, dtype=np.float32) < 1.0 - DROPOUT
    m = torch.from_numpy(keep.reshape(2, n, hidden).astype(np.float32))
    return m[0], m[1]


def _evaluate(head: Head, feats: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, np.ndarray]:
    head.eval()
    with torch.no_grad():
        logits = head(feats)
        loss = float(F.cross_entropy(logits, labels))
        prob = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
    acc = float(((prob >= 0.5).astype(int) == labels.cpu().numpy()).mean()) if len(labels) else float("nan")
    return loss, acc, prob


@dataclass(frozen=True)
class RunControl:
    """How one call runs, not what it computes (nothing here is recorded in ``config.json``).

    ``force`` deletes an existing run first. ``stop_after_epochs`` returns after that many epochs
    of *this call* (leaving a checkpoint), used by the resume test and by job wrappers that
    checkpoint before a time limit. ``on_epoch_end(epoch)`` is called after each epoch's
    checkpoint is written. ``device``: "auto" (the current CUDA device when there is one - a DDP
    launcher sets it per local rank with ``torch.cuda.set_device`` - else the CPU), "cpu", or
    "cuda[:N]". ``checkpoint_interval_s``: 0 writes ``checkpoint.pt`` after every epoch; > 0 (default
    60) at most that often (and always after the last epoch of the call) - the checkpoint is ~230 MB,
    and a resumed run replays the missing epochs deterministically, so only time is lost.
    """

    force: bool = False
    progress: bool = True
    stop_after_epochs: int | None = None
    on_epoch_end: Callable[[int], None] | None = None
    device: str = "auto"
    checkpoint_interval_s: float = 60.0


@dataclass(frozen=True)
class RunRequest:
    """Which run: experiment, split, seed, split seed and backbone weights, with its ``TrainSettings``."""

    experiment: str
    split: str = "random"
    seed: int = 0
    split_seed: int = 0
    weights: str = "auto"
    weights_sha256: str | None = None
    settings: TrainSettings = TrainSettings()


def train_run(
    root: Path,
    experiment: str,
    split: str = "random",
    seed: int = 0,
    *,
    weights: str = "auto",
    weights_sha256: str | None = None,
    split_seed: int = 0,
    max_epochs: int = 250,
    feature_bank: bool = True,
    patience: int = 30,
    batch_size: int = 64,
    lr: float = 1e-5,
    n_views: int = DEFAULT_VIEWS,
    crop: int = 50,
    dist: DistContext | None = None,
    force: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    device: str = "auto",
    checkpoint_interval_s: float = 60.0,
    precision: str = "auto",
) -> Path:
    """Train (or resume, or skip when complete) one CNN run; returns its run directory.

    The keywords are those of ``RunRequest``/``TrainSettings`` (what the run computes) and of
    ``RunControl`` (how this call runs); ``run_training`` takes the grouped objects. ``precision``:
    the backbone's (``precision.py``; "auto" measures once per machine and experiment).
    """
    settings = TrainSettings(max_epochs=max_epochs, patience=patience, batch_size=batch_size, lr=lr,
                             n_views=n_views, crop=crop, feature_bank=feature_bank, precision=precision)
    request = RunRequest(experiment, split, seed, split_seed, weights, weights_sha256, settings)
    control = RunControl(force, progress, stop_after_epochs, on_epoch_end, device, checkpoint_interval_s)
    return run_training(Path(root), request, control, dist)


def run_training(root: Path, request: RunRequest, control: RunControl = RunControl(),
                 dist: DistContext | None = None) -> Path:
    """Set up (or skip a complete run), train epoch by epoch, write the results; returns the run directory."""
    study = Study.load(root)
    files = study.runs(request.experiment).cnn(request.split, request.seed)
    run = prepare_run(study, request, control, dist)
    if run is None:
        return files.dir
    finished = train_epochs(run, control)
    _barrier(dist)
    if finished and run.main:
        write_results(study, files, run.head, run.source, run.data, run.state["best_epoch"])
        write_experiment_record(study, request.experiment, run.experiment_record)
    if finished:
        _barrier(dist)
    return files.dir


# -- set-up -----------------------------------------------------------------------------------
@dataclass
class PreparedRun:
    """Everything the epoch loop needs, made by ``prepare_run``."""

    request: RunRequest
    files: RunFiles
    dist: DistContext | None
    device: torch.device
    data: RunData
    source: ViewSource
    head: Head
    optimizer: torch.optim.Optimizer
    labels: torch.Tensor
    train_idx: np.ndarray
    val_feats: torch.Tensor
    val_labels: torch.Tensor
    state: dict[str, Any]
    experiment_record: dict[str, Any] = field(default_factory=dict)  # written after a successful run

    @property
    def main(self) -> bool:
        return _world(self.dist)[0] == 0


def _check_request(study: Study, request: RunRequest, dist: DistContext | None) -> ResolvedWeights:
    """Every setting checked before any work; returns the resolved backbone weights."""
    validate_split(request.split, study.config.massifs)
    request.settings.validate()
    world = _world(dist)[1]
    if request.settings.batch_size < world:
        raise ConfigError(f"batch_size {request.settings.batch_size} is smaller than the {world} ranks")
    return resolve_weights(request.weights, request.weights_sha256)


def _run_record(study: Study, request: RunRequest, resolved: ResolvedWeights, data: RunData) -> dict:
    return _settings_record(study, request.experiment, request.split, request.seed, request.split_seed,
                            resolved.as_record(), request.settings, data.digest)


def run_is_complete(root: Path, request: RunRequest) -> bool:
    """Whether the run has finished (``metrics.json``) with these settings and this data (the digest
    ``train_run`` itself compares before skipping a run)."""
    study = Study.load(root)
    files = study.runs(request.experiment).cnn(request.split, request.seed)
    split_csv = study.runs(request.experiment).split_csv(request.split)
    if not (files.metrics.is_file() and files.config.is_file() and split_csv.is_file()):
        return False
    resolved = _check_request(study, request, None)
    settings = resolve_settings_precision(request.settings, study.runs(request.experiment).root, resolved,
                                          select_device("auto"), measure=False)
    if settings.precision == "auto":  # no backbone precision recorded: no run of this experiment finished
        return False
    request = replace(request, settings=settings)
    return _same_settings(files.config, _run_record(study, request, resolved, load_run_data(study, split_csv)))


def prepare_run(study: Study, request: RunRequest, control: RunControl,
                dist: DistContext | None) -> PreparedRun | None:
    """Validation, the split, the skip of a complete run, the removal of a run with other settings,
    ``config.json``, the feature bank, the head and optimizer (resumed from ``checkpoint.pt``).

    None when the run is complete with the same settings (and ``force`` is off).
    """
    rank, world = _world(dist)
    main = rank == 0
    s = request.settings
    resolved = _check_request(study, request, dist)
    device = select_device(control.device)
    runs = study.runs(request.experiment)
    files = runs.cnn(request.split, request.seed)
    out = files.dir

    if main:
        clean_study_tmp(runs.root)  # temporary files of killed writers (cleanup.py)
        make_split(study.root, request.experiment, request.split, request.split_seed)
        s = resolve_settings_precision(s, runs.root, resolved, device)
    _barrier(dist)
    if not main:  # reads rank 0's choice
        s = resolve_settings_precision(s, runs.root, resolved, device)
    request = replace(request, settings=s)
    data = load_run_data(study, runs.split_csv(request.split))
    record = _run_record(study, request, resolved, data)

    complete = files.metrics.is_file() and _same_settings(files.config, record)
    if complete and not control.force:
        log.info("run %s is complete: skipped (use --force to redo it)", out)
        return None
    if main and out.exists() and (control.force or not _same_settings(files.config, record)):
        if not control.force and files.checkpoint.exists():
            raise ConfigError(f"{out} holds a run with other settings -> use --force to replace it, or another "
                              f"--experiment name")
        shutil.rmtree(out)
    _barrier(dist)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(files.config, {**record, "world_size": world, "device": str(device),
                                  "code_version": __version__,
                                  "torch_version": torch.__version__,
                                  "written_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                  "weights_warning": resolved.warning})
    experiment_record = {
        "split_seed": request.split_seed, "weights": request.weights, "weights_resolved": resolved.kind,
        "weights_sha256": resolved.sha256, **asdict(s), "data_sha256": data.digest}

    # backbone features: the bank (rank 0 builds, the others read) or the backbone itself
    vgg: torch.nn.Module | None = None

    def backbone_factory() -> Backbone:
        nonlocal vgg
        vgg = vgg if vgg is not None else build_vgg16(resolved)
        return Backbone(vgg, s.precision).to(device)

    if s.feature_bank:
        rows = data.table["store_row"].to_numpy(dtype=np.int64)
        bank = None
        if main:
            bank = load_or_build_bank(runs.features_dir, backbone_factory, rows, data.patches, data.digest,
                                      resolved.ident, s.n_views, s.crop, progress=control.progress,
                                      precision=s.precision)
        _barrier(dist)
        if not main:
            bank = load_or_build_bank(runs.features_dir, backbone_factory, rows, data.patches, data.digest,
                                      resolved.ident, s.n_views, s.crop, progress=False, precision=s.precision)
        source = ViewSource(data, s, bank, None, device)
    else:
        source = ViewSource(data, s, None, backbone_factory(), device)

    if resolved.kind != "none":  # the FC layers start from the weights file's
        pretrained = vgg if vgg is not None else build_vgg16(resolved)
        head = init_head(pretrained, request.seed, pretrained_fc=True).to(device)
        del pretrained
    else:  # random init draws every FC layer from the seed and reads no backbone layer
        head = init_head(torch.nn.Module(), request.seed, pretrained_fc=False).to(device)
    del vgg
    optimizer = torch.optim.Adam(head.param_groups(s.lr), fused=True)  # one pass over the 19 M weights (sweep.py)

    sets = data.table["set"].to_numpy()
    labels = torch.tensor(data.table["label"].to_numpy(dtype=np.int64), device=device)
    train_idx = np.flatnonzero(sets == "train")
    if resolved.kind == "none":  # random backbone: standardise its tiny features (model.Head.set_standardisation)
        head.set_standardisation(source.standardisation_sample(train_idx))
    val_idx = np.flatnonzero(sets == "val")
    val_feats, val_labels = source.centre(val_idx), labels[val_idx]

    state: dict[str, Any] = {"epoch": 0, "best_loss": float("inf"), "best_epoch": -1, "bad_epochs": 0,
                             "stopped": False, "history": []}
    if files.checkpoint.is_file():
        ck = load_torch(files.checkpoint)
        head.load_state_dict(ck["head"])
        optimizer.load_state_dict(ck["optimizer"])
        torch.random.set_rng_state(ck["torch_rng"])
        state = ck["state"]
        log.info("resuming %s at epoch %d", out, state["epoch"])
    return PreparedRun(request, files, dist, device, data, source, head, optimizer, labels, train_idx, val_feats,
                       val_labels, state, experiment_record)


# -- the epoch loop ---------------------------------------------------------------------------
def _train_one_epoch(run: PreparedRun, epoch: int, bar: Any, batch_task: Any) -> float:
    """One pass over the training set (this rank's share of every global batch); the mean train loss.

    Each batch is one ``step.head_step`` on the head viewed as a stack of one (the sweep's step:
    same kernels, same padding to a constant batch, so a run trained here and in a sweep match
    bit for bit), then the fused Adam step."""
    seed, batch_size = run.request.seed, run.request.settings.batch_size
    rank, world = _world(run.dist)
    head, device = run.head, run.device
    rng = np.random.default_rng([seed, epoch, 7])
    order = run.train_idx[rng.permutation(len(run.train_idx))]
    views = run.source.draw_views(rng, len(order))
    head.train()
    params = list(head.parameters())
    for q in params:
        if q.grad is None:
            q.grad = torch.zeros_like(q)
    stack_p = [q.detach().unsqueeze(0) for q in params]  # views: the step writes into the head's tensors
    stack_g = [cast(torch.Tensor, q.grad).unsqueeze(0) for q in params]
    hidden, n_in = head.fc2.in_features, head.fc1.in_features
    m = -(-batch_size // world)  # rows per rank and step, constant (padding rows have weight 0)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # summed loss, count (float64 as the sweep's)
    n_batches = (len(order) + batch_size - 1) // batch_size
    if bar:
        bar.reset(batch_task, total=n_batches, description=f"  epoch {epoch} batches")
    for b in range(n_batches):
        gidx = order[b * batch_size:(b + 1) * batch_size]
        masks = _epoch_masks(seed, epoch, b, len(gidx), hidden)
        mine = slice(rank, None, world)
        rows = gidx[mine]
        n = len(rows)
        x, y, w, mk1, mk2 = empty_batch(1, m, n_in, hidden, device)
        x[0, :n] = run.source.train_features(rows, views[b * batch_size:(b + 1) * batch_size][mine])
        y[0, :n] = run.labels[torch.from_numpy(rows).to(device)]
        w[0, :n] = 1.0 / len(gidx)
        mk1[0, :n], mk2[0, :n] = masks[0][mine].to(device), masks[1][mine].to(device)
        loss = head_step(stack_p, stack_g, head.shift[None], head.scale[:1], x, y, w, (mk1, mk2))
        _all_reduce_([q.grad for q in params if q.grad is not None], run.dist)
        run.optimizer.step()
        loss_sum += torch.stack([loss[0].double(), torch.tensor(float(n), dtype=torch.float64, device=device)])
        if bar:
            bar.advance(batch_task)
    _all_reduce_([loss_sum], run.dist)
    return float(loss_sum[0] / loss_sum[1].clamp(min=1))


def train_epochs(run: PreparedRun, control: RunControl) -> bool:
    """Epochs until early stopping or ``max_epochs`` (checkpoint, ``best.pt`` and ``history.csv`` after
    each); False when the call left early (``stop_after_epochs``), True when training has finished."""
    s, state, files = run.request.settings, run.state, run.files
    split, seed = run.request.split, run.request.seed
    main = run.main
    done_here = 0
    last_ckpt = time.monotonic()
    with _progress(control.progress and main) as bar:
        ep_task = bar.add_task(f"train {split} seed{seed}", total=s.max_epochs, completed=state["epoch"]) if bar else None
        batch_task = bar.add_task("  batches", total=1) if bar else None
        while not state["stopped"] and state["epoch"] < s.max_epochs:
            epoch = state["epoch"]
            train_loss = _train_one_epoch(run, epoch, bar, batch_task)
            val_loss, val_acc, _ = _evaluate(run.head, run.val_feats, run.val_labels)
            improved = val_loss < state["best_loss"]
            if improved:
                state.update(best_loss=val_loss, best_epoch=epoch, bad_epochs=0)
                if main:
                    save_torch({"head": run.head.state_dict(), "epoch": epoch, "val_loss": val_loss}, files.best)
            else:
                state["bad_epochs"] += 1
            state["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                     "val_accuracy": val_acc, "best": improved})
            state["epoch"] = epoch + 1
            state["stopped"] = state["bad_epochs"] >= s.patience
            done_here += 1
            leaving = control.stop_after_epochs is not None and done_here >= control.stop_after_epochs
            last_epoch = state["stopped"] or state["epoch"] >= s.max_epochs or leaving
            if main and (last_epoch or time.monotonic() - last_ckpt >= control.checkpoint_interval_s):
                save_torch({"head": run.head.state_dict(), "optimizer": run.optimizer.state_dict(),
                            "torch_rng": torch.random.get_rng_state(), "state": state}, files.checkpoint)
                last_ckpt = time.monotonic()
            if main:
                write_text(files.history, pd.DataFrame(state["history"]).to_csv(index=False))
            if bar:
                bar.update(ep_task, completed=epoch + 1,
                           description=f"train {split} seed{seed} val_loss {val_loss:.3f} acc {val_acc:.2f}")
            if control.on_epoch_end is not None:
                control.on_epoch_end(epoch)
            if leaving and not state["stopped"]:
                return False
    return True


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> Literal[False]:
        return False


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=False)


# -- results -----------------------------------------------------------------------------------
def write_results(study: Study, files: RunFiles, head: Head, source: ViewSource, data: RunData,
                  best_epoch: int) -> None:
    """The best epoch's predictions of every split row, then ``metrics.json`` (last: the run is complete)."""
    best = load_torch(files.best)
    head.load_state_dict(best["head"])
    all_idx = np.arange(len(data.table))
    labels = torch.tensor(data.table["label"].to_numpy(dtype=np.int64), device=source.device)
    _, _, prob = _evaluate(head, source.centre(all_idx), labels)
    pred = predictions_table(data.table, prob, (prob >= 0.5).astype(int))
    write_text(files.predictions, pred.to_csv(index=False))
    focus = focus_massif_of(study.config.focus_massif)
    metrics = metrics_report(pred, focus, best_epoch=int(best_epoch))
    write_json(files.metrics, metrics)
    log.info("run %s: best epoch %d, test accuracy %s, F1 %s", files.dir, best_epoch,
             metrics["all"]["accuracy"], metrics["all"]["f1"])


def predictions_table(table: pd.DataFrame, prob: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """The predictions.csv schema (docs/architecture.md, Runs layout)."""
    cols = ["store_row", "season", "orbit", "date", "path_id", "massif", "set", "label"]
    out = table[cols].copy()
    out["prob"] = np.asarray(prob, dtype=float)
    out["pred"] = np.asarray(pred, dtype=int)
    for c in ANALYSIS_COLUMNS:
        out[c] = table[c].to_numpy()
    return out
