"""Benchmark the container path: per-task overhead of running inside the image against the host venv.

Prints, measured in the same run (the image of ``containers/build_rootfs.py``, Charliecloud's
``ch-run``; the local single-node SLURM cluster):

0. ``ch-run IMAGE -- /bin/true`` against ``/bin/true``: what entering the container costs;
1. interpreter start-up: ``python -c "import avalanche_hpc.hpc.pipeline"`` on the host venv
   against the same through ``ch-run`` with the image's ``%environment`` (the command the
   ``charliecloud`` runtime gives submitit), median of R runs each;
2. an array of N no-op tasks through submitit (``map_array``), submission -> last task ended,
   host venv vs inside the image (profile ``slurm/profiles/local-charliecloud.toml``);
3. the ``tiny`` study's preprocess array (one task per date) on two copies of the same
   synthesized study, host venv vs inside the image, submission -> last task ended.

    .venv/bin/python -m benchmarks.bench_container [--quick] [--tasks N] [--repeats R] [--skip-pipeline]

Needs the image (``python3 containers/build_rootfs.py``) and the cluster (``slurm/local/start.sh``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "slurm" / "profiles" / "local-charliecloud.toml"
LOCAL = REPO / "slurm" / "profiles" / "local.toml"


def _profile(image: Path):
    from avalanche_hpc.hpc.profiles import load_profile, parse_profile

    return parse_profile({**load_profile(PROFILE).model_dump(), "image": str(image)}, PROFILE)


def _median_run(cmd: list[str], repeats: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_enter(image: Path, repeats: int) -> tuple[float, float]:
    return _median_run(["/bin/true"], repeats), _median_run(["ch-run", str(image), "--", "/bin/true"], repeats)


def bench_startup(image: Path, repeats: int) -> tuple[float, float]:
    from avalanche_hpc.hpc.container import python_command

    code = ["-c", "import avalanche_hpc.hpc.pipeline"]
    cmds = {"host": [sys.executable, *code], "image": [*python_command(_profile(image)), *code]}  # type: ignore[misc]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)  # the host imports this checkout; ch-run unsets it for the image
    times: dict[str, list[float]] = {"host": [], "image": []}
    for _ in range(repeats):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            times[name].append(time.perf_counter() - t0)
    return statistics.median(times["host"]), statistics.median(times["image"])


def _wait(ids: list[str]) -> dict[str, dict[str, str]]:
    from avalanche_hpc.hpc.launcher import ACTIVE_STATES, sacct_states

    while True:
        st = sacct_states(ids)
        if len(st) == len(ids) and all(s["state"] not in ACTIVE_STATES for s in st.values()):
            bad = [j for j in ids if st[j]["state"] != "COMPLETED"]
            if bad:
                raise SystemExit(f"tasks failed: {bad}")
            return st
        time.sleep(0.2)


def bench_noop(image: Path, n: int, folder: Path) -> tuple[float, float]:
    import submitit

    from avalanche_hpc.hpc.container import python_setting

    walls = {}
    for name, python in (("host", shlex.quote(sys.executable)), ("image", python_setting(_profile(image)))):
        ex = submitit.SlurmExecutor(folder=folder / name / "%j", python=python)
        ex.update_parameters(time=5, cpus_per_task=1, mem="1GB", array_parallelism=n, job_name=f"bench-{name}",
                             setup=['export USER="${USER:-$(id -un)}"'])
        t0 = time.perf_counter()
        jobs = ex.map_array(abs, [-i for i in range(n)])
        _wait([j.job_id for j in jobs])
        walls[name] = time.perf_counter() - t0
        assert [j.result() for j in jobs] == list(range(n))
    return walls["host"], walls["image"]


def bench_preprocess(image: Path, tmp: Path) -> tuple[float, float, int]:
    from avalanche_hpc.hpc.jobspec import parse_job
    from avalanche_hpc.hpc.launcher import submit_job

    def job(root: Path, name: str, stages: list[str]):
        return parse_job({"name": name, "experiment": "tiny", "stages": stages,
                          "study": {"path": str(root), "preset": "tiny", "seed": 0}}, tmp)

    host_root, image_root = tmp / "host" / "tiny", tmp / "image" / "tiny"
    submit_job(job(host_root, "synth", ["synth", "check"]), LOCAL)
    shutil.copytree(host_root, image_root)
    walls = {}
    n = 0
    for name, root, prof in (("host", host_root, LOCAL), ("image", image_root, _profile(image))):
        t0 = time.perf_counter()
        sub = submit_job(job(root, name, ["preprocess"]), prof)
        sub.wait(timeout_s=1800, poll_s=0.2)
        walls[name] = time.perf_counter() - t0
        n = len(sub.submitted["preprocess"])
    return walls["host"], walls["image"], n


def main() -> None:
    sys.path.insert(0, str(REPO))
    from containers.build_rootfs import LINK, cache_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=8, help="no-op tasks in each array (default 8)")
    ap.add_argument("--repeats", type=int, default=5, help="interpreter start-ups timed each way (default 5)")
    ap.add_argument("--skip-pipeline", action="store_true", help="no tiny preprocess array")
    ap.add_argument("--quick", action="store_true", help="4 no-op tasks, 3 start-ups each way")
    args = ap.parse_args()
    if args.quick:
        args.tasks, args.repeats = 4, 3
    os.environ.setdefault("USER", "root")
    image = cache_dir() / LINK
    if not image.is_dir():
        raise SystemExit(f"no image at {image} -> python3 containers/build_rootfs.py (as root)")
    meta = cache_dir() / f"{image.resolve().name}.json"
    if meta.is_file():
        import json

        m = json.loads(meta.read_text())
        print(f"image {image.resolve()}: {m.get('size_bytes', 0) / 2**30:.2f} GiB, last build {m.get('timings')}")
    bare, entered = bench_enter(image, 4 * args.repeats)
    print(f"/bin/true: directly {bare * 1000:.1f} ms, through ch-run {entered * 1000:.1f} ms "
          f"(median of {4 * args.repeats}): +{(entered - bare) * 1000:.1f} ms to enter the image")
    host, inside = bench_startup(image, args.repeats)
    print(f"interpreter start-up + import avalanche_hpc.hpc.pipeline (median of {args.repeats}): host venv "
          f"{host:.2f} s, inside the image (ch-run) {inside:.2f} s: ratio {inside / host:.2f}, "
          f"+{inside - host:.2f} s per start")
    if shutil.which("sbatch") is None:
        raise SystemExit("no SLURM cluster (sbatch not on PATH): bash slurm/local/start.sh")
    with tempfile.TemporaryDirectory(prefix="bench-container-") as d:
        tmp = Path(d)
        h, i = bench_noop(image, args.tasks, tmp / "noop")
        print(f"no-op array of {args.tasks} tasks through SLURM: host venv {h:.1f} s ({h / args.tasks:.2f} s/task), "
              f"inside the image {i:.1f} s ({i / args.tasks:.2f} s/task): ratio {i / h:.2f}")
        if not args.skip_pipeline:
            h, i, n = bench_preprocess(image, tmp)
            print(f"tiny preprocess array ({n} tasks) through SLURM: host venv {h:.1f} s, inside the image {i:.1f} s: "
                  f"ratio {i / h:.2f}, +{(i - h) / n:.2f} s per task")


if __name__ == "__main__":
    main()
