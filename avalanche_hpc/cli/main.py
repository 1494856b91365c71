"""The ``avalanche-hpc`` command: one typer app; each command group lives in its own module."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from avalanche_hpc import __version__
from avalanche_hpc.errors import AvalancheError

app = typer.Typer(
    name="avalanche-hpc",
    help="Avalanche debris detection in Sentinel-1 SAR patches, from a laptop to a SLURM cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"avalanche-hpc {__version__}")
        raise typer.Exit()


def configure_logging(verbosity: int) -> None:
    """Map -v/-q counts to a log level once, for the whole program (as rio does)."""
    level = max(logging.DEBUG, min(logging.ERROR, logging.WARNING - 10 * verbosity))
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output (-v info, -vv debug).")] = 0,
    quiet: Annotated[int, typer.Option("--quiet", "-q", count=True, help="Less log output.")] = 0,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    configure_logging(1 + verbose - quiet)  # default: INFO


def _register_all() -> None:
    # Each module adds its commands/groups to ``app``; see docs/architecture.md for the map.
    from avalanche_hpc.cli import detect, hpc, inputs, learn, preprocess, report, snap, synth

    for mod in (synth, inputs, preprocess, learn, detect, report, hpc, snap):
        mod.register(app)


_register_all()


def main() -> None:
    try:
        app()
    except AvalancheError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
