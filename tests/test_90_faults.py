"""Fault injection (issue 11): a hostile user and an unlucky cluster, on the ``tiny`` preset and real files.

Every stage is run through the real CLI (``python -m avalanche_hpc``) in a subprocess where a
crash, a SIGKILL or a traceback matters; in-process where only the verdict does. One tiny study
is generated, preprocessed and merged once per session (``merged_study``); each test works on a
private copy. Figures in ``docs/reliability.md`` come from this file.

- kills: SIGKILL between a write and its rename (``AVALANCHE_HPC_PAUSE_BEFORE_RENAME``, see
  ``atomic.py``) and at a time, for ``preprocess``, ``store merge``, ``train`` and ``baseline``;
  then a re-run, ``store verify`` and, for train/baseline, byte-equal results against an
  uninterrupted run; no temporary file is left;
- two concurrent runs of each command;
- a full disk (a small tmpfs as root, else ``RLIMIT_FSIZE``) in preprocess, merge and train;
- every bad-input kind against ``inputs check`` and the one-task ``preprocess`` (what each SLURM
  array task runs);
- the numbered points of the issue, each with a test that failed before the fix.

Marker ``faults``; the exhaustive kill matrix is also marked ``slow`` and runs only with
``AVALANCHE_HPC_FAULTS_EXHAUSTIVE=1`` (``AVALANCHE_HPC_FAULTS_EXHAUSTIVE=1 pytest -m faults``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import tomli_w
from shapely.geometry import Polygon

from avalanche_hpc.atomic import PAUSE_ENV, PAUSE_MATCH_ENV, PAUSED_SUFFIX, TMP_MARK
from avalanche_hpc.cleanup import clean_tmp, owner_gone

pytestmark = pytest.mark.faults
# The exhaustive kill matrix (every rename point of train and baseline, train killed at a time, two
# concurrent trains) adds minutes: it runs with AVALANCHE_HPC_FAULTS_EXHAUSTIVE=1 (marked slow too).
EXHAUSTIVE = [pytest.mark.slow, pytest.mark.skipif(not os.environ.get("AVALANCHE_HPC_FAULTS_EXHAUSTIVE"),
                                                   reason="exhaustive fault matrix: set AVALANCHE_HPC_FAULTS_EXHAUSTIVE=1")]

REPO = Path(__file__).resolve().parents[1]
SEASON, ORBIT = "2017-2018", "D139"
TASK_DATE = "20180102"  # second D139 date of the tiny preset: reads 20171203 (t0), 20180102 (t1), summer 20170810
TRAIN_ARGS = ("-e", "f", "--weights", "none", "--max-epochs", "1", "--views", "1")
BASELINE_ARGS = ("-e", "f")


# -- helpers ---------------------------------------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.pop(PAUSE_ENV, None)
    env.pop(PAUSE_MATCH_ENV, None)
    env.update(extra)
    return env


def cli(*args, env: dict | None = None, timeout: float = 600, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avalanche_hpc", *map(str, args)], capture_output=True, text=True,
                          env=env or _env(), timeout=timeout, cwd=REPO, preexec_fn=preexec)


def start(*args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "avalanche_hpc", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or _env(), cwd=REPO)


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


def clear_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, no traceback, one ``error:`` message holding every needle; returns the message."""
    assert res.returncode == 1, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    starts = [i for i, line in enumerate(res.stderr.splitlines()) if line.startswith("error:")]
    assert len(starts) == 1, res.stderr
    msg = "\n".join(res.stderr.splitlines()[starts[0]:])
    for n in needles:
        assert n in msg, f"{n!r} not in the message:\n{msg}"
    return msg


def tmp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(f"*{TMP_MARK}*"))


def kill_before_rename(args: tuple, root: Path, match: str, timeout: float = 240) -> None:
    """Run the command until it pauses between writing ``match`` (a file-name glob) and renaming it; SIGKILL it."""
    proc = start(*args, env=_env(**{PAUSE_ENV: "600", PAUSE_MATCH_ENV: match}))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if list(root.rglob(f"*{PAUSED_SUFFIX}")):
                break
            if proc.poll() is not None:
                _out, err = proc.communicate()
                pytest.fail(f"{args} ended (exit {proc.returncode}) before writing {match}:\n{err[-3000:]}")
            time.sleep(0.05)
        else:
            pytest.fail(f"{args} never reached the rename of {match}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert tmp_files(root), "the killed writer left its temporary file (what the cleaner must remove)"


def kill_after(args: tuple, seconds: float) -> None:
    proc = start(*args)
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def read_text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def same_results(run: Path, ref: Path, names: tuple[str, ...]) -> None:
    for n in names:
        assert read_text(run / n) == read_text(ref / n), f"{n} differs from the uninterrupted run"


def edit_toml(root: Path, change) -> None:
    path = root / "study.toml"
    data = tomllib.loads(read_text(path))
    change(data)
    path.write_text(tomli_w.dumps(data), encoding="utf-8")


def rewrite_raster(path: Path, **changes) -> None:
    with rasterio.open(path) as src:
        arr, prof = src.read(1), src.profile
    dtype = changes.pop("dtype", None)
    if dtype is not None:
        arr = (arr * 1000).astype(dtype)
        prof.update(dtype=dtype, nodata=-9999)
    if changes.pop("nodata_all", False):
        arr[:] = prof["nodata"]
    prof.update(changes)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr, 1)


def can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/avalanche-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True)
        if r.returncode == 0:
            subprocess.run(["umount", str(probe)], check=True)
        return r.returncode == 0
    finally:
        probe.rmdir()


@contextlib.contextmanager
def small_disk(folder: Path, size: int) -> Iterator[object]:
    """``folder`` on a full-able file system of ``size`` bytes: a tmpfs (root), else a file size limit.

    Yields the ``preexec_fn`` for the subprocess (None with tmpfs). The tmpfs is unmounted in a
    finally; what it held is gone afterwards (as after freeing space).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if can_mount():
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
        try:
            yield None
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=False)
    else:  # pragma: no cover - non-root machines
        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

        yield limit


# -- session data ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def merged_study(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study preprocessed and merged (read-only: tests copy it)."""
    from tests.fixtures_synth import merged_copy

    return merged_copy(tiny_study, tmp_path_factory.mktemp("faults") / "merged")


@pytest.fixture(scope="session")
def reference_runs(merged_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Uninterrupted train + baseline runs (the results every killed-and-resumed run must equal)."""
    root = tmp_path_factory.mktemp("faults-ref") / "ref"
    shutil.copytree(merged_study, root)
    ok(cli("train", root, *TRAIN_ARGS))
    ok(cli("baseline", root, *BASELINE_ARGS))
    return root / "runs" / "f" / "random"


@pytest.fixture
def study(merged_study: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "tiny"
    shutil.copytree(merged_study, dst)
    return dst


@pytest.fixture
def fresh(tiny_study: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny study without work/."""
    dst = tmp_path / "fresh"
    shutil.copytree(tiny_study, dst)
    return dst


def verify_ok(root: Path) -> None:
    res = ok(cli("store", "verify", root))
    assert "OK" in res.stdout


# -- SIGKILL at several points, then re-run -----------------------------------------------------------
PREPROCESS_KILLS = ["deposition.gpkg", f"{ORBIT}.h5", f"{TASK_DATE}.h5"]


@pytest.mark.parametrize("match", PREPROCESS_KILLS, ids=["deposition", "summer-reference", "shard"])
def test_kill_one_task_preprocess_before_rename(fresh: Path, match: str):
    task = ("preprocess", fresh, "--season", SEASON, "--orbit", ORBIT, "--date", TASK_DATE)
    from avalanche_hpc.preprocess.tasks import task_is_complete

    kill_before_rename(task, fresh, match)
    assert not (fresh / "work" / "shards" / SEASON / ORBIT / f"{TASK_DATE}.h5").exists()
    ok(cli(*task))  # the task re-run cleans its dead writer's temporary file and finishes
    assert task_is_complete(fresh, SEASON, ORBIT, dt.date.fromisoformat(f"{TASK_DATE[:4]}-{TASK_DATE[4:6]}-{TASK_DATE[6:]}"))
    assert tmp_files(fresh) == []
    if match.endswith(f"{TASK_DATE}.h5"):  # once: the whole chain verifies
        ok(cli("preprocess", fresh))
        ok(cli("store", "merge", fresh))
        verify_ok(fresh)


def test_kill_store_merge_before_rename(study: Path):
    (study / "work" / "patches.h5").unlink()
    kill_before_rename(("store", "merge", study), study, "patches.h5")
    assert not (study / "work" / "patches.h5").exists()
    ok(cli("store", "merge", study))
    verify_ok(study)
    assert tmp_files(study) == []


@pytest.mark.parametrize("match", ["checkpoint.pt", pytest.param("metrics.json", marks=EXHAUSTIVE)])
def test_kill_train_before_rename_resumes_to_the_same_result(study: Path, reference_runs: Path, match: str):
    kill_before_rename(("train", study, *TRAIN_ARGS), study, match)
    run = study / "runs" / "f" / "random" / "cnn" / "seed0"
    assert not (run / "metrics.json").exists()
    assert not (study / "runs" / "f" / "experiment.json").exists()  # only a finished run writes it
    ok(cli("train", study, *TRAIN_ARGS))
    same_results(run, reference_runs / "cnn" / "seed0", ("predictions.csv", "metrics.json", "history.csv"))
    assert tmp_files(study) == []


def test_kill_baseline_before_rename(study: Path, reference_runs: Path):
    kill_before_rename(("baseline", study, *BASELINE_ARGS), study, "predictions.csv")
    out = study / "runs" / "f" / "random" / "baseline"
    assert not (out / "metrics.json").exists()
    ok(cli("baseline", study, *BASELINE_ARGS))
    same_results(out, reference_runs / "baseline", ("params.json", "predictions.csv", "metrics.json"))
    assert tmp_files(study) == []


@pytest.mark.parametrize("stage,match", [
    ("preprocess-all", "20180201.h5"), ("preprocess-all", "A161.h5"),
    ("train", "split.csv"), ("train", "bank-*.h5"), ("train", "best.pt"), ("train", "history.csv"),
    ("train", "predictions.csv"), ("baseline", "split.csv"), ("baseline", "params.json"),
    ("baseline", "metrics.json"),
])
@EXHAUSTIVE[0]
@EXHAUSTIVE[1]
def test_kill_matrix_exhaustive(stage: str, match: str, fresh: Path, study: Path, reference_runs: Path):
    if stage == "preprocess-all":
        kill_before_rename(("preprocess", fresh), fresh, match)
        ok(cli("preprocess", fresh))
        ok(cli("store", "merge", fresh))
        verify_ok(fresh)
        assert tmp_files(fresh) == []
        return
    _kill_then_rerun_learn(stage, study, reference_runs, lambda args: kill_before_rename(args, study, match))
    assert tmp_files(study) == []


def _kill_then_rerun_learn(stage: str, study: Path, reference_runs: Path, kill) -> None:
    """``train`` or ``baseline``: killed by ``kill(args)``, re-run: the results of an undisturbed run."""
    args = ("train", study, *TRAIN_ARGS) if stage == "train" else ("baseline", study, *BASELINE_ARGS)
    kill(args)
    ok(cli(*args))
    sub = "cnn/seed0" if stage == "train" else "baseline"
    same_results(study / "runs" / "f" / "random" / sub, reference_runs / sub, ("predictions.csv", "metrics.json"))


@pytest.mark.parametrize("stage", ["preprocess", "merge", pytest.param("train", marks=EXHAUSTIVE), "baseline"])
def test_kill_at_a_time_then_rerun(stage: str, fresh: Path, study: Path, reference_runs: Path):
    if stage == "preprocess":
        kill_after(("preprocess", fresh), 2.5)
        ok(cli("preprocess", fresh))
        ok(cli("store", "merge", fresh))
        verify_ok(fresh)
        assert tmp_files(fresh) == []
        return
    if stage == "merge":
        (study / "work" / "patches.h5").unlink()
        kill_after(("store", "merge", study), 2.5)
        ok(cli("store", "merge", study))
        verify_ok(study)
    else:
        _kill_then_rerun_learn(stage, study, reference_runs, lambda args: kill_after(args, 6.0))
    assert tmp_files(study) == []


# -- two concurrent runs of each command ---------------------------------------------------------------
@pytest.mark.parametrize("stage", ["preprocess", "merge", pytest.param("train", marks=EXHAUSTIVE), "baseline"])
def test_two_concurrent_runs(stage: str, fresh: Path, study: Path, reference_runs: Path):
    if stage == "preprocess":
        procs = [start("preprocess", fresh) for _ in range(2)]
        root = fresh
    elif stage == "merge":
        (study / "work" / "patches.h5").unlink()
        procs = [start("store", "merge", study) for _ in range(2)]
        root = study
    else:
        args = ("train", study, *TRAIN_ARGS) if stage == "train" else ("baseline", study, *BASELINE_ARGS)
        procs = [start(*args) for _ in range(2)]
        root = study
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    if stage == "preprocess":
        ok(cli("store", "merge", fresh))
    verify_ok(root)
    if stage in ("train", "baseline"):
        sub = "cnn/seed0" if stage == "train" else "baseline"
        same_results(study / "runs" / "f" / "random" / sub, reference_runs / sub, ("predictions.csv", "metrics.json"))
    assert tmp_files(root) == []


# -- full disk ------------------------------------------------------------------------------------------
def test_full_disk_in_preprocess(fresh: Path):
    with small_disk(fresh / "work", 200_000) as limit:
        res = cli("preprocess", fresh, preexec=limit)
        clear_error(res, "cannot write", "free space")
        assert tmp_files(fresh / "work") == []
    shutil.rmtree(fresh / "work", ignore_errors=True)
    ok(cli("preprocess", fresh))  # space freed: the re-run finishes
    ok(cli("store", "merge", fresh))
    verify_ok(fresh)
    assert tmp_files(fresh) == []


def test_full_disk_in_merge(study: Path):
    work = study / "work"
    saved = study / "work-saved"
    work.rename(saved)
    (saved / "patches.h5").unlink()
    used = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    with small_disk(work, used + 2_000_000) as limit:
        if limit is None:
            shutil.copytree(saved, work, dirs_exist_ok=True)
        res = cli("store", "merge", study, preexec=limit)
        clear_error(res, "patches.h5", "cannot write", "free space")
        assert tmp_files(work) == []
    shutil.rmtree(work, ignore_errors=True)
    saved.rename(work)
    ok(cli("store", "merge", study))
    verify_ok(study)


def test_full_disk_in_train(study: Path, reference_runs: Path, tmp_path: Path):
    record = study / "runs" / "f" / "experiment.json"
    with small_disk(study / "runs", 40_000_000) as limit:
        res = cli("train", study, *TRAIN_ARGS, preexec=limit)
        clear_error(res, "cannot write", "free space")
        assert not record.exists()  # a failed run writes no experiment record
        assert tmp_files(study / "runs") == []
    shutil.rmtree(study / "runs", ignore_errors=True)
    # a record left by an older version's failed run (bad weights) is rewritten by the next good run
    bad = tmp_path / "bad.pt"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"experiment": "f", "weights": str(bad)}))
    ok(cli("train", study, *TRAIN_ARGS))
    same_results(study / "runs/f/random/cnn/seed0", reference_runs / "cnn/seed0", ("metrics.json",))
    got = json.loads(read_text(record))
    assert got["weights"] == "none" and got["max_epochs"] == 1


# -- bad inputs: inputs check and the one-task preprocess refuse each kind --------------------------------
def _scene(root: Path, date: str = TASK_DATE, band: str = "VV") -> Path:
    return root / "scenes" / ORBIT / date / f"{band}.tif"


def _corridors(root: Path, change) -> None:
    path = root / "corridors.gpkg"
    gdf = gpd.read_file(path, layer="corridors")
    change(gdf)
    path.unlink()
    gdf.to_file(path, layer="corridors", driver="GPKG")


def _inventory(root: Path, change) -> None:
    import pandas as pd

    path = root / "inventory.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(df)
    df.to_csv(path, index=False)


def _non_utf8(root: Path) -> None:
    path = root / "inventory.csv"
    lines = read_text(path).splitlines()
    lines = [lines[0] + ",note"] + [f"{line},neige mouillée" for line in lines[1:]]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def _bowtie(gdf) -> None:
    x0, y0, x1, y1 = gdf.geometry.iloc[0].bounds
    gdf.loc[gdf.index[0], "geometry"] = Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1)])


def _dup_path(gdf) -> None:
    gdf.loc[gdf.index[1], "path_id"] = gdf["path_id"].iloc[0]


def _dup_event(df) -> None:
    df.loc[1, "event_id"] = df.loc[0, "event_id"]


def _unknown_path(df) -> None:
    df.loc[0, "path_id"] = "NO-SUCH-PATH"


BAD_INPUTS = {
    # kind: (mutation, text that inputs check and the one-task preprocess must both show)
    "scene-other-crs": (lambda r: rewrite_raster(_scene(r), crs="EPSG:32631"), "CRS is EPSG:32631"),
    "scene-int16": (lambda r: rewrite_raster(_scene(r), dtype="int16"), "dtype is int16"),
    "winter-date-outside-season": (lambda r: edit_toml(r, lambda d: d["seasons"][0].update(end=dt.date(2018, 1, 1))),
                                   "outside the season window"),
    "duplicate-event-id": (lambda r: _inventory(r, _dup_event), "is not unique"),
    "unknown-path-id": (lambda r: _inventory(r, _unknown_path), "'NO-SUCH-PATH' is not in corridors.gpkg"),
    "self-intersecting-corridor": (lambda r: _corridors(r, _bowtie), "invalid polygon: Self-intersection"),
    "duplicate-path-id": (lambda r: _corridors(r, _dup_path), "is not unique"),
    "non-utf8-inventory": (_non_utf8, "is not UTF-8 text"),
    "quoted-number": (lambda r: edit_toml(r, lambda d: d.update(crs_epsg="32632")), "without quotes"),
    "quoted-date": (lambda r: edit_toml(r, lambda d: d["seasons"][0].update(start="2017-11-15")), "without quotes"),
    "patch-size-true": (lambda r: edit_toml(r, lambda d: d.update(patch_size=True)), "not a boolean"),
    "season-id-traversal": (lambda r: edit_toml(r, lambda d: d["seasons"][0].update(id="../../../x")),
                            "not allowed as a folder name"),
    "orbit-id-traversal": (lambda r: edit_toml(r, lambda d: d["orbits"][0].update(id="../o")),
                           "not allowed as a folder name"),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_refused_by_check_and_one_task(kind: str, fresh: Path):
    from avalanche_hpc.inputs.checks import check_study

    mutate, text = BAD_INPUTS[kind]
    mutate(fresh)
    problems = check_study(fresh)
    assert any(text in str(p) for p in problems), f"inputs check: {[str(p) for p in problems]}"
    outside = sorted(p.name for p in fresh.parent.parent.iterdir())
    res = cli("preprocess", fresh, "--season", SEASON, "--orbit", ORBIT, "--date", TASK_DATE)
    clear_error(res, text)
    assert not (fresh / "work" / "shards").exists()  # nothing written
    assert sorted(p.name for p in fresh.parent.parent.iterdir()) == outside  # nor outside the study


def test_bad_input_refused_by_merge_and_verify(study: Path):
    """The CRS case: shards made before the scene changed are not merged, and verify refuses the study."""
    rewrite_raster(_scene(study), crs="EPSG:32631")
    clear_error(cli("store", "merge", study, "--force"), "CRS is EPSG:32631")
    clear_error(cli("store", "verify", study), "CRS is EPSG:32631")


def test_grid_check_compares_crs(study: Path):
    """raster.check_on_grid: a scene on the DEM's transform and shape but in another CRS is refused at read time."""
    from avalanche_hpc.errors import InputError
    from avalanche_hpc.preprocess.raster import dem_grid, read_power_windows

    path = _scene(study)
    rewrite_raster(path, crs="EPSG:32631")
    grid = dem_grid(study / "dem.tif")
    with pytest.raises(InputError, match="not on the DEM grid: CRS EPSG:32631.*vs dem.tif CRS EPSG:32632"):
        read_power_windows(path, np.array([0]), np.array([0]), 8, "linear", grid)


# -- 1. identifiers that become path components -------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../../x", "..", "a/b", ".hidden", "x\x00y", ""])
def test_identifier_validator(bad: str):
    from avalanche_hpc.errors import ConfigError
    from avalanche_hpc.ids import check_id

    with pytest.raises(ConfigError, match="not allowed as a folder name"):
        check_id(bad, "experiment name")
    assert check_id("2017-2018", "season id") == "2017-2018"


def test_experiment_traversal_refused_by_train_and_baseline(study: Path):
    before = sorted(p.name for p in study.parent.iterdir())
    for args in (("train", study, "-e", "../../x", "--max-epochs", "1"), ("baseline", study, "-e", "../x"),
                 ("report", study, "-e", "../../x")):
        clear_error(cli(*args), "not allowed as a folder name")
    clear_error(cli("train", study, "-e", "ok", "--split", "../x"), "not allowed as a folder name")
    assert not (study / "runs").exists()
    assert sorted(p.name for p in study.parent.iterdir()) == before


def test_traversal_in_python_api_and_job_spec(study: Path, tmp_path: Path):
    from avalanche_hpc.errors import ConfigError
    from avalanche_hpc.hpc.jobspec import parse_job
    from avalanche_hpc.learn.baseline import baseline_run
    from avalanche_hpc.study import Study

    with pytest.raises(ConfigError, match="experiment name"):
        baseline_run(study, "../../x")
    with pytest.raises(ConfigError, match="season id"):
        Study.load(study).shard_path("..", ORBIT, dt.date(2018, 1, 2))
    for key, value in (("name", ".."), ("experiment", "../x")):
        with pytest.raises(ConfigError, match="not allowed as a folder name"):
            parse_job({"name": "j", key: value, "study": {"path": str(study)}}, tmp_path)
    assert not (study / "runs").exists()


# -- 3. tracebacks -> one-line messages ---------------------------------------------------------------------
def test_non_utf8_inventory_in_merge_and_verify(study: Path):
    _non_utf8(study)
    clear_error(cli("store", "merge", study), "inventory.csv", "not UTF-8", "save it as UTF-8")
    clear_error(cli("store", "verify", study), "inventory.csv", "not UTF-8")


def test_truncated_checkpoint_on_resume(study: Path, reference_runs: Path):
    """An unfinished run (the reference's files without its results) whose checkpoint.pt was truncated."""
    shutil.copytree(reference_runs.parent, study / "runs" / "f")
    run = study / "runs" / "f" / "random" / "cnn" / "seed0"
    for name in ("metrics.json", "predictions.csv"):
        (run / name).unlink()
    config = json.loads(read_text(run / "config.json"))
    (run / "config.json").write_text(json.dumps({**config, "store": str(study / "work" / "patches.h5")}))
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])
    msg = clear_error(cli("train", study, *TRAIN_ARGS), "checkpoint.pt", "corrupt or truncated", "--force")
    assert "\n" not in msg.strip()  # one line
    assert not (run / "metrics.json").exists()


def test_verbose_shows_the_traceback(study: Path):
    ckpt = study / "work" / "patches.h5"
    ckpt.write_bytes(b"\0" * 64)
    res = cli("-v", "train", study, *TRAIN_ARGS)
    assert res.returncode == 1 and "Traceback" in res.stderr and "HDF5 file is corrupt" in res.stderr


def test_corrupt_store_in_train(study: Path):
    (study / "work" / "patches.h5").write_bytes(b"\0" * 64)
    clear_error(cli("train", study, *TRAIN_ARGS), "patches.h5", "corrupt or truncated", "--force")


def test_permission_denied_is_one_line(study: Path):
    if os.geteuid() == 0:
        # root ignores mode bits: a read-only bind of runs/ stands for the refused permission
        if not can_mount():
            pytest.skip("needs mount as root")
        (study / "runs").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(study / "runs")], check=True)
        try:
            clear_error(cli("baseline", study, *BASELINE_ARGS), "read-only file system")
        finally:
            subprocess.run(["umount", "-l", str(study / "runs")], check=False)
    else:  # pragma: no cover
        (study / "runs").mkdir(mode=0o500)
        clear_error(cli("baseline", study, *BASELINE_ARGS), "permission denied")


def test_temporary_file_deleted_under_a_task(fresh: Path):
    ok(cli("preprocess", fresh, "--season", SEASON, "--orbit", ORBIT, "--date", TASK_DATE))
    (fresh / "work" / "shards" / SEASON / ORBIT / f"{TASK_DATE}.h5").unlink()
    proc = start("preprocess", fresh, "--season", SEASON, "--orbit", ORBIT, "--date", TASK_DATE,
                 env=_env(**{PAUSE_ENV: "300", PAUSE_MATCH_ENV: f"{TASK_DATE}.h5"}))
    deadline = time.monotonic() + 120
    while not list(fresh.rglob(f"*{PAUSED_SUFFIX}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    victims = [p for p in tmp_files(fresh) if not p.name.endswith(PAUSED_SUFFIX)]
    assert victims
    for p in victims:
        p.unlink()  # e.g. the old blanket cleaner of 'store merge', or a user's rm
    for p in tmp_files(fresh):
        p.unlink()  # the pause marker: releases the writer
    _out, err = proc.communicate(timeout=120)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, _out, err)
    clear_error(res, "was deleted while being written", "re-run the task")
    ok(cli("preprocess", fresh, "--season", SEASON, "--orbit", ORBIT, "--date", TASK_DATE))


# -- 4. temporary files: removed only when their owner is gone ------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_cleaner_spares_a_live_writer_and_merge_no_longer_kills_it(fresh: Path):
    ok(cli("preprocess", fresh))
    shard = fresh / "work" / "shards" / SEASON / ORBIT / f"{TASK_DATE}.h5"
    shard.unlink()
    proc = start("preprocess", fresh, "--season", SEASON, "--orbit", ORBIT, "--date", TASK_DATE,
                 env=_env(**{PAUSE_ENV: "300", PAUSE_MATCH_ENV: f"{TASK_DATE}.h5"}))
    deadline = time.monotonic() + 120
    while not list(fresh.rglob(f"*{PAUSED_SUFFIX}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    live = tmp_files(fresh)
    assert live
    res = cli("store", "merge", fresh)  # runs the cleaner, then refuses: the task is not done
    assert res.returncode == 1 and "not complete" in res.stderr
    assert all(p.exists() for p in live)  # the running writer's files were spared
    for p in live:
        if p.name.endswith(PAUSED_SUFFIX):
            p.unlink()  # release the writer
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert shard.is_file()
    ok(cli("store", "merge", fresh))
    verify_ok(fresh)
    assert tmp_files(fresh) == []


def test_every_stage_removes_dead_writers_temporaries(study: Path):
    from avalanche_hpc.atomic import host_tag

    dead = _dead_pid()
    tag = f"{TMP_MARK}{dead}@{host_tag()}-0123abcd"
    left = [
        study / "work" / f"deposition.gpkg{tag}",
        study / "work" / "summer" / SEASON / f"{ORBIT}.h5{tag}",
        study / "work" / "shards" / SEASON / ORBIT / f"{TASK_DATE}.h5{tag}",
        study / "work" / f"patches.h5{tag}",
        study / "runs" / "f" / "random" / "cnn" / "seed0" / f"checkpoint.pt{tag}",
        study / "runs" / "f" / "random" / "cnn" / "seed0" / f"history.csv{tag}",
        study / "runs" / "f" / "features" / f"bank-0.h5{tag}",
    ]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 1000)
    ok(cli("preprocess", study, "--season", SEASON, "--orbit", ORBIT, "--date", TASK_DATE))
    assert not left[0].exists() and not left[1].exists() and not left[2].exists()
    ok(cli("store", "merge", study))
    assert not left[3].exists()
    ok(cli("baseline", study, *BASELINE_ARGS))  # cleans runs/{experiment}/ as train does
    assert tmp_files(study) == []


def test_owner_rules(tmp_path: Path):
    from avalanche_hpc.atomic import host_tag

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = tmp_path / f"a.h5{TMP_MARK}{sleeper.pid}@{host_tag()}-0123abcd"
        dead = tmp_path / f"b.h5{TMP_MARK}{_dead_pid()}@{host_tag()}-0123abcd{PAUSED_SUFFIX}"
        young_other = tmp_path / f"c.h5{TMP_MARK}42@other-node-7-0123abcd"
        old_other = tmp_path / f"d.h5{TMP_MARK}42@other-node-7-0123abcd"
        old_legacy = tmp_path / f"e.h5{TMP_MARK}42-0123abcd"
        foreign = tmp_path / "notes.tmp-mine"
        for p in (live, dead, young_other, old_other, old_legacy, foreign):
            p.write_text("x")
        old = time.time() - 7 * 3600
        for p in (old_other, old_legacy, foreign):
            os.utime(p, (old, old))
        assert not owner_gone(live) and owner_gone(dead)
        assert not owner_gone(young_other) and owner_gone(old_other) and owner_gone(old_legacy)
        assert not owner_gone(foreign)
        res = clean_tmp([tmp_path])
        assert sorted(p.name for p in res.removed) == sorted(p.name for p in (dead, old_other, old_legacy))
        assert live.exists() and young_other.exists() and foreign.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert owner_gone(live)  # its writer is gone now


# -- 5. silent acceptance ----------------------------------------------------------------------------------
def test_all_nodata_scene_warned_and_its_patches_left_out(fresh: Path):
    from avalanche_hpc.inputs.checks import check_study_report
    from avalanche_hpc.learn.splits import make_split, read_split
    from avalanche_hpc.store.layout import read_meta

    for band in ("VV", "VH"):
        rewrite_raster(_scene(fresh, band=band), nodata_all=True)
    report = check_study_report(fresh)
    assert report.problems == []
    assert any("100% of the sampled pixels are nodata" in w.what and TASK_DATE in w.file for w in report.warnings)
    res = ok(cli("inputs", "check", fresh))
    assert "warning:" in res.stdout and "nodata" in res.stdout
    ok(cli("preprocess", fresh))
    ok(cli("store", "merge", fresh))
    meta = read_meta(fresh / "work" / "patches.h5")
    meta["row"] = np.arange(len(meta))
    dead = meta[(meta["valid_fraction"] < 0.5) & (meta["label"] >= 0)]
    assert len(dead) >= 20  # the all-nodata date (as t1, and as t0 of the next date)
    split = read_split(make_split(fresh, "f", "random", 0))
    assert not set(dead["row"]) & set(split["store_row"])
    summary = json.loads(read_text(fresh / "runs" / "f" / "random" / "split.json"))
    assert summary["min_valid_fraction"] == 0.5
    assert sum(summary["excluded_low_valid"].values()) == len(dead)


def test_min_valid_fraction_is_configurable(study: Path):
    from avalanche_hpc.learn.splits import make_split, read_split

    edit_toml(study, lambda d: d.update(min_valid_fraction=0.8))
    split = read_split(make_split(study, "g", "random", 0))
    summary = json.loads(read_text(study / "runs" / "g" / "random" / "split.json"))
    assert sum(summary["excluded_low_valid"].values()) > 0
    assert summary["rows"] == len(split)


# -- 6. failed train, synth --overwrite through a link ---------------------------------------------------------
def test_failed_train_writes_no_experiment_record(study: Path, tmp_path: Path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a state dict")
    path = study / "runs" / "f" / "experiment.json"
    clear_error(cli("train", study, "-e", "f", "--weights", bad, "--max-epochs", "1"), "bad.pt")
    assert not path.exists()  # (a later good run writing it: test_full_disk_in_train)


def test_synth_overwrite_refuses_a_linked_work_folder(fresh: Path, tmp_path: Path):
    elsewhere = tmp_path / "scratch"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("precious")
    (fresh / "work").symlink_to(elsewhere)
    before = sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*"))
    clear_error(cli("synth", fresh, "--preset", "tiny", "--seed", "0", "--overwrite"),
                "symbolic link", "nothing was deleted")
    assert sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*")) == before
    assert (elsewhere / "keep.txt").read_text() == "precious"


# -- 7. slurm/local/start.sh does not hold the caller's stdout -------------------------------------------------
def test_detach_does_not_hold_the_callers_stdout(tmp_path: Path):
    log, pidfile = tmp_path / "d.log", tmp_path / "daemon.pid"
    daemon = f"echo $$ > {pidfile}; exec sleep 20"
    script = f"source {REPO / 'slurm/local/detach.sh'}; detach {log} sh -c '{daemon}'; echo started"
    t0 = time.monotonic()
    try:
        out = subprocess.run(["bash", "-c", f"{script} | cat"], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "started"
        assert time.monotonic() - t0 < 10  # with the old pattern, `| cat` waits for the daemon (20 s)
    finally:
        for _ in range(50):
            if pidfile.is_file() and pidfile.read_text().strip():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pidfile.read_text()), signal.SIGTERM)
                break
            time.sleep(0.1)
    old = "(cd / && setsid sleep 3 >/dev/null 2>&1 </dev/null &); echo started"  # the old start.sh pattern
    t0 = time.monotonic()
    subprocess.run(["bash", "-c", f"{old} | cat"], capture_output=True, timeout=60)
    assert time.monotonic() - t0 >= 2.5  # the old pattern holds the pipe: what the test above catches


@pytest.mark.slurm
def test_start_sh_piped_returns_when_the_cluster_is_up(slurm_cluster):
    t0 = time.monotonic()
    res = subprocess.run(["bash", "-c", f"bash {REPO / 'slurm/local/start.sh'} | tail -1"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "already running" in res.stdout or "up:" in res.stdout
    assert time.monotonic() - t0 < 60
