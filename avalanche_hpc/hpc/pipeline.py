"""Running a job: the local executor and ``run_job``.

The stages, their order, dependencies, task lists, completeness and how a task runs come from the
stage registry (``stages.py``); this module only walks it. A task is complete when its stage's
digest check says so, and both executors run only incomplete tasks; every stage function also
skips complete work itself, so re-running a job after any crash finishes the work.

``run_job(job_toml, executor=None, profile=None)`` runs a job with the executor of the spec (or the
one given): ``local`` calls the stage functions in this process, in order, with progress;
``slurm`` submits the arrays through ``launcher.submit_job``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from avalanche_hpc.errors import ConfigError
from avalanche_hpc.hpc.jobspec import JobSpec, load_job
from avalanche_hpc.hpc.launcher import submit_job
from avalanche_hpc.hpc.stages import get_stage, is_complete, run_task
from avalanche_hpc.hpc.task import Task

log = logging.getLogger(__name__)


# -- the local executor -------------------------------------------------------------------------
def run_local(job: JobSpec, progress: bool = True) -> dict[str, list[str]]:
    """Every stage of the job in this process, in order; only incomplete tasks run. Returns what ran."""
    ran: dict[str, list[str]] = {}
    with Progress(TextColumn("[bold]{task.fields[stage]:<10}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.description}"), disable=not progress) as bar:
        for stage in job.stages:
            tasks: list[Task] = get_stage(stage).list_tasks(job) or []
            tid = bar.add_task("", total=len(tasks), stage=stage)
            ran[stage] = []
            for task in tasks:
                bar.update(tid, description=task.key)
                if not is_complete(job, task):
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
    prof = profile if profile is not None else job.profile
    if prof is None:
        raise ConfigError(f"the slurm executor needs a cluster profile: add profile = \"...\" to "
                          f"{job.source or 'the job spec'} or pass --profile slurm/profiles/local.toml")
    sub = submit_job(job, prof)
    if wait:
        sub.wait()
    return sub
