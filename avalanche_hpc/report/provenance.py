"""What produced a report: code version, settings of the runs, digests of the inputs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from avalanche_hpc import __version__
from avalanche_hpc.digest import digest_json, sha256_file
from avalanche_hpc.report.analysis import store_digest_info
from avalanche_hpc.report.collect import Experiment
from avalanche_hpc.store.layout import read_attrs
from avalanche_hpc.study import Study


def git_describe(path: Path | None = None) -> str | None:
    """``git describe --always --dirty --tags`` of the source tree holding ``path``; None outside git."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty", "--tags"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys with scalar values; lists (tuning curves, ...) are left to summary.json."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif not isinstance(v, list):
            out[key] = v
    return out


def _shown(key: str, value: Any) -> bool:
    # free-text warnings (they may quote download addresses) live in summary.json and "At a glance"
    return "warning" not in key.split(".")[-1]


def _common_and_diffs(settings: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Keys with one value in every run, and per run the keys that differ."""
    flat = [{k: v for k, v in flatten(s).items() if _shown(k, v)} for s in settings]
    keys = set().union(*flat) if flat else set()
    common = {k: flat[0][k] for k in sorted(keys) if all(k in f and f[k] == flat[0][k] for f in flat)}
    return common, [{k: v for k, v in sorted(f.items()) if k not in common} for f in flat]


def collect_provenance(exp: Experiment) -> dict[str, Any]:
    """Code version, experiment settings, every run's settings and input digests."""
    runs = []
    for split in exp.splits:
        for run in split.runs:
            runs.append({
                "split": split.name, "run": run.name, "dir": str(run.dir.relative_to(exp.study.root)),
                "predictions_sha256": sha256_file(run.files.predictions),
                "settings": run.config,
            })
    return {
        "package_version": __version__,
        "git_describe": git_describe(),
        "study": str(exp.study.root.resolve()),
        "study_name": exp.study.config.name,
        "experiment": exp.name,
        "experiment_settings": exp.settings,
        "focus_massif": exp.focus_massif,
        "store": store_digest_info(exp.study.store_path),
        "runs": runs,
    }


def provenance_rows(prov: dict[str, Any]) -> list[list[str]]:
    """Key/value rows for the HTML/Markdown provenance table (the complete record is in summary.json).

    Settings shared by every CNN run (resp. baseline run) are listed once; each run's row gives
    what differs and the sha256 of its predictions.csv.
    """
    rows = [["package version", prov["package_version"]], ["git describe", prov["git_describe"] or "n/a (not a git tree)"],
            ["study", prov["study"]], ["experiment", prov["experiment"]], ["focus massif", prov["focus_massif"]]]
    for k, v in sorted(flatten(prov.get("experiment_settings") or {}).items()):
        if _shown(k, v):
            rows.append([f"experiment.{k}", str(v)])
    store = prov.get("store") or {}
    if store:
        rows.append(["store", f"{store['path']} ({store['size_bytes'] / 1e6:.1f} MB)"])
        for k, v in sorted(flatten(store.get("attrs") or {}).items()):
            rows.append([f"store.{k}", str(v)])
    else:
        rows.append(["store", "not found (dataset summary from split.csv only)"])
    for kind in ("cnn", "baseline"):
        runs = [r for r in prov["runs"] if r["run"].startswith(kind)]
        common, diffs = _common_and_diffs([r["settings"] for r in runs])
        rows += [[f"{kind}.{k}", str(v)] for k, v in common.items()]
        for r, d in zip(runs, diffs, strict=False):
            rows.append([f"{r['split']} / {r['run']}", ", ".join(f"{k}={v}" for k, v in d.items())
                         + ("; " if d else "") + f"predictions sha256 {r['predictions_sha256'][:16]}"])
    return rows


DIGEST_META = "avalanche-hpc-inputs-digest"
_DIGEST_RE = re.compile(r'<meta name="' + DIGEST_META + r'" content="([0-9a-f]+)">')


def report_inputs_digest(study: Study, experiment: str) -> str:
    """Digest of what a report of ``experiment`` reads: every run file (sha256 of its content), the
    published detections' ``provenance.json`` (rewritten by every publication), the store's own digest
    and the code version."""
    runs = study.runs(experiment)
    files = [runs.experiment_json]
    for name in runs.split_names():
        files.append(runs.split_csv(name))
        seeds = [runs.cnn(name, seed) for seed in runs.cnn_seeds(name)]
        for f in [*seeds, runs.baseline(name)]:
            files += [f.config, f.params, f.history, f.predictions, f.metrics]
    content = {str(p.relative_to(runs.root)): sha256_file(p) for p in files if p.is_file()}
    published = study.detection_paths(experiment).provenance  # the Activity / Orbit fusion sections read it
    if published.is_file():
        content["detections/provenance.json"] = sha256_file(published)
    store = study.store_path
    store_digest = read_attrs(store).get("digest") if store.is_file() else None
    return digest_json({"runs": content, "store": store_digest, "code": __version__})


def report_is_current(root: Path, experiment: str) -> bool:
    """Whether ``index.html`` exists and was built from the experiment's current runs (its inputs digest)."""
    study = Study.load(root)
    index = study.report_index(experiment)
    if not index.is_file():
        return False
    head = index.read_text(encoding="utf-8", errors="replace")[:4096]
    m = _DIGEST_RE.search(head)
    return m is not None and m.group(1) == report_inputs_digest(study, experiment)
