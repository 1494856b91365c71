"""The one progress bar of the project (rich), for every long loop a person waits for.

Columns: what runs (bold), the bar, done/total, elapsed and remaining time, then the item at
hand (the ``detail`` field: a task key, a product name). Bars go to stderr, so the output of a
command (tables, paths) stays clean on stdout.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from rich.progress import Progress

T = TypeVar("T")


def progress_bar(enabled: bool = True, transient: bool = False) -> Progress:
    """A rich ``Progress`` (a context manager); ``enabled=False`` gives one that draws nothing.

    Add tasks with ``bar.add_task("preprocess", total=n, detail="")`` and set ``detail=`` in
    ``bar.update`` to show the item at hand.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class DetailColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(str(task.fields.get("detail", "")))

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), DetailColumn(), console=Console(stderr=True), disable=not enabled,
                    transient=transient)


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True,
          transient: bool = True) -> Iterator[T]:
    """Iterate over ``items`` with a bar (``total`` defaults to ``len(items)``)."""
    if not enabled:
        yield from items
        return
    with progress_bar(transient=transient) as bar:
        yield from bar.track(items, total=total, description=description)
