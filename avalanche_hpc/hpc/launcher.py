"""Submitting a job's stages to SLURM through submitit: one array job per stage, chained.

- one array per stage (``SlurmExecutor.map_array``; never one sbatch per task), throttled with
  ``%K`` (the profile's ``array_parallelism``), chained with ``afterok`` dependencies on the
  upstream arrays (preprocess -> merge -> train + baseline -> report); a stage with more tasks
  than one array may hold (the cluster's ``MaxArraySize``, or the profile's lower
  ``max_array_size``: ``arrays.array_limit``) is submitted as several arrays, and the downstream
  stages wait for every one of them (``afterok:<array 1>:<array 2>:...``);
- ``synth`` and ``check`` run here, on the submitting host, before anything is submitted;
- re-running submits only what is incomplete: a task whose outputs are current is skipped, and a
  task still pending or running in SLURM (from the recorded job ids and ``sacct``) is not
  submitted twice; downstream stages of anything submitted are submitted again (their stage
  functions skip complete work themselves);
- every file of a job lives in one place (``JobFiles``): ``STUDY/work/jobs/{job name}/`` (or the
  profile's ``job_dir``), with submitit's pickles and logs under ``{stage}/`` and the record of
  what was submitted in ``jobs.json`` (read by ``status``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import _make_sbatch_string

from avalanche_hpc.atomic import write_json
from avalanche_hpc.errors import ConfigError, StageError
from avalanche_hpc.hpc.arrays import array_limit, chunks
from avalanche_hpc.hpc.container import python_setting
from avalanche_hpc.hpc.jobspec import JobSpec
from avalanche_hpc.hpc.profiles import Profile, load_profile
from avalanche_hpc.hpc.stages import get_stage, is_complete, list_stage_tasks, run_task, slurm_callable
from avalanche_hpc.hpc.task import Task

log = logging.getLogger(__name__)

ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
                 "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}


# -- where a job's files live -------------------------------------------------------------------
@dataclass(frozen=True)
class JobFiles:
    """Every path of a submitted job (the one place that knows them, as submitit's JobPaths)."""

    root: Path

    @classmethod
    def of(cls, job: JobSpec, profile: Profile | None = None) -> JobFiles:
        if profile is not None and profile.job_dir:
            base = Path(os.path.expanduser(os.path.expandvars(profile.job_dir)))
        else:
            base = job.root / "work" / "jobs"
        return cls(base / job.name)

    @property
    def record(self) -> Path:
        return self.root / "jobs.json"

    def stage_folder(self, stage: str) -> Path:
        """submitit's folder of a stage (``%j`` is replaced by the job id, ``%A_%a`` for arrays)."""
        return self.root / stage / "%j"

    def logs(self, stage: str, job_id: str) -> tuple[Path, Path]:
        """stdout and stderr of rank 0 of one (array) task."""
        folder = self.root / stage / job_id
        return folder / f"{job_id}_0_log.out", folder / f"{job_id}_0_log.err"

    def read(self) -> dict[str, Any]:
        if not self.record.is_file():
            return {"stages": {}}
        return json.loads(self.record.read_text(encoding="utf-8"))

    def write(self, record: dict[str, Any]) -> None:
        write_json(self.record, record)


# -- SLURM parameters of a stage ----------------------------------------------------------------
def python_for(profile: Profile) -> str:
    """The interpreter jobs run with: the image's python when the profile names one, else this venv's."""
    return python_setting(profile) or shlex.quote(sys.executable)


def slurm_parameters(job: JobSpec, profile: Profile, stage: str, dependency: str | None = None) -> dict[str, Any]:
    """The submitit ``SlurmExecutor`` parameters of one stage's array (also used to render goldens)."""
    spec = get_stage(stage)
    r = profile.resources(spec.resources_key)
    params: dict[str, Any] = {
        "job_name": f"avalanche-{job.name}-{stage}",
        "time": r.time_min,
        "nodes": r.nodes,
        "ntasks_per_node": r.tasks_per_node,
        "cpus_per_task": r.cpus_per_task,
        "mem": _mem(r.mem_gb),
        "signal_delay_s": profile.signal_delay_s,
        "array_parallelism": r.array_parallelism,
    }
    if r.gpus_per_node:
        params["gpus_per_node"] = r.gpus_per_node
    for key in ("partition", "qos", "constraint"):
        if getattr(r, key):
            params[key] = getattr(r, key)
    if profile.account:
        params["account"] = profile.account
    setup = list(profile.setup)
    if profile.scratch:
        setup.append(f'export TMPDIR="{profile.scratch}"')
    if setup:
        params["setup"] = setup
    if dependency:
        params["dependency"] = dependency
    extra = dict(profile.sbatch)
    if spec.requeue or extra:
        # requeue is how checkpointing resumes (train: the DDP ranks of a task find each other through SLURM)
        params["additional_parameters"] = {**({"requeue": True} if spec.requeue else {}), **extra}
    return params


def _mem(mem_gb: float | None) -> str | None:
    if mem_gb is None:
        return None
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def render_sbatch(job: JobSpec, profile: Profile, stage: str, n_tasks: int, dependency: str | None = None,
                  folder: Path | None = None) -> str:
    """The sbatch script submitit writes for a stage's array of ``n_tasks`` (for review and goldens)."""
    params = slurm_parameters(job, profile, stage, dependency)
    folder = folder or JobFiles.of(job, profile).stage_folder(stage)
    command = " ".join([python_for(profile), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=n_tasks if n_tasks > 1 else None, **params)


def _executor(job: JobSpec, profile: Profile, stage: str, dependency: str | None) -> submitit.SlurmExecutor:
    folder = JobFiles.of(job, profile).stage_folder(stage)
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_requeues, python=python_for(profile))
    params = slurm_parameters(job, profile, stage, dependency)
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


# -- sacct ---------------------------------------------------------------------------------------
def _expand_array(job_id: str) -> list[str]:
    """``123_[4-6,9%2]`` -> ``123_4 123_5 123_6 123_9``; other ids unchanged."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        if "-" in part:
            a, b = part.split("-")
            out += [f"{m.group(1)}_{i}" for i in range(int(a), int(b) + 1)]
        elif part:
            out.append(f"{m.group(1)}_{part}")
    return out


def sacct_states(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """``{job_id: {"state", "exit_code", "elapsed", "node"}}`` of (array) tasks, from ``sacct``.

    An id sacct does not know (purged, or accounting down) is absent.
    """
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    cmd = ["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode,Elapsed,NodeList", "-j", ",".join(arrays)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("sacct failed (%s): SLURM states unknown, status from the outputs only", e)
        return {}
    states: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        jid, state, code, elapsed, node = parts[:5]
        for j in _expand_array(jid):
            states[j] = {"state": state.split()[0], "exit_code": code, "elapsed": elapsed, "node": node}
    return states


# -- submission ----------------------------------------------------------------------------------
@dataclass
class Submission:
    """What one ``submit_job`` call submitted: ``{stage: [(task key, job id)]}`` and the arrays."""

    job: JobSpec
    files: JobFiles
    submitted: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    arrays: dict[str, str] = field(default_factory=dict)  # stage -> array job id(s) submitted now, comma-separated
    array_ids: dict[str, list[str]] = field(default_factory=dict)  # stage -> every array submitted now

    @property
    def job_ids(self) -> list[str]:
        return [jid for tasks in self.submitted.values() for _, jid in tasks]

    def wait(self, timeout_s: float = 3600, poll_s: float = 2.0) -> dict[str, dict[str, str]]:
        """Wait until every submitted task has ended; raise ``StageError`` naming failed tasks and logs."""
        deadline = time.monotonic() + timeout_s
        ids = self.job_ids
        while True:
            states = sacct_states(ids)
            pending = [j for j in ids if states.get(j, {}).get("state", "PENDING") in ACTIVE_STATES]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise StageError(f"{len(pending)} task(s) of job {self.job.name} still running after {timeout_s} s: "
                                 f"{', '.join(pending[:10])}")
            time.sleep(poll_s)
        bad = []
        for stage, tasks in self.submitted.items():
            for key, jid in tasks:
                st = states.get(jid, {}).get("state", "UNKNOWN")
                if st != "COMPLETED":
                    bad.append(f"{stage} {key} ({jid}: {st}; log {self.files.logs(stage, jid)[1]})")
        if bad:
            raise StageError(f"{len(bad)} task(s) of job {self.job.name} did not complete:\n  - " + "\n  - ".join(bad)
                             + f"\n-> see 'avalanche-hpc status {self.job.source or self.job.name}', fix, and run again")
        return states


def squeue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{job_id: (state, reason)}`` of the (array) tasks SLURM still holds, from ``squeue``."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%r"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    held = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 3:
            for j in _expand_array(parts[0]):
                held[j] = (parts[1], parts[2])
    return held


def never_satisfied(job_ids: list[str]) -> list[str]:
    """Pending (array) jobs whose dependency can never be met (an upstream task failed)."""
    held = squeue_states(job_ids)
    return [j for j in job_ids if held.get(j, ("", ""))[1] == "DependencyNeverSatisfied"]


def _recorded_ids(record: dict[str, Any], stage: str) -> dict[str, str]:
    """Task key -> job id of this stage's recorded tasks."""
    return {k: v["job_id"] for k, v in record.get("stages", {}).get(stage, {}).get("tasks", {}).items()}


def _active_tasks(record: dict[str, Any], stage: str, states: dict[str, dict[str, str]] | None = None,
                  held: dict[str, tuple[str, str]] | None = None) -> dict[str, str]:
    """Task key -> job id of this stage's recorded tasks that SLURM still runs or holds.

    ``states``/``held``: ``sacct_states``/``squeue_states`` already queried for the whole job (one
    call each per submission, not per stage); queried for this stage's ids when not given.
    Jobs left pending for ever behind a failed upstream task (clusters without
    ``DependencyParameters=kill_invalid_depend``) are cancelled here and count as not active.
    """
    ids = _recorded_ids(record, stage)
    if states is None:
        states = sacct_states(list(ids.values()))
    if held is None:
        held = squeue_states(list(ids.values()))  # also knows jobs sacct has not recorded yet
    active = {k: j for k, j in ids.items() if states.get(j, {}).get("state") in ACTIVE_STATES or j in held}
    stuck = sorted(j for j in active.values() if held.get(j, ("", ""))[1] == "DependencyNeverSatisfied")
    if stuck:
        log.info("%s: cancelling %s (dependency never satisfied: an upstream task failed)", stage, ", ".join(stuck))
        subprocess.run(["scancel", *stuck], capture_output=True, timeout=60)
        active = {k: j for k, j in active.items() if j not in stuck}
    return active


def submit_job(job: JobSpec, profile: Profile | Path | str) -> Submission:
    """Run the host stages, then submit one array per remaining stage with its incomplete tasks."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    if prof.executor != "slurm":
        raise ConfigError(f"profile {prof.name!r} has executor = {prof.executor!r}; the slurm executor needs a "
                          "slurm profile (slurm/profiles/local.toml)")
    for name in job.stages:
        fits = get_stage(name).check_profile
        if fits is not None:
            fits(job, prof)
    host = [s for s in job.stages if get_stage(s).on_host]
    for stage in host:
        for task in list_stage_tasks(job, stage) or []:
            if not is_complete(job, task):
                log.info("%s: %s", stage, run_task(job, task))
    files = JobFiles.of(job, prof)
    record = files.read()
    sub = Submission(job, files)
    limit = array_limit(prof.max_array_size)
    waiting_on: dict[str, list[str]] = {}  # stage -> array ids downstream stages must wait for
    # SLURM's view of every task recorded before this submission: one sacct and one squeue call per job
    recorded = [j for stage in job.stages if stage not in host for j in _recorded_ids(record, stage).values()]
    states, held = sacct_states(recorded), squeue_states(recorded)
    for stage in job.stages:
        if stage in host:
            continue
        tasks = list_stage_tasks(job, stage)
        if tasks is None:
            raise StageError(f"cannot list the {stage} tasks: {job.root / 'study.toml'} is missing -> add 'synth' "
                             "to the job's stages or point study.path at an existing study")
        active = _active_tasks(record, stage, states, held)
        upstream = sorted({a for d in get_stage(stage).depends for a in waiting_on.get(d, [])})
        if upstream:  # upstream outputs will change: every task again (stage functions skip what is current)
            todo = [t for t in tasks if t.key not in active]
        else:
            todo = [t for t in tasks if t.key not in active and not is_complete(job, t)]
        waiting_on[stage] = sorted({j.split("_")[0] for j in active.values()})
        if not todo:
            log.info("%s: nothing to submit (%d complete, %d still in SLURM)", stage, len(tasks) - len(active),
                     len(active))
            continue
        dependency = "afterok:" + ":".join(upstream) if upstream else None
        ex = _executor(job, prof, stage, dependency)
        fn = slurm_callable(stage)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        st = record.setdefault("stages", {}).setdefault(stage, {"tasks": {}})
        ids: list[str] = []
        sub.submitted[stage] = []
        for part in chunks(todo, limit):  # arrays of at most MaxArraySize tasks, all with the same dependency
            jobs = ex.map_array(fn, [job] * len(part), part)
            array_id = jobs[0].job_id.split("_")[0]
            ids.append(array_id)
            sub.submitted[stage] += [(t.key, j.job_id) for t, j in zip(part, jobs, strict=False)]
            st.setdefault("arrays", []).append({"array_job_id": array_id, "n_tasks": len(part), "submitted": now,
                                                "dependency": dependency})
            for t, j in zip(part, jobs, strict=False):
                out, err = files.logs(stage, j.job_id)
                prev = st["tasks"].get(t.key, {})
                st["tasks"][t.key] = {"job_id": j.job_id, "stdout": str(out), "stderr": str(err), "submitted": now,
                                      "attempt": int(prev.get("attempt", 0)) + 1}
            log.info("%s: array %s with %d task(s)%s", stage, array_id, len(part),
                     f" after {dependency}" if dependency else "")
        sub.arrays[stage] = ",".join(ids)
        sub.array_ids[stage] = ids
        waiting_on[stage] = sorted({*waiting_on[stage], *ids})
    record.update({"job": job.name, "study": str(job.root), "experiment": job.experiment, "profile": prof.name})
    files.write(record)
    return sub


__all__ = [
    "ACTIVE_STATES",
    "JobFiles",
    "Submission",
    "Task",
    "render_sbatch",
    "sacct_states",
    "slurm_parameters",
    "submit_job",
]
