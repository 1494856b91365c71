"""``avalanche-hpc synth``: write a synthetic Sentinel-1 study (the embedded default and the test bed)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from avalanche_hpc.cli.options import SeedOpt, StudyArg


class PresetName(StrEnum):
    tiny = "tiny"
    demo = "demo"
    alps = "alps"
    tiny3 = "tiny3"
    campaign10 = "campaign10"
    tiny4 = "tiny4"
    demo4 = "demo4"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("synth")
    def synth(
        study: StudyArg,
        preset: Annotated[PresetName, typer.Option(
            "--preset", help="Size: tiny (seconds, tests), demo (under a minute, 4 massifs, 2 orbits), "
                             "alps (18 massifs, ~3000 corridors, 32 dates, benchmarks); tiny4 / demo4: "
                             "four orbits (2 ascending, 2 descending, 6-day repeat), for orbit fusion; several "
                             "seasons: tiny3 (3 short winters, tests and the campaign demo), campaign10 (10 winters "
                             "2015-2025 on a small grid, benchmarks).")] = PresetName.demo,
        seed: SeedOpt = 0,
        seasons: Annotated[str | None, typer.Option(
            "--seasons", metavar="FIRST:LAST",
            help="Winters to simulate, e.g. 2015-2016:2024-2025 (a range) or 2016-2017,2021-2022; dates follow "
                 "the Sentinel-1 constellation (12-day repeat with one satellite, 6 with two). On an existing "
                 "generation of the same preset and seed, more seasons are added to it.")] = None,
        overwrite: Annotated[bool, typer.Option(
            "--overwrite",
            help="Replace an existing study in STUDY (deletes its scenes, work/, runs/, reports/).")] = False,
    ) -> None:
        """Generate a synthetic season (DEM, corridors, inventory, Sentinel-1 scenes, truth.csv) in STUDY.

        Re-running the same preset and seed finishes an interrupted generation.
        """
        from avalanche_hpc.synth import generate_study, get_preset

        p = get_preset(preset.value)
        if seasons:
            p = p.with_seasons(seasons)
        root = generate_study(study, preset=p, seed=seed, overwrite=overwrite, progress=True)
        typer.echo(f"synthetic study written to {root} (check it with 'avalanche-hpc inputs check {root}')")
