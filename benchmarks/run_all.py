"""Run every benchmark, in its quick form unless ``--full`` is given: ``python -m benchmarks.run_all [--full]``.

Each benchmark prints its own figures; ``docs/benchmarks.md`` records the full-size ones.
The SLURM benchmark needs the local cluster (``sudo bash slurm/local/start.sh``); the container
benchmark also the image (``python3 containers/build_rootfs.py``).
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("bench_synth", "bench_checks", "bench_preprocess", "bench_campaign", "bench_train", "bench_slurm",
              "bench_container")


def main() -> int:
    full = "--full" in sys.argv[1:]
    failed = []
    for name in BENCHMARKS:
        cmd = [sys.executable, "-m", f"benchmarks.{name}"] + ([] if full else ["--quick"])
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
