"""Backbone weights: a file we create (loaded and checksum-checked), wrong checksums, missing files."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.hub
import torchvision

from avalanche_hpc.errors import WeightsError
from avalanche_hpc.learn.model import build_vgg16
from avalanche_hpc.learn.weights import IMAGENET_FILE, resolve_weights


@pytest.fixture()
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub cache (no ImageNet file), whatever the machine holds."""
    d = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(d))
    monkeypatch.delenv("AVALANCHE_HPC_VGG16_WEIGHTS", raising=False)
    return d


def test_weights_file_is_checked_and_loaded(tmp_path):
    torch.manual_seed(123)
    model = torchvision.models.vgg16(weights=None)
    model.classifier[6] = torch.nn.Linear(4096, 2)
    state = {k: v.half() for k, v in model.state_dict().items()}  # half: a smaller test file
    path = tmp_path / "mine.pth"
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    resolved = resolve_weights(str(path), sha256=digest)
    assert resolved.kind == "file" and resolved.sha256 == digest
    loaded = build_vgg16(resolved)
    assert torch.equal(loaded.features[0].weight, state["features.0.weight"].float())
    assert torch.equal(loaded.classifier[6].bias, state["classifier.6.bias"].float())

    with pytest.raises(WeightsError, match="does not match the expected"):
        resolve_weights(str(path), sha256="0" * 64)


def test_bad_weights_files(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_weights(str(missing))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot be read"):
        build_vgg16(resolve_weights(str(garbage)))
    other = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(WeightsError, match="not a torchvision VGG16"):
        build_vgg16(resolve_weights(str(other)))


def test_imagenet_missing_says_where_and_how(hub_dir):
    with pytest.raises(WeightsError) as e:
        resolve_weights("imagenet")
    msg = str(e.value)
    assert str(hub_dir / "checkpoints" / IMAGENET_FILE) in msg
    assert "IMAGENET1K_V1" in msg and "never downloaded" in msg


def test_imagenet_wrong_checksum(hub_dir):
    f = hub_dir / "checkpoints" / IMAGENET_FILE
    f.parent.mkdir(parents=True)
    f.write_bytes(b"truncated download")
    with pytest.raises(WeightsError, match="397923af"):
        resolve_weights("imagenet")
    # auto does not hide a corrupt file either: it falls back with a recorded warning
    r = resolve_weights("auto")
    assert r.kind == "none" and "RANDOMLY INITIALISED" in r.warning


def test_auto_and_none(hub_dir):
    r = resolve_weights("auto")
    assert r.kind == "none" and r.warning and "imagenet" in r.as_record()["warning"].lower()
    assert resolve_weights("none").kind == "none" and resolve_weights("none").warning is None
