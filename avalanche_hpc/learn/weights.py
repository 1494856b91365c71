"""Backbone weights: resolved from local files only, checksum-verified, never downloaded at run time.

``--weights`` values:

- ``imagenet``: torchvision's VGG16 ImageNet file ``vgg16-397923af.pth``, looked up in
  ``$AVALANCHE_HPC_VGG16_WEIGHTS`` (a file path) then in the torch hub cache
  (``torch.hub.get_dir()/checkpoints/``, i.e. ``$TORCH_HOME/hub/checkpoints`` or
  ``~/.cache/torch/hub/checkpoints``). Its sha256 must start with the hash torchvision publishes
  in the file name (``397923af``), as ``torch.hub`` checks it.
- ``none``: random initialisation (torchvision's VGG init, seeded).
- a path to a state_dict file (``torch.save(model.state_dict())``), optionally with the full
  expected sha256 (``--weights-sha256``).
- ``auto``: ``imagenet`` when the file is present and valid, else ``none`` with a loud warning,
  recorded in the run's config.json (``weights_warning``).

Files are read with ``torch.load(..., weights_only=True)`` (no pickle code execution).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from avalanche_hpc.digest import sha256_file
from avalanche_hpc.errors import WeightsError

log = logging.getLogger(__name__)
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process
_WARNED: set[str] = set()


def _file_sha256(path: Path) -> str:
    """sha256 of a weights file, hashed once per process while its size and mtime stay the same
    (an ImageNet file is ~500 MB; train, sweep and detect resolve it for every run and check)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]

IMAGENET_FILE = "vgg16-397923af.pth"
IMAGENET_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
IMAGENET_HASH_PREFIX = "397923af"  # published by torchvision in the file name (torch.hub's check)
WEIGHTS_ENV = "AVALANCHE_HPC_VGG16_WEIGHTS"
HOW_TO_GET = (
    "on a machine with internet run: python -c \"import torchvision; "
    "torchvision.models.vgg16(weights='IMAGENET1K_V1')\" (it downloads " + IMAGENET_URL + " into "
    "~/.cache/torch/hub/checkpoints/), then copy that file to {dest} on this machine, or point "
    "$" + WEIGHTS_ENV + " at it; or run with --weights none (random init) or --weights auto"
)


@dataclass(frozen=True)
class ResolvedWeights:
    """What a ``--weights`` value resolved to (recorded in config.json)."""

    requested: str
    kind: str  # "imagenet" | "none" | "file"
    path: Path | None = None
    sha256: str | None = None
    warning: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ident(self) -> str:
        """Short id for cache keys: the file's sha256 prefix, or 'none'."""
        return "none" if self.sha256 is None else self.sha256[:16]

    def as_record(self) -> dict:
        return {"requested": self.requested, "kind": self.kind, "path": str(self.path) if self.path else None,
                "sha256": self.sha256, "warning": self.warning}


def hub_checkpoint_path() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def imagenet_candidates() -> list[Path]:
    out = []
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        out.append(Path(env))
    out.append(hub_checkpoint_path())
    return out


def resolve_imagenet() -> ResolvedWeights:
    """The ImageNet VGG16 file, checksum-checked; WeightsError when missing or corrupt."""
    candidates = imagenet_candidates()
    for path in candidates:
        if path.is_file():
            digest = _file_sha256(path)
            if not digest.startswith(IMAGENET_HASH_PREFIX):
                raise WeightsError(
                    f"{path}: sha256 {digest} does not match torchvision's published hash {IMAGENET_HASH_PREFIX}... "
                    f"for {IMAGENET_FILE} (corrupt or truncated copy?) -> delete it and copy it again; "
                    + HOW_TO_GET.format(dest=hub_checkpoint_path())
                )
            return ResolvedWeights("imagenet", "imagenet", path, digest)
    looked = ", ".join(str(p) for p in candidates)
    raise WeightsError(
        f"ImageNet VGG16 weights not found (looked in: {looked}); they are never downloaded at run time -> "
        + HOW_TO_GET.format(dest=hub_checkpoint_path())
    )


def resolve_weights(spec: str, sha256: str | None = None) -> ResolvedWeights:
    """Resolve a ``--weights`` value (imagenet | none | auto | PATH) without loading anything."""
    if spec == "none":
        return ResolvedWeights("none", "none")
    if spec == "imagenet":
        return resolve_imagenet()
    if spec == "auto":
        try:
            r = resolve_imagenet()
            return ResolvedWeights("auto", r.kind, r.path, r.sha256)
        except WeightsError as e:
            warning = (f"--weights auto: ImageNet weights unavailable ({e}); training on a RANDOMLY INITIALISED "
                       f"frozen VGG16 backbone - results are not comparable to the paper's")
            if warning not in _WARNED:  # once per process, not on every completeness check
                _WARNED.add(warning)
                log.warning(warning)
            return ResolvedWeights("auto", "none", warning=warning)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist -> give an existing state_dict file, or one of "
            f"'imagenet', 'none', 'auto'"
        )
    digest = _file_sha256(path)
    if sha256 is not None and digest != sha256.lower():
        raise WeightsError(f"{path}: sha256 {digest} does not match the expected {sha256} -> copy the file again "
                           f"or correct --weights-sha256")
    return ResolvedWeights(spec, "file", path.resolve(), digest)


def load_state_dict(resolved: ResolvedWeights) -> dict | None:
    """The state_dict of a resolved file (``weights_only=True``), or None for random init."""
    if resolved.path is None:
        return None
    import torch

    try:
        state = torch.load(resolved.path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in several types
        raise WeightsError(f"{resolved.path}: cannot be read as a weights-only state_dict ({e}) -> "
                           f"save it with torch.save(model.state_dict(), PATH)") from e
    if not isinstance(state, dict):
        raise WeightsError(f"{resolved.path}: holds a {type(state).__name__}, not a state_dict -> "
                           f"save it with torch.save(model.state_dict(), PATH)")
    return state
