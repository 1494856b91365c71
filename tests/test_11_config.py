"""config.py: the strict settings base and the one pydantic error formatter (study, job spec, profile)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field, ValidationError

from avalanche_hpc.config import StrictModel, config_error, config_problems
from avalanche_hpc.errors import ConfigError


class Inner(StrictModel):
    size: int = Field(1, ge=1)
    mode: Literal["fast", "slow"] = "fast"


class Outer(StrictModel):
    name: str
    inner: Inner = Field(default_factory=Inner)
    items: list[Inner] = Field(default_factory=list)
    by_stage: dict[Literal["a", "b"], Inner] = Field(default_factory=dict)


def _err(data: dict) -> ValidationError:
    with pytest.raises(ValidationError) as e:
        Outer.model_validate(data)
    return e.value


def test_strict_model_forbids_unknown_keys_and_changes():
    o = Outer(name="x")
    with pytest.raises(ValidationError):
        o.name = "y"  # frozen
    with pytest.raises(ValidationError):
        Outer.model_validate({"name": "x", "nmae": 1})


def test_each_problem_names_the_file_the_key_path_and_the_fix():
    err = _err({"inner": {"sise": 2}, "items": [{"mode": "medium"}], "by_stage": {"c": {}, "a": {"size": 0}}})
    problems = {p.where: p for p in config_problems(err, "x.toml", Outer, doc="docs/x.md", nouns={"by_stage": "stage"})}
    assert {p.file for p in problems.values()} == {"x.toml"}
    assert problems["key name"].what == "missing" and problems["key name"].fix == "add it (see docs/x.md)"
    # an unknown key is answered with the valid keys of the model at that place (nested, not the top level)
    assert problems["key inner.sise"].fix == "valid keys here: size, mode"
    # an unknown choice, inside a list, with the choices
    assert problems["key items.0.mode"].what == "unknown value 'medium'"
    assert problems["key items.0.mode"].fix == "valid values: fast, slow"
    # a dict key that is not one of the Literal's choices, with the noun the caller gave
    assert problems["key by_stage.c.[key]"].what == "unknown stage 'c'"
    assert problems["key by_stage.c.[key]"].fix == "valid stages: a, b"
    # anything else: pydantic's message and the value
    assert "greater than or equal to 1 (got 0)" in problems["key by_stage.a.size"].what


def test_config_error_lists_every_problem_in_one_message():
    err = _err({"inner": {"size": 0}})
    e = config_error(err, "job.toml", Outer, kind="job spec", doc="jobs/demo.toml")
    assert isinstance(e, ConfigError) and isinstance(e, ValueError)
    text = str(e)
    assert text.startswith("job.toml: 2 problem(s) in the job spec:")
    assert "  - name: missing -> add it (see jobs/demo.toml)" in text
    assert "  - inner.size: Input should be greater than or equal to 1 (got 0) -> see jobs/demo.toml" in text
