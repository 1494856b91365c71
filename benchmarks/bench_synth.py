"""Benchmark the synthetic-season generator. Prints figures.

For each preset (``demo`` and ``alps``; ``tiny`` and ``demo`` with ``--quick``), one generation
in a fresh child process (so peak memory is that generation's alone), in a temporary directory:

- time to build the static world (terrain, corridors, weather, events, footprints) and to write
  the tables and the DEM (everything before the first scene date);
- seconds per scene date (one orbit, one date: VV, VH, layover/shadow), mean and max;
- resident memory after the first date and after the last one (growth shows whether memory is
  bounded by the grid or grows with the dates), and the peak (``ru_maxrss``);
- ratios ``alps / demo`` (or ``demo / tiny``) of the time per date and of the time per date per
  megapixel, measured in the same run.

    .venv/bin/python -m benchmarks.bench_synth [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _child(preset: str, root: str, queue) -> None:
    from avalanche_hpc.synth import PRESETS, generate_study

    stamps: list[float] = []
    rss: list[float] = []
    t0 = time.perf_counter()

    def on_date(orbit, d) -> None:
        stamps.append(time.perf_counter())
        rss.append(_rss_mib())

    generate_study(Path(root), preset=preset, seed=0, on_date=on_date)
    t_end = time.perf_counter()
    p = PRESETS[preset]
    queue.put({
        "preset": preset, "shape": p.shape, "n_dates": len(stamps), "corridors_target": p.n_corridors,
        "total_s": t_end - t0, "static_s": None, "stamps": [s - t0 for s in stamps], "rss": rss,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    })


def measure(preset: str, root: Path) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(preset, str(root), q))
    proc.start()
    res = q.get()
    proc.join()
    st = res["stamps"]
    per = [b - a for a, b in itertools.pairwise(st)]
    # the first interval includes the orbit geometry; the first stamp includes the static world
    res["static_s"] = st[0] - (per[0] if per else 0.0)
    res["s_per_date"] = sum(per) / len(per) if per else float("nan")
    res["s_per_date_max"] = max(per) if per else float("nan")
    res["mpix"] = res["shape"][0] * res["shape"][1] / 1e6
    res["disk_mib"] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20
    import pandas as pd

    res["events"] = len(pd.read_csv(root / "truth.csv"))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny and demo instead of demo and alps")
    ap.add_argument("--keep", type=Path, default=None, help="keep the generated studies under this directory")
    args = ap.parse_args()
    presets = ("tiny", "demo") if args.quick else ("demo", "alps")
    base = Path(tempfile.mkdtemp(prefix="bench_synth_")) if args.keep is None else args.keep
    results = []
    try:
        for name in presets:
            root = base / name
            if root.exists():
                shutil.rmtree(root)
            r = measure(name, root)
            results.append(r)
            print(f"{name:5s} grid {r['shape'][0]}x{r['shape'][1]} ({r['mpix']:.1f} Mpx), {r['n_dates']} scene dates "
                  f"(orbits x (winter + summer)), {r['events']} events, {r['disk_mib']:.0f} MiB on disk")
            print(f"      static world + tables + DEM: {r['static_s']:.1f} s; per scene date: mean "
                  f"{r['s_per_date']:.2f} s, max {r['s_per_date_max']:.2f} s "
                  f"({1e3 * r['s_per_date'] / r['mpix']:.0f} ms/Mpx); total {r['total_s']:.1f} s")
            print(f"      memory: {r['rss'][0]:.0f} MiB after the first date, {r['rss'][-1]:.0f} MiB after the "
                  f"last (growth {r['rss'][-1] - r['rss'][0]:+.0f} MiB over {r['n_dates'] - 1} dates); "
                  f"peak {r['peak_mib']:.0f} MiB ({r['peak_mib'] / r['mpix']:.0f} MiB/Mpx)")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    a, b = results
    per_mpx = (b["s_per_date"] / b["mpix"]) / (a["s_per_date"] / a["mpix"])
    print(f"ratio {b['preset']}/{a['preset']}: grid {b['mpix'] / a['mpix']:.1f}x, time per date "
          f"{b['s_per_date'] / a['s_per_date']:.1f}x, time per date per Mpx {per_mpx:.2f}x, "
          f"peak memory {b['peak_mib'] / a['peak_mib']:.1f}x")


if __name__ == "__main__":
    main()
