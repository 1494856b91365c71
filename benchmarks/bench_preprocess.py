"""Benchmark the preprocess stage and the choice of store layout. Prints figures.

Measured in the same run, in one process: one core for the arithmetic, plus the background thread
that writes each shard while ``preprocess_all`` computes the next task (pin the process to one core
with ``taskset -c 0`` to measure the arithmetic and the write sharing that core):

1. **throughput and overhead** on a synthetic study (``alps`` preset; ``demo`` with
   ``--quick``; ``--study PATH`` for an existing one): patches per second per core of
   ``preprocess_all`` (deposition zones and summer references ready, as after
   ``prepare_references``), the time of one cold array task (``preprocess_task`` in a fresh
   ``StudyInputs``), and the ratio of the preprocessing time to a bare windowed read of the
   same windows (VV, VH, layover/shadow of t1 and t0; target < 2), for each store dtype
   (``patch_dtype`` float32 and float16), with the largest float16 rounding error in dB;
2. **scene area**: time per date on a plain generated study whose scene area grows 4x while
   the corridors stay fixed (target: flat);
3. **store layout**: merge time of a consolidated copy vs a virtual dataset over the shards,
   and random single-patch read throughput (what training does) from each.

    .venv/bin/python -m benchmarks.bench_preprocess [--quick] [--study PATH] [--json PATH] [--skip-scaling]

``--json PATH`` also writes the figures as JSON (key ``preprocess_over_grouped_read``: the study's
own ``patch_dtype``; ``preprocess_over_grouped_read_float16`` / ``_float32``: each dtype).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import h5py
import numpy as np
import pandas as pd
import rasterio
from shapely.geometry import box

from avalanche_hpc.inputs.grid import transform_from_origin
from avalanche_hpc.preprocess.raster import read_windows
from avalanche_hpc.preprocess.tasks import (
    StudyInputs,
    clear_process_inputs,
    list_tasks,
    prepare_references,
    preprocess_all,
    preprocess_task,
)
from avalanche_hpc.study import LAYOVER_SHADOW, OrbitConfig, SeasonConfig, Study, StudyConfig


# -- a plain scalable study: scene side grows, corridors stay put -------------------------------------
def build_plain_study(root: Path, side: int, n_corridors: int, n_winter: int, seed: int = 0, tiled: bool = True) -> Path:
    """Float32 scenes of ``side x side`` pixels (256 x 256 tiles, or GDAL's default strips);
    corridors in the top-left 1000 x 1000 pixels."""
    rng = np.random.default_rng(seed)
    pix, x0, y0 = 20.0, 900000.0, 6500000.0
    summer = [dt.date(2017, 8, 1), dt.date(2017, 8, 13)]
    winter = [dt.date(2018, 1, 1) + dt.timedelta(days=6 * i) for i in range(n_winter)]
    cfg = StudyConfig(
        name="plain", crs_epsg=2154, pixel_size_m=pix, massifs=["Vanoise"],
        orbits=[OrbitConfig(id="D139", direction="descending", relative_orbit=139)],
        seasons=[SeasonConfig(id="2017-2018", start=dt.date(2017, 12, 1), end=dt.date(2018, 4, 30),
                              summer={"D139": summer})],
    )
    root.mkdir(parents=True)
    Study.write_config(root, cfg)
    prof = dict(driver="GTiff", height=side, width=side, count=1, dtype="float32", crs="EPSG:2154",
                transform=transform_from_origin(x0, y0, pix, pix), nodata=-9999.0)
    if tiled:
        prof |= {"tiled": True, "blockxsize": 256, "blockysize": 256}
    rows = np.arange(side, dtype=np.float32)[:, None]
    cols = np.arange(side, dtype=np.float32)[None, :]
    with rasterio.open(root / "dem.tif", "w", **prof) as dst:
        dst.write(3000.0 - 1.5 * rows + 0.2 * cols, 1)
    geoms, ids = [], []
    for i in range(n_corridors):
        r, c = rng.integers(40, 960, size=2)
        geoms.append(box(x0 + (c - 3) * pix, y0 - (r + 30) * pix, x0 + (c + 3) * pix, y0 - r * pix))
        ids.append(f"c{i:05d}")
    gpd.GeoDataFrame({"path_id": ids, "massif": "Vanoise"}, geometry=geoms, crs="EPSG:2154").to_file(
        root / "corridors.gpkg", layer="corridors", driver="GPKG")
    ev = rng.choice(n_corridors, size=n_corridors // 10, replace=False)
    days = rng.integers(0, 6 * n_winter, size=len(ev))
    pd.DataFrame({"event_id": [f"e{i}" for i in range(len(ev))], "path_id": [ids[i] for i in ev],
                  "date_min": [(winter[0] + dt.timedelta(days=int(d))).isoformat() for d in days],
                  "date_max": [(winter[0] + dt.timedelta(days=int(d) + 2)).isoformat() for d in days],
                  "deposit_area_m2": 1000.0}).to_csv(root / "inventory.csv", index=False)
    base = {b: rng.gamma(4.0, 0.25, size=(side, side)).astype(np.float32) for b in ("VV", "VH")}
    mask = (rng.random((side, side)) < 0.05).astype(np.uint8)
    mprof = prof | {"dtype": "uint8", "nodata": None}
    for k, d in enumerate(summer + winter):
        folder = root / "scenes" / "D139" / d.strftime("%Y%m%d")
        folder.mkdir(parents=True)
        for band, scale in (("VV", 0.2), ("VH", 0.03)):
            with rasterio.open(folder / f"{band}.tif", "w", **prof) as dst:
                dst.write(base[band] * np.float32(scale * (1 + 0.1 * k)), 1)
        with rasterio.open(folder / f"{LAYOVER_SHADOW}.tif", "w", **mprof) as dst:
            dst.write(mask, 1)
    return root


# -- measurements ---------------------------------------------------------------------------------------
def bare_read(root: Path, grouped: bool = True) -> float:
    """Seconds to read the same windows as preprocessing (VV, VH, mask of t1 and t0 per task).

    ``grouped=True``: with the reader preprocessing uses (nearby windows served by one read of
    their bounding box); ``False``: one rasterio read per window (the naive baseline).
    """
    inputs = StudyInputs.load(root)
    study, p = inputs.study, inputs.patch_size
    r0, c0 = inputs.origins()
    t = time.perf_counter()
    for acq in list_tasks(root):
        for d in (acq.date, acq.prev_date):
            for band in ("VV", "VH", LAYOVER_SHADOW):
                path = study.scene_path(acq.orbit, d, band)
                if path.is_file():
                    with rasterio.open(path) as src:
                        read_windows(src, r0, c0, p, grouped=grouped)
    return time.perf_counter() - t


def set_patch_dtype(root: Path, dtype: str) -> None:
    """Rewrite the study's ``patch_dtype`` (the next preprocess writes shards of that dtype)."""
    study = Study.load(root)
    if study.config.patch_dtype != dtype:
        Study.write_config(root, study.config.model_copy(update={"patch_dtype": dtype}))


def float16_error(root: Path) -> dict:
    """Largest |x - float16(x)| in dB over the study's float32 shards (what a float16 store would hold)."""
    worst, worst_rel, n, biggest = 0.0, 0.0, 0, 0.0
    for shard in sorted((Study.load(root).work_dir / "shards").rglob("*.h5")):
        with h5py.File(shard, "r") as f:
            x = f["patches"][()]
        if x.dtype != np.float32:
            continue
        ok = np.isfinite(x)
        v = x[ok]
        err = np.abs(v - v.astype(np.float16).astype(np.float32))
        if err.size:
            i = int(np.argmax(err))
            if err[i] > worst:
                worst = float(err[i])
            worst_rel = max(worst_rel, float(np.max(err / np.maximum(np.abs(v), 1e-30))))
            biggest = max(biggest, float(np.abs(v).max()))
        n += int(ok.sum())
        if not np.array_equal(np.isnan(x), np.isnan(x.astype(np.float16))):
            raise AssertionError(f"{shard}: NaN pattern changed by float16")
    return {"float16_max_abs_error_db": worst, "float16_max_rel_error": worst_rel, "values": n,
            "max_abs_db": biggest}


def preprocess_figures(root: Path, repeat: int | None = None, dtypes: list[str] | None = None,
                       naive: bool = True) -> dict:
    """Best of ``repeat`` runs of each measurement (the machine is shared: the minimum is the signal);
    by default 3, or 2 for studies of more than 50 000 patches.

    ``dtypes``: store dtypes to time (``patch_dtype``), interleaved with the bare read in every
    repeat so that a change of load hits all of them alike; the study's own dtype is restored."""
    t = time.perf_counter()
    prepare_references(root)
    t_refs = time.perf_counter() - t
    tasks = list_tasks(root)
    n_corr = len(StudyInputs.load(root).deposition)
    own = Study.load(root).config.patch_dtype
    dtypes = dtypes or [own]
    if repeat is None:
        repeat = 3 if len(tasks) * n_corr <= 50_000 else 2
    bare_read(root)  # warm the OS cache for every measurement
    t_bare, t_naive, t_cold = [], [], []
    t_pre: dict[str, list[float]] = {d: [] for d in dtypes}
    size: dict[str, int] = {}
    a = tasks[len(tasks) // 2]
    for _ in range(repeat):
        t_bare.append(bare_read(root))
        if naive:
            t_naive.append(bare_read(root, grouped=False))
        for dtype in dtypes:
            set_patch_dtype(root, dtype)
            t = time.perf_counter()
            preprocess_all(root, force=True, progress=False, check=False)
            t_pre[dtype].append(time.perf_counter() - t)
            size[dtype] = sum(p.stat().st_size for p in (Study.load(root).work_dir / "shards").rglob("*.h5"))
        clear_process_inputs()  # a fresh process state: the study tables are loaded again
        t = time.perf_counter()
        preprocess_task(root, a.season, a.orbit, a.date, force=True)
        t_cold.append(time.perf_counter() - t)
    set_patch_dtype(root, own)
    preprocess_all(root, progress=False, check=False)  # the study's own dtype again (not timed)
    t = time.perf_counter()
    preprocess_all(root, progress=False, check=False)
    t_skip = time.perf_counter() - t
    pre = {d: min(v) for d, v in t_pre.items()}
    return {"tasks": len(tasks), "corridors": n_corr, "patches": len(tasks) * n_corr, "t_refs": t_refs,
            "t_bare": min(t_bare), "t_naive": min(t_naive) if t_naive else float("nan"),
            "t_pre": pre.get(own, next(iter(pre.values()))), "t_pre_by_dtype": pre, "bytes_by_dtype": size,
            "t_cold": min(t_cold), "t_skip": t_skip}


def merge_figures(work: Path, n_shards: int, per_shard: int, patch: int = 64, n_reads: int = 3000) -> dict:
    """Both layouts over the same ``n_shards`` shards (written with ``store.write_patches``),
    built by the functions ``merge_store`` uses; random single-patch reads, best of 3."""
    from avalanche_hpc.store.layout import META_COLUMNS, write_patches
    from avalanche_hpc.store.merge import _merge_consolidated, _merge_virtual

    rng = np.random.default_rng(0)
    shard_dir = work / "layout" / "shards"
    shards, metas = [], []
    for k in range(n_shards):
        meta = pd.DataFrame({c: ([f"{k}-{i}" for i in range(per_shard)] if kind == "str" else np.zeros(per_shard, kind))
                             for c, kind in META_COLUMNS.items()})
        arr = rng.normal(0, 1, size=(per_shard, 3, patch, patch)).astype(np.float32)
        path = write_patches(shard_dir / f"{k:05d}.h5", arr, meta)
        shards.append((str(k), path, ""))
        metas.append(meta)
    meta = pd.concat(metas, ignore_index=True)
    sizes = [per_shard] * n_shards
    out = {"n": len(meta), "shards": n_shards}
    for layout, fn in (("consolidated", _merge_consolidated), ("virtual", _merge_virtual)):
        store = work / "layout" / f"{layout}.h5"
        t = time.perf_counter()
        if layout == "consolidated":
            fn(store, shards, sizes, meta, {}, patch, False)
        else:
            fn(store, shards, sizes, meta, {}, patch)
        out[f"merge_{layout}"] = time.perf_counter() - t
        out[f"size_{layout}"] = store.stat().st_size
        best = 0.0
        for _ in range(3):
            rows = rng.integers(0, len(meta), size=n_reads)
            with h5py.File(store, "r") as f:
                ds = f["patches"]
                t = time.perf_counter()
                for r in rows:
                    ds[int(r)]
                best = max(best, n_reads / (time.perf_counter() - t))
        out[f"reads_{layout}"] = best
    shutil.rmtree(work / "layout")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="demo preset and a smaller scaling study")
    ap.add_argument("--study", type=Path, default=None,
                    help="an existing study instead of a generated one (used in place: rewrites its work/ folder)")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    ap.add_argument("--skip-scaling", action="store_true", help="skip sections 2 and 3 (scene area, store layout)")
    ap.add_argument("--dtypes", default="float32,float16", help="store dtypes to measure, comma-separated")
    ap.add_argument("--skip-naive", action="store_true", help="skip the naive one-read-per-window baseline")
    ap.add_argument("--repeat", type=int, default=None, help="best of N runs of each measurement (default 3, or 2 "
                                                            "above 50 000 patches)")
    args = ap.parse_args()
    figures: dict = {"quick": bool(args.quick)}
    os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
    tmp_ctx = tempfile.TemporaryDirectory() if args.keep is None else None
    work = Path(tmp_ctx.name) if tmp_ctx else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        # 1. throughput and overhead
        root = args.study
        if root is None:
            preset = "demo" if args.quick else "alps"
            try:
                from avalanche_hpc.synth import generate_study

                t = time.perf_counter()
                root = generate_study(work / preset, preset=preset, seed=0, overwrite=True)
                print(f"generated synth preset {preset!r} in {time.perf_counter() - t:.1f} s")
            except ImportError:
                side = 1000 if args.quick else 2000
                root = build_plain_study(work / "plain-main", side, 300 if args.quick else 1500, 6 if args.quick else 12)
                print(f"synth not available: plain study {side}x{side} px")
        else:
            print(f"study {root} (used in place: its work/ folder is rewritten)")
        os.sync()
        own_dtype = Study.load(root).config.patch_dtype
        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        set_patch_dtype(root, "float32")
        preprocess_all(root, progress=False, check=False)
        figures.update(float16_error(root))  # from float32 shards: what float16 would store
        set_patch_dtype(root, own_dtype)
        f = preprocess_figures(root, args.repeat, dtypes, naive=not args.skip_naive)
        for dtype in dtypes:
            figures[f"preprocess_over_grouped_read_{dtype}"] = f["t_pre_by_dtype"][dtype] / f["t_bare"]
            figures[f"preprocess_s_{dtype}"] = f["t_pre_by_dtype"][dtype]
            figures[f"shards_bytes_{dtype}"] = f["bytes_by_dtype"][dtype]
        figures.update({"cores_allowed": len(os.sched_getaffinity(0)), "study": root.name, "tasks": f["tasks"], "patches": f["patches"], "grouped_read_s": f["t_bare"],
                        "naive_read_s": f["t_naive"], "preprocess_s": f["t_pre"],
                        "preprocess_over_grouped_read": f["t_pre"] / f["t_bare"],
                        "preprocess_over_naive_read": f["t_pre"] / f["t_naive"], "cold_task_s": f["t_cold"],
                        "skip_s": f["t_skip"], "patch_dtype": own_dtype})
        print(f"\n== preprocess (one process; {len(os.sched_getaffinity(0))} cores allowed) ==")
        print(f"study: {root.name}, tasks: {f['tasks']}, corridors: {f['corridors']}, patches: {f['patches']}")
        print(f"deposition + summer references      : {f['t_refs']:8.2f} s (once per study / orbit-season)")
        print(f"bare windowed read of the same windows: {f['t_bare']:8.2f} s (grouped reader, as preprocessing)")
        print(f"naive read, one rasterio read/window: {f['t_naive']:8.2f} s")
        print(f"preprocess_all (force)              : {f['t_pre']:8.2f} s  -> {f['patches'] / f['t_pre']:.0f} patches/s/core, "
              f"{1000 * f['t_pre'] / max(f['tasks'], 1):.0f} ms/task")
        bare_task = f["t_bare"] / max(f["tasks"], 1)
        print(f"ratio preprocess_all / bare read    : {f['t_pre'] / f['t_bare']:8.2f}  (target < 2; in-process runs read each date once)")
        print(f"ratio preprocess_all / naive read   : {f['t_pre'] / f['t_naive']:8.2f}")
        print(f"one cold array task (fresh process state): {f['t_cold']:8.3f} s; bare read of its windows {bare_task:.3f} s "
              f"-> ratio {f['t_cold'] / bare_task:.2f}")
        print(f"second run, all tasks skipped       : {f['t_skip']:8.2f} s")
        for dtype in dtypes:
            print(f"store dtype {dtype}: preprocess_all {f['t_pre_by_dtype'][dtype]:8.2f} s, shards "
                  f"{f['bytes_by_dtype'][dtype] / 2**20:8.1f} MiB, ratio preprocess / grouped read "
                  f"{f['t_pre_by_dtype'][dtype] / f['t_bare']:6.2f} (same run, interleaved, same windows)")
        if "float16_max_abs_error_db" in figures:
            print(f"float16 rounding: largest error {figures['float16_max_abs_error_db']:.4f} dB "
                  f"(relative {figures['float16_max_rel_error']:.2g}; values up to {figures['max_abs_db']:.1f} dB, "
                  f"{figures['values']} finite values); NaN pattern unchanged")
        if args.skip_scaling:
            return _write_json(args.json, figures)

        # 2. scene area x4, corridors fixed
        small = 1000 if args.quick else 2000
        n_corr, n_win = (200, 4) if args.quick else (800, 6)
        print(f"\n== scene area x4, {n_corr} corridors fixed, {n_win - 1} tasks ==")
        for tiled in (True, False):
            studies = {side: build_plain_study(work / f"plain-{side}", side, n_corr, n_win, tiled=tiled)
                       for side in (small, 2 * small)}
            os.sync()  # let the freshly written scenes reach the disk before timing reads of them
            time.sleep(2)
            per_date = {}
            for side, r in studies.items():
                g = preprocess_figures(r)
                per_date[side] = g["t_pre"] / g["tasks"]
                print(f"{'tiled 256' if tiled else 'striped  '} {side}x{side} px ({side * side * 4e-4:.0f} km2 at 20 m): "
                      f"{1000 * per_date[side]:7.1f} ms/date (bare read {1000 * g['t_bare'] / g['tasks']:.1f} ms/date)")
            for r in studies.values():
                shutil.rmtree(r)
            print(f"{'tiled 256' if tiled else 'striped  '} ratio time per date, 4x area / 1x: "
                  f"{per_date[2 * small] / per_date[small]:6.2f}  (target ~1)")

        # 3. store layout
        n_shards, per_shard = (50, 60) if args.quick else (300, 60)
        m = merge_figures(work, n_shards, per_shard)
        print(f"\n== store layout: {m['shards']} shards x {per_shard} patches = {m['n']} patches of 3x64x64 ==")
        for layout in ("consolidated", "virtual"):
            print(f"{layout:12s}: merge {m[f'merge_{layout}']:7.2f} s, file {m[f'size_{layout}'] / 2**20:8.1f} MiB, "
                  f"random single-patch reads {m[f'reads_{layout}']:8.0f} /s (best of 3)")
        figures["layout"] = m
        _write_json(args.json, figures)
    finally:
        if tmp_ctx:
            tmp_ctx.cleanup()


def _write_json(path: Path | None, figures: dict) -> None:
    if path is not None:
        from benchmarks.bench_train import write_figures

        write_figures(path, figures)


if __name__ == "__main__":
    main()
