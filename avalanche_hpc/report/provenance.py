"""What produced a report: code version, settings of the runs, digests of the inputs."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

from avalanche_hpc import __version__
from avalanche_hpc.report.analysis import store_digest_info
from avalanche_hpc.report.collect import Experiment


def git_describe(path: Path | None = None) -> str | None:
    """``git describe --always --dirty --tags`` of the source tree holding ``path``; None outside git."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty", "--tags"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys with scalar values (lists/dicts such as tuning curves stay in summary.json)."""
    return {k: v for k, v in d.items() if not isinstance(v, dict | list)}


def collect_provenance(exp: Experiment) -> dict[str, Any]:
    """Code version, experiment settings, every run's settings and input digests."""
    runs = []
    for split in exp.splits:
        for run in split.runs:
            runs.append({
                "split": split.name, "run": run.name, "dir": str(run.dir.relative_to(exp.study.root)),
                "predictions_sha256": sha256_file(run.dir / "predictions.csv"),
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
    """Key/value rows for the HTML/Markdown provenance table (scalars only; the rest is in summary.json)."""
    rows = [["package version", prov["package_version"]], ["git describe", prov["git_describe"] or "n/a (not a git tree)"],
            ["study", prov["study"]], ["experiment", prov["experiment"]], ["focus massif", prov["focus_massif"]]]
    for k, v in sorted(_scalars(prov.get("experiment_settings") or {}).items()):
        rows.append([f"experiment.{k}", str(v)])
    store = prov.get("store") or {}
    if store:
        rows.append(["store", f"{store['path']} ({store['size_bytes'] / 1e6:.1f} MB)"])
        for k, v in sorted((store.get("attrs") or {}).items()):
            if not isinstance(v, dict | list):
                rows.append([f"store.{k}", str(v)])
    else:
        rows.append(["store", "not found (dataset summary from split.csv only)"])
    for r in prov["runs"]:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(_scalars(r["settings"]).items()))
        rows.append([f"{r['split']} / {r['run']}", f"{settings or '(no settings file)'}; "
                                                   f"predictions sha256 {r['predictions_sha256'][:16]}"])
    return rows
