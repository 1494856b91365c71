"""``avalanche-hpc run JOB.toml`` and ``avalanche-hpc status JOB.toml``: jobs on a laptop or on SLURM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

JobArg = Annotated[Path, typer.Argument(help="Job spec (TOML), e.g. jobs/demo.toml.", show_default=False)]
ProfileOpt = Annotated[Path | None, typer.Option(
    "--profile", help="Cluster profile (TOML) for the slurm executor; default: the job's 'profile'.")]


def run(
    job: JobArg,
    executor: Annotated[str | None, typer.Option(
        "--executor", help="local (in this process) or slurm (submitit arrays); default: the job's 'executor'.")] = None,
    profile: ProfileOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="slurm: wait until every submitted task has ended.")] = False,
) -> None:
    """Run a job: every stage in order (local) or one SLURM array per stage, chained with afterok (slurm)."""
    from avalanche_hpc.hpc.jobspec import load_job
    from avalanche_hpc.hpc.pipeline import run_job

    spec = load_job(job)
    result = run_job(spec, executor=executor, profile=profile, wait=wait)
    if isinstance(result, dict):
        typer.echo("ran: " + ", ".join(f"{s} {len(k)}" for s, k in result.items()))
        if "report" in spec.stages or "detect" in spec.stages:
            from avalanche_hpc.study import Study

            study = Study.load(spec.root)
            if "detect" in spec.stages:
                typer.echo(f"detections: {study.detection_paths(spec.experiment).geopackage}")
            if "report" in spec.stages:
                typer.echo(f"report: {study.report_index(spec.experiment)}")
    else:
        typer.echo("submitted: " + (", ".join(f"{s} array {a} ({len(result.submitted[s])} tasks)"
                                              for s, a in result.arrays.items()) or "nothing (all complete or running)"))
        typer.echo(f"follow with: avalanche-hpc status {job}")


def status(job: JobArg, profile: ProfileOpt = None) -> None:
    """Show each stage and task of a job: done, pending, running, failed (with its log), from sacct and the outputs."""
    from avalanche_hpc.hpc.jobspec import load_job
    from avalanche_hpc.hpc.profiles import load_profile
    from avalanche_hpc.hpc.status import job_status, season_status, season_table, status_table

    spec = load_job(job)
    prof_path = profile or spec.profile
    prof = load_profile(prof_path) if prof_path else None
    rows = job_status(spec, prof)
    console = Console(width=200)
    console.print(status_table(rows, title=f"{spec.name}: {spec.root}"))
    seasons = season_status(spec, rows)
    if len(seasons) > 1:  # a campaign: one line per winter
        console.print(season_table(seasons, title=f"{spec.name}: per season"))


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``status`` to the root app."""
    app.command("run")(run)
    app.command("status")(status)
