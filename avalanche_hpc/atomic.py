"""Atomic, idempotent writes: write to a temporary file beside the target, then ``os.replace``.

A crash or a SIGKILL leaves either the old file or no file, never a half-written
one. Temporary names carry the PID and a random suffix, so two tasks writing
the same output never share a temporary file; the last rename wins and both
candidates are complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from avalanche_hpc.errors import ArgumentError

TMP_MARK = ".tmp-"


def tmp_path_for(target: Path) -> Path:
    """A unique temporary path in the same directory as ``target`` (same filesystem, so rename is atomic)."""
    target = Path(target)
    return target.with_name(f"{target.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``target``, on error delete it.

    >>> with atomic_path("out.h5") as tmp:
    ...     write_something(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(target)
    try:
        yield tmp
        if tmp.is_dir():
            raise ArgumentError(f"atomic_path expects a file, got directory {tmp}")
        with open(tmp, "rb+") as fh:  # flush data to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def clean_stale_tmp(directory: str | os.PathLike[str]) -> int:
    """Remove temporary files left by killed writers below ``directory``; returns how many."""
    n = 0
    root = Path(directory)
    if not root.exists():
        return 0
    for p in root.rglob(f"*{TMP_MARK}*"):
        if p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n
