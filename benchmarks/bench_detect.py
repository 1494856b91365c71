"""Benchmark detection: latency of a new acquisition date, backbone precision, memory. Prints figures.

Measured in one run on a study (``alps`` preset: 3,000 corridors; ``--study PATH``), with an
experiment trained on it (``--prepare`` makes the store and a small model when absent: one seed,
2 epochs, 1 view - the model's quality does not change the cost):

1. **latency of a new date**: for the last acquisition of an orbit, the time from its scenes to
   its detections = ``preprocess_task`` (cold, as an array task) + ``detect_task`` (cold: the
   detector loaded in the call, the part written), against the bare windowed read of that
   date's windows (VV, VH, layover/shadow at t1 and t0, the grouped reader preprocessing uses)
   in the same run; plus the time to republish the GeoPackage with every date (not needed to
   have the date's detections: its part file is them);
2. **precision**: the date's observed corridors scored in float32 and in bfloat16 autocast +
   channels-last: patches/s of each, max |p_bf16 - p_fp32| and the share of decisions agreeing
   at the recorded threshold;
3. **memory**: peak RSS of a fresh process scoring 1 date and N dates (``--dates``, default 30)
   and publishing them (the process's own baseline - Python, torch, the model - is printed too).

    nice .venv/bin/python -m benchmarks.bench_detect --study /tmp/alps --prepare [--dates 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

EXPERIMENT = "bench"


def prepare(root: Path, experiment: str) -> dict:
    from avalanche_hpc.learn.baseline import baseline_run
    from avalanche_hpc.learn.train import train_run
    from avalanche_hpc.preprocess.tasks import preprocess_all
    from avalanche_hpc.store.merge import merge_store

    out = {}
    t = time.perf_counter()
    preprocess_all(root, progress=False)
    merge_store(root)
    out["t_store"] = time.perf_counter() - t
    t = time.perf_counter()
    train_run(root, experiment, seed=0, weights="none", max_epochs=2, n_views=1, patience=5, progress=False,
              checkpoint_interval_s=1e9)
    baseline_run(root, experiment)
    out["t_train"] = time.perf_counter() - t
    return out


def bare_read_date(root: Path, acq) -> float:
    """Seconds to read the windows of one task (VV, VH, mask at t1 and t0) with preprocessing's reader."""
    from avalanche_hpc.preprocess.raster import read_windows
    from avalanche_hpc.preprocess.tasks import StudyInputs
    from avalanche_hpc.study import LAYOVER_SHADOW

    inputs = StudyInputs.load(root)
    r0, c0 = inputs.origins()
    t = time.perf_counter()
    for d in (acq.date, acq.prev_date):
        for band in ("VV", "VH", LAYOVER_SHADOW):
            path = inputs.study.scene_path(acq.orbit, d, band)
            if path.is_file():
                with rasterio.open(path) as src:
                    read_windows(src, r0, c0, inputs.patch_size)
    return time.perf_counter() - t


def latency(root: Path, experiment: str, acq, settings, repeat: int = 2) -> dict:
    from avalanche_hpc.detect import detect_task, publish_detections
    from avalanche_hpc.detect import model as dmodel
    from avalanche_hpc.preprocess.tasks import preprocess_task

    bare_read_date(root, acq)  # warm the OS cache, as every measurement below finds it
    wall: dict[str, list[float]] = {"bare": [], "pre": [], "detect": []}
    cpu: dict[str, list[float]] = {"bare": [], "pre": [], "detect": []}

    def timed(key, fn):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall[key].append(time.perf_counter() - t)
        cpu[key].append(time.process_time() - c)

    for _ in range(repeat):
        timed("bare", lambda: bare_read_date(root, acq))
        timed("pre", lambda: preprocess_task(root, acq.season, acq.orbit, acq.date, force=True))
        dmodel._DETECTORS.clear()  # cold: the detector is loaded in the call, as in a fresh array task
        timed("detect", lambda: detect_task(root, experiment, acq.season, acq.orbit, acq.date, settings, force=True))
    t = time.perf_counter()
    publish_detections(root, experiment, settings, force=True)
    out = {f"t_{k}": min(v) for k, v in wall.items()} | {f"cpu_{k}": min(v) for k, v in cpu.items()}
    return out | {"t_publish_all": time.perf_counter() - t}


def precision(root: Path, experiment: str, acq, n_rows: int = 0, repeat: int = 2) -> dict:
    from avalanche_hpc.detect.model import Detector, load_record
    from avalanche_hpc.detect.scoring import task_source
    from avalanche_hpc.store.layout import open_h5, read_meta
    from avalanche_hpc.study import Study

    study = Study.load(root)
    record = load_record(study, experiment)
    src = task_source(study, acq)
    meta = read_meta(src.path).iloc[src.start:src.stop]
    rows = np.flatnonzero(meta["valid_fraction"].to_numpy() >= 0.5)
    if n_rows:  # an evenly spaced subset (a loaded machine)
        rows = rows[np.linspace(0, len(rows) - 1, min(n_rows, len(rows))).astype(int)]
    with open_h5(src.path) as f:
        patches = f["patches"][src.start:src.stop][rows]
    out: dict = {"n": len(rows), "threshold": record["cnn"]["threshold"]["threshold"]}
    probs = {}
    for mode in ("fp32", "fp32-cl", "bf16"):
        det = Detector(record, root, mode=mode)
        det.cnn_prob(patches[:16])
        best = best_cpu = float("inf")
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            p = np.concatenate([det.cnn_prob(patches[a:a + 128]) for a in range(0, len(patches), 128)])
            best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
        key = {"fp32": "fp32", "fp32-cl": "fp32_cl", "bf16": "bf16_cl"}[mode]
        probs[key] = p
        out[f"{key}_patches_per_s"] = len(patches) / best
        out[f"{key}_patches_per_cpu_s"] = len(patches) / best_cpu

    out["max_abs_dprob"] = float(np.max(np.abs(probs["bf16_cl"] - probs["fp32"])))
    thr = out["threshold"]
    out["decision_agreement"] = float(np.mean((probs["bf16_cl"] >= thr) == (probs["fp32"] >= thr)))
    out["chosen"] = record["precision"]["mode"]
    return out


CHILD = """
import json, resource, sys, time
from pathlib import Path
root, experiment, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
from avalanche_hpc.detect import DetectSettings, publish_detections
from avalanche_hpc.detect.model import get_detector, load_record
from avalanche_hpc.detect.scoring import _run, list_detect_tasks
from avalanche_hpc.study import Study
study = Study.load(root)
record = load_record(study, experiment)
get_detector(record, root)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
acqs = list_detect_tasks(study)[:n]
t, c = time.perf_counter(), time.process_time()
for a in acqs:
    _run(study, experiment, a, DetectSettings(), record, force=True, progress=False)
t_score, cpu_score = time.perf_counter() - t, time.process_time() - c
peak_score = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
publish_detections(root, experiment, DetectSettings(), force=True)
print(json.dumps({"dates": len(acqs), "baseline_kib": base, "peak_score_kib": peak_score, "cpu_score": cpu_score,
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "t_score": t_score,
                  "t_publish": time.perf_counter() - t}))
"""


def memory(root: Path, experiment: str, n_dates: int) -> dict:
    from avalanche_hpc.study import Study

    parts = Study.load(root).detection_paths(experiment).parts_dir
    shutil.rmtree(parts, ignore_errors=True)  # only the dates scored here are published
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), experiment, str(n_dates)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", type=Path, required=True, help="a study (e.g. made by 'avalanche-hpc synth --preset alps')")
    ap.add_argument("--experiment", default=EXPERIMENT)
    ap.add_argument("--prepare", action="store_true", help="preprocess, merge and train a small model when absent")
    ap.add_argument("--dates", type=int, default=30, help="dates scored for the memory figure (default 30)")
    ap.add_argument("--precision-rows", type=int, default=0,
                    help="corridors of the date used for the precision figures (default all)")
    ap.add_argument("--repeat", type=int, default=2, help="repetitions of each timing (the best is kept)")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    from avalanche_hpc.detect import DetectSettings, prepare_model
    from avalanche_hpc.detect.scoring import list_detect_tasks
    from avalanche_hpc.store.layout import read_attrs
    from avalanche_hpc.study import Study

    root = args.study
    if args.prepare:
        print("prepare:", prepare(root, args.experiment))
    study = Study.load(root)
    settings = DetectSettings()
    t = time.perf_counter()
    record = prepare_model(study, args.experiment, settings.split, settings.precision)
    t_record = time.perf_counter() - t
    acqs = list_detect_tasks(study)
    acq = [a for a in acqs if a.orbit == acqs[0].orbit][-1]  # the newest date of the first orbit
    n_corr = len(study.read_corridors())
    print(f"study {root}: {n_corr} corridors, {len(acqs)} acquisitions with patches, store "
          f"{read_attrs(study.store_path).get('n_shards')} shards; experiment {args.experiment}")
    print(f"model record (checks, threshold, precision check): {t_record:.1f} s; precision chosen "
          f"{record['precision']['mode']} ({json.dumps({k: v for k, v in record['precision'].items() if k != 'rule'})})")

    p = precision(root, args.experiment, acq, args.precision_rows, args.repeat)
    print(f"\n== precision, date {acq.key} ({p['n']} observed corridors)")
    for key, name in (("fp32", "float32"), ("fp32_cl", "float32, channels-last"), ("bf16", "bfloat16 autocast"),
                      ("bf16_cl", "bfloat16 autocast, channels-last")):
        print(f"{name:34s}: {p[key + '_patches_per_s']:7.1f} patches/s ({p[key + '_patches_per_s'] / p['fp32_patches_per_s']:.2f}x "
              f"float32), {p[key + '_patches_per_cpu_s']:7.1f} patches/CPU s "
              f"({p[key + '_patches_per_cpu_s'] / p['fp32_patches_per_cpu_s']:.2f}x)")
    print(f"bf16 (channels-last) vs fp32: max |dp| {p['max_abs_dprob']:.4f}, decisions agreeing {100 * p['decision_agreement']:.2f} % "
          f"at threshold {p['threshold']:.4f}")

    lat = latency(root, args.experiment, acq, settings, args.repeat)
    total, total_cpu = lat["t_pre"] + lat["t_detect"], lat["cpu_pre"] + lat["cpu_detect"]
    print(f"\n== latency of a new date ({acq.key}, {n_corr} corridors; wall s / process CPU s, load avg "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"bare windowed read of the date : {lat['t_bare']:7.2f} s / {lat['cpu_bare']:7.2f} s")
    print(f"preprocess_task (cold)         : {lat['t_pre']:7.2f} s / {lat['cpu_pre']:7.2f} s")
    print(f"detect_task (cold, {record['precision']['mode']})      : {lat['t_detect']:7.2f} s / {lat['cpu_detect']:7.2f} s")
    print(f"scenes -> detections           : {total:7.2f} s / {total_cpu:7.2f} s = {total / lat['t_bare']:.1f}x the bare "
          f"read (goal < 60 s; operational anchor ~600 s)")
    print(f"republish GeoPackage, all dates: {lat['t_publish_all']:7.2f} s")

    print("\n== memory (fresh process: score N dates, then publish them)")
    for n in (1, args.dates):
        m = memory(root, args.experiment, n)
        print(f"{m['dates']:3d} date(s): peak RSS {m['peak_kib'] / 1024:7.0f} MiB (after loading the model "
              f"{m['baseline_kib'] / 1024:.0f} MiB; scoring peak {m['peak_score_kib'] / 1024:.0f} MiB); scoring "
              f"{m['t_score']:.1f} s ({m['cpu_score']:.1f} CPU s), publish {m['t_publish']:.1f} s")


if __name__ == "__main__":
    main()
