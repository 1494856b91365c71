"""The stage graph of a job and the local executor.

Stages and their tasks (one SLURM array per stage; one task per row)::

    synth       1 task            (on the submitting host: later stages list their tasks from the study)
    check       1 task            (on the submitting host: nothing is submitted for an invalid study)
    preprocess  (season, orbit, date) per acquisition with a previous one   <- nothing
    merge       1 task                                                      <- preprocess (afterok)
    train       (split, seed) per split x seed, DDP ranks inside a task      <- merge
    baseline    (split) per split                                           <- merge
    report      1 task                                                      <- train, baseline

A task is complete when its outputs say so (``is_complete``): a current shard, a store newer than
every shard, a run's ``metrics.json``, a report newer than every metrics file. Both executors run
only incomplete tasks, and every stage function skips complete work itself, so re-running a job
after any crash finishes the work.

``run_job(job_toml, executor=None, profile=None)`` runs a job with the executor of the spec (or the
one given): ``local`` calls the stage functions in this process, in order, with progress;
``slurm`` submits the arrays through ``launcher.submit_job``.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avalanche_hpc.errors import ConfigError
from avalanche_hpc.hpc.jobspec import JobSpec, load_job
from avalanche_hpc.study import Study, fmt_yyyymmdd, parse_yyyymmdd

log = logging.getLogger(__name__)

# Which stages must have succeeded before a stage may start (SLURM afterok).
DEPENDS: dict[str, tuple[str, ...]] = {
    "synth": (),
    "check": ("synth",),
    "preprocess": ("check",),
    "merge": ("preprocess",),
    "train": ("merge",),
    "baseline": ("merge",),
    "report": ("train", "baseline"),
}
# Stages run on the submitting host whatever the executor (the task lists of the others need the study).
HOST_STAGES = ("synth", "check")


@dataclass(frozen=True)
class Task:
    """One task of a stage: ``key`` names it in tables and logs, ``args`` are its stage arguments."""

    stage: str
    key: str
    args: tuple = ()


# -- task lists ---------------------------------------------------------------------------------
def list_stage_tasks(job: JobSpec, stage: str) -> list[Task] | None:
    """The tasks of ``stage`` for this job; None when they depend on a study that does not exist yet."""
    root = job.root
    has_study = (root / "study.toml").is_file()
    if stage in ("synth", "check", "merge", "report"):
        return [Task(stage, stage)]
    if stage == "preprocess":
        if not has_study:
            return None
        from avalanche_hpc.preprocess.tasks import list_tasks

        return [Task(stage, a.key, (a.season, a.orbit, fmt_yyyymmdd(a.date))) for a in list_tasks(root)]
    if stage == "train":
        return [Task(stage, f"{s}/seed{n}", (s, n)) for s in job.split_names() for n in job.train.seeds]
    if stage == "baseline":
        return [Task(stage, s if v == "paper" else f"{s}/{v}", (s, v)) for s in job.split_names()
                for v in job.baseline.variants]
    raise ConfigError(f"unknown stage {stage!r}")


# -- completeness from the outputs --------------------------------------------------------------
def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return -1.0


def is_complete(job: JobSpec, task: Task) -> bool:
    """Whether the outputs of ``task`` exist and are current (read from the files, not from SLURM)."""
    root = job.root
    if task.stage == "synth":
        return (root / "study.toml").is_file()
    if task.stage == "check":
        return False  # cheap, always re-run before anything else
    if task.stage == "preprocess":  # per acquisition: task_is_complete reuses the study it loaded
        from avalanche_hpc.preprocess.tasks import task_is_complete

        season, orbit, date = task.args
        return task_is_complete(root, season, orbit, parse_yyyymmdd(date))
    study = Study.load(root)
    if task.stage == "merge":
        store = study.store_path
        shards = list((study.work_dir / "shards").rglob("*.h5"))
        return store.is_file() and all(_mtime(s) <= _mtime(store) for s in shards)
    if task.stage == "train":
        from avalanche_hpc.learn.train import run_dir

        split, seed = task.args
        return (run_dir(study, job.experiment, split, seed) / "metrics.json").is_file()
    if task.stage == "baseline":
        from avalanche_hpc.learn.baseline import baseline_dir_name

        split, variant = task.args
        return (study.runs_dir(job.experiment) / split / baseline_dir_name(variant) / "metrics.json").is_file()
    if task.stage == "report":
        index = study.reports_dir(job.experiment) / "index.html"
        metrics = list(study.runs_dir(job.experiment).rglob("metrics.json"))
        return index.is_file() and all(_mtime(m) <= _mtime(index) for m in metrics)
    raise ConfigError(f"unknown stage {task.stage!r}")


# -- running one task (in this process, or in a SLURM array task) ------------------------------
def run_task(job: JobSpec, task: Task, progress: bool = False) -> str:
    """Run one task in this process; returns a one-line summary. Stage functions skip complete work."""
    root = job.root
    if task.stage == "synth":
        from avalanche_hpc.synth import generate_study

        if (root / "study.toml").is_file():
            return f"study {root} exists"
        return str(generate_study(root, preset=job.study.preset or "demo", seed=job.study.seed))
    if task.stage == "check":
        from avalanche_hpc.inputs.checks import require_valid_study

        require_valid_study(root)
        return f"study {root} is valid"
    if task.stage == "preprocess":
        from avalanche_hpc.preprocess.tasks import preprocess_task

        season, orbit, date = task.args
        out = preprocess_task(root, season, orbit, parse_yyyymmdd(date), force=job.preprocess.force)
        return str(out)
    if task.stage == "merge":
        from avalanche_hpc.store.merge import merge_store

        return str(merge_store(root, force=job.merge.force, layout=job.merge.layout, progress=progress))
    if task.stage == "train":
        from avalanche_hpc.learn.train import train_run

        split, seed = task.args
        return str(train_run(root, job.experiment, split, seed, progress=progress, **job.train.run_kwargs()))
    if task.stage == "baseline":
        from avalanche_hpc.learn.baseline import baseline_run

        split, variant = task.args
        return str(baseline_run(root, job.experiment, split, split_seed=job.train.split_seed,
                                crop=job.baseline.crop, force=job.baseline.force, variant=variant))
    if task.stage == "report":
        from avalanche_hpc.report import build_report

        return str(build_report(root, job.experiment))
    raise ConfigError(f"unknown stage {task.stage!r}")


def configure_task_logging() -> None:
    """In a SLURM task (a fresh interpreter): INFO log lines to the task's stderr log."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def slurm_task(job: JobSpec, task: Task) -> str:
    """Entry point of one array task (pickled by submitit)."""
    configure_task_logging()
    t0 = time.perf_counter()
    out = run_task(job, task)
    log.info("%s %s done in %.1f s: %s", task.stage, task.key, time.perf_counter() - t0, out)
    return out


# -- the local executor -------------------------------------------------------------------------
def run_local(job: JobSpec, progress: bool = True) -> dict[str, list[str]]:
    """Every stage of the job in this process, in order; only incomplete tasks run. Returns what ran."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    ran: dict[str, list[str]] = {}
    with Progress(TextColumn("[bold]{task.fields[stage]:<10}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"), disable=not progress) as bar:
        for stage in job.stages:
            tasks = list_stage_tasks(job, stage) or []
            tid = bar.add_task("", total=len(tasks), stage=stage)
            ran[stage] = []
            for task in tasks:
                bar.update(tid, description=task.key)
                if stage == "check" or not is_complete(job, task):
                    run_task(job, task)
                    ran[stage].append(task.key)
                bar.advance(tid)
            bar.update(tid, description=f"{len(ran[stage])} run, {len(tasks) - len(ran[stage])} already complete")
    return ran


def run_job(job_toml: Path | str | JobSpec, executor: str | None = None, profile: Path | str | None = None,
            progress: bool = True, wait: bool = False) -> Any:
    """Run a job spec. ``executor``/``profile`` override the spec's.

    local: returns ``{stage: [task keys run]}``; slurm: returns the ``launcher.Submission``
    (``wait=True`` waits for the last array and raises ``StageError`` when a task failed).
    """
    job = job_toml if isinstance(job_toml, JobSpec) else load_job(job_toml)
    executor = executor or job.executor
    if executor not in ("local", "slurm"):
        raise ConfigError(f"executor {executor!r}: use 'local' or 'slurm'")
    if executor == "local":
        t0 = time.perf_counter()
        ran = run_local(job, progress=progress)
        log.info("job %s (local) done in %.1f s at %s", job.name, time.perf_counter() - t0,
                 dt.datetime.now().isoformat(timespec="seconds"))
        return ran
    from avalanche_hpc.hpc.launcher import submit_job

    prof = profile if profile is not None else job.profile
    if prof is None:
        raise ConfigError(f"the slurm executor needs a cluster profile: add profile = \"...\" to "
                          f"{job.source or 'the job spec'} or pass --profile slurm/profiles/local.toml")
    sub = submit_job(job, prof)
    if wait:
        sub.wait()
    return sub
