"""Batched sweeps: every run (split x seed) of an experiment that shares a feature bank, in one process.

``train_sweep(root, experiment, splits, seeds, ...)`` trains the runs of a sweep as one batched
model instead of one loop per run. The splits of an experiment partition the same pool
(``splits.py``), so all of them read the same feature bank, and every run's head has the same
shape: the weights of ``slots`` runs are stacked (``(S, 4096, 4096)`` etc.) and one training step
of all of them is a handful of batched matrix products (``torch.baddbmm`` / ``torch.bmm``) with a
hand-written backward (no autograd graph, no gradient for the features, gradients written in
place), followed by **one fused Adam update** (``torch._fused_adam_``, the kernel of
``torch.optim.Adam(fused=True)``) over all stacked parameters, with each run's own step count.

Each run keeps its own schedule, exactly as ``train.train_run`` draws it: the epoch's sample
order and bank views from ``default_rng([seed, epoch, 7])``, the dropout masks from
``train._epoch_masks(seed, epoch, batch)``, the head's initial weights from ``seed``, the
standardisation from its own training set. Runs are not synchronised on epochs: at every step
each active run takes the next batch of its own epoch (a run with fewer batches per epoch simply
starts its next epoch sooner); a short last batch is padded with zero-weight rows. At the end of
a run's epoch it is evaluated on its validation set; **early stopping is per run**: a run that
stops (or reaches ``max_epochs``) writes its results and leaves the batch, the last active slot is
moved into its place, and the next pending run (if any) takes the free slot, so finished runs
stop costing and at most ``slots`` heads are held in memory (~380 MB each with the optimizer
state and the best weights).

Outputs: each run writes today's layout with today's writers (``config.json`` first,
``history.csv``, ``checkpoint.pt`` and ``best.pt`` at checkpoints, ``predictions.csv`` and
``metrics.json`` last), with the same settings record as ``train_run``: a run trained in a sweep
is recognised as complete by ``train_run`` and vice versa, and either can resume the other's
checkpoint (the optimizer state is written in ``torch.optim.Adam``'s format).

Equivalence: ``train_run`` steps its head with this module's own step (``step.head_step`` on a
stack of one, the same padding, the same fused Adam), so a run trained alone and the same run as
a one-slot sweep are **bit-identical** on any number of threads (``tests/test_56_sweep.py``). In a
sweep of several slots each run's products are slices of one ``bmm``: on one thread they are
computed exactly as alone (bit-identical, tested), but on several threads MKL hands whole
products of the batch to each thread where it splits a single product across them, so the float
summation order - the last bits - differs. Early stopping over tens of epochs amplifies those
bits: on the demo study (2 threads, seed 0, 3 slots) the run alone and in the sweep stopped at the
same epochs (best 28 of 59) with validation losses within 0.0075 and test confusions 2-3 patches
apart (docs/benchmarks.md). Tested tolerance: same accuracies, best epoch and predictions, losses
within 1e-4, on short runs. ``slots=1`` (or one thread) when bit-identity matters;
DDP stays in ``train_run`` (one run over several ranks); a sweep is one process (the
SLURM ``train`` stage with ``train.sweep = true`` runs one task per bank).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from avalanche_hpc import __version__
from avalanche_hpc.atomic import write_json, write_text
from avalanche_hpc.errors import ConfigError
from avalanche_hpc.learn import train as T
from avalanche_hpc.learn.features import DEFAULT_VIEWS, load_or_build_bank
from avalanche_hpc.learn.model import FOLD_FACTOR, HIDDEN, Backbone, Head, build_vgg16, init_head
from avalanche_hpc.learn.splits import make_split, read_split, validate_split
from avalanche_hpc.learn.step import empty_batch, head_step
from avalanche_hpc.learn.weights import resolve_weights
from avalanche_hpc.study import Study

log = logging.getLogger(__name__)

PARAM_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")
BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as train_run uses
DEFAULT_SLOTS = 8
SWEEP_CHECKPOINT_INTERVAL_S = 600.0


@dataclass
class _Run:
    """One (split, seed) of the sweep and its training state."""

    split: str
    seed: int
    out: Path
    source: T.ViewSource
    data: T.RunData
    train_idx: np.ndarray
    val_feats: torch.Tensor
    val_labels: torch.Tensor
    labels: torch.Tensor
    state: dict = field(default_factory=lambda: {"epoch": 0, "best_loss": float("inf"), "best_epoch": -1,
                                                 "bad_epochs": 0, "stopped": False, "history": []})
    batch_size: int = 64
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # set by start_epoch
    views: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    batch: int = 0
    loss_sum: float = 0.0
    count: int = 0
    epochs_here: int = 0  # epochs trained by this call
    checkpoint_due: bool = False

    @property
    def n_train(self) -> int:
        return len(self.train_idx)

    @property
    def n_batches(self) -> int:
        return -(-self.n_train // self.batch_size)

    def start_epoch(self) -> None:
        rng = np.random.default_rng([self.seed, self.state["epoch"], 7])
        self.order = self.train_idx[rng.permutation(len(self.train_idx))]
        self.views = self.source.draw_views(rng, len(self.order))
        self.batch, self.loss_sum, self.count = 0, 0.0, 0


class StackedHeads:
    """``slots`` folded VGG16 heads stacked along a leading run axis, with Adam state and best weights.

    Weights keep ``nn.Linear``'s layout (out, in) so that a slot is a ``Head`` state dict as is.
    """

    def __init__(self, slots: int, device: torch.device, hidden: int, n_in: int, n_out: int):
        shapes = [(hidden, n_in), (hidden,), (hidden, hidden), (hidden,), (n_out, hidden), (n_out,)]

        def z(shape):
            return torch.zeros((slots, *shape), device=device)

        self.p = [z(s) for s in shapes]
        self.g = [z(s) for s in shapes]
        self.m = [z(s) for s in shapes]
        self.v = [z(s) for s in shapes]
        self.best = [z(s) for s in shapes]
        self.steps = torch.zeros((slots, len(shapes)), device=device)  # Adam step per slot and parameter
        self.shift = z((n_in,))
        self.scale = torch.ones(slots, device=device)

    # -- slots <-> Head / checkpoint --------------------------------------------------------
    def load(self, s: int, head: Head, optim_state: dict | None = None) -> None:
        sd = head.state_dict()
        with torch.no_grad():
            for k, name in enumerate(PARAM_NAMES):
                self.p[k][s].copy_(sd[name])
                self.best[k][s].copy_(sd[name])
                if optim_state is not None and k in optim_state["state"]:
                    st = optim_state["state"][k]
                    self.m[k][s].copy_(st["exp_avg"])
                    self.v[k][s].copy_(st["exp_avg_sq"])
                    self.steps[s, k] = float(st["step"])
                else:
                    self.m[k][s].zero_()
                    self.v[k][s].zero_()
                    self.steps[s, k] = 0.0
            self.shift[s].copy_(sd["shift"])
            self.scale[s] = sd["scale"][0]

    def head_state(self, s: int, best: bool = False) -> dict:
        src = self.best if best else self.p
        sd = {name: src[k][s].detach().clone().cpu() for k, name in enumerate(PARAM_NAMES)}
        sd["shift"] = self.shift[s].clone().cpu()
        sd["scale"] = self.scale[s].expand(self.shift.shape[1]).clone().cpu()
        return sd

    def head(self, s: int, best: bool = False) -> Head:
        head = Head(hidden=self.p[0].shape[1], n_classes=self.p[4].shape[1])
        head.load_state_dict(self.head_state(s, best))
        return head.to(self.p[0].device)

    def optimizer_state(self, s: int, lr: float) -> dict:
        """``torch.optim.Adam(head.param_groups(lr), fused=True).state_dict()`` of slot ``s``."""
        state = {k: {"step": self.steps[s, k].clone().cpu(), "exp_avg": self.m[k][s].clone().cpu(),
                     "exp_avg_sq": self.v[k][s].clone().cpu()} for k in range(len(PARAM_NAMES))}
        common = {"betas": BETAS, "eps": EPS, "weight_decay": 0, "amsgrad": False, "maximize": False,
                  "foreach": None, "capturable": False, "differentiable": False, "fused": True,
                  "decoupled_weight_decay": False}
        return {"state": state, "param_groups": [{"lr": lr * FOLD_FACTOR, **common, "params": [0, 1]},
                                                 {"lr": lr, **common, "params": [2, 3, 4, 5]}]}

    def keep_best(self, s: int) -> None:
        with torch.no_grad():
            for k in range(len(PARAM_NAMES)):
                self.best[k][s].copy_(self.p[k][s])

    def move(self, src: int, dst: int) -> None:
        """Copy slot ``src`` into ``dst`` (compaction after a run leaves the batch)."""
        with torch.no_grad():
            for group in (self.p, self.m, self.v, self.best):
                for t in group:
                    t[dst].copy_(t[src])
            self.steps[dst].copy_(self.steps[src])
            self.shift[dst].copy_(self.shift[src])
            self.scale[dst] = self.scale[src]

    # -- one training step of the first ``a`` slots ------------------------------------------
    def step(self, a: int, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor],
             lr: float) -> torch.Tensor:
        """Forward, backward (``step.head_step``) and Adam for slots ``0..a-1``; returns each slot's
        summed loss (a,). ``x`` (a, M, 512), ``y``/``w`` (a, M), ``masks`` 2 x (a, M, hidden)."""
        loss = head_step([t[:a] for t in self.p], [t[:a] for t in self.g], self.shift[:a], self.scale[:a],
                         x, y, w, masks)
        self._adam(a, lr)
        return loss

    def _adam(self, a: int, lr: float) -> None:
        """One Adam step of slots ``0..a-1``: torch's fused CPU/CUDA kernel, per-slot step counts."""
        for ks, group_lr in (((0, 1), lr * FOLD_FACTOR), ((2, 3, 4, 5), lr)):
            params = [self.p[k][s] for s in range(a) for k in ks]
            grads = [self.g[k][s] for s in range(a) for k in ks]
            ms = [self.m[k][s] for s in range(a) for k in ks]
            vs = [self.v[k][s] for s in range(a) for k in ks]
            steps = [self.steps[s, k] for s in range(a) for k in ks]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, grads, ms, vs, [], steps, amsgrad=False, lr=group_lr, beta1=BETAS[0],
                               beta2=BETAS[1], weight_decay=0.0, eps=EPS, maximize=False,
                               grad_scale=None, found_inf=None)


# -- the sweep -------------------------------------------------------------------------------------
def train_sweep(
    root: Path,
    experiment: str,
    splits: list[str] | tuple[str, ...] = ("random",),
    seeds: list[int] | tuple[int, ...] = (0,),
    weights: str = "auto",
    max_epochs: int = 250,
    *,
    split_seed: int = 0,
    weights_sha256: str | None = None,
    patience: int = 30,
    batch_size: int = 64,
    lr: float = 1e-5,
    n_views: int = DEFAULT_VIEWS,
    crop: int = 50,
    force: bool = False,
    progress: bool = True,
    device: str = "auto",
    slots: int = DEFAULT_SLOTS,
    checkpoint_interval_s: float = SWEEP_CHECKPOINT_INTERVAL_S,
    stop_after_epochs: int | None = None,
    precision: str = "auto",
    part: tuple[int, int] = (0, 1),
    bank_only: bool = False,
) -> list[Path]:
    """Train every (split, seed) of ``splits x seeds`` as one batched model; returns the run directories.

    Complete runs (``metrics.json`` with the same settings) are skipped; runs with a checkpoint
    resume from it. ``slots``: runs held in the batch at once (memory: ~380 MB per slot at
    hidden 4096). ``checkpoint_interval_s``: seconds between checkpoint rounds (each active run
    writes ``checkpoint.pt``, ``best.pt`` and ``history.csv``; ~0.3 GB per run), and always when a
    run finishes; a run writes its checkpoint at its next epoch end after the interval (a checkpoint
    resumes at an epoch boundary, as ``train_run``'s). ``stop_after_epochs``: each run leaves the
    batch with a checkpoint after that many epochs of this call (as ``train_run``'s option: tests,
    job wrappers before a time limit). ``part=(i, n)``: train only every n-th run from the i-th
    (the runs of a sweep spread over n processes, e.g. the ranks of a SLURM task; returns only
    those). ``bank_only``: return once the feature bank exists (rank 0 builds it first).
    """
    root = Path(root)
    study = Study.load(root)
    if not splits or not seeds:
        raise ConfigError("a sweep needs at least one split and one seed")
    if slots < 1:
        raise ConfigError(f"slots={slots} must be >= 1")
    for s in splits:
        validate_split(s, study.config.massifs)
    settings = T.TrainSettings(max_epochs=max_epochs, patience=patience, batch_size=batch_size, lr=lr,
                               n_views=n_views, crop=crop, feature_bank=True, precision=precision)
    settings.validate()
    resolved = resolve_weights(weights, weights_sha256)
    dev = T.select_device(device)
    runs = study.runs(experiment)
    features_dir = runs.features_dir
    settings = T.resolve_settings_precision(settings, runs.root, resolved, dev)

    # data: the splits partition one pool; the patches are read once
    tables = {s: read_split(make_split(root, experiment, s, split_seed)) for s in splits}
    first = T.load_run_data(study, runs.split_csv(splits[0]))
    rows = first.table["store_row"].to_numpy(dtype=np.int64)
    datas: dict[str, T.RunData] = {}
    for s, table in tables.items():
        if not np.array_equal(table["store_row"].to_numpy(dtype=np.int64), rows):
            raise ConfigError(f"split {s!r} of experiment {experiment!r} has another pool than {splits[0]!r} "
                              f"-> the splits of one sweep must share a pool (same split seed and store)")
        table = table.copy()
        for col in T.ANALYSIS_COLUMNS:
            table[col] = first.table[col].to_numpy()
        datas[s] = T.RunData(table, first.patches, first.digest)

    # which runs to train; config.json first (as train_run)
    todo: list[tuple[str, int]] = []
    outs = []
    i_part, n_part = part
    if not 0 <= i_part < n_part:
        raise ConfigError(f"part {part}: needs 0 <= index < count")
    mine = [(s, seed) for s in splits for seed in seeds][i_part::n_part]
    for s, seed in ([] if bank_only else mine):
        out = runs.cnn(s, seed).dir
        outs.append(out)
        record = T._settings_record(study, experiment, s, seed, split_seed, resolved.as_record(), settings,
                                    first.digest)
        same = T._same_settings(out / "config.json", record)
        if (out / "metrics.json").is_file() and same and not force:
            log.info("run %s is complete: skipped", out)
            continue
        if out.exists() and (force or not same):
            if not force and (out / "checkpoint.pt").exists():
                raise ConfigError(f"{out} holds a run with other settings -> use --force to replace it, or "
                                  f"another --experiment name")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "config.json").is_file():
            write_json(out / "config.json", {**record, "world_size": 1, "device": str(dev),
                                             "trainer": "sweep", "code_version": __version__,
                                             "torch_version": torch.__version__,
                                             "written_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                             "weights_warning": resolved.warning})
        todo.append((s, seed))
    T.write_experiment_record(study, experiment, {
        "split_seed": split_seed, "weights": weights, "weights_resolved": resolved.kind,
        "weights_sha256": resolved.sha256, **asdict(settings), "data_sha256": first.digest})
    if not todo and not bank_only:
        return outs

    vgg = None

    def backbone_factory() -> Backbone:
        nonlocal vgg
        vgg = vgg if vgg is not None else build_vgg16(resolved)
        return Backbone(vgg, settings.precision).to(dev)

    bank = load_or_build_bank(features_dir, backbone_factory, rows, first.patches, first.digest, resolved.ident,
                              n_views, crop, progress=progress, precision=settings.precision)
    if bank_only:
        return outs
    if resolved.kind != "none" and vgg is None:
        vgg = build_vgg16(resolved)
    sources = {s: T.ViewSource(datas[s], settings, bank, None, dev) for s in {s for s, _ in todo}}

    def make_run(split: str, seed: int) -> tuple[_Run, Head, dict | None]:
        data, source = datas[split], sources[split]
        sets = data.table["set"].to_numpy()
        labels = torch.tensor(data.table["label"].to_numpy(dtype=np.int64), device=dev)
        train_idx, val_idx = np.flatnonzero(sets == "train"), np.flatnonzero(sets == "val")
        run = _Run(split, seed, runs.cnn(split, seed).dir, source, data, train_idx,
                   source.centre(val_idx), labels[val_idx], labels, batch_size=batch_size)
        pretrained = resolved.kind != "none"  # random init draws every FC layer from the seed, reads no layer
        head = init_head(vgg if pretrained and vgg is not None else torch.nn.Module(), seed,
                         pretrained_fc=pretrained).to(dev)
        if resolved.kind == "none":
            head.set_standardisation(source.standardisation_sample(train_idx))
        optim_state = None
        ck_path = run.out / "checkpoint.pt"
        if ck_path.is_file():
            ck = T.load_torch(ck_path)
            head.load_state_dict(ck["head"])
            optim_state = ck["optimizer"]
            run.state = ck["state"]
            log.info("resuming %s at epoch %d", run.out, run.state["epoch"])
        return run, head, optim_state

    hidden = HIDDEN
    n_slots = min(slots, len(todo))
    heads = StackedHeads(n_slots, dev, hidden, bank.feats.shape[-1], 2)
    pending = deque(todo)
    active: list[_Run] = []

    def fill() -> None:
        while pending and len(active) < n_slots:
            run, head, optim_state = make_run(*pending.popleft())
            heads.load(len(active), head, optim_state)
            if run.state["epoch"] > 0 and (run.out / "best.pt").is_file():
                best = T.load_torch(run.out / "best.pt")["head"]
                with torch.no_grad():
                    for k, name in enumerate(PARAM_NAMES):
                        heads.best[k][len(active)].copy_(best[name])
            if run.state["stopped"] or run.state["epoch"] >= max_epochs:
                finish_in_slot(run, len(active))
                continue
            run.start_epoch()
            active.append(run)

    def checkpoint(run: _Run, s: int) -> None:
        T.save_torch({"head": heads.head_state(s, best=True), "epoch": run.state["best_epoch"],
                      "val_loss": run.state["best_loss"]}, run.out / "best.pt")
        T.save_torch({"head": heads.head_state(s), "optimizer": heads.optimizer_state(s, lr),
                      "torch_rng": torch.random.get_rng_state(), "state": run.state}, run.out / "checkpoint.pt")
        write_text(run.out / "history.csv", pd.DataFrame(run.state["history"]).to_csv(index=False))

    def finish_in_slot(run: _Run, s: int) -> None:
        checkpoint(run, s)
        T.write_results(study, runs.cnn(run.split, run.seed), Head(hidden=hidden).to(dev), run.source, run.data,
                        run.state["best_epoch"])

    def end_epoch(run: _Run, s: int) -> bool:
        """Evaluate, record, early-stop; True when the run is finished."""
        head = heads.head(s)
        val_loss, val_acc, _ = T._evaluate(head, run.val_feats, run.val_labels)
        st = run.state
        improved = val_loss < st["best_loss"]
        if improved:
            st.update(best_loss=val_loss, best_epoch=st["epoch"], bad_epochs=0)
            heads.keep_best(s)
        else:
            st["bad_epochs"] += 1
        st["history"].append({"epoch": st["epoch"], "train_loss": run.loss_sum / max(run.count, 1),
                              "val_loss": val_loss, "val_accuracy": val_acc, "best": improved})
        st["epoch"] += 1
        st["stopped"] = st["bad_epochs"] >= patience
        run.epochs_here += 1
        return st["stopped"] or st["epoch"] >= max_epochs

    fill()
    last_ckpt = time.monotonic()
    n_total = len(todo)
    with T._progress(progress) as bar:
        task = bar.add_task(f"sweep {experiment}: {n_total} runs, {n_slots} at once", total=n_total) if bar else None
        while active:
            a = len(active)
            sizes = [min(batch_size, r.n_train - r.batch * batch_size) for r in active]
            m = batch_size  # constant: a run's products do not depend on the other runs' batch sizes
            x, y, w, mk1, mk2 = empty_batch(a, m, bank.feats.shape[-1], hidden, dev)
            for k, (r, n) in enumerate(zip(active, sizes, strict=True)):
                sl = slice(r.batch * batch_size, r.batch * batch_size + n)
                gidx = r.order[sl]
                x[k, :n] = r.source.train_features(gidx, r.views[sl])
                y[k, :n] = r.labels[torch.from_numpy(gidx).to(dev)]
                w[k, :n] = 1.0 / n
                m1, m2 = T._epoch_masks(r.seed, r.state["epoch"], r.batch, n, hidden)
                mk1[k, :n], mk2[k, :n] = m1, m2
            losses = heads.step(a, x, y, w, (mk1, mk2), lr).tolist()
            if time.monotonic() - last_ckpt >= checkpoint_interval_s:
                for r in active:
                    r.checkpoint_due = True
                last_ckpt = time.monotonic()
            leave = []  # (slot, finished?)
            for k, (r, n) in enumerate(zip(active, sizes, strict=True)):
                r.loss_sum += losses[k]
                r.count += n
                r.batch += 1
                if r.batch < r.n_batches:
                    continue
                if end_epoch(r, k):
                    leave.append((k, True))
                elif stop_after_epochs is not None and r.epochs_here >= stop_after_epochs:
                    checkpoint(r, k)
                    leave.append((k, False))
                else:
                    if r.checkpoint_due:
                        checkpoint(r, k)
                        r.checkpoint_due = False
                    r.start_epoch()
            for k, finished in sorted(leave, reverse=True):  # the last slot fills the hole
                if finished:
                    finish_in_slot(active[k], k)
                    if bar:
                        bar.advance(task)
                last = len(active) - 1
                if k != last:
                    heads.move(last, k)
                    active[k] = active[last]
                active.pop()
            fill()
    return outs
