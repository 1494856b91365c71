"""Benchmark the SLURM path: per-task overhead of an array, and a whole pipeline via SLURM vs local.

Prints, measured in the same run on the local single-node cluster (``slurm/local/start.sh``):

1. an array of N tasks that do nothing, submitted through submitit (``map_array``), from
   submission to the last task's end, against N calls of the same function in this process:
   the per-task overhead of SLURM + submitit (scheduling, srun, interpreter start, pickles);
2. the ``tiny`` synthetic pipeline (synth -> check -> preprocess -> merge -> train -> baseline ->
   report, ``jobs/tiny-slurm.toml`` settings) on two fresh copies of the study: the local executor
   (one process) against the slurm executor (arrays chained with afterok, 2-rank DDP training),
   from start to the report.

    .venv/bin/python -m benchmarks.bench_slurm [--quick] [--tasks N]

Needs root (start.sh) or a running cluster. ``--quick``: fewer no-op tasks and 2 training epochs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def noop(i: int) -> int:
    """The task that does nothing (module level: pickled by reference, imported in the job)."""
    return i


def bench_array(n: int, folder: Path) -> tuple[float, float]:
    import submitit

    from avalanche_hpc.hpc.launcher import sacct_states

    t0 = time.perf_counter()
    for i in range(n):
        noop(i)
    local = time.perf_counter() - t0
    ex = submitit.SlurmExecutor(folder=folder / "%j")
    ex.update_parameters(time=5, cpus_per_task=1, mem="1GB", array_parallelism=n, job_name="bench-noop")
    t0 = time.perf_counter()
    jobs = ex.map_array(noop, list(range(n)))
    ids = [j.job_id for j in jobs]
    while True:
        st = sacct_states(ids)
        if len(st) == n and all(s["state"] not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED")
                                for s in st.values()):
            break
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    bad = [j for j in ids if st[j]["state"] != "COMPLETED"]
    if bad:
        raise SystemExit(f"no-op tasks failed: {bad}")
    assert [j.result() for j in jobs] == list(range(n))
    return local, wall


def bench_pipeline(tmp: Path, epochs: int) -> tuple[float, float]:
    from avalanche_hpc.hpc.jobspec import load_job
    from avalanche_hpc.hpc.pipeline import run_job
    from avalanche_hpc.study import Study

    base = load_job(REPO / "jobs" / "tiny-slurm.toml")
    times = {}
    for executor in ("local", "slurm"):
        root = tmp / f"tiny-{executor}"
        job = base.model_copy(update={
            "study": base.study.model_copy(update={"path": root}),
            "train": base.train.model_copy(update={"max_epochs": epochs}),
            "name": f"bench-{executor}",
        })
        t0 = time.perf_counter()
        run_job(job, executor=executor, progress=False, wait=True)
        times[executor] = time.perf_counter() - t0
        if not Study.load(root).report_index(job.experiment).is_file():
            raise SystemExit(f"{executor}: no report written")
    return times["local"], times["slurm"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 no-op tasks, 2 training epochs")
    ap.add_argument("--tasks", type=int, default=None, help="no-op tasks in the array (default 32, quick 8)")
    ap.add_argument("--skip-pipeline", action="store_true", help="only the no-op array")
    args = ap.parse_args()
    if shutil.which("sbatch") is None:
        subprocess.run(["bash", str(REPO / "slurm" / "local" / "start.sh")], check=True)
    n = args.tasks or (8 if args.quick else 32)
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(dir=REPO / ".cache" if (REPO / ".cache").is_dir() else None) as d:
        tmp = Path(d)
        local, wall = bench_array(n, tmp / "noop")
        print(f"no-op array of {n} tasks on {cpus} SLURM CPUs: {wall:.2f} s from submission to the last end "
              f"= {wall / n * 1000:.0f} ms/task at up to {cpus} tasks at once; the same calls in-process: "
              f"{local * 1e6 / n:.2f} us/task)")
        if not args.skip_pipeline:
            epochs = 2 if args.quick else 5
            t_local, t_slurm = bench_pipeline(tmp, epochs)
            print(f"tiny pipeline ({epochs} epochs): local executor {t_local:.1f} s, slurm executor "
                  f"{t_slurm:.1f} s (ratio slurm/local {t_slurm / t_local:.2f})")


if __name__ == "__main__":
    main()
