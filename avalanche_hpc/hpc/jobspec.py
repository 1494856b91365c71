"""Job specs (``jobs/*.toml``): which study, which stages with which settings, which executor.

::

    name = "demo"                          # names the SLURM jobs: avalanche-demo-preprocess, ...
    experiment = "demo"                    # STUDY/runs/demo, STUDY/reports/demo
    stages = ["synth", "check", "preprocess", "merge", "train", "baseline", "detect", "report"]
    executor = "local"                     # or "slurm" (then a profile is needed)
    profile = "../slurm/profiles/local.toml"

    [study]
    path = "../studies/demo"               # relative paths: relative to this file's folder
    preset = "demo"                        # optional: a synthetic study made when absent ...
    seed = 0                               # ... from this seed

    [train]
    seeds = [0, 1, 2]
    splits = ["random"]
    holdouts = ["Haute-Maurienne"]         # adds split "holdout-haute-maurienne"
    season_holdouts = true                 # adds "season-<id>" for every season of the study (or a list of ids)
    forward = true                         # adds "forward-<id>" for every season but the first (or a list;
                                           # forward-<last> is left out when it equals season-<last>)
    max_epochs = 250

Everything is validated before any work starts; an unknown key is answered with the valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from avalanche_hpc.config import StrictModel, config_error, read_toml
from avalanche_hpc.errors import ConfigError
from avalanche_hpc.hpc.stages import STAGE_NAMES, StageName
from avalanche_hpc.ids import check_id
from avalanche_hpc.learn.splits import forward_split_name, holdout_split_name, season_split_name

if TYPE_CHECKING:
    from avalanche_hpc.detect.scoring import DetectSettings


class StudySpec(StrictModel):
    path: Path = Field(description="study directory (relative: to the job file's folder)")
    preset: str | None = Field(None, description="synthetic preset made at 'path' when it has no study.toml")
    seed: int = Field(0, description="seed of the synthetic study")


class PreprocessSpec(StrictModel):
    force: bool = False


class MergeSpec(StrictModel):
    force: bool = False
    layout: Literal["consolidated", "virtual", "seasonal", "auto"] = "auto"  # auto: seasonal for several seasons


class TrainSpec(StrictModel):
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    splits: list[str] = Field(default_factory=lambda: ["random"])
    holdouts: list[str] = Field(default_factory=list, description="massif names held out (one split each)")
    season_holdouts: bool | list[str] = Field(
        False, description="season-<id> splits: true = one per season of the study, or a list of season ids")
    forward: bool | list[str] = Field(
        False, description="forward-<id> splits: true = one per season but the first, or a list of season ids")
    split_seed: int = 0
    weights: str = "auto"
    max_epochs: int = Field(250, ge=1)
    feature_bank: bool = True
    patience: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    n_views: int | None = Field(None, ge=1)
    crop: int | None = Field(None, ge=1)
    force: bool = False

    def run_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``train.train_run`` besides root/experiment/split/seed/dist."""
        kw: dict[str, Any] = {"weights": self.weights, "max_epochs": self.max_epochs,
                              "feature_bank": self.feature_bank, "split_seed": self.split_seed, "force": self.force}
        for k in ("patience", "batch_size", "lr", "n_views", "crop"):
            if getattr(self, k) is not None:
                kw[k] = getattr(self, k)
        return kw


BaselineVariant = Literal["paper", "tuned"]


def _all_variants() -> list[BaselineVariant]:
    return ["paper", "tuned"]


class BaselineSpec(StrictModel):
    crop: int = 50
    force: bool = False
    # paper: the paper's baseline (fixed per-pixel rule, count threshold tuned); tuned: all three tuned
    variants: list[BaselineVariant] = Field(default_factory=_all_variants, min_length=1)


class DetectSpec(StrictModel):
    split: str = "random"  # split whose CNN seeds and baseline score the store (the main one)
    min_valid: float | None = None  # valid-pixel share below which a corridor is not observed (default: study's)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    batch_size: int = 128
    force: bool = False

    @model_validator(mode="after")
    def _ranges(self) -> DetectSpec:
        self.settings().validate()
        return self

    def settings(self) -> DetectSettings:
        from avalanche_hpc.detect.scoring import DetectSettings

        return DetectSettings(split=self.split, min_valid=self.min_valid, precision=self.precision,
                              batch_size=self.batch_size)


class JobSpec(StrictModel):
    name: str
    experiment: str = "default"
    stages: list[StageName] = Field(default_factory=lambda: list(STAGE_NAMES), min_length=1)
    executor: Literal["local", "slurm"] = "local"
    profile: Path | None = None
    study: StudySpec
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    merge: MergeSpec = Field(default_factory=MergeSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    baseline: BaselineSpec = Field(default_factory=BaselineSpec)
    detect: DetectSpec = Field(default_factory=DetectSpec)
    source: Path | None = Field(None, exclude=True, description="the TOML file it was read from")

    @field_validator("name", "experiment")
    @classmethod
    def _folder_name(cls, v: str, info) -> str:
        return check_id(v, "job name" if info.field_name == "name" else "experiment name")

    @field_validator("stages")
    @classmethod
    def _ordered_unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ConfigError(f"a stage is listed twice: {v}")
        return sorted(v, key=STAGE_NAMES.index)

    @model_validator(mode="after")
    def _synth_needs_preset(self) -> JobSpec:
        if "synth" in self.stages and not self.study.preset:
            raise ConfigError("stage 'synth' needs study.preset (e.g. preset = \"tiny\"), or drop 'synth' from stages")
        return self

    @property
    def root(self) -> Path:
        return self.study.path

    def split_names(self) -> list[str]:
        """Every split of the job; season splits (``true``) follow the study's seasons when it exists."""
        names = list(self.train.splits) + [holdout_split_name(m) for m in self.train.holdouts]
        seasons = self._study_seasons() if self.train.season_holdouts is True or self.train.forward is True else []
        hold = seasons if self.train.season_holdouts is True else (self.train.season_holdouts or [])
        fwd = seasons[1:] if self.train.forward is True else (self.train.forward or [])
        if seasons and seasons[-1] in hold:  # forward-<last> is season-<last> (same train and test winters)
            fwd = [s for s in fwd if s != seasons[-1]]
        names += [season_split_name(s) for s in hold] + [forward_split_name(s) for s in fwd]
        return list(dict.fromkeys(names))

    def _study_seasons(self) -> list[str]:
        """Season ids of the study in time order ([] before the study exists)."""
        if not (self.root / "study.toml").is_file():
            return []
        from avalanche_hpc.study import Study

        return [s.id for s in sorted(Study.load(self.root).config.seasons, key=lambda s: s.start)]


def parse_job(data: dict[str, Any], base_dir: Path, source: Path | None = None) -> JobSpec:
    """Validate a job mapping; relative paths are resolved against ``base_dir``."""
    data = dict(data)
    if isinstance(data.get("study"), dict) and "path" in data["study"]:
        data["study"] = {**data["study"], "path": (base_dir / Path(data["study"]["path"])).resolve()}
    if data.get("profile"):
        data["profile"] = (base_dir / Path(data["profile"])).resolve()
    try:
        return JobSpec.model_validate({**data, "source": source})
    except ValidationError as e:
        raise config_error(e, source or Path("<job>"), JobSpec, kind="job spec", doc="jobs/demo.toml",
                           nouns={"stages": "stage"}) from e


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job TOML file."""
    path = Path(path).resolve()
    data = read_toml(path, what="job spec", example="jobs/demo.toml for an example")
    if "source" in data:
        raise ConfigError(f"{path}: 'source' is not a job key")
    return parse_job(data, path.parent, path)
