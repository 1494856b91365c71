"""Settings read from TOML files: one strict pydantic base and one way to explain what is wrong.

Three files are validated with these models: ``study.toml`` (``study.py``), job specs
(``hpc/jobspec.py``) and cluster profiles (``hpc/profiles.py``). Each error names the file,
the key path (``train.epochs``, ``stages.train.gpu``) and the fix; an unknown key is answered
with the valid keys at that place, an unknown choice with the valid choices.
"""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from avalanche_hpc.errors import ConfigError, MissingInputError, Problem


class StrictModel(BaseModel):
    """Base of every settings model: unknown keys are errors and values cannot be changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _find(annotation: Any, want: str) -> Any:
    """The nested model class (``want='model'``) or Literal choices (``'literal'``) inside an annotation."""
    if want == "model" and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if want == "literal" and typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        found = _find(arg, want)
        if found is not None:
            return found
    return None


def _walk(root: type[BaseModel], loc: Sequence[str | int]) -> tuple[type[BaseModel], str | None, Any]:
    """Follow a pydantic error location through nested models.

    Returns the model that holds the last key of ``loc``, and the name and annotation of the
    last field on the path (list indices and dict keys stay in the field they index).
    """
    model, field, annotation = root, None, None
    for i, part in enumerate(loc):
        info = model.model_fields.get(str(part))
        if info is None:
            continue
        field, annotation = str(part), info.annotation
        sub = _find(annotation, "model")
        if i < len(loc) - 1 and sub is not None:
            model = sub
    return model, field, annotation


# pydantic error types of values that TOML types itself (what strict validation refuses when quoted)
_TYPED = {"int_type": "whole number", "float_type": "number", "date_type": "date (YYYY-MM-DD)",
          "bool_type": "boolean", "int_from_float": "whole number"}


def config_problems(
    err: ValidationError,
    file: str | Path,
    root: type[BaseModel],
    *,
    doc: str,
    nouns: Mapping[str, str] | None = None,
) -> list[Problem]:
    """One ``Problem`` per pydantic error: ``where`` is ``key <path>``, ``fix`` names what to write.

    ``doc`` is where the reader finds the valid settings; ``nouns`` names the choices of a field
    (``{"stages": "stage"}`` gives "unknown stage 'x' -> valid stages: ...").
    """
    out = []
    for e in err.errors():
        loc = e["loc"]
        key = ".".join(str(p) for p in loc) or "(top level)"
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            model, _, _ = _walk(root, loc)
            valid = [k for k, f in model.model_fields.items() if not f.exclude]
            what, fix = "unknown key", f"valid keys here: {', '.join(valid)}"
        elif e["type"] == "missing":
            what, fix = "missing", f"add it (see {doc})"
        elif e["type"] == "literal_error":
            _, field, annotation = _walk(root, loc)
            choices = _find(annotation, "literal") or ()
            noun = (nouns or {}).get(field or str(loc[0]), "value")
            what, fix = f"unknown {noun} {value!r}", f"valid {noun}s: {', '.join(map(str, choices))}"
        elif e["type"] in _TYPED and isinstance(value, str):  # strict TOML types: "32632", "2017-11-15"
            what = f"{e['msg']} (got the string {value!r})"
            fix = ("write the value without quotes: TOML numbers are bare (crs_epsg = 32632) and dates are bare "
                   "YYYY-MM-DD (start = 2017-11-15)")
        elif e["type"] in _TYPED and isinstance(value, bool):  # patch_size = true
            what, fix = f"{e['msg']} (got {value!r})", f"write a {_TYPED[e['type']]}, not a boolean; see {doc}"
        else:
            shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
            what, fix = f"{e['msg']}{shown}", f"see {doc}"
        out.append(Problem(str(file), f"key {key}", what, fix))
    return out


def config_error(
    err: ValidationError,
    file: str | Path,
    root: type[BaseModel],
    *,
    kind: str,
    doc: str,
    nouns: Mapping[str, str] | None = None,
) -> ConfigError:
    """A ``ConfigError`` listing every problem of one settings file (``kind``: 'job spec', ...)."""
    problems = config_problems(err, file, root, doc=doc, nouns=nouns)
    lines = [f"  - {p.where.removeprefix('key ')}: {p.what} -> {p.fix}" for p in problems]
    return ConfigError(f"{file}: {len(lines)} problem(s) in the {kind}:\n" + "\n".join(lines))


def read_toml(path: str | Path, *, what: str, example: str) -> dict[str, Any]:
    """The mapping in a TOML settings file (``what``: 'job spec', ...).

    ``MissingInputError`` when it does not exist (pointing at ``example``), ``ConfigError``
    naming the file when it is not valid TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{what} {path} does not exist -> see {example}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
