"""One task of a stage, and the logging of a task running in a fresh interpreter (a SLURM array task).

A leaf module: the stage registry (``stages.py``), the executors and ``ddp.py`` all import it,
and it imports nothing of theirs.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One task of a stage: ``key`` names it in tables and logs, ``args`` are its stage arguments."""

    stage: str
    key: str
    args: tuple = ()


def configure_task_logging() -> None:
    """In a SLURM task (a fresh interpreter): INFO log lines to the task's stderr log."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
