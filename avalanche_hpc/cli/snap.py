"""``avalanche-hpc snap`` (GRD products -> scenes/ through SNAP gpt) and ``snap-auxdata`` (auxdata for offline nodes).

``snap-stage`` is the old name of ``snap-auxdata``: still accepted, hidden from ``--help``, and it warns.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from avalanche_hpc.cli.options import ForceOpt, StudyArg

ProductsOpt = Annotated[
    list[str],
    typer.Option("--products", "-p", help="Directory of Sentinel-1 GRD products (*.SAFE, *.zip), a text file listing "
                 "one product path per line, or product paths (repeat the option).", show_default=False),
]
ProfileOpt = Annotated[
    Path | None,
    typer.Option("--profile", help="Cluster profile TOML; when it names 'image', gpt runs inside that Apptainer image."),
]


def _products(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 and not values[0].endswith((".SAFE", ".zip")) else values


def snap(
    study: StudyArg,
    products: ProductsOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the gpt command lines, run nothing.")] = False,
    cpus: Annotated[int | None, typer.Option("--cpus", min=1, help="CPU cores per task (gpt -q parallelism); default: the SLURM allocation, else every core.")] = None,
    mem_gb: Annotated[float | None, typer.Option("--mem-gb", help="Memory per task in GiB (gpt heap = this minus headroom); default: the SLURM allocation, else 75 % of RAM.")] = None,
    graph: Annotated[Path | None, typer.Option("--graph", help="SNAP graph XML (default containers/graphs/grd_to_sigma0.xml).")] = None,
    profile: ProfileOpt = None,
    scratch: Annotated[Path | None, typer.Option("--scratch", help="Local scratch for per-task SNAP user dirs (default $TMPDIR).")] = None,
    force: ForceOpt = False,
) -> None:
    """Terrain-correct Sentinel-1 GRD products with SNAP into STUDY/scenes/{orbit}/{YYYYMMDD}/ (one task per product)."""
    from avalanche_hpc.inputs.snap.tasks import snap_products

    out = snap_products(study, _products(products), dry_run=dry_run, cpus=cpus, mem_gb=mem_gb, graph=graph,
                        profile=profile, scratch=scratch, force=force)
    for item in out:
        typer.echo(str(item) if isinstance(item, Path) else shlex.join(item))  # dry run: command lines


def snap_auxdata(
    study: StudyArg,
    products: ProductsOpt,
    orbits_url: Annotated[str, typer.Option("--orbits-url", help="Base URL of the Sentinel-1 orbit mirror (SNAP's own).")]
    = "https://step.esa.int/auxdata/orbits/Sentinel-1/",
    dem_source: Annotated[Path | None, typer.Option("--dem-source", help="DEM to warp into the study CRS (default STUDY/dem.tif).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only verify the auxdata already there; download nothing.")] = False,
    force: ForceOpt = False,
) -> None:
    """Download precise orbit files and the EGM96 geoid, warp the external DEM: auxdata for offline compute nodes (needs internet)."""
    from avalanche_hpc.errors import InputError
    from avalanche_hpc.inputs.products import list_products
    from avalanche_hpc.inputs.snap.auxdata import fetch_auxdata, snap_work_dir, verify_auxdata
    from avalanche_hpc.study import Study

    st, prods = Study.load(study), list_products(_products(products))
    problems = (verify_auxdata(st, prods) if check
                else fetch_auxdata(st, prods, base_url=orbits_url, dem_source=dem_source, force_dem=force))
    if problems:
        raise InputError(problems)
    typer.echo(f"auxdata ready: orbit files for {len(prods)} product(s), DEM and geoid under {snap_work_dir(st)}")


def register(app: typer.Typer) -> None:
    """Add ``snap``, ``snap-auxdata`` and the deprecated alias ``snap-stage`` to the root app."""
    app.command("snap")(snap)
    app.command("snap-auxdata")(snap_auxdata)
    app.command("snap-stage", hidden=True, deprecated=True,
                help="Deprecated name of snap-auxdata (same options).")(snap_auxdata)
