"""``avalanche-hpc report``: build an experiment's report, or compare two experiments.

``report`` is a command group whose default command is ``build``, so both forms work::

    avalanche-hpc report STUDY --experiment NAME        (= report build STUDY --experiment NAME)
    avalanche-hpc report compare STUDY EXP_A EXP_B
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from avalanche_hpc.cli.options import ExperimentOpt, StudyArg

if TYPE_CHECKING:
    from typer._click import Context  # typer vendors click; TyperGroup.parse_args takes this Context

DEFAULT_COMMAND = "build"


class DefaultCommandGroup(TyperGroup):
    """A group that runs ``build`` when its first argument is not one of its commands."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


report_app = typer.Typer(
    cls=DefaultCommandGroup,
    help="Reports: Table I, per-massif and hold-out tables, figures, the paper's analysis (HTML, Markdown, JSON).\n\n"
         "'avalanche-hpc report STUDY --experiment NAME' is short for 'avalanche-hpc report build STUDY "
         "--experiment NAME'.",
    no_args_is_help=True,
)


@report_app.command("build")
def build_cmd(study: StudyArg, experiment: ExperimentOpt) -> None:
    """Write STUDY/reports/NAME/ (index.html, report.md, summary.json, figures/) from STUDY/runs/NAME.

    Metrics are recomputed from the runs' predictions.csv; prints Table I and the report's path.
    """
    from avalanche_hpc.report import build_report, report_summary
    from avalanche_hpc.report.render import rich_table_from_json

    index = build_report(study, experiment)
    console = Console()
    console.print(rich_table_from_json(report_summary(index)["tables"]["table1"]))
    console.print(str(index), soft_wrap=True, highlight=False)


@report_app.command("compare")
def compare_cmd(
    study: StudyArg,
    exp_a: Annotated[str, typer.Argument(help="First experiment (A), a folder under STUDY/runs/.", show_default=False)],
    exp_b: Annotated[str, typer.Argument(help="Second experiment (B); differences are B - A.", show_default=False)],
) -> None:
    """Compare two experiments' Table I and hold-outs: writes STUDY/reports/compare-A-vs-B/."""
    from avalanche_hpc.report import compare_experiments, report_summary
    from avalanche_hpc.report.render import rich_table_from_json

    index = compare_experiments(Path(study), exp_a, exp_b)
    console = Console()
    console.print(rich_table_from_json(report_summary(index)["tables"]["compare_all"]))
    console.print(str(index), soft_wrap=True, highlight=False)


@report_app.command("pooled")
def pooled_cmd(
    studies: Annotated[list[Path], typer.Argument(help="Study folders (e.g. one per study seed).", show_default=False)],
    experiment: ExperimentOpt,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the table and verdict as JSON here.")] = None,
) -> None:
    """Table I pooled over several studies (study seeds): mean ± std over study and training seeds."""
    from avalanche_hpc.atomic import write_json
    from avalanche_hpc.report.collect import load_experiment, pooled_table_one
    from avalanche_hpc.report.render import rich_table_from_json

    table, verdict = pooled_table_one([load_experiment(Path(s), experiment) for s in studies])
    console = Console()
    console.print(rich_table_from_json(table.to_json()))
    for k in ("accuracy", "f1"):
        if k in verdict:
            v = verdict[k]
            console.print(f"all massifs {k}: CNN - paper baseline = {v['difference']:+.3f}, one std = "
                          f"{v['one_std']:.3f} -> CNN wins by more than one std: {v['cnn_wins_by_more_than_one_std']}",
                          highlight=False)
    if out is not None:
        write_json(out, {"table": table.to_json(), "verdict": verdict})


def register(app: typer.Typer) -> None:
    """Add the ``report`` group to the root app."""
    app.add_typer(report_app, name="report")
