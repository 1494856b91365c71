"""The project's exception hierarchy.

Every class also inherits the matching built-in (as rasterio does), so callers
can catch either ``AvalancheError`` or e.g. ``ValueError``. Messages name the
file, the row/key/date and the fix; the CLI prints them without a traceback and
exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class AvalancheError(Exception):
    """Base class of every error the project raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One problem found in the inputs: where it is, what is wrong, how to fix it."""

    file: str
    where: str  # row / key / date / band; "" when the whole file is concerned
    what: str
    fix: str

    def __str__(self) -> str:
        loc = f"{self.file}" + (f" [{self.where}]" if self.where else "")
        return f"{loc}: {self.what} -> {self.fix}"


class InputError(AvalancheError, ValueError):
    """Bad input data or configuration. Carries one or more ``Problem`` entries."""

    def __init__(self, problems: list[Problem] | Problem | str, *, file: str | Path = "", fix: str = ""):
        if isinstance(problems, str):
            problems = [Problem(str(file), "", problems, fix or "see docs/data-contract.md")]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        n = len(self.problems)
        head = "1 problem" if n == 1 else f"{n} problems"
        super().__init__(f"{head} in the inputs:\n" + "\n".join(f"  - {p}" for p in self.problems))


class ConfigError(AvalancheError, ValueError):
    """A bad setting in a TOML file (study, job spec, cluster profile) or on the command line."""


class MissingInputError(AvalancheError, FileNotFoundError):
    """A required file does not exist; the message says where it was expected and how to make it."""


class WeightsError(AvalancheError, OSError):
    """Pretrained weights missing or failing their checksum."""


class StageError(AvalancheError, RuntimeError):
    """A pipeline stage could not complete (the message names the task and its log)."""


class UnknownKeyError(AvalancheError, KeyError):
    """A name looked up and not there (an orbit, a season, rows of a feature bank); the message lists what is."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class ArgumentError(AvalancheError, ValueError):
    """A function called with values that cannot go together: a caller's mistake, not bad input data."""
