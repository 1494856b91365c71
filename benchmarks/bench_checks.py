"""Benchmark ``inputs check``: header-only validation against reading every scene in full.

Prints, for one synthetic study (``alps`` preset, ``demo`` with ``--quick``), measured in the same run:

- the time of ``check_study_report`` (headers + block-offset probe + one block-row read per raster);
- the time of the per-raster probe alone (the part that grows with the number of scenes);
- the time of a bare full read of every scene raster (what a naive checker would do);
- their ratio, and the time per raster.

    .venv/bin/python -m benchmarks.bench_checks [--quick] [--study PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import rasterio

from avalanche_hpc.inputs.checks import check_study_report, probe_raster


def _full_read(root: Path) -> tuple[int, int]:
    n, nbytes = 0, 0
    for p in sorted((root / "scenes").glob("*/*/*.tif")):
        with rasterio.open(p) as src:
            nbytes += src.read().nbytes
        n += 1
    return n, nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="demo preset instead of alps")
    ap.add_argument("--study", type=Path, default=None, help="an existing study instead of a generated one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.study
        if root is None:
            from avalanche_hpc.synth import generate_study

            preset = "demo" if args.quick else "alps"
            t = time.perf_counter()
            root = generate_study(Path(tmp) / preset, preset=preset, seed=0)
            print(f"generated {preset} study in {time.perf_counter() - t:.1f} s")
        # warm the OS cache equally for both measurements (the full read first)
        _full_read(root)
        check_study_report(root)  # warm-up: lazy imports (geopandas, pyogrio) out of the timing
        t = time.perf_counter()
        n, nbytes = _full_read(root)
        t_full = time.perf_counter() - t
        t = time.perf_counter()
        for p in sorted((root / "scenes").glob("*/*/*.tif")):
            probe_raster(p)
        t_probe = time.perf_counter() - t
        t = time.perf_counter()
        report = check_study_report(root)
        t_check = time.perf_counter() - t
    print(f"rasters: {n}, scene data: {nbytes / 2**20:.1f} MiB, problems found: {len(report.problems)}")
    print(f"full read of every scene : {t_full:8.3f} s ({1000 * t_full / max(n, 1):.2f} ms/raster)")
    print(f"header probe of every scene: {t_probe:6.3f} s ({1000 * t_probe / max(n, 1):.2f} ms/raster)")
    print(f"ratio probe / full read  : {t_probe / t_full:8.3f}")
    print(f"inputs check (all files) : {t_check:8.3f} s ({1000 * t_check / max(n, 1):.2f} ms/raster)")
    print(f"ratio check / full read  : {t_check / t_full:8.3f}")


if __name__ == "__main__":
    main()
