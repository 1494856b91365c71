"""One error path for the environment: full disks, quotas, permissions, corrupt or vanished files.

Failures that are not the user's input but the machine's (``OSError`` such as ENOSPC, EDQUOT,
EFBIG, EACCES, EROFS; a truncated checkpoint; an HDF5 file that cannot be opened; a temporary
file deleted under its writer) become an ``EnvironmentFault``: one line naming the file, what
happened and the fix. The CLI prints it without a traceback (``-v`` shows one) and exits 1, like
every ``AvalancheError``; ``describe_os_error`` gives the same one line for an ``OSError`` that
reached the CLI without passing through an atomic write.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from avalanche_hpc.errors import AvalancheError

__all__ = [
    "EnvironmentFault",
    "corrupt_file",
    "describe_os_error",
    "disk_free_bytes",
    "fault_from",
    "lost_tmp",
]

# Below this many free bytes a writer's unexplained "write failed" is taken for a full disk.
LOW_SPACE_BYTES = 1 << 20
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "File too large", "errno = 28", "errno = 122")
_DENIED_ERRNOS = {errno.EACCES, errno.EPERM}
_READONLY_TEXT = "Read-only file system"


class EnvironmentFault(AvalancheError, OSError):
    """The machine, not the input, stopped a stage: disk full, permission, corrupt or vanished file."""

    def __init__(self, path: str | os.PathLike[str], what: str, fix: str):
        self.path, self.what, self.fix = str(path), what, fix
        super().__init__(f"{self.path}: {what} -> {fix}")

    def __str__(self) -> str:
        return f"{self.path}: {self.what} -> {self.fix}"


def disk_free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes (for this user) on the filesystem of ``path`` or of its nearest existing parent."""
    p = Path(path)
    for q in (p, *p.parents):
        try:
            st = os.statvfs(q)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def _mount_of(path: Path) -> Path:
    p = path.resolve() if path.exists() else path.parent.resolve()
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def fault_from(exc: BaseException, target: str | os.PathLike[str] | None = None) -> EnvironmentFault | None:
    """The ``EnvironmentFault`` an exception stands for, or None when it is not the environment's.

    ``target`` is the file being written (it is named in the message; else the exception's own
    ``filename``). Any other failure counts as a full disk when the target's file system has less
    than ``LOW_SPACE_BYTES`` free at that moment.
    """
    if isinstance(exc, AvalancheError):
        return None
    path = Path(target) if target is not None else Path(getattr(exc, "filename", None) or "?")
    code = getattr(exc, "errno", None)
    text = str(exc)
    free = disk_free_bytes(path)
    # A writer library may hide the errno (torch: "iostream error", "unexpected pos"; GDAL/SQLite: "disk I/O
    # error"): a write that fails while the file system has (almost) no space left failed for that reason.
    full = (isinstance(exc, OSError) and (code in _FULL_ERRNOS or any(t in text for t in _FULL_TEXT))) or (
        free is not None and free < LOW_SPACE_BYTES)
    if full:
        where = _mount_of(path)
        kind = "file size limit or quota reached" if code == errno.EFBIG or "File too large" in text else (
            "quota exceeded" if code == errno.EDQUOT or "quota" in text.lower() else "no space left on the device")
        shown = f", {free // (1 << 20)} MiB free on {where}" if free is not None else ""
        return EnvironmentFault(path, f"cannot write: {kind}{shown}; nothing was written under this name",
                                f"free space on {where} (or raise the quota) and re-run: finished work is kept")
    if not isinstance(exc, OSError):
        return None
    if code in _DENIED_ERRNOS:
        culprit = getattr(exc, "filename", None) or path
        return EnvironmentFault(culprit, "permission denied",
                                "make it (and its folder) writable by this user (chmod/chown), or use another study "
                                "directory, then re-run")
    if code == errno.EROFS or _READONLY_TEXT in text:
        return EnvironmentFault(path, "read-only file system",
                                "put the study (its work/, runs/, reports/) on a writable file system and re-run")
    return None


def lost_tmp(tmp: Path, target: Path) -> EnvironmentFault:
    return EnvironmentFault(tmp, f"this temporary file was deleted while being written (target {target.name}); "
                                 f"nothing was written under the final name",
                            "another process removed it (a manual cleanup, or an old avalanche-hpc cleaner): "
                            "re-run the task")


def corrupt_file(path: str | os.PathLike[str], kind: str, cause: BaseException | str, fix: str) -> EnvironmentFault:
    """A file that exists but cannot be read (truncated checkpoint, damaged HDF5)."""
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return EnvironmentFault(path, f"{kind} is corrupt or truncated ({reason[:160]})", fix)


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError`` that reached the CLI: the file, what happened and a fix."""
    fault = fault_from(exc)
    if fault is not None:
        return str(fault)
    name = getattr(exc, "filename", None)
    reason = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        fix = "check the path; re-run the stage that makes the file"
    elif isinstance(exc, IsADirectoryError | NotADirectoryError):
        fix = "a file and a folder are mixed up at this path: move the wrong one away and re-run"
    else:
        fix = "check the file system (space, permissions, mounts) and re-run; -v shows the traceback"
    return f"{name}: {reason} -> {fix}" if name else f"{reason} -> {fix}"
