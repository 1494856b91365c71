"""The one validator for identifiers that become path components.

Season, orbit, experiment, split and job names each name a folder (``work/shards/{season}/{orbit}``,
``runs/{experiment}/{split}``, ``work/jobs/{name}``). A name holding ``/``, ``\\``, ``..``, a leading
dot or a control character could make a stage write outside the study, so every such name is
checked here: by the contract (``study.toml`` pydantic models, job specs), by the CLI options and
by the ``Study`` path methods themselves, before anything is written.

Allowed: 1 to 128 characters, letters, digits, ``_``, ``-`` and ``.``, starting with a letter,
a digit or ``_``, and no ``..`` anywhere (so ``.``, ``..`` and hidden names are impossible).
"""

from __future__ import annotations

import re

from avalanche_hpc.errors import ConfigError

__all__ = ["ID_PATTERN", "ID_RULE", "check_id", "is_valid_id"]

ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
ID_RULE = "1-128 letters, digits, '_', '-' or '.', starting with a letter, a digit or '_' (it names a folder)"
_ID_RE = re.compile(ID_PATTERN)


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None and ".." not in value


def check_id(value: object, kind: str, *, where: str = "") -> str:
    """Return ``value`` when it is a safe folder name, else raise ``ConfigError`` naming it and the rule.

    ``kind`` says what the name is ("season id", "experiment name", ...); ``where`` where it came from
    (a file and key, or a command-line option). ``ConfigError`` is a ``ValueError``, so a pydantic
    validator calling this turns it into a validation error of the right key.
    """
    if is_valid_id(value):
        return value  # type: ignore[return-value]
    origin = f" ({where})" if where else ""
    raise ConfigError(f"{kind} {value!r}{origin} is not allowed as a folder name -> use {ID_RULE}; "
                      f"path separators and '..' are refused, nothing was written")
