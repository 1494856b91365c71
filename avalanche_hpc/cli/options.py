"""Options shared by several commands, defined once (as rasterio's ``rio/options.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from avalanche_hpc.ids import check_id


def _experiment_name(value: str) -> str:
    """Refuse a name that is not a folder name (path traversal) before anything runs."""
    return check_id(value, "experiment name", where="--experiment")


StudyArg = Annotated[
    Path,
    typer.Argument(help="Study directory (study.toml, dem.tif, corridors.gpkg, inventory.csv, scenes/).",
                   show_default=False),
]
ExperimentOpt = Annotated[
    str, typer.Option("--experiment", "-e", callback=_experiment_name,
                      help="Experiment name: outputs go to STUDY/runs/NAME and STUDY/reports/NAME.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo work even where complete, up-to-date outputs exist.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (results are deterministic for a seed).")]
