"""What is done, pending, running and failed, per stage and task: from the outputs and from ``sacct``.

The outputs decide "done" (a task whose outputs are current is done whatever SLURM says); for the
others the recorded SLURM job (``jobs.json`` of ``launcher.JobFiles``) and its ``sacct`` state say
pending / running / failed, with the path of the task's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from avalanche_hpc.hpc.jobspec import JobSpec
from avalanche_hpc.hpc.launcher import ACTIVE_STATES, JobFiles, sacct_states
from avalanche_hpc.hpc.profiles import Profile
from avalanche_hpc.hpc.stages import get_stage

DONE, PENDING, RUNNING, FAILED, NOT_SUBMITTED, STALE = "done", "pending", "running", "failed", "not submitted", "stale"
_STYLE = {DONE: "green", PENDING: "yellow", RUNNING: "cyan", FAILED: "bold red", NOT_SUBMITTED: "dim", STALE: "magenta"}


@dataclass(frozen=True)
class TaskStatus:
    stage: str
    key: str
    state: str  # done | pending | running | failed | not submitted | stale (SLURM completed, outputs not current)
    job_id: str = ""
    slurm_state: str = ""
    elapsed: str = ""
    log: str = ""  # stderr log of the task (rank 0) when it was submitted


def job_status(job: JobSpec, profile: Profile | None = None) -> list[TaskStatus]:
    """One row per task of every stage of the job."""
    files = JobFiles.of(job, profile)
    record = files.read().get("stages", {})
    ids = [t["job_id"] for st in record.values() for t in st.get("tasks", {}).values()]
    states = sacct_states(ids)
    has_study = (job.root / "study.toml").is_file()
    rows: list[TaskStatus] = []
    for stage in job.stages:
        spec = get_stage(stage)
        tasks = spec.list_tasks(job)
        if tasks is None:
            rows.append(TaskStatus(stage, "(study not made yet)", NOT_SUBMITTED))
            continue
        recorded = record.get(stage, {}).get("tasks", {})
        for task in tasks:
            rec = recorded.get(task.key)
            jid = rec["job_id"] if rec else ""
            s = states.get(jid, {})
            slurm = s.get("state", "")
            if spec.is_complete is None:  # always run (check), on the host before anything is submitted
                done = bool(record)
            else:
                done = has_study and spec.is_complete(job, task)
            if done:
                state = DONE
            elif not rec:
                state = NOT_SUBMITTED
            elif slurm == "RUNNING":
                state = RUNNING
            elif slurm in ACTIVE_STATES or not slurm:
                state = PENDING
            elif slurm == "COMPLETED":
                state = STALE
            else:
                state = FAILED
            rows.append(TaskStatus(stage, task.key, state, jid, slurm, s.get("elapsed", ""),
                                   rec.get("stderr", "") if rec else ""))
    return rows


def status_table(rows: list[TaskStatus], title: str = "") -> Table:
    table = Table(title=title or None)
    for col in ("stage", "task", "state", "job", "slurm", "elapsed"):
        table.add_column(col, no_wrap=True)
    table.add_column("log", overflow="fold")
    for r in rows:
        style = _STYLE.get(r.state, "")
        log = r.log if r.state in (FAILED, RUNNING, PENDING, STALE) else ""
        table.add_row(r.stage, r.key, f"[{style}]{r.state}[/]", r.job_id, r.slurm_state, r.elapsed, log)
    return table


def summary(rows: list[TaskStatus]) -> dict[str, dict[str, int]]:
    """``{stage: {state: count}}``."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r.stage, {}).setdefault(r.state, 0)
        out[r.stage][r.state] += 1
    return out


# -- per season (campaigns of several winters) ----------------------------------------------------
@dataclass(frozen=True)
class SeasonStatus:
    season: str
    states: dict[str, int]  # preprocess task state -> count
    in_store: bool  # the patch store holds this season's rows
    runs: dict[str, int]  # state -> count of train/baseline tasks of this season's splits (season-/forward-)

    @property
    def n_tasks(self) -> int:
        return sum(self.states.values())


def _split_season(key: str) -> str | None:
    split = key.split("/")[0]
    for prefix in ("season-", "forward-"):
        if split.startswith(prefix):
            return split[len(prefix):]
    return None


def store_seasons(store: Path) -> set[str]:
    """Seasons a patch store holds (its ``seasons`` attribute, else its ``/meta/season`` column)."""
    from avalanche_hpc.store.layout import open_h5

    if not store.is_file():
        return set()
    try:
        with open_h5(store) as f:
            if "seasons" in f.attrs:
                return {str(s) for s in f.attrs["seasons"]}
            col = f["meta"]["season"][()]
    except (OSError, KeyError):
        return set()
    return {v.decode() if isinstance(v, bytes) else str(v) for v in set(col.tolist())}


def season_status(job: JobSpec, rows: list[TaskStatus]) -> list[SeasonStatus]:
    """One row per season of the study: its preprocess tasks by state, in the store, its split runs."""
    from avalanche_hpc.study import Study

    if not (job.root / "study.toml").is_file():
        return []
    study = Study.load(job.root)
    seasons = [s.id for s in sorted(study.config.seasons, key=lambda s: s.start)]
    held = store_seasons(study.store_path)
    out = []
    for season in seasons:
        states: dict[str, int] = {}
        runs: dict[str, int] = {}
        for r in rows:
            if r.stage == "preprocess" and r.key.split("/")[0] == season:
                states[r.state] = states.get(r.state, 0) + 1
            elif r.stage in ("train", "baseline") and _split_season(r.key) == season:
                runs[r.state] = runs.get(r.state, 0) + 1
        out.append(SeasonStatus(season, states, season in held, runs))
    return out


def season_table(seasons: list[SeasonStatus], title: str = "per season") -> Table:
    table = Table(title=title)
    for col in ("season", "preprocess done", PENDING, RUNNING, FAILED, STALE, NOT_SUBMITTED, "in store",
                "season-split runs done"):
        table.add_column(col, no_wrap=True)
    for s in seasons:
        n_runs = sum(s.runs.values())
        table.add_row(s.season, f"{s.states.get(DONE, 0)}/{s.n_tasks}",
                      *(str(s.states.get(k, 0) or "") for k in (PENDING, RUNNING, FAILED, STALE, NOT_SUBMITTED)),
                      "[green]yes[/]" if s.in_store else "[dim]no[/]",
                      f"{s.runs.get(DONE, 0)}/{n_runs}" if n_runs else "")
    return table
