"""``avalanche-hpc train`` and ``avalanche-hpc baseline``: parse options, delegate to train/baseline."""

from __future__ import annotations

from typing import Annotated

import typer

from avalanche_hpc.cli.options import ExperimentOpt, ForceOpt, StudyArg

SplitOpt = Annotated[str, typer.Option("--split", help="'random' (60/20/20 by corridor) or 'holdout-<massif-slug>'.")]
HoldoutOpt = Annotated[str | None, typer.Option(
    "--holdout", help="Massif name to hold out as the test set (same as --split holdout-<slug>).")]
SplitSeedOpt = Annotated[int, typer.Option("--split-seed", help="Seed of the experiment's splits (negative draw).")]
BatchOpt = Annotated[int, typer.Option(
    "--batch-size", help="Training batch (all ranks together). Larger batches use the CPU's matmul rate better "
                         "(docs/benchmarks.md) but change the training: choose on the validation set.")]
LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate of fc2/fc3 (fc1: x the fold factor).")]


def _split_name(study, split: str, holdout: str | None) -> str:
    from avalanche_hpc.errors import ConfigError
    from avalanche_hpc.learn.splits import holdout_split_name
    from avalanche_hpc.study import Study

    if holdout is None:
        return split
    massifs = Study.load(study).config.massifs
    if holdout not in massifs:
        raise ConfigError(f"--holdout {holdout!r} is not a massif of the study; massifs are {massifs}")
    return holdout_split_name(holdout)


def train(
    study: StudyArg,
    experiment: ExperimentOpt,
    seed: Annotated[int, typer.Option("--seed", help="Training seed (head init, batch order, views, dropout).")] = 0,
    split: SplitOpt = "random",
    holdout: HoldoutOpt = None,
    weights: Annotated[str, typer.Option(
        "--weights", help="Backbone weights: imagenet (local file, sha256-checked), none (random init), "
                          "auto (imagenet if present else none, with a warning) or a state_dict PATH.")] = "auto",
    weights_sha256: Annotated[str | None, typer.Option("--weights-sha256", help="Expected sha256 of a PATH.")] = None,
    max_epochs: Annotated[int, typer.Option("--max-epochs", help="Upper bound on epochs (early stopping).")] = 250,
    patience: Annotated[int, typer.Option("--patience", help="Epochs without a better validation loss before stopping.")] = 30,
    no_feature_bank: Annotated[bool, typer.Option(
        "--no-feature-bank", help="Run the backbone on a fresh crop every epoch instead of the cached bank.")] = False,
    views: Annotated[int, typer.Option("--views", help="Augmented views per patch in the feature bank.")] = 16,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu or cuda[:N].")] = "auto",
    checkpoint_interval: Annotated[float, typer.Option(
        "--checkpoint-interval", help="Seconds between checkpoints (0: after every epoch).")] = 60.0,
    split_seed: SplitSeedOpt = 0,
    precision: Annotated[str, typer.Option(
        "--precision", help="Backbone precision: auto (measured once per experiment), fp32, fp32-cl or bf16.")] = "auto",
    batch_size: BatchOpt = 64,
    lr: LrOpt = 1e-5,
    force: ForceOpt = False,
) -> None:
    """Train the VGG16 transfer model on one split and seed (resumes from its checkpoint; skips complete runs)."""
    from avalanche_hpc.learn.train import train_run

    name = _split_name(study, split, holdout)
    out = train_run(study, experiment, split=name, seed=seed, weights=weights, weights_sha256=weights_sha256,
                    split_seed=split_seed, max_epochs=max_epochs, patience=patience,
                    feature_bank=not no_feature_bank, n_views=views, device=device,
                    checkpoint_interval_s=checkpoint_interval, force=force, precision=precision,
                    batch_size=batch_size, lr=lr)
    typer.echo(f"{out}")


def sweep(
    study: StudyArg,
    experiment: ExperimentOpt,
    seeds: Annotated[str, typer.Option("--seeds", help="Training seeds, comma-separated (e.g. 0,1,2).")] = "0",
    splits: Annotated[str, typer.Option(
        "--splits", help="Splits, comma-separated: 'random', 'holdout-<massif-slug>', or 'all' "
                         "(random + one hold-out per massif of the study).")] = "random",
    weights: Annotated[str, typer.Option("--weights", help="Backbone weights, as for 'train'.")] = "auto",
    weights_sha256: Annotated[str | None, typer.Option("--weights-sha256", help="Expected sha256 of a PATH.")] = None,
    max_epochs: Annotated[int, typer.Option("--max-epochs", help="Upper bound on epochs (early stopping).")] = 250,
    patience: Annotated[int, typer.Option("--patience", help="Epochs without a better validation loss before stopping.")] = 30,
    views: Annotated[int, typer.Option("--views", help="Augmented views per patch in the feature bank.")] = 16,
    slots: Annotated[int, typer.Option("--slots", help="Runs trained at once (~0.4 GB each).")] = 8,
    precision: Annotated[str, typer.Option(
        "--precision", help="Backbone precision: auto (measured once per experiment), fp32, fp32-cl or bf16.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu or cuda[:N].")] = "auto",
    split_seed: SplitSeedOpt = 0,
    batch_size: BatchOpt = 64,
    lr: LrOpt = 1e-5,
    force: ForceOpt = False,
) -> None:
    """Train every split x seed sharing one feature bank as one batched model (per-run early stopping)."""
    from avalanche_hpc.errors import ConfigError
    from avalanche_hpc.learn.splits import holdout_split_name
    from avalanche_hpc.learn.sweep import train_sweep
    from avalanche_hpc.study import Study

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError as e:
        raise ConfigError(f"--seeds {seeds!r}: give integers separated by commas, e.g. 0,1,2") from e
    names = [s.strip() for s in splits.split(",") if s.strip()]
    if names == ["all"]:
        names = ["random"] + [holdout_split_name(m) for m in Study.load(study).config.massifs]
    outs = train_sweep(study, experiment, names, seed_list, weights, max_epochs, split_seed=split_seed,
                       weights_sha256=weights_sha256, patience=patience, n_views=views, slots=slots,
                       precision=precision, device=device, force=force, batch_size=batch_size, lr=lr)
    for out in outs:
        typer.echo(f"{out}")


def baseline(
    study: StudyArg,
    experiment: ExperimentOpt,
    split: SplitOpt = "random",
    holdout: HoldoutOpt = None,
    split_seed: SplitSeedOpt = 0,
    variant: Annotated[str, typer.Option(
        "--variant", help="paper: the paper's baseline (per-pixel rule VHdiff > 3 dB fixed a priori, only the "
                          "pixel-count threshold tuned on validation; writes baseline/); tuned: channel, pixel and "
                          "count thresholds all tuned on validation (writes baseline-tuned/).")] = "paper",
    force: ForceOpt = False,
) -> None:
    """Tune the change-detection thresholding baseline on the validation set and evaluate it."""
    from avalanche_hpc.learn.baseline import baseline_run

    out = baseline_run(study, experiment, split=_split_name(study, split, holdout), split_seed=split_seed, force=force,
                       variant=variant)
    typer.echo(f"{out}")


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``baseline`` to the root app."""
    app.command("train")(train)
    app.command("sweep")(sweep)
    app.command("baseline")(baseline)
