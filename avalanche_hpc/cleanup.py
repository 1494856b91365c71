"""The study's one temporary-file cleaner.

Every atomic write (``atomic.py``) names its temporary file ``{name}.tmp-{pid}@{host}-{token}``
(plus suffixes a writer may add beside it: ``.paused``, SQLite's ``-journal``/``-wal``). A killed
writer leaves that file behind; ``clean_tmp`` removes it **only when its owner is certainly gone**:

- owner on this host: its PID is not running, or the PID now belongs to a process that started
  after the file was last modified (the PID was reused);
- owner on another node (or a name without a host, from older versions): the file has not been
  modified for ``grace_s`` seconds (default ``DEFAULT_GRACE_S`` = 6 h, or the environment variable
  ``AVALANCHE_HPC_TMP_GRACE_S``): a live writer on another node is never removed early.

A temporary file being written by a running task is therefore never touched, whichever stage
runs the cleaner. Each stage runs it at its start over the folders it writes
(``clean_study_tmp``): ``preprocess`` over ``work/`` (one task: only its shard and summer folders),
``store merge`` over ``work/``, ``train``/``baseline`` over ``runs/{experiment}/``, ``report`` over
``reports/{experiment}/``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from avalanche_hpc.atomic import TMP_MARK, host_tag

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_GRACE_S", "CleanResult", "clean_study_tmp", "clean_tmp", "find_tmp", "owner_gone"]

DEFAULT_GRACE_S = 6 * 3600.0
GRACE_ENV = "AVALANCHE_HPC_TMP_GRACE_S"
_TMP_RE = re.compile(r"\.tmp-(?P<pid>\d+)@(?P<host>[A-Za-z0-9.-]+)-(?P<token>[0-9a-f]{8})(?P<extra>(?:[.-][A-Za-z]+)*)$")
_OLD_TMP_RE = re.compile(r"\.tmp-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})(?P<extra>(?:[.-][A-Za-z]+)*)$")


@dataclass
class CleanResult:
    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # owner alive, or too young to judge


def grace_seconds() -> float:
    try:
        return float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_S))
    except ValueError:
        return DEFAULT_GRACE_S


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _process_start(pid: int) -> float | None:
    """Start time (epoch seconds) of a running process, from /proc; None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        boot = _boot_time()
        return None if boot is None else boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def owner_gone(path: Path, *, grace_s: float | None = None, now: float | None = None) -> bool:
    """True when the writer of temporary file ``path`` is certainly gone (see the module docstring)."""
    grace = grace_seconds() if grace_s is None else grace_s
    now = time.time() if now is None else now
    try:
        mtime = path.lstat().st_mtime
    except FileNotFoundError:
        return False
    m = _TMP_RE.search(path.name)
    if m is not None and m["host"] == host_tag():
        pid = int(m["pid"])
        if pid == os.getpid():
            return False
        if not _pid_running(pid):
            return True
        started = _process_start(pid)
        return started is not None and started > mtime + 1.0  # the PID was reused after the write stopped
    if m is None and _OLD_TMP_RE.search(path.name) is None:
        return False  # not a name this project makes: never ours to delete
    return now - mtime > grace


def find_tmp(directory: str | os.PathLike[str], recursive: bool = True) -> list[Path]:
    """Every temporary file (of any owner) under ``directory``."""
    root = Path(directory)
    if not root.is_dir():
        return []
    it = root.rglob(f"*{TMP_MARK}*") if recursive else root.glob(f"*{TMP_MARK}*")
    return sorted(p for p in it if p.is_file() or p.is_symlink())


def clean_tmp(directories: Iterable[str | os.PathLike[str]], *, recursive: bool = True,
              grace_s: float | None = None) -> CleanResult:
    """Remove the temporary files under ``directories`` whose owner is certainly gone."""
    result = CleanResult()
    for d in directories:
        for p in find_tmp(d, recursive):
            if owner_gone(p, grace_s=grace_s):
                try:
                    p.unlink()
                except FileNotFoundError:
                    continue
                except OSError as e:  # e.g. a read-only file system: leave it, the stage reports real faults
                    log.debug("cannot remove %s: %s", p, e)
                    result.kept.append(p)
                    continue
                result.removed.append(p)
            else:
                result.kept.append(p)
    if result.removed:
        log.info("removed %d temporary file(s) left by killed writers (e.g. %s)", len(result.removed),
                 result.removed[0])
    return result


def clean_study_tmp(root: str | os.PathLike[str], *parts: str, recursive: bool = True) -> CleanResult:
    """``clean_tmp`` over ``root/part`` for each part (the whole study folder when none is given)."""
    root = Path(root)
    dirs = [root / p for p in parts] if parts else [root]
    return clean_tmp(dirs, recursive=recursive)
