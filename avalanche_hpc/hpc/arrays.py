"""SLURM array sizes: read the cluster's ``MaxArraySize`` and split a stage's tasks into arrays that fit.

SLURM refuses an array whose largest index is ``MaxArraySize`` or more (``slurm.conf``; default
1001, so at most 1001 tasks, indices 0..1000). A campaign of every winter since 2015 over the
French Alps is ~1,200 preprocess tasks: more than one array. ``array_limit`` is the number of
tasks one array may hold: the cluster's limit (``scontrol show config``), lowered by the
profile's ``max_array_size`` when that is smaller (site policy, or a test of the splitting on a
cluster whose limit is large). ``chunks`` cuts the task list into consecutive arrays of at most
that size; the launcher submits one array per chunk and makes every later stage wait for all of
them (``afterok:<array 1>:<array 2>:...``).
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
from collections.abc import Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

__all__ = ["SLURM_DEFAULT_MAX_ARRAY_SIZE", "array_limit", "chunks", "cluster_max_array_size", "parse_max_array_size"]

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001  # slurm.conf default
T = TypeVar("T")


def parse_max_array_size(scontrol_config: str) -> int | None:
    """``MaxArraySize = N`` from the text of ``scontrol show config`` (None when absent)."""
    m = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)\s*$", scontrol_config, re.MULTILINE)
    return int(m.group(1)) if m else None


@functools.lru_cache(maxsize=1)
def cluster_max_array_size() -> int | None:
    """The running cluster's ``MaxArraySize`` (None when ``scontrol`` cannot tell; cached per process)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("scontrol show config failed (%s): assuming SLURM's default MaxArraySize %d",
                    e, SLURM_DEFAULT_MAX_ARRAY_SIZE)
        return None
    return parse_max_array_size(out.stdout)


def array_limit(profile_cap: int | None, cluster: int | None = None) -> int:
    """Tasks one array may hold: min(cluster ``MaxArraySize``, profile ``max_array_size``).

    ``cluster``: the cluster's value (read with ``cluster_max_array_size`` when None; SLURM's
    default 1001 when that fails).
    """
    cluster = cluster if cluster is not None else cluster_max_array_size()
    limit = cluster if cluster else SLURM_DEFAULT_MAX_ARRAY_SIZE
    if profile_cap is not None:
        limit = min(limit, profile_cap)
    return max(int(limit), 1)


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive pieces of at most ``size`` items (none for an empty list)."""
    if size < 1:
        raise ValueError(f"array size must be >= 1, got {size}")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
