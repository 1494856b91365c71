"""SNAP ``gpt`` command lines sized for one task's CPUs and memory.

A task with ``cpus`` cores and ``mem_gb`` GiB runs::

    [apptainer exec ... image.sif] gpt
        -J-Xmx<heap>M                       JVM heap = task memory minus headroom (JVM native, GDAL, OS)
        -J-Dsnap.userdir=<scratch>/snap-... per-task SNAP user dir on local scratch (no shared ~/.snap)
        -J-DOrbitFiles.sentinel1POEOrbitPath=<staged>/Orbits/Sentinel-1/POEORB
        GRAPH.xml
        -q <cpus>                           tile-scheduler parallelism
        -c <cache>M                         tile cache (a fraction of the heap)
        -e                                  full error messages in the task log
        -P<name>=<value> ...                graph parameters (every ${name} of the graph)

``-J`` passes an option to the JVM of the install4j ``gpt`` launcher (install4j
"VM parameters" documentation); ``-q``/``-c``/``-P``/``-e`` are gpt's own options
(snap-engine ``snap-gpf/src/main/resources/org/esa/snap/core/gpf/main/CommandLineUsage.txt``).
``OrbitFiles.sentinel1POEOrbitPath`` is read through ``Settings.get`` which checks Java
system properties first (snap-engine ``snap-engine-utilities/.../util/Settings.java``;
microwave-toolbox ``sar-io-ephemeris/.../io/sentinel1/SentinelPODOrbitFile.java``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from avalanche_hpc.errors import ConfigError, MissingInputError

GRAPHS_DIR = Path(__file__).resolve().parents[3] / "containers" / "graphs"
DEFAULT_GRAPH = "grd_to_sigma0.xml"
# In the image the graphs are installed here (containers/avalanche.def copies them).
IMAGE_GRAPHS_DIR = Path("/opt/avalanche-hpc/containers/graphs")
PLACEHOLDER_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")

MIN_HEAP_MB = 2048  # SNAP's Terrain-Correction on a GRD scene does not run in less
TILE_CACHE_FRACTION = 0.6  # of the heap; the rest holds operator state and tile buffers
DEFAULT_SPECKLE_FILTER = "Refined Lee"
DEFAULT_FILTER_SIZE = 5
DEM_NODATA = -32768.0


def default_graph() -> Path:
    """The project's GRD -> sigma0 graph: the source tree's copy, else the image's."""
    for d in (GRAPHS_DIR, IMAGE_GRAPHS_DIR):
        if (d / DEFAULT_GRAPH).is_file():
            return d / DEFAULT_GRAPH
    raise MissingInputError(f"SNAP graph {DEFAULT_GRAPH} not found in {GRAPHS_DIR} or {IMAGE_GRAPHS_DIR} "
                            "-> run from a checkout of avalanche-hpc or inside the avalanche image")


def graph_placeholders(graph: str | Path) -> set[str]:
    """Every ``${name}`` in a graph XML outside comments (the -P parameters it needs)."""
    text = re.sub(r"<!--.*?-->", "", Path(graph).read_text(encoding="utf-8"), flags=re.S)
    return set(PLACEHOLDER_RE.findall(text))


@dataclass(frozen=True)
class GptMemory:
    """How a task's memory is split (MiB)."""

    task_mb: int
    heap_mb: int
    cache_mb: int


def gpt_memory(mem_gb: float) -> GptMemory:
    """Heap = task memory minus headroom (max(1 GiB, 20 %)), tile cache = 60 % of the heap.

    The headroom covers the JVM's own native memory (metaspace, thread stacks, direct
    buffers), GDAL and the OS page tables; SLURM kills a task that exceeds its
    ``--mem``, whereas an undersized heap only slows SNAP down.
    """
    if mem_gb <= 0:
        raise ConfigError(f"--mem-gb must be positive, got {mem_gb}")
    task_mb = int(mem_gb * 1024)
    headroom = max(1024, int(0.2 * task_mb))
    heap = task_mb - headroom
    if heap < MIN_HEAP_MB:
        raise ConfigError(
            f"a task with {mem_gb} GiB leaves {heap} MiB of Java heap for gpt; SNAP needs at least "
            f"{MIN_HEAP_MB} MiB -> give the snap tasks more memory (--mem-gb {(MIN_HEAP_MB + 1024) / 1024 * 1.25:.0f} "
            "or more; 16-32 GiB is typical for a GRD scene)")
    return GptMemory(task_mb=task_mb, heap_mb=heap, cache_mb=int(heap * TILE_CACHE_FRACTION))


def task_resources(cpus: int | None = None, mem_gb: float | None = None) -> tuple[int, float]:
    """(cpus, memory GiB) of this task: the given values, else the SLURM allocation, else this machine.

    SLURM: ``SLURM_CPUS_PER_TASK``; ``SLURM_MEM_PER_NODE`` (MiB) or ``SLURM_MEM_PER_CPU`` x cpus.
    Outside SLURM: every core and 75 % of the physical memory.
    """
    env = os.environ
    if cpus is None:
        cpus = int(env.get("SLURM_CPUS_PER_TASK") or 0) or len(os.sched_getaffinity(0))
    if mem_gb is None:
        if env.get("SLURM_MEM_PER_NODE"):
            mem_gb = int(env["SLURM_MEM_PER_NODE"]) / 1024
        elif env.get("SLURM_MEM_PER_CPU"):
            mem_gb = int(env["SLURM_MEM_PER_CPU"]) * cpus / 1024
        else:
            mem_gb = 0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return int(cpus), float(mem_gb)


def graph_parameters(
    *,
    input_path: Path,
    output_path: Path,
    dem_path: Path,
    crs_epsg: int,
    pixel_size_m: float,
    grid_origin: tuple[float, float],
    polarisations: tuple[str, ...] = ("VV", "VH"),
    dem_nodata: float = DEM_NODATA,
    dem_apply_egm: bool = True,
    speckle_filter: str = DEFAULT_SPECKLE_FILTER,
    filter_size: int = DEFAULT_FILTER_SIZE,
) -> dict[str, str]:
    """Values of every ``${name}`` of ``grd_to_sigma0.xml`` (units: metres, the study CRS)."""
    return {
        "input": str(input_path),
        "output": str(output_path),
        "demFile": str(dem_path),
        "demNoData": repr(float(dem_nodata)),
        "demApplyEGM": "true" if dem_apply_egm else "false",
        "pixelSpacing": repr(float(pixel_size_m)),
        "mapProjection": f"EPSG:{int(crs_epsg)}",
        "gridOriginX": repr(float(grid_origin[0])),
        "gridOriginY": repr(float(grid_origin[1])),
        "polarisations": ",".join(polarisations),
        # fixes the band order of the output GeoTIFF (Terrain-Correction keeps the order of these names)
        "sourceBands": ",".join(f"Sigma0_{p}" for p in polarisations),
        "speckleFilter": speckle_filter,
        "filterSize": str(int(filter_size)),
    }


def find_gpt(container_prefix: list[str] | None = None, gpt: str = "gpt") -> list[str]:
    """The argv prefix that runs gpt: inside the image when a container prefix is given, else from PATH.

    Raises MissingInputError with the ways out when there is neither.
    """
    if container_prefix:
        return [*container_prefix, gpt]
    env_gpt = os.environ.get("AVALANCHE_GPT")
    found = env_gpt if env_gpt and Path(env_gpt).is_file() else shutil.which(gpt)
    if found is None:
        raise MissingInputError(
            "SNAP's 'gpt' is not on PATH and no container image is configured -> either run inside the image "
            "('apptainer exec --bind STUDY containers/avalanche.sif avalanche-hpc snap ...'), name the image in the "
            "cluster profile ('image = \"/path/avalanche.sif\"' in slurm/profiles/NAME.toml, see docs/containers.md), "
            "or install SNAP and put its bin/ on PATH (or set AVALANCHE_GPT=/path/to/snap/bin/gpt)")
    return [found]


def gpt_command(
    graph: str | Path,
    params: Mapping[str, str],
    *,
    cpus: int,
    mem_gb: float,
    userdir: str | Path,
    orbit_dir: str | Path | None = None,
    gpt_prefix: list[str] | None = None,
) -> list[str]:
    """The gpt argv for one task. Checks that ``params`` supplies every placeholder of the graph."""
    if cpus < 1:
        raise ConfigError(f"--cpus must be at least 1, got {cpus}")
    graph = Path(graph)
    if not graph.is_file():
        raise MissingInputError(f"SNAP graph {graph} does not exist -> pass --graph PATH to an existing graph XML")
    missing = graph_placeholders(graph) - set(params)
    if missing:
        raise ConfigError(f"graph {graph} needs parameter(s) {sorted(missing)} that were not supplied -> "
                          "add them to the graph parameters (avalanche_hpc.inputs.snap.gpt.graph_parameters)")
    mem = gpt_memory(mem_gb)
    cmd = list(gpt_prefix) if gpt_prefix else ["gpt"]
    # JVM options first (install4j strips every -J argument before gpt parses the rest).
    cmd += [f"-J-Xmx{mem.heap_mb}M", f"-J-Dsnap.userdir={userdir}"]
    if orbit_dir is not None:
        cmd.append(f"-J-DOrbitFiles.sentinel1POEOrbitPath={orbit_dir}")
    cmd.append(str(graph))
    cmd += ["-q", str(int(cpus)), "-c", f"{mem.cache_mb}M", "-e"]
    cmd += [f"-P{k}={v}" for k, v in sorted(params.items())]
    return cmd
