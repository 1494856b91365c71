"""The stage registry: the one place that says what a stage of a job is.

Each ``Stage`` declares its name, the stages it depends on (SLURM ``afterok``), how it lists its
tasks, how a task is known complete, how a task runs, and the key of its resources in a cluster
profile. Everything else reads this registry: the job spec and the profiles (valid stage names,
their order), the local executor (``pipeline.py``), the SLURM launcher (``launcher.py``) and the
status table (``status.py``). Adding a stage = one entry in ``STAGES`` + the stage's own folder.

Stages and their tasks (one SLURM array per stage; one task per row)::

    synth       1 task            (on the submitting host: later stages list their tasks from the study)
    check       1 task            (on the submitting host: nothing is submitted for an invalid study)
    preprocess  (season, orbit, date) per acquisition with a previous one   <- check
    merge       1 task                                                      <- preprocess (afterok)
    train       (split, seed) per split x seed, DDP ranks inside a task      <- merge
    baseline    (split, variant) per split and baseline variant             <- merge
    detect      (season, orbit, date) per acquisition with a previous one   <- train, baseline
    report      1 task (publishes the detections - and fuses the orbits - first) <- train, baseline, detect

One notion of complete: a task is complete when the digest of its inputs and settings matches
the one its outputs record - the very check the stage function makes before skipping work
(``preprocess.tasks.task_is_complete``, ``store.merge.store_is_current``,
``learn.train.run_is_complete``, ``learn.baseline.baseline_is_complete``,
``report.report_is_current``, ``synth.generate.generation_is_complete``, ``detect.task_is_current``). ``check`` has no
completeness (``is_complete=None``): it is cheap and always runs before anything else.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from avalanche_hpc.detect import (
    detect_task,
    list_detect_tasks,
    publication_is_current,
    publish_detections,
    task_is_current,
)
from avalanche_hpc.errors import ConfigError
from avalanche_hpc.hpc.ddp import TrainTask
from avalanche_hpc.hpc.task import Task, configure_task_logging
from avalanche_hpc.inputs.checks import require_valid_study
from avalanche_hpc.learn.baseline import baseline_is_complete, baseline_run
from avalanche_hpc.learn.train import RunRequest, TrainSettings, run_is_complete, train_run
from avalanche_hpc.preprocess.tasks import list_tasks, preprocess_task, task_is_complete
from avalanche_hpc.report import build_report, report_is_current, report_summary
from avalanche_hpc.store.merge import merge_store, store_is_current
from avalanche_hpc.study import Study, fmt_yyyymmdd, parse_yyyymmdd
from avalanche_hpc.synth.generate import MARKER, generate_study, generation_is_complete

if TYPE_CHECKING:  # the job spec and the profiles validate stage names against this registry: type-only imports
    from avalanche_hpc.hpc.jobspec import JobSpec
    from avalanche_hpc.hpc.profiles import Profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One stage of a job.

    ``list_tasks(job)``: its tasks (None while they depend on a study that does not exist yet);
    ``is_complete(job, task)``: the stage's own digest check (None: never complete, always run -
``check``, cheap); ``run(job, task, progress)``: runs
    one task in this process and returns a one-line summary (stage functions skip complete work
    themselves). ``slurm_entry``: the callable submitted for a task (default: ``slurm_task``; train:
    the checkpointable DDP wrapper). ``resources``: its key under ``[stages.*]`` in a profile.
    ``on_host``: runs on the submitting host whatever the executor. ``requeue``: its SLURM jobs
    may be requeued (checkpointing resumes them). ``check_profile(job, profile)``: raises
    ``ConfigError`` before anything is submitted when the job's settings do not fit the profile.
    """

    name: str
    depends: tuple[str, ...]
    list_tasks: Callable[[JobSpec], list[Task] | None]
    is_complete: Callable[[JobSpec, Task], bool] | None
    run: Callable[[JobSpec, Task, bool], str]
    slurm_entry: Callable[[], Callable[..., Any]] | None = None
    resources: str = ""
    on_host: bool = False
    requeue: bool = False
    check_profile: Callable[[JobSpec, Profile], None] | None = None

    @property
    def resources_key(self) -> str:
        return self.resources or self.name


def _single(stage: str) -> Callable[[JobSpec], list[Task]]:
    def tasks(job: JobSpec) -> list[Task]:
        return [Task(stage, stage)]
    return tasks


# -- synth ---------------------------------------------------------------------------------------
def _synth_complete(job: JobSpec, task: Task) -> bool:
    root = job.root
    if (root / "study.toml").is_file() and not (root / MARKER).is_file():
        return True  # a study not made by synth: never touched
    return generation_is_complete(root, job.study.preset or "demo", job.study.seed)


def _synth_run(job: JobSpec, task: Task, progress: bool) -> str:
    if _synth_complete(job, task):
        return f"study {job.root} exists"
    return str(generate_study(job.root, preset=job.study.preset or "demo", seed=job.study.seed))


# -- check ---------------------------------------------------------------------------------------
def _check_run(job: JobSpec, task: Task, progress: bool) -> str:
    require_valid_study(job.root)
    return f"study {job.root} is valid"


# -- preprocess ----------------------------------------------------------------------------------
def _preprocess_tasks(job: JobSpec) -> list[Task] | None:
    if not (job.root / "study.toml").is_file():
        return None
    return [Task("preprocess", a.key, (a.season, a.orbit, fmt_yyyymmdd(a.date))) for a in list_tasks(job.root)]


def _preprocess_complete(job: JobSpec, task: Task) -> bool:  # reuses the study tables it loaded across tasks
    season, orbit, date = task.args
    return task_is_complete(job.root, season, orbit, parse_yyyymmdd(date))


def _preprocess_run(job: JobSpec, task: Task, progress: bool) -> str:
    season, orbit, date = task.args
    return str(preprocess_task(job.root, season, orbit, parse_yyyymmdd(date), force=job.preprocess.force))


# -- merge ---------------------------------------------------------------------------------------
def _merge_complete(job: JobSpec, task: Task) -> bool:
    return store_is_current(job.root, job.merge.layout)


def _merge_run(job: JobSpec, task: Task, progress: bool) -> str:
    return str(merge_store(job.root, force=job.merge.force, layout=job.merge.layout, progress=progress))


# -- train ---------------------------------------------------------------------------------------
def _train_tasks(job: JobSpec) -> list[Task]:
    return [Task("train", f"{s}/seed{n}", (s, n)) for s in job.split_names() for n in job.train.seeds]


def train_request(job: JobSpec, split: str, seed: int) -> RunRequest:
    """The ``RunRequest`` of one train task (what ``train_run`` gets from ``job.train.run_kwargs()``)."""
    kw = job.train.run_kwargs()
    names = ("max_epochs", "feature_bank", "patience", "batch_size", "lr", "n_views", "crop")
    settings = TrainSettings(**{k: kw[k] for k in names if k in kw})
    return RunRequest(job.experiment, split, seed, kw["split_seed"], kw["weights"], None, settings)


def _train_fits_profile(job: JobSpec, profile: Profile) -> None:
    ranks = profile.resources(get_stage("train").resources_key).tasks_per_node or 1
    if job.train.batch_size is not None and job.train.batch_size < ranks:
        raise ConfigError(f"train.batch_size {job.train.batch_size} is smaller than the {profile.name} profile's "
                          "DDP ranks (stages.train.tasks_per_node)")


def _train_complete(job: JobSpec, task: Task) -> bool:
    split, seed = task.args
    return run_is_complete(job.root, train_request(job, split, seed))


def _train_run(job: JobSpec, task: Task, progress: bool) -> str:
    split, seed = task.args
    return str(train_run(job.root, job.experiment, split, seed, progress=progress, **job.train.run_kwargs()))


# -- baseline ------------------------------------------------------------------------------------
def _baseline_tasks(job: JobSpec) -> list[Task]:
    """One task per split and variant (``[baseline] variants``: the paper's, the tuned one)."""
    return [Task("baseline", s if v == "paper" else f"{s}/{v}", (s, v)) for s in job.split_names()
            for v in job.baseline.variants]


def _baseline_complete(job: JobSpec, task: Task) -> bool:
    split, variant = task.args
    return baseline_is_complete(job.root, job.experiment, split, split_seed=job.train.split_seed,
                                crop=job.baseline.crop, variant=variant)


def _baseline_run(job: JobSpec, task: Task, progress: bool) -> str:
    split, variant = task.args
    return str(baseline_run(job.root, job.experiment, split, split_seed=job.train.split_seed,
                            crop=job.baseline.crop, force=job.baseline.force, variant=variant))


# -- detect --------------------------------------------------------------------------------------
def _detect_tasks(job: JobSpec) -> list[Task] | None:
    if not (job.root / "study.toml").is_file():
        return None
    return [Task("detect", a.key, (a.season, a.orbit, fmt_yyyymmdd(a.date)))
            for a in list_detect_tasks(Study.load(job.root))]


def _detect_complete(job: JobSpec, task: Task) -> bool:
    season, orbit, date = task.args
    study = Study.load(job.root)
    acqs = list_detect_tasks(study, season, orbit, parse_yyyymmdd(date))
    return bool(acqs) and task_is_current(study, job.experiment, acqs[0], job.detect.settings())


def _detect_run(job: JobSpec, task: Task, progress: bool) -> str:
    season, orbit, date = task.args
    return str(detect_task(job.root, job.experiment, season, orbit, parse_yyyymmdd(date), job.detect.settings(),
                           force=job.detect.force))


# -- report --------------------------------------------------------------------------------------
def _report_complete(job: JobSpec, task: Task) -> bool:
    if not report_is_current(job.root, job.experiment):
        return False
    if "detect" not in job.stages:
        return True
    # the report task publishes the detections first: current when the publication is and the report shows it
    if not publication_is_current(job.root, job.experiment, job.detect.settings()):
        return False
    study = Study.load(job.root)
    provenance = json.loads(study.detection_paths(job.experiment).provenance.read_text(encoding="utf-8"))
    return report_summary(study.report_index(job.experiment)).get("activity", {}).get("parts_digest") == \
        provenance.get("parts_digest")


def _report_run(job: JobSpec, task: Task, progress: bool) -> str:
    if "detect" in job.stages:  # merge the detect array's parts into the product before reporting
        publish_detections(job.root, job.experiment, job.detect.settings())
    return str(build_report(job.root, job.experiment))


# -- the registry (pipeline order) ---------------------------------------------------------------
STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("synth", (), _single("synth"), _synth_complete, _synth_run, on_host=True),
    Stage("check", ("synth",), _single("check"), None, _check_run, on_host=True),
    Stage("preprocess", ("check",), _preprocess_tasks, _preprocess_complete, _preprocess_run),
    Stage("merge", ("preprocess",), _single("merge"), _merge_complete, _merge_run),
    Stage("train", ("merge",), _train_tasks, _train_complete, _train_run, slurm_entry=TrainTask, requeue=True,
          check_profile=_train_fits_profile),
    Stage("baseline", ("merge",), _baseline_tasks, _baseline_complete, _baseline_run),
    Stage("detect", ("train", "baseline"), _detect_tasks, _detect_complete, _detect_run),
    Stage("report", ("train", "baseline", "detect"), _single("report"), _report_complete, _report_run),
)}
STAGE_NAMES: tuple[str, ...] = tuple(STAGES)
RESOURCE_KEYS: tuple[str, ...] = tuple(dict.fromkeys(s.resources_key for s in STAGES.values()))

if TYPE_CHECKING:
    StageName = str
    ResourcesKey = str
else:  # Literals built from the registry: pydantic answers an unknown name with the valid ones
    StageName = Literal[STAGE_NAMES]
    ResourcesKey = Literal[RESOURCE_KEYS]


def get_stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise ConfigError(f"unknown stage {name!r} -> valid stages: {', '.join(STAGE_NAMES)}") from None


def list_stage_tasks(job: JobSpec, stage: str) -> list[Task] | None:
    """The tasks of ``stage`` for this job; None when they depend on a study that does not exist yet."""
    return get_stage(stage).list_tasks(job)


def is_complete(job: JobSpec, task: Task) -> bool:
    """Whether ``task``'s outputs are current (its stage's digest check; read from files, not from SLURM)."""
    check = get_stage(task.stage).is_complete
    return check is not None and check(job, task)


def run_task(job: JobSpec, task: Task, progress: bool = False) -> str:
    """Run one task in this process; returns a one-line summary. Stage functions skip complete work."""
    return get_stage(task.stage).run(job, task, progress)


def slurm_task(job: JobSpec, task: Task) -> str:
    """Entry point of one array task (pickled by submitit) of a stage without its own ``slurm_entry``."""
    configure_task_logging()
    t0 = time.perf_counter()
    out = run_task(job, task)
    log.info("%s %s done in %.1f s: %s", task.stage, task.key, time.perf_counter() - t0, out)
    return out


def slurm_callable(stage: str) -> Callable[..., Any]:
    """What submitit runs for each task of ``stage``."""
    entry = get_stage(stage).slurm_entry
    return entry() if entry is not None else slurm_task


__all__ = ["RESOURCE_KEYS", "STAGES", "STAGE_NAMES", "ResourcesKey", "Stage", "StageName", "Task", "get_stage", "is_complete", "list_stage_tasks",
           "run_task", "slurm_callable", "slurm_task", "train_request"]
