"""``avalanche-hpc detect``: parse options, delegate to ``detect.detect_all``."""

from __future__ import annotations

from typing import Annotated

import typer

from avalanche_hpc.cli.options import ExperimentOpt, ForceOpt, StudyArg


def detect(
    study: StudyArg,
    experiment: ExperimentOpt,
    split: Annotated[str, typer.Option("--split", help="Split whose CNN seeds (mean probability) and baseline are "
                                                       "used; the main split 'random' by default.")] = "random",
    min_valid: Annotated[float | None, typer.Option(
        "--min-valid", help="Valid-pixel share below which a corridor is not observed on a date (not scored); "
                            "default: the study's min_valid_fraction (study.toml, 0.5).")] = None,
    precision: Annotated[str, typer.Option("--precision", help="Backbone arithmetic: auto (bfloat16 where native and "
                                                               "accurate, else float32), fp32 or bf16.")] = "auto",
    season: Annotated[str | None, typer.Option("--season", help="Only this season.")] = None,
    orbit: Annotated[str | None, typer.Option("--orbit", help="Only this orbit.")] = None,
    date: Annotated[str | None, typer.Option("--date", help="Only this acquisition date (YYYYMMDD).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Patches read and scored per chunk.")] = 128,
    no_publish: Annotated[bool, typer.Option("--no-publish", help="Score only; do not rewrite the GeoPackage, "
                                                                  "activity table and evaluation.")] = False,
    force: ForceOpt = False,
) -> None:
    """Score every corridor on every date with the experiment's CNN and baseline; publish the activity product.

    Writes STUDY/detections/EXP/: detections.gpkg (layers corridors, deposition), activity.csv,
    evaluation.csv (synthetic studies), provenance.json, model.json and parts/ (one file per date;
    dates whose inputs and model are unchanged are skipped).
    """
    from avalanche_hpc.detect import DetectSettings, detect_all
    from avalanche_hpc.study import parse_yyyymmdd

    when = None
    if date is not None:
        from avalanche_hpc.errors import ConfigError

        try:
            when = parse_yyyymmdd(date)
        except ValueError as e:
            raise ConfigError(f"--date {date!r}: write the date as YYYYMMDD") from e
    settings = DetectSettings(split=split, min_valid=min_valid, precision=precision, batch_size=batch_size)
    out = detect_all(study, experiment, settings, season=season, orbit=orbit, date=when, force=force,
                     publish=not no_publish)
    typer.echo(f"{out}")


def register(app: typer.Typer) -> None:
    """Add ``detect`` to the root app."""
    app.command("detect")(detect)
