"""The image of ``containers/avalanche.def``, built here and used: %test, a broken %post, SLURM tasks inside it.

The image is built (or reused) by ``containers/build_rootfs.py``: debootstrap's Debian bookworm,
the definition's own ``%files``/``%post``/``%test`` run inside it with Charliecloud's ``ch-run``
(SNAP off where ESA's servers cannot be reached). The tests then

- run the image's ``%test`` again and check the interpreter and the project come from the image;
- build a copy of the definition with a wrong pin: the build fails naming the ``%post`` step;
- run the ``tiny`` pipeline's preprocess array, merge and 2-rank training on the local SLURM
  cluster twice, on the host venv (``slurm/profiles/local.toml``) and inside the image
  (``slurm/profiles/local-charliecloud.toml``): shards, store, metrics and predictions are identical.

The image needs root, ``debootstrap`` and ``charliecloud-runtime``; without them the tests skip
with the reason, unless ``AVALANCHE_REQUIRE_CONTAINER=1`` (``.ci/run``), where they fail. A cold
build takes minutes (CI builds it before the tests); a cached one is reused in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from containers import build_rootfs

pytestmark = [pytest.mark.container, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
DEF = REPO / "containers" / "avalanche.def"
LOCAL = REPO / "slurm" / "profiles" / "local.toml"
LOCAL_CH = REPO / "slurm" / "profiles" / "local-charliecloud.toml"


def _unavailable(reason: str) -> None:
    if os.environ.get("AVALANCHE_REQUIRE_CONTAINER") == "1":
        pytest.fail(f"AVALANCHE_REQUIRE_CONTAINER=1 but the image cannot be built here: {reason}", pytrace=False)
    pytest.skip(f"no container image: {reason} (as root: apt-get install debootstrap charliecloud-runtime; "
                "python3 containers/build_rootfs.py; see docs/containers.md)")


def _env() -> dict[str, str]:
    return {**os.environ, "USER": os.environ.get("USER") or "root"}


@pytest.fixture(scope="session")
def container_image() -> Path:
    """The image directory of this checkout (built, or reused from the cache when current)."""
    if os.geteuid() != 0:
        _unavailable("not root (debootstrap needs root; the cache is /var/cache/avalanche-hpc)")
    missing = [t for t in ("debootstrap", "ch-run") if shutil.which(t) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed")
    os.environ.setdefault("USER", "root")  # ch-run refuses to start without it
    try:
        image = build_rootfs.build(DEF, build_rootfs.cache_dir(), {})
    except build_rootfs.BuildError as e:
        pytest.fail(f"the image does not build: {e}", pytrace=False)
    return image


def _in_image(image: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(build_rootfs.in_image(image, script, with_environment=True), capture_output=True,
                          text=True, env=_env(), timeout=600)


def test_image_is_current_and_its_test_section_passes(container_image):
    meta = json.loads((container_image.parent / f"{container_image.name}.json").read_text())
    assert meta["state"] == "ok"
    # the project in the image is this checkout (the files digest of %files)
    header, sections = build_rootfs.parse_def(DEF.read_text())
    assert meta["files_key"] == build_rootfs.files_key(build_rootfs.files_entries(sections), REPO)
    assert meta["header"]["Bootstrap"] == "debootstrap" == header["Bootstrap"]
    r = _in_image(container_image, "exec /bin/sh -e /.singularity.d/test")
    assert r.returncode == 0, r.stdout + r.stderr
    # the interpreter, the stack and the project come from the image, whatever the host's PYTHONPATH says
    r = _in_image(container_image, 'exec python -c "import sys, torch, avalanche_hpc; '
                                   'print(sys.executable, sys.version_info[:2], torch.__version__, avalanche_hpc.__file__)"')
    assert r.returncode == 0, r.stderr
    exe, rest = r.stdout.split(" ", 1)
    assert exe == "/opt/venv/bin/python" and "(3, 11)" in rest and "2.14.1" in rest
    assert rest.split()[-1].startswith("/opt/venv/lib/python3.11/site-packages/avalanche_hpc/")
    labels = json.loads((container_image / ".singularity.d" / "labels.json").read_text())
    assert labels["torch.version"] == "2.14.1" and labels["snap.installed"] == meta["args"]["WITH_SNAP"]
    if meta["args"]["WITH_SNAP"] == "0":  # said so in the build log
        log = (container_image.parent / f"{container_image.name}.log").read_text()
        assert "WITH_SNAP=0: no gpt to test" in log


def test_a_broken_post_step_fails_the_build_naming_the_step(container_image, tmp_path, capsys):
    """A wrong pin in %post: the build stops at that step, says which, and leaves the cached image alone."""
    broken = tmp_path / "avalanche.def"
    text = DEF.read_text()
    assert "torch==2.14.1 torchvision==0.29.1" in text
    broken.write_text(text.replace("torch==2.14.1 torchvision==0.29.1", "torch==2.14.99 torchvision==0.29.1"))
    cache = build_rootfs.cache_dir()
    link_before = os.readlink(cache / build_rootfs.LINK)
    before = {p.name for p in cache.iterdir()}
    rc = build_rootfs.main(["--def", str(broken), "--cache", str(cache), "--build-arg", "WITH_SNAP=0",
                            "--build-arg", "WITH_VGG16=0"])
    out = capsys.readouterr()
    assert rc == 1
    assert "failed in step 'python stack: torch'" in out.err, out.err
    assert "torch==2.14.99" in out.out  # pip's own message, streamed
    assert os.readlink(cache / build_rootfs.LINK) == link_before  # the good image is still the one in use
    new = {p.name for p in cache.iterdir()} - before
    assert not [n for n in new if not n.endswith(".log")], f"left behind: {new}"
    for n in new:
        (cache / n).unlink()


# -- the tiny pipeline on SLURM: host venv vs inside the image ---------------------------------------
def h5_digest(path: Path) -> str:
    """sha256 over every dataset (name, dtype, shape, values) and attribute of an HDF5 file."""
    import h5py

    h = hashlib.sha256()

    def attrs(obj) -> None:
        for k in sorted(obj.attrs):
            h.update(f"{k}={np.asarray(obj.attrs[k]).tolist()!r}".encode())

    with h5py.File(path, "r", locking=False) as f:
        attrs(f)
        names: list[str] = []
        f.visit(names.append)
        for name in sorted(names):
            obj = f[name]
            h.update(name.encode())
            attrs(obj)
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                h.update(f"{obj.dtype}{obj.shape}".encode())
                h.update(np.ascontiguousarray(data).tobytes() if data.dtype.kind != "O" else repr(data.tolist()).encode())
    return h.hexdigest()


def output_digests(root: Path) -> dict[str, str]:
    """Digests of what the stages wrote: shards and store (content), metrics, predictions, history (bytes)."""
    out = {}
    for p in sorted((root / "work").rglob("*.h5")):
        out[str(p.relative_to(root))] = h5_digest(p)
    for name in ("metrics.json", "predictions.csv", "history.csv"):
        for p in sorted((root / "runs").rglob(name)):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_tiny_pipeline_inside_the_image_on_slurm_matches_the_host(container_image, slurm_cluster, tmp_path):
    from avalanche_hpc.hpc.container import python_setting
    from avalanche_hpc.hpc.jobspec import parse_job
    from avalanche_hpc.hpc.launcher import _executor, submit_job
    from avalanche_hpc.hpc.profiles import load_profile, parse_profile

    os.environ.setdefault("USER", "root")
    ch = parse_profile({**load_profile(LOCAL_CH).model_dump(), "image": str(container_image)}, LOCAL_CH)
    assert python_setting(ch).startswith("ch-run --unset-env=PYTHONPATH ")

    def job(root: Path, name: str, stages: list[str]):
        return parse_job({"name": name, "experiment": "tiny", "stages": stages,
                          "study": {"path": str(root), "preset": "tiny", "seed": 0},
                          "train": {"seeds": [0], "splits": ["random"], "weights": "none", "max_epochs": 3}},
                         tmp_path)

    host_root, ch_root = tmp_path / "host" / "tiny", tmp_path / "container" / "tiny"
    assert submit_job(job(host_root, "synth", ["synth", "check"]), LOCAL).submitted == {}  # host stages only
    shutil.copytree(host_root, ch_root)  # the same inputs for both runs
    stages = ["preprocess", "merge", "train"]
    host = submit_job(job(host_root, "host", stages), LOCAL)
    host.wait(timeout_s=900)
    inside = submit_job(job(ch_root, "container", stages), ch)
    assert len(inside.submitted["preprocess"]) == len(host.submitted["preprocess"]) >= 2  # an array
    inside.wait(timeout_s=900)

    # the tasks did run in the image: the submitted command is ch-run's, and a task sees the image
    sbatch = next((ch_root / "work" / "jobs" / "container" / "preprocess").rglob("*_submission.sh")).read_text()
    assert "ch-run --unset-env=PYTHONPATH" in sbatch and str(container_image) in sbatch
    ex = _executor(job(ch_root, "container", stages), ch, "preprocess", None)
    probes = [ex.submit(os.getenv, "CH_RUNNING"), ex.submit(os.getenv, "AVALANCHE_IMAGE"),
              ex.submit(shutil.which, "avalanche-hpc")]
    running, in_image, cli = (p.result() for p in probes)
    assert running and in_image == "1" and cli == "/opt/venv/bin/avalanche-hpc"

    a, b = output_digests(host_root), output_digests(ch_root)
    shards = [k for k in a if k.startswith("work/shards/")]
    assert len(shards) == len(host.submitted["preprocess"]) and "work/patches.h5" in a
    assert any(k.endswith("metrics.json") for k in a) and any(k.endswith("predictions.csv") for k in a)
    assert a == b, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
