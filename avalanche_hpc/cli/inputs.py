"""``avalanche-hpc inputs check STUDY`` and ``avalanche-hpc ingest SRC... --study STUDY``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from avalanche_hpc.cli.options import OverwriteOpt, StudyArg
from avalanche_hpc.errors import InputError, Problem
from avalanche_hpc.progress import track

console = Console()
inputs_app = typer.Typer(help="Validate the study's inputs against the data contract (docs/data-contract.md).",
                         no_args_is_help=True)
PROGRESS_MIN = 50  # show a progress bar from this many scene rasters on


def _progress(items: Iterable, total: int, description: str) -> Iterable:
    if total < PROGRESS_MIN:
        yield from items
        return
    yield from track(items, description, total=total)


@inputs_app.command("check")
def check(study: StudyArg) -> None:
    """Check every file of STUDY against the contract; list every problem (file, row/key/date, fix); exit 1 on any."""
    from avalanche_hpc.inputs.checks import check_study_report

    report = check_study_report(study, progress=_progress)
    for w in report.warnings:
        where = f" [{w.where}]" if w.where else ""
        console.print("[yellow]warning:[/] " + escape(f"{_rel(w.file, study)}{where}: {w.what} -> {w.fix}"),
                      soft_wrap=True, highlight=False)
    if report.problems:
        print_problems(report.problems, study, f"{len(report.problems)} problem(s) in {study}")
        raise typer.Exit(1)
    what = ", ".join(f"{n} {k}" for k, n in report.checked.items())
    console.print(f"[bold green]OK[/] {study}: the study satisfies the data contract ({what}).")


def print_problems(problems: list[Problem], root: Path, title: str) -> None:
    """Problems (file relative to the study, where, problem, fix): a table on a terminal, else one per line.

    Off a terminal (CI, SLURM logs, pipes) lines are never wrapped, so every message stays greppable.
    """
    if not console.is_terminal:
        console.print(f"[bold red]{title}[/]", highlight=False)
        for p in problems:
            where = f" [magenta]\\[{p.where}][/]" if p.where else ""
            console.print(f"  [red]x[/] [cyan]{_rel(p.file, root)}[/]{where}: {p.what}\n      [green]fix:[/] {p.fix}",
                          soft_wrap=True, highlight=False)
        return
    table = Table(title=title, show_lines=True, expand=True)
    for col, style in (("file", "cyan"), ("where", "magenta"), ("problem", "red"), ("fix", "green")):
        table.add_column(col, style=style, overflow="fold")
    for p in problems:
        table.add_row(_rel(p.file, root), p.where, p.what, p.fix)
    console.print(table)


def _rel(file: str, root: Path) -> str:
    try:
        rel = Path(file).relative_to(root)
    except ValueError:
        return file
    return file if rel == Path(".") else str(rel)


def ingest(
    sources: Annotated[list[Path], typer.Argument(help="SNAP/pyroSAR GeoTIFFs (or folders holding them).",
                                                  metavar="SRC", show_default=False)],
    study: Annotated[Path, typer.Option("--study", "-s", help="Study directory to ingest into (has study.toml).")],
    orbit: Annotated[str | None, typer.Option("--orbit", help="Study orbit id; default: the only study orbit "
                                              "matching the file's direction / relative orbit.")] = None,
    move: Annotated[bool, typer.Option("--move/--copy", help="Delete the sources once ingested (default: copy).")]
    = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and show the plan; write nothing.")] = False,
    overwrite: OverwriteOpt = False,
    nodata: Annotated[float | None, typer.Option("--nodata", help="Nodata value for sources that declare none "
                                                 "(SNAP writes 0).")] = None,
) -> None:
    """Copy SNAP/pyroSAR outputs into STUDY/scenes/{orbit}/{YYYYMMDD}/{VV,VH,layover_shadow}.tif, tagged with UNITS."""
    from avalanche_hpc.inputs.ingest import ingest_scenes

    try:
        items = ingest_scenes(study, sources, orbit=orbit, move=move, overwrite=overwrite, dry_run=dry_run,
                              nodata=nodata)
    except InputError as e:
        print_problems(e.problems, study, f"ingest refused: {len(e.problems)} problem(s), nothing written")
        raise typer.Exit(1) from e
    table = Table(title=("would write" if dry_run else "ingested") + f" {len(items)} file(s)")
    for col in ("source", "band", "orbit", "date", "units", "target"):
        table.add_column(col, overflow="fold")
    for it in items:
        table.add_row(it.source.name, it.band, it.orbit, it.date.isoformat(), it.units or "codes 0-3",
                      _rel(str(it.target), study) + (" (replaced)" if it.replaces else ""))
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``inputs check`` and ``ingest`` to the root app."""
    app.add_typer(inputs_app, name="inputs")
    app.command("ingest")(ingest)
