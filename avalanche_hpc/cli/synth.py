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
                             "four orbits (2 ascending, 2 descending, 6-day repeat), for orbit fusion.")] = PresetName.demo,
        seed: SeedOpt = 0,
        overwrite: Annotated[bool, typer.Option(
            "--overwrite",
            help="Replace an existing study in STUDY (deletes its scenes, work/, runs/, reports/).")] = False,
    ) -> None:
        """Generate a synthetic season (DEM, corridors, inventory, Sentinel-1 scenes, truth.csv) in STUDY.

        Re-running the same preset and seed finishes an interrupted generation.
        """
        from avalanche_hpc.synth import generate_study

        root = generate_study(study, preset=preset.value, seed=seed, overwrite=overwrite, progress=True)
        typer.echo(f"synthetic study written to {root} (check it with 'avalanche-hpc inputs check {root}')")
