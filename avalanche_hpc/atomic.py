"""Atomic, idempotent writes: write to a temporary file beside the target, then ``os.replace``.

A crash or a SIGKILL leaves either the old file or no file, never a half-written
one. Temporary names carry the owner (PID and host) and a random token,
``{name}.tmp-{pid}@{host}-{token}``, so two tasks writing the same output never share a
temporary file (the last rename wins and both candidates are complete), and the study's
cleaner (``cleanup.py``) can tell a temporary file whose writer is gone from one still being
written.

The environment's failures are reported, not traced back: a full disk or quota (ENOSPC,
EDQUOT, EFBIG, or a writer's "write failed" with no free space left), a refused permission and
a temporary file deleted under the writer become an ``envfail.EnvironmentFault`` naming the
target and the fix (``envfail.py``).

Test hook: with ``AVALANCHE_HPC_PAUSE_BEFORE_RENAME`` set to a number of seconds, a write whose
target name matches ``AVALANCHE_HPC_PAUSE_MATCH`` (comma-separated globs; default every name)
touches ``{tmp}.paused`` and sleeps between its last write and its rename (until the delay ends or
the marker is deleted), so the fault tests can SIGKILL it exactly there. Unset (the normal case) it costs one environment lookup.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avalanche_hpc.errors import ArgumentError

TMP_MARK = ".tmp-"
PAUSE_ENV = "AVALANCHE_HPC_PAUSE_BEFORE_RENAME"
PAUSE_MATCH_ENV = "AVALANCHE_HPC_PAUSE_MATCH"
PAUSED_SUFFIX = ".paused"


def host_tag() -> str:
    """This host's name as it appears in temporary names (letters, digits, '.', '-')."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:63] or "host"


def tmp_path_for(target: Path) -> Path:
    """A unique temporary path in the same directory as ``target`` (same filesystem, so rename is atomic)."""
    target = Path(target)
    return target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}@{host_tag()}-{secrets.token_hex(4)}")


def _pause_for_tests(target: Path, tmp: Path) -> None:
    delay = os.environ.get(PAUSE_ENV)
    if not delay:
        return
    globs = [g for g in os.environ.get(PAUSE_MATCH_ENV, "*").split(",") if g]
    if not any(fnmatch.fnmatch(target.name, g) for g in globs):
        return
    marker = tmp.with_name(tmp.name + PAUSED_SUFFIX)
    marker.touch()
    end = time.monotonic() + float(delay)
    while time.monotonic() < end and marker.exists():  # deleting the marker releases the writer early
        time.sleep(0.05)
    marker.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``target``, on error delete it.

    >>> with atomic_path("out.h5") as tmp:
    ...     write_something(tmp)
    """
    from avalanche_hpc.envfail import EnvironmentFault, fault_from, lost_tmp

    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise (fault_from(e, target) or e) from e
    tmp = tmp_path_for(target)
    try:
        yield tmp
        if tmp.is_dir():
            raise ArgumentError(f"atomic_path expects a file, got directory {tmp}")
        if not tmp.exists():
            raise lost_tmp(tmp, target)
        _pause_for_tests(target, tmp)
        try:
            with open(tmp, "rb+") as fh:  # flush data to disk before the rename makes it visible
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except FileNotFoundError as e:
            raise lost_tmp(tmp, target) from e
    except EnvironmentFault:
        raise
    except Exception as e:  # re-raised unchanged unless the environment explains it
        fault = fault_from(e, target)
        if fault is None:
            raise
        raise fault from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
