"""Container-aware launching: run job Python (and SNAP's gpt) inside the Apptainer image.

A cluster profile that names an image::

    image = "/shared/containers/avalanche.sif"
    binds = ["/shared/data/studies"]      # host paths visible in the container (src[:dst[:opts]])
    scratch = "/scratch"                  # node-local scratch: bound too

makes every job run as ``apptainer exec --nv --bind <binds> image.sif python ...``
(submitit's ``python`` setting: ``python_command(profile)`` is that prefix, joined).

What must be bound
------------------
* the study directories and the job folder (submitit writes pickles/logs there): ``binds``;
* local scratch (``$TMPDIR``/``/scratch``): per-task SNAP user dirs and temporary files;
* nothing for the GPU: ``--nv`` binds the host's NVIDIA driver libraries and devices.

``scontrol requeue`` / ``sbatch`` from inside the image
-------------------------------------------------------
submitit's checkpoint/timeout handling (``submitit/slurm/slurm.py``: on SIGUSR2 the job
process calls ``scontrol requeue $SLURM_JOB_ID``) runs *in the job's Python*, i.e. inside
the container. The image has no SLURM client, so for requeue to work from inside it the
host's client must be bound in, read-only:

* the binaries: ``/usr/bin/scontrol`` (and ``sbatch``/``squeue``/``sacct`` if jobs submit jobs);
* their libraries: ``/usr/lib/x86_64-linux-gnu/slurm*`` or ``/usr/lib64/slurm`` (``libslurmfull.so``),
  plus ``libmunge.so.2`` when the image's distribution lacks it;
* the configuration: ``/etc/slurm`` (``slurm.conf``; or the ``SLURM_CONF`` file; configless
  clusters fetch it from slurmctld and need only the DNS SRV record or ``--conf-server``);
* authentication: the munge socket directory ``/run/munge`` (``/var/run/munge``);
* the ``slurm`` user in ``/etc/passwd`` (Apptainer binds the host's ``/etc/passwd`` entries by default).

``REQUEUE_BINDS`` lists the usual set; sites differ, so the profile's ``binds`` is the
place to adjust. The alternative that needs none of this: keep submitit (and its signal
handler) on the host and put only the workload in the container, i.e. launch
``apptainer exec ... python -m ...`` as a *command* job; submitit's own Python then runs on
the host and can call the host's scontrol. This project uses the first form (submitit's
``python`` setting), so the requeue binds are needed where preemption/timeouts are handled.

Runtimes
--------
The profile's ``runtime`` picks the command (per cluster):

* ``apptainer`` (default): ``apptainer exec --nv --bind a,b image.sif python``;
* ``charliecloud``: ``ch-run --unset-env=PYTHONPATH -b a -b b IMAGE -- /bin/sh -c '. ENV && exec "$@"' avalanche python``
  where IMAGE is a directory (``containers/build_rootfs.py`` builds it from the same definition)
  and ENV is the image's ``%environment`` (``/.singularity.d/env/90-environment.sh``, where
  Apptainer keeps it and ``apptainer exec`` sources it). ``ch-run`` binds the host's ``/tmp``
  itself; a bind's destination must exist in the (read-only) image (``build_rootfs.py
  --mount-point DIR``); there is no ``--nv`` (GPU libraries go in once with ``ch-fromhost --nvidia``);
  ``ch-run`` needs ``$USER`` set.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from avalanche_hpc.errors import ConfigError, MissingInputError

APPTAINER = "apptainer"
CH_RUN = "ch-run"
RUNTIMES = ("apptainer", "charliecloud")
# where the image keeps %environment (Apptainer's layout; build_rootfs.py writes it there too)
IMAGE_ENV_FILE = "/.singularity.d/env/90-environment.sh"
# Host paths that let `scontrol requeue` work from inside the image (see the module docstring).
REQUEUE_BINDS = (
    "/etc/slurm",
    "/run/munge",
    "/usr/bin/scontrol",
    "/usr/bin/sbatch",
    "/usr/lib/x86_64-linux-gnu/slurm-wlm",
)


def profile_field(profile: Any, name: str, default: Any = None) -> Any:
    """A key of a profile given as a mapping or as a ``Profile`` (``default`` when it lacks it or is None)."""
    if isinstance(profile, Mapping):
        return profile.get(name, default)
    return getattr(profile, name, default)


def as_profile(profile: Any) -> Any:
    """A profile as given (mapping or ``Profile``), or read and validated from a TOML file path."""
    if isinstance(profile, (str, Path)):
        from avalanche_hpc.hpc.profiles import load_profile as load_validated

        return load_validated(profile)
    return profile


def container_prefix(profile: Any, *, extra_binds: Sequence[str | Path] = (), nv: bool | None = None,
                     check_image: bool = False) -> list[str] | None:
    """The command prefix that runs a program in the profile's image, or None when it names no ``image``.

    ``[apptainer, exec, --nv, --bind, a,b, image.sif]`` or, with ``runtime = "charliecloud"``,
    ``[ch-run, --unset-env=PYTHONPATH, -b, a, -b, b, IMAGE, --, /bin/sh, -c, <source %environment>, avalanche]``.
    """
    profile = as_profile(profile)
    if profile is None:
        return None
    image = profile_field(profile, "image")
    if not image:
        return None
    image = str(image)
    runtime = str(profile_field(profile, "runtime", "apptainer") or "apptainer")
    if runtime not in RUNTIMES:
        raise ConfigError(f"profile key 'runtime' is {runtime!r} -> one of {', '.join(RUNTIMES)}")
    binds = profile_field(profile, "binds", []) or []
    if isinstance(binds, str):
        raise ConfigError(f"profile key 'binds' must be a list of paths, got the string {binds!r} -> "
                          'write binds = ["/scratch", "/data"]')
    scratch = profile_field(profile, "scratch")
    all_binds: list[str] = []
    for b in [*binds, *([str(scratch)] if scratch else []), *(str(x) for x in extra_binds)]:
        if b and b not in all_binds:
            all_binds.append(str(b))
    if runtime == "charliecloud":
        return charliecloud_prefix(image, all_binds, check_image=check_image)
    if check_image and not Path(image).is_file():
        raise MissingInputError(f"container image {image} (profile key 'image') does not exist -> build it with "
                                "'make container' (docs/containers.md) or fix the path in the profile")
    use_nv = profile_field(profile, "nv", True) if nv is None else nv
    cmd = [str(profile_field(profile, "apptainer", APPTAINER) or APPTAINER), "exec"]
    if use_nv:
        cmd.append("--nv")
    if all_binds:
        cmd += ["--bind", ",".join(all_binds)]
    cmd.append(image)
    return cmd


def charliecloud_prefix(image: str, binds: Sequence[str], *, check_image: bool = False) -> list[str]:
    """``ch-run`` with the binds, the image directory, and a shell that sources the image's ``%environment``.

    Where the image directory is visible here, every bind's destination must exist in it: ``ch-run``
    cannot create a mount point in a read-only image (the error names the fix).
    """
    root = Path(image)
    if check_image and not root.is_dir():
        raise MissingInputError(f"container image directory {image} (profile key 'image') does not exist -> build it "
                                "with 'python3 containers/build_rootfs.py' (docs/containers.md) or fix the path")
    cmd = [CH_RUN, "--unset-env=PYTHONPATH"]  # the project is installed in the image, never taken from the host
    for b in binds:
        parts = b.split(":")
        if len(parts) > 2:
            raise ConfigError(f"bind {b!r}: ch-run takes SRC[:DST] (no options) -> drop ':{parts[2]}' for the "
                              "charliecloud runtime")
        dest = parts[-1]
        if _bound_by_default(dest) and parts[0] == dest:
            continue  # already visible through ch-run's own /tmp bind
        if root.is_dir() and not (root / dest.lstrip("/")).exists() and not _bound_by_default(dest):
            raise MissingInputError(f"bind {b!r}: {dest} does not exist in the image {image} and ch-run cannot create "
                                    f"it in a read-only image -> rebuild with 'python3 containers/build_rootfs.py "
                                    f"--mount-point {dest}' (cheap on a cached image) or mkdir -p {root}{dest}")
        cmd += ["-b", b]
    return [*cmd, image, "--", "/bin/sh", "-c", f'. {IMAGE_ENV_FILE} && exec "$@"', "avalanche"]


def _bound_by_default(dest: str) -> bool:
    """Paths ch-run binds from the host itself (a bind below them needs no mount point in the image)."""
    return dest == "/tmp" or dest.startswith("/tmp/")


def python_command(profile: Any, *, extra_binds: Sequence[str | Path] = ()) -> list[str] | None:
    """The prefix that runs the image's ``python`` (``apptainer exec ... image.sif python`` or ``ch-run ...``), else None.

    submitit takes a string for its ``python`` setting: ``shlex.join(python_command(profile))``.
    """
    prefix = container_prefix(profile, extra_binds=extra_binds)
    return None if prefix is None else [*prefix, "python"]


def python_setting(profile: Any, *, extra_binds: Sequence[str | Path] = ()) -> str | None:
    """``python_command`` as the single string submitit's ``python=`` parameter expects."""
    cmd = python_command(profile, extra_binds=extra_binds)
    return None if cmd is None else shlex.join(cmd)
