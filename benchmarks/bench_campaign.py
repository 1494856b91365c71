"""Benchmark a 10-season campaign on a small grid: tasks, store size, growing the store. Prints figures.

Measured in one run, on one process (``campaign10`` preset: 10 winters 2015-2016 .. 2024-2025,
1 Dec - 30 Apr, dates from the Sentinel-1 constellation calendar, 2 orbits, a 160 x 160 grid;
``--quick``: the first 3 winters):

1. tasks per season and in all (preprocess = one per acquisition with a previous one);
2. synth, preprocess and first-merge times; the store's size on disk (season stores + the VDS);
3. **adding one date** to the last season (the date is left out of study.toml first, then put
   back and preprocessed): the merge with the ``seasonal`` layout (rewrites one season store and
   the VDS) against rebuilding a ``consolidated`` copy of the whole store and against a
   ``virtual`` dataset over every shard; the ratio rebuild / seasonal is what an operational
   campaign saves each time a date arrives (it grows with the number of seasons);
4. random single-patch reads per second (the access pattern of training) from each layout.

    python -m benchmarks.bench_campaign [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import tomli_w

from avalanche_hpc.preprocess.tasks import list_tasks, preprocess_all, preprocess_task
from avalanche_hpc.store.layout import open_h5, read_meta
from avalanche_hpc.store.merge import merge_store, season_store_path
from avalanche_hpc.study import Study
from avalanche_hpc.synth import generate_study, get_preset


def _du(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def _reads_per_s(store: Path, n: int, n_reads: int = 2000) -> float:
    """Random single-patch reads per second through one open file (as a training loader does)."""
    rng = np.random.default_rng(0)
    best = 0.0
    with open_h5(store) as f:
        ds = f["patches"]
        for _ in range(3):
            rows = rng.integers(0, n, size=n_reads)
            t = time.perf_counter()
            for r in rows:
                ds[int(r)]
            best = max(best, n_reads / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 winters instead of 10")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = ap.parse_args()
    preset = get_preset("campaign10")
    if args.quick:
        preset = preset.with_seasons(preset.seasons[:3])
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-campaign-"))
    root = work / "campaign"
    try:
        t = time.perf_counter()
        generate_study(root, preset=preset, seed=0)
        t_synth = time.perf_counter() - t
        study = Study.load(root)
        toml = root / "study.toml"
        full_toml = toml.read_text()
        # leave the last date of the last season's first orbit out (it "arrives" later)
        data = tomllib.loads(full_toml)
        last = data["seasons"][-1]
        orbit = study.config.orbits[0].id
        new_date = last["dates"][orbit].pop()
        toml.write_text(tomli_w.dumps(data))

        tasks = list_tasks(root)
        per_season: dict[str, int] = {}
        for a in tasks:
            per_season[a.season] = per_season.get(a.season, 0) + 1
        t = time.perf_counter()
        preprocess_all(root, progress=False)
        t_pre = time.perf_counter() - t
        t = time.perf_counter()
        store = merge_store(root, layout="seasonal")
        t_first = time.perf_counter() - t
        n = len(read_meta(store))
        seasons = [season_store_path(store, s.id) for s in study.config.seasons]
        shards = list((study.work_dir / "shards").rglob("*.h5"))

        print(f"campaign: {len(study.config.seasons)} seasons, {len(study.config.orbits)} orbits, "
              f"{preset.shape[0]}x{preset.shape[1]} grid, {preset.n_corridors} corridors requested")
        print("preprocess tasks per season: " + ", ".join(f"{s} {k}" for s, k in per_season.items()))
        print(f"preprocess tasks: {len(tasks)} (+1 date added below); patches: {n}")
        print(f"synth {t_synth:.1f} s; preprocess_all {t_pre:.1f} s ({1000 * t_pre / len(tasks):.0f} ms/task, "
              f"one process); first seasonal merge {t_first:.2f} s")
        print(f"store on disk: season stores {_du(seasons) / 1e6:.1f} MB + VDS {_du([store]) / 1e6:.2f} MB; "
              f"shards {_du(shards) / 1e6:.1f} MB ({len(shards)} files)")

        # one date arrives
        toml.write_text(full_toml)
        d = Study.load(root).acquisitions(season=last["id"], orbit=orbit)[-1]
        assert d.date == new_date, (d.date, new_date)
        t = time.perf_counter()
        preprocess_task(root, d.season, d.orbit, d.date)
        t_task = time.perf_counter() - t
        before = {p: p.stat().st_mtime_ns for p in seasons}
        t = time.perf_counter()
        merge_store(root, layout="seasonal")
        t_add = time.perf_counter() - t
        rewritten = [p.name for p in seasons if p.stat().st_mtime_ns != before[p]]
        copied = _du([p for p in seasons if p.name in rewritten])
        t = time.perf_counter()
        merge_store(root, layout="seasonal")  # nothing changed: the check of every shard only
        t_noop = time.perf_counter() - t
        os.sync()
        n = len(read_meta(store))
        r_seasonal = _reads_per_s(store, n)
        t = time.perf_counter()
        merge_store(root, layout="consolidated", force=True)
        t_rebuild = time.perf_counter() - t
        os.sync()
        r_cons = _reads_per_s(store, n)
        size_cons = _du([store])
        t = time.perf_counter()
        merge_store(root, layout="virtual", force=True)
        t_virtual = time.perf_counter() - t
        r_virtual = _reads_per_s(store, n)
        merge_store(root, layout="seasonal")  # leave the campaign in its own layout
        print(f"\nadding one date ({d.key}): preprocess task {t_task:.2f} s, then")
        print(f"  every merge first checks that all {len(shards) + 1} shards are current (label maps, digests) "
              f"and reads their metadata: a merge with nothing new takes {t_noop:.2f} s")
        print(f"  seasonal merge (rewrites {', '.join(rewritten)}, {copied / 1e6:.0f} MB, + the VDS): {t_add:8.2f} s "
              f"(copy part {t_add - t_noop:.2f} s)")
        print(f"  consolidated rebuild of the whole store ({size_cons / 1e6:.0f} MB): {t_rebuild:8.2f} s "
              f"(copy part {t_rebuild - t_noop:.2f} s)")
        print(f"  ratio rebuild/seasonal: {t_rebuild / t_add:.1f}x in total, "
              f"{(t_rebuild - t_noop) / max(t_add - t_noop, 1e-3):.1f}x for the copy; bytes copied "
              f"{size_cons / max(copied, 1):.1f}x")
        print(f"  virtual dataset over {len(shards) + 1} shards (no copy): {t_virtual:8.2f} s")
        print("random single-patch reads /s (best of 3, 2000 reads, warm cache): "
              f"consolidated {r_cons:.0f}, seasonal {r_seasonal:.0f} ({r_seasonal / r_cons:.2f}x), "
              f"virtual over shards {r_virtual:.0f} ({r_virtual / r_cons:.2f}x)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
