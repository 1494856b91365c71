"""The ``snap`` pipeline step: one task per Sentinel-1 GRD product -> ``scenes/{orbit}/{YYYYMMDD}/``.

Per task (``snap_product``):

1. parse the product name; its relative orbit picks the study orbit (``products.py``);
2. check the fetched orbit file, DEM and geoid (``auxdata.verify_auxdata``) -- before gpt starts;
3. run ``gpt grd_to_sigma0.xml`` (inside the image when the profile names one) into
   ``work/snap/raw/{orbit}/{YYYYMMDD}/{product}.tif`` via a temporary name + rename;
4. assemble the date: every raw output of that (orbit, date) -- several slices of one pass --
   is warped (nearest, the graph already aligned it to the DEM lattice) onto the exact grid of
   ``dem.tif`` and mosaicked (first valid pixel wins), then ``VV.tif``, ``VH.tif`` and
   ``layover_shadow.tif`` are written atomically with a ``snap_sources.json`` listing the
   products they hold.

A task is complete when its raw output exists and the date's ``snap_sources.json`` lists it;
complete tasks are skipped, so a re-run after a crash finishes the work. The task that
finishes last for a date sees every slice and writes the complete mosaic.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avalanche_hpc.atomic import atomic_path, write_json
from avalanche_hpc.errors import InputError, MissingInputError, Problem, StageError
from avalanche_hpc.hpc.container import as_profile, container_prefix, profile_field
from avalanche_hpc.inputs.products import S1Product, list_products, parse_product_name
from avalanche_hpc.inputs.snap import gpt as gptmod
from avalanche_hpc.inputs.snap.auxdata import (
    auxdata_dir,
    link_auxdata,
    orbit_dir,
    require_auxdata,
    snap_work_dir,
    staged_dem_path,
)
from avalanche_hpc.preprocess.raster import UNITS_TAG
from avalanche_hpc.progress import progress_bar
from avalanche_hpc.study import LAYOVER_SHADOW, Study, fmt_yyyymmdd

log = logging.getLogger(__name__)

SCENE_NODATA = -9999.0  # float32 sigma0 scenes (linear power)
MASK_NODATA = 255  # uint8 layover_shadow.tif outside every footprint
SOURCES_JSON = "snap_sources.json"
REQUIRED_POLS = ("VV", "VH")


@dataclass(frozen=True)
class SnapTask:
    """One array task: a GRD product and where its output goes."""

    product: S1Product
    orbit: str  # study orbit id (folder under scenes/)
    date: dt.date

    @property
    def key(self) -> str:
        return f"{self.orbit}/{fmt_yyyymmdd(self.date)}/{self.product.name}"


def raw_path(study: Study, task: SnapTask) -> Path:
    return snap_work_dir(study) / "raw" / task.orbit / fmt_yyyymmdd(task.date) / f"{task.product.name}.tif"


def _sources(study: Study, orbit: str, date: dt.date) -> list[str]:
    p = study.scene_dir(orbit, date) / SOURCES_JSON
    if not p.is_file():
        return []
    try:
        return list(json.loads(p.read_text(encoding="utf-8")).get("products", []))
    except (json.JSONDecodeError, AttributeError):
        return []


def task_is_complete(study: Study, task: SnapTask) -> bool:
    scene = study.scene_dir(task.orbit, task.date)
    return (raw_path(study, task).is_file() and task.product.name in _sources(study, task.orbit, task.date)
            and all((scene / f"{b}.tif").is_file() for b in (*REQUIRED_POLS, LAYOVER_SHADOW)))


def list_snap_tasks(root: Path, products: str | Path | Sequence[str | Path]) -> list[SnapTask]:
    """Every task (one per GRD product), validated: names, dual-pol VV+VH, orbit in the study.

    All problems are reported together (InputError) before anything runs.
    """
    study = Study.load(root)
    prods = list_products(list(products) if isinstance(products, (list, tuple)) else products)
    problems: list[Problem] = []
    tasks: list[SnapTask] = []
    for p in prods:
        if not set(REQUIRED_POLS) <= set(p.bands):
            problems.append(Problem(str(p.path), f"polarisation {p.polarisation}",
                                    f"holds {'+'.join(p.bands)}; the study contract needs VV and VH",
                                    "use dual-polarisation VV+VH products (1SDV)"))
            continue
        try:
            orbit = p.study_orbit(study.config)
        except InputError as e:
            problems.extend(e.problems)
            continue
        tasks.append(SnapTask(product=p, orbit=orbit.id, date=p.date))
    if problems:
        raise InputError(problems)
    return tasks


def inside_container() -> bool:
    """True inside an Apptainer/Singularity or Charliecloud container (each sets one of these variables)."""
    return bool(os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
                or os.environ.get("CH_RUNNING"))


def _grid(study: Study) -> tuple[Any, int, int]:
    import rasterio

    if not study.dem_path.is_file():
        raise InputError(Problem(str(study.dem_path), "", "missing: dem.tif defines the output grid of the scenes",
                                 "see docs/data-contract.md (dem.tif)"))
    with rasterio.open(study.dem_path) as ds:
        return ds.transform, ds.height, ds.width


def task_command(study: Study, task: SnapTask, *, cpus: int | None = None, mem_gb: float | None = None,
                 graph: Path | None = None, profile: Any = None, scratch: Path | None = None,
                 output: Path | None = None) -> tuple[list[str], Path]:
    """(gpt argv, per-task SNAP user dir) for one task (resources: given, else the SLURM allocation)."""
    cpus, mem_gb = gptmod.task_resources(cpus, mem_gb)
    graph = Path(graph) if graph is not None else gptmod.default_graph()
    transform, _, _ = _grid(study)
    profile = as_profile(profile)
    scratch = Path(scratch or profile_field(profile, "scratch") or os.environ.get("TMPDIR")
                   or tempfile.gettempdir()).absolute()
    job = os.environ.get("SLURM_JOB_ID", "local")
    array = os.environ.get("SLURM_ARRAY_TASK_ID", str(os.getpid()))
    userdir = scratch / f"snap-userdir-{job}-{array}-{task.product.unique_id}"
    prefix = None
    if profile is not None and not inside_container():  # already in the image: its gpt is on PATH
        prefix = container_prefix(profile, extra_binds=[study.root.absolute(), scratch,
                                                        task.product.path.absolute().parent], nv=False)
    params = gptmod.graph_parameters(  # absolute paths: gpt may run in another working directory
        input_path=task.product.path.absolute(), output_path=(output or raw_path(study, task)).absolute(),
        dem_path=staged_dem_path(study).absolute(),
        crs_epsg=study.config.crs_epsg, pixel_size_m=study.config.pixel_size_m,
        grid_origin=(transform.c, transform.f), polarisations=REQUIRED_POLS)
    gpt_prefix = gptmod.find_gpt(prefix) if prefix is not None else _local_gpt()
    cmd = gptmod.gpt_command(graph, params, cpus=cpus, mem_gb=mem_gb, userdir=userdir,
                             orbit_dir=orbit_dir(study).absolute(), gpt_prefix=gpt_prefix)
    return cmd, userdir


def require_products_exist(tasks: Sequence[SnapTask]) -> None:
    missing = [Problem(str(t.product.path), "", "product not found", "check --products (paths are read as given)")
               for t in tasks if not t.product.path.exists()]
    if missing:
        raise InputError(missing)


def _local_gpt() -> list[str] | None:
    try:
        return gptmod.find_gpt()
    except MissingInputError:
        return None  # dry runs still print "gpt ..."; real runs fail with the clear error first


def assemble_scene(study: Study, orbit: str, date: dt.date) -> list[Path]:
    """Mosaic every raw output of (orbit, date) onto the dem.tif grid; write VV, VH, layover_shadow atomically."""
    import numpy as np
    import rasterio
    from rasterio.warp import Resampling, reproject

    raws = sorted((snap_work_dir(study) / "raw" / orbit / fmt_yyyymmdd(date)).glob("*.tif"))
    raws = [r for r in raws if ".tmp-" not in r.name and ".partial" not in r.name]
    if not raws:
        raise StageError(f"no SNAP outputs for orbit {orbit} on {date} in {snap_work_dir(study) / 'raw'}")
    transform, h, w = _grid(study)
    crs = f"EPSG:{study.config.crs_epsg}"
    bands = {pol: np.full((h, w), np.nan, dtype="float32") for pol in REQUIRED_POLS}
    mask = np.full((h, w), MASK_NODATA, dtype="uint8")
    for raw in raws:
        with rasterio.open(raw) as src:
            n = len(REQUIRED_POLS) + 1
            if src.count != n:
                raise StageError(f"{raw}: {src.count} band(s), expected {n} (Sigma0_VV, Sigma0_VH, layoverShadowMask) "
                                 "-> was it written by containers/graphs/grd_to_sigma0.xml? delete it and re-run")
            for i, pol in enumerate(REQUIRED_POLS, start=1):
                warped = np.full((h, w), np.nan, dtype="float32")
                # SNAP's Terrain-Correction writes 0 outside the swath (band no-data value 0.0)
                reproject(rasterio.band(src, i), warped, src_nodata=src.nodata if src.nodata is not None else 0.0,
                          dst_transform=transform, dst_crs=crs, dst_nodata=np.nan, resampling=Resampling.nearest)
                fill = np.isnan(bands[pol]) & np.isfinite(warped) & (warped > 0)
                bands[pol][fill] = warped[fill]
            tmpm = np.full((h, w), MASK_NODATA, dtype="uint8")
            covered = np.full((h, w), np.nan, dtype="float32")
            reproject(rasterio.band(src, 1), covered, src_nodata=src.nodata if src.nodata is not None else 0.0,
                      dst_transform=transform, dst_crs=crs, dst_nodata=np.nan, resampling=Resampling.nearest)
            reproject(rasterio.band(src, n), tmpm, dst_transform=transform, dst_crs=crs,
                      resampling=Resampling.nearest)
            fillm = (mask == MASK_NODATA) & np.isfinite(covered)
            mask[fillm] = np.clip(tmpm[fillm], 0, 3)
    vv, vh = (bands[p][np.isfinite(bands[p])] for p in REQUIRED_POLS)
    if vv.size and vh.size and np.median(vh) > np.median(vv):
        log.warning("orbit %s %s: median VH sigma0 %.4g exceeds VV %.4g; co-pol is normally the stronger -- "
                    "check the band order of the SNAP outputs in %s", orbit, date, np.median(vh), np.median(vv),
                    raws[0].parent)
    out: list[Path] = []
    base = dict(driver="GTiff", width=w, height=h, count=1, crs=crs, transform=transform,
                tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    for pol, arr in bands.items():
        arr = np.where(np.isnan(arr), np.float32(SCENE_NODATA), arr).astype("float32")
        target = study.scene_path(orbit, date, pol)
        with atomic_path(target) as tmp:
            with rasterio.open(tmp, "w", dtype="float32", nodata=SCENE_NODATA, **base) as dst:
                dst.write(arr, 1)
                dst.update_tags(**{UNITS_TAG: "linear"}, QUANTITY=f"sigma0 {pol}", SOURCE="SNAP gpt grd_to_sigma0.xml")
        out.append(target)
    target = study.scene_path(orbit, date, LAYOVER_SHADOW)
    with atomic_path(target) as tmp:
        with rasterio.open(tmp, "w", dtype="uint8", nodata=MASK_NODATA, **base) as dst:
            dst.write(mask, 1)
            dst.update_tags(CODES="0 valid, 1 layover, 2 shadow, 3 both, 255 outside the swath")
        out.append(target)
    write_json(study.scene_dir(orbit, date) / SOURCES_JSON,
               {"products": [r.stem for r in raws], "grid": "dem.tif", "units": "linear"})
    return out


def run_gpt(cmd: list[str], userdir: Path, study: Study, task: SnapTask) -> None:
    """Run one gpt command line into a temporary output, then rename it onto the raw output."""
    link_auxdata(study, userdir)
    target = raw_path(study, task).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.partial-{os.getpid()}.tif")  # gpt's writer wants a .tif name
    if f"-Poutput={target}" not in cmd:
        raise StageError(f"internal: the gpt command for {task.key} does not write {target}")
    cmd = [f"-Poutput={tmp}" if c == f"-Poutput={target}" else c for c in cmd]
    log.info("gpt %s", task.key)
    try:
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0 or not tmp.is_file():
            raise StageError(f"gpt failed for {task.product.path} (exit {proc.returncode}); the command was:\n  "
                             + shlex.join(cmd) + "\n-> see the task log above for SNAP's message")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def snap_product(root: Path, product_path: str | Path, *, cpus: int | None = None, mem_gb: float | None = None,
                 graph: Path | None = None, profile: Any = None, scratch: Path | None = None,
                 dry_run: bool = False, force: bool = False) -> list[str] | Path | None:
    """One array task: the gpt command line on ``dry_run``; else the scene folder (None when skipped)."""
    study = Study.load(root)
    task, = list_snap_tasks(root, [product_path])
    if not force and not dry_run and task_is_complete(study, task):
        log.info("skip %s (complete)", task.key)
        return None
    cmd, userdir = task_command(study, task, cpus=cpus, mem_gb=mem_gb, graph=graph, profile=profile, scratch=scratch)
    if dry_run:
        return cmd
    if force or not raw_path(study, task).is_file():
        require_products_exist([task])
        require_auxdata(study, [task.product])  # before gpt starts
        if profile is None or inside_container():
            gptmod.find_gpt()  # clear error when gpt is missing and no image is configured
        run_gpt(cmd, userdir, study, task)
    assemble_scene(study, task.orbit, task.date)
    return study.scene_dir(task.orbit, task.date)


def snap_products(root: Path, products: str | Path | Sequence[str | Path], dry_run: bool = False, *,
                  cpus: int | None = None, mem_gb: float | None = None, graph: Path | None = None,
                  profile: Any = None, scratch: Path | None = None, force: bool = False,
                  progress: bool = True) -> list[list[str]] | list[Path]:
    """All tasks in this process (the laptop path; SLURM runs ``snap_product`` per array task).

    Validates every product, the graph, gpt and the staged auxdata before the first gpt starts.
    Returns the command lines on ``dry_run``, else the scene folders written.
    """
    study = Study.load(root)
    tasks = list_snap_tasks(root, products)
    profile = as_profile(profile)  # a TOML path is read once, not once per task
    if dry_run:
        return [task_command(study, t, cpus=cpus, mem_gb=mem_gb, graph=graph, profile=profile, scratch=scratch)[0]
                for t in tasks]
    todo = [t for t in tasks if force or not task_is_complete(study, t)]
    if not todo:
        return []
    require_products_exist(todo)
    require_auxdata(study, [t.product for t in todo])
    for t in todo:  # every command line is built (and checked) before the first runs
        task_command(study, t, cpus=cpus, mem_gb=mem_gb, graph=graph, profile=profile, scratch=scratch)
    if profile is None or inside_container():
        gptmod.find_gpt()
    out: list[Path] = []
    with progress_bar(enabled=progress, transient=True) as bar:
        job = bar.add_task("snap", total=len(todo), detail="")
        for t in todo:
            bar.update(job, detail=t.product.path.name)
            res = snap_product(root, t.product.path, cpus=cpus, mem_gb=mem_gb, graph=graph, profile=profile,
                               scratch=scratch, force=force)
            if isinstance(res, Path) and res not in out:
                out.append(res)
            bar.advance(job)
    return out


def list_tasks(root: Path, products: str | Path | Sequence[str | Path]) -> list[Path]:
    """Product paths of the tasks still to run (for the SLURM launcher: one array task each)."""
    study = Study.load(root)
    return [t.product.path for t in list_snap_tasks(root, products) if not task_is_complete(study, t)]


__all__ = [
    "SnapTask",
    "assemble_scene",
    "auxdata_dir",
    "list_snap_tasks",
    "list_tasks",
    "parse_product_name",
    "snap_product",
    "snap_products",
    "task_command",
    "task_is_complete",
]
