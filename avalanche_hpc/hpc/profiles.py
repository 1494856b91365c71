"""Cluster profiles: every cluster detail (partition, account, GPUs, time, image, binds) lives here.

A profile is a TOML file (``slurm/profiles/*.toml``) validated by the pydantic models below
before anything is submitted. An unknown key is answered with the list of valid keys::

    name = "local"
    partition = "debug"
    array_parallelism = 4          # %K: at most K tasks of one array run at once
    max_array_size = 500           # optional: tasks per array below the cluster's MaxArraySize

    [defaults]                     # resources of every stage's tasks ...
    time_min = 30
    cpus_per_task = 1
    mem_gb = 2

    [stages.train]                 # ... overridden per stage
    tasks_per_node = 2             # DDP ranks (one per GPU on a GPU node)
    gpus_per_node = 0

Units: ``time_min`` minutes, ``mem_gb`` GiB per node, ``signal_delay_s`` seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from avalanche_hpc.config import StrictModel, config_error, read_toml
from avalanche_hpc.errors import ConfigError
from avalanche_hpc.hpc.stages import STAGE_NAMES, ResourcesKey

STAGES = STAGE_NAMES  # the pipeline's stages, in order (the registry: hpc/stages.py)


class Resources(StrictModel):
    """What one task of a stage asks SLURM for. Every field is optional in a stage override."""

    time_min: int | None = Field(None, ge=1, description="wall-clock limit per task (minutes)")
    cpus_per_task: int | None = Field(None, ge=1, description="CPU cores per task (per rank)")
    mem_gb: float | None = Field(None, gt=0, description="memory per node (GiB)")
    gpus_per_node: int | None = Field(None, ge=0, description="GPUs per node (0: CPU only)")
    nodes: int | None = Field(None, ge=1, description="nodes per task (DDP over nodes)")
    tasks_per_node: int | None = Field(None, ge=1, description="processes per node (DDP ranks)")
    partition: str | None = Field(None, description="partition of this stage (overrides the profile's)")
    qos: str | None = None
    constraint: str | None = Field(None, description="node feature constraint, e.g. 'a100'")
    array_parallelism: int | None = Field(None, ge=1, description="%K throttle of this stage's arrays")


DEFAULT_RESOURCES = Resources(time_min=60, cpus_per_task=1, mem_gb=4, gpus_per_node=0, nodes=1, tasks_per_node=1)


class Profile(StrictModel):
    """A cluster profile (see the module docstring and slurm/profiles/example-university.toml)."""

    name: str
    executor: Literal["slurm", "local"] = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = Field(16, ge=1, description="%K: at most K tasks of an array at once")
    max_array_size: int | None = Field(
        None, ge=1, description="at most this many tasks per array (below the cluster's MaxArraySize, which is "
                                "read with 'scontrol show config'); a larger stage is split into several arrays")
    signal_delay_s: int = Field(120, ge=0, description="USR2 this many seconds before the time limit")
    max_requeues: int = Field(5, ge=0, description="checkpoint/requeue at most this many times")
    image: str | None = Field(None, description="container image: jobs run inside it (.sif, or a directory for ch-run)")
    runtime: Literal["apptainer", "charliecloud"] = Field(
        "apptainer", description="how jobs enter the image: apptainer exec, or charliecloud's ch-run (hpc/container.py)")
    binds: list[str] = Field(default_factory=list, description="host paths bound into the image")
    scratch: str | None = Field(None, description="node-local scratch ($TMPDIR for the jobs)")
    setup: list[str] = Field(default_factory=list, description="shell lines run before python (module load ...)")
    job_dir: str | None = Field(None, description="where submitit writes pickles and logs (default STUDY/work/jobs)")
    sbatch: dict[str, str | int | bool] = Field(default_factory=dict,
                                               description="extra #SBATCH options, e.g. {mail-type = 'FAIL'}")
    defaults: Resources = Field(default_factory=Resources)
    stages: dict[ResourcesKey, Resources] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _binds_need_image(self) -> Profile:
        if self.binds and not self.image:
            raise ConfigError("'binds' is set but 'image' is not: binds only apply inside an Apptainer image")
        if self.runtime != "apptainer" and not self.image:
            raise ConfigError(f"'runtime' is {self.runtime!r} but 'image' is not set: name the image the runtime runs")
        return self

    def resources(self, stage: str) -> Resources:
        """The resources of one stage (its registry ``resources_key``): built-in defaults < [defaults] < [stages.KEY]."""
        merged: dict[str, Any] = DEFAULT_RESOURCES.model_dump()
        merged["partition"], merged["qos"] = self.partition, self.qos
        merged["array_parallelism"] = self.array_parallelism
        for layer in (self.defaults, self.stages.get(stage)):
            if layer is not None:
                merged.update({k: v for k, v in layer.model_dump().items() if v is not None})
        return Resources(**merged)


def parse_profile(data: dict[str, Any], source: str | Path = "<profile>") -> Profile:
    try:
        return Profile.model_validate(data)
    except ValidationError as e:
        raise config_error(e, source, Profile, kind="cluster profile", doc="slurm/profiles/example-university.toml",
                           nouns={"stages": "stage"}) from e


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile TOML file; errors name the file, the key and the valid keys."""
    path = Path(path)
    data = read_toml(path, what="cluster profile",
                     example="slurm/profiles/ for examples (local.toml, example-university.toml)")
    return parse_profile(data, path)
