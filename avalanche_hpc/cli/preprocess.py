"""``avalanche-hpc preprocess`` and the ``avalanche-hpc store merge|verify|info`` group."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from avalanche_hpc.cli.options import ForceOpt, StudyArg
from avalanche_hpc.errors import ConfigError
from avalanche_hpc.study import Study, parse_yyyymmdd

store_app = typer.Typer(help="The HDF5 patch store: merge the shards, verify, count.", no_args_is_help=True)


def _parse_date(text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return parse_yyyymmdd(text)
    except ValueError:
        raise ConfigError(f"--date {text!r} is not a date -> write it as YYYYMMDD, e.g. 20180107") from None


def preprocess(
    study: StudyArg,
    season: Annotated[str | None, typer.Option(help="Season id (e.g. 2017-2018); with --orbit and --date: one task.")] = None,
    orbit: Annotated[str | None, typer.Option(help="Orbit id (the folder under scenes/, e.g. D139).")] = None,
    date: Annotated[str | None, typer.Option(help="Acquisition date YYYYMMDD (needs --season and --orbit).")] = None,
    force: ForceOpt = False,
) -> None:
    """Make the HDF5 shards: one task (--season --orbit --date, as an array task runs) or all tasks."""
    from avalanche_hpc.ids import check_id
    from avalanche_hpc.preprocess.tasks import preprocess_all, preprocess_task

    if season is not None:
        check_id(season, "season id", where="--season")
    if orbit is not None:
        check_id(orbit, "orbit id", where="--orbit")
    day = _parse_date(date)
    if day is not None:
        if season is None or orbit is None:
            raise ConfigError("--date needs --season and --orbit (one task is one season, orbit and date)")
        shard = preprocess_task(study, season, orbit, day, force=force)
        typer.echo(shard if shard is not None else f"{season}/{orbit}/{date}: first date of the season, no shard")
        return
    paths = preprocess_all(study, force=force, progress=True, season=season, orbit=orbit)
    typer.echo(f"{len(paths)} shards under {Study.load(study).shards_dir}")


@store_app.command("merge")
def merge(
    study: StudyArg,
    force: ForceOpt = False,
    layout: Annotated[str, typer.Option(help="'consolidated' (one self-contained copy), 'virtual' (HDF5 VDS over the shards), "
                                             "'seasonal' (one copy per season behind a VDS: adding a date or a season "
                                             "rewrites one season) or 'auto' (seasonal with several seasons, else "
                                             "consolidated).")] = "auto",
) -> None:
    """Merge every shard into STUDY/work/patches.h5 (skipped when up to date)."""
    from avalanche_hpc.store.merge import LAYOUTS, merge_store

    if layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r}: use one of {list(LAYOUTS)}")
    typer.echo(merge_store(study, force=force, layout=layout, progress=True))


@store_app.command("verify")
def verify(study: StudyArg) -> None:
    """Check schema, shapes, NaN policy and labels against fresh label maps; exit 1 on any problem."""
    from avalanche_hpc.store.verify import verify_store

    problems = verify_store(study)
    for p in problems:
        typer.echo(f"- {p}", err=True)
    if problems:
        typer.echo(f"{len(problems)} problem(s) in the patch store of {study}", err=True)
        raise typer.Exit(1)
    typer.echo(f"patch store of {study}: OK")


@store_app.command("info")
def info(study: StudyArg) -> None:
    """Print patch counts per massif, orbit, season and label."""
    from avalanche_hpc.store.verify import store_info

    df = store_info(study)
    table = Table(title=f"patches in {Study.load(study).store_path}")
    for col in df.columns:
        table.add_column(col, justify="right" if col in ("positive", "negative", "unknown", "total") else "left")
    for row in df.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``preprocess`` and the ``store`` group to the root app."""
    app.command("preprocess")(preprocess)
    app.add_typer(store_app, name="store")
