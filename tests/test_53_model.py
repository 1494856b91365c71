"""VGG16 transfer model: the folded classifier equals torchvision's, in output and in a training step."""

from __future__ import annotations

import pytest
import torch
import torchvision

from avalanche_hpc.errors import ConfigError
from avalanche_hpc.learn.model import FOLD_FACTOR, Backbone, Head, build_vgg16, check_crop, fold_classifier, init_head
from avalanche_hpc.learn.weights import resolve_weights


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    m = torchvision.models.vgg16(weights=None)
    m.classifier[6] = torch.nn.Linear(4096, 2)
    # larger FC weights than the init so that differences would show
    with torch.no_grad():
        m.classifier[0].weight.normal_(0, 0.02)
    return m.eval()


def test_folded_head_equals_torchvision_classifier(vgg):
    x = torch.randn(4, 3, 50, 50)
    with torch.no_grad():
        full = vgg(x)
    backbone = Backbone(vgg)
    head = fold_classifier(vgg.classifier).eval()
    feats = backbone(x)
    assert feats.shape == (4, 512) and not feats.requires_grad
    assert not any(p.requires_grad for p in backbone.parameters())
    folded = head(feats)
    torch.testing.assert_close(folded, full, rtol=1e-4, atol=1e-5)
    assert head.fc1.weight.shape == (4096, 512)


def _small_classifier() -> torch.nn.Sequential:
    """torchvision's VGG classifier shape with 256 hidden units (fast); dropout off for comparison."""
    torch.manual_seed(1)
    lin = torch.nn.Linear
    return torch.nn.Sequential(lin(512 * FOLD_FACTOR, 256), torch.nn.ReLU(), torch.nn.Dropout(0.0),
                               lin(256, 256), torch.nn.ReLU(), torch.nn.Dropout(0.0), lin(256, 2))


def _step(model, opt, inp, y):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(inp), y).backward()
    opt.step()


def test_folded_training_step_equals_unfolded():
    """With the first layer's lr x49 a step of the folded head is a step of the unfolded classifier."""
    feats, y = torch.randn(8, 512).relu(), torch.tensor([0, 1] * 4)
    rep = feats[:, :, None].expand(8, 512, FOLD_FACTOR).reshape(8, -1)  # what adaptive pooling feeds
    lr = 1e-3
    # SGD with momentum: equal to float rounding over several steps
    unfolded = _small_classifier()
    head = fold_classifier(unfolded)
    head.p = 0.0
    opt_u = torch.optim.SGD(unfolded.parameters(), lr=lr, momentum=0.9)
    opt_f = torch.optim.SGD(head.param_groups(lr), lr=lr, momentum=0.9)
    for _ in range(3):
        _step(unfolded, opt_u, rep, y)
        _step(head, opt_f, feats, y)
    refold = fold_classifier(unfolded)
    torch.testing.assert_close(refold.fc1.weight, head.fc1.weight, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(refold.fc2.weight, head.fc2.weight, rtol=1e-4, atol=1e-6)
    # Adam: equal except where a gradient is at float-rounding level (Adam normalises it to +-lr)
    unfolded = _small_classifier()
    head = fold_classifier(unfolded)
    head.p = 0.0
    _step(unfolded, torch.optim.Adam(unfolded.parameters(), lr=lr), rep, y)
    _step(head, torch.optim.Adam(head.param_groups(lr)), feats, y)
    diff = (fold_classifier(unfolded).fc1.weight - head.fc1.weight).abs()
    assert float((diff > 0.01 * FOLD_FACTOR * lr).float().mean()) < 0.01
    # without the x49 the folded step would be far off
    unfolded = _small_classifier()
    head = fold_classifier(unfolded)
    head.p = 0.0
    _step(unfolded, torch.optim.SGD(unfolded.parameters(), lr=lr), rep, y)
    _step(head, torch.optim.SGD(head.parameters(), lr=lr), feats, y)
    assert not torch.allclose(fold_classifier(unfolded).fc1.weight, head.fc1.weight, rtol=1e-4, atol=1e-6)


def test_heads_per_seed_and_crop_limits():
    a, b, c = (init_head(None, s, pretrained_fc=False) for s in (0, 0, 1))
    assert torch.equal(a.fc2.weight, b.fc2.weight) and not torch.equal(a.fc2.weight, c.fc2.weight)
    assert isinstance(a, Head) and a.fc3.out_features == 2
    # random-init backbone is the same for every training seed (one feature bank per experiment)
    v1, v2 = build_vgg16(resolve_weights("none")), build_vgg16(resolve_weights("none"))
    assert torch.equal(v1.features[0].weight, v2.features[0].weight)
    check_crop(50)
    with pytest.raises(ConfigError, match="32..63"):
        check_crop(64)
