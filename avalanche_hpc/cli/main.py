"""The ``avalanche-hpc`` command: one typer app; each command group lives in its own module."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

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
_VERBOSITY = {"level": 1}  # set once by the root callback; main() shows tracebacks from -v on


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
    _VERBOSITY["level"] = 1 + verbose - quiet
    configure_logging(1 + verbose - quiet)  # default: INFO


def _register_all() -> None:
    # Each module adds its commands/groups to ``app``; see docs/architecture.md for the map.
    from avalanche_hpc.cli import detect, hpc, inputs, learn, preprocess, report, snap, synth

    for mod in (synth, inputs, preprocess, learn, detect, report, hpc, snap):
        mod.register(app)


_register_all()


def _fail(message: str) -> None:
    if _VERBOSITY["level"] > 1:  # -v: the traceback too
        err_console.print_exception(show_locals=False)
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(1)


def main() -> None:
    """Run the app; project errors and the environment's failures (full disk, permissions, corrupt or
    vanished files: ``envfail.py``) become one message and exit code 1, without a traceback unless -v."""
    from avalanche_hpc.envfail import describe_os_error

    try:
        app()
    except AvalancheError as e:
        _fail(str(e))
    except OSError as e:
        _fail(describe_os_error(e))


if __name__ == "__main__":
    main()
