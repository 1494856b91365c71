"""VGG16 transfer model: torchvision's VGG16, convolutional layers frozen, the 3 FC layers trained.

With 50x50 inputs the 5 max-pools leave a 512x1x1 map; ``AdaptiveAvgPool2d((7, 7))`` then
replicates each value 49 times, so the first FC layer ``W (4096, 25088)`` acts on the 512
backbone features through ``W.view(4096, 512, 49).sum(-1)``. ``Head`` is that *folded*
classifier: ``Linear(512, 4096) - ReLU - Dropout(0.5) - Linear(4096, 4096) - ReLU -
Dropout(0.5) - Linear(4096, 2)``. It computes exactly the torchvision classifier's function
(tested to float tolerance) at 1/49 of the first layer's cost (103 M -> 2.1 M weights).

Training equivalence: in the unfolded model every one of the 49 blocks of ``W`` receives the
same gradient ``g x^T`` as the folded weight does, so one SGD or Adam step moves their sum 49
times further. ``param_groups`` therefore gives the folded first layer ``lr * FOLD_FACTOR``,
which makes a training step of ``Head`` equal to a step of the unfolded classifier (tested).

The backbone (``vgg.features``) is frozen (``requires_grad=False``), kept in eval mode and run
under ``torch.inference_mode`` (no autograd graph), once per view when the feature bank is used.
Inputs: the 3 dB channels through the documented mapping of ``inputs.map_input`` (optional
per-patch centring, dB -> image range, ImageNet mean/std normalisation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from avalanche_hpc.errors import ConfigError, WeightsError
from avalanche_hpc.learn.weights import ResolvedWeights, load_state_dict

if TYPE_CHECKING:
    from torchvision.models import VGG

N_CLASSES = 2
FEATURE_DIM = 512
HIDDEN = 4096
DROPOUT = 0.5
FOLD_FACTOR = 49  # 7 x 7 adaptive-pool replication of the 1x1 map
BACKBONE_SEED = 0  # random-init backbone: the same for every training seed (so the feature bank is shared)
MIN_CROP, MAX_CROP = 32, 63  # crops whose VGG16 feature map is 1x1


def check_crop(crop: int) -> None:
    if not MIN_CROP <= crop <= MAX_CROP:
        raise ConfigError(f"crop {crop} px: VGG16 folding needs a 1x1 feature map, i.e. a crop of "
                          f"{MIN_CROP}..{MAX_CROP} px (the paper uses 50)")


def build_vgg16(weights: ResolvedWeights, n_classes: int = N_CLASSES) -> VGG:
    """torchvision VGG16 with its last layer replaced by ``n_classes`` outputs, weights loaded."""
    import torchvision

    state = load_state_dict(weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BACKBONE_SEED)
        model = torchvision.models.vgg16(weights=None)
        last_in = model.classifier[6].in_features
        n_out_file = None if state is None else state.get("classifier.6.weight", torch.empty(0, 0)).shape[0]
        try:
            if state is not None and n_out_file != n_classes:
                model.load_state_dict(state)  # ImageNet (1000 classes): load, then replace the last layer
                state = None
            model.classifier[6] = nn.Linear(last_in, n_classes)
            if state is not None:
                model.load_state_dict(state)  # a file of this model (2 classes)
        except RuntimeError as e:
            raise WeightsError(f"{weights.path}: not a torchvision VGG16 state_dict ({str(e)[:300]}) -> "
                               f"give torchvision's vgg16 weights or a state_dict of this model") from e
    return model


class Backbone(nn.Module):
    """The frozen convolutional part: (N, 3, c, c) inputs -> (N, 512) features (c in 32..63)."""

    def __init__(self, vgg: VGG):
        super().__init__()
        self.features = vgg.features
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Backbone:  # frozen: always eval
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features on the backbone's device (inputs are moved there)."""
        with torch.inference_mode():
            f = self.features(x.to(next(self.features.parameters()).device))
        if f.shape[-2:] != (1, 1):
            raise ConfigError(f"backbone map is {tuple(f.shape[-2:])}, not 1x1: inputs must be {MIN_CROP}..{MAX_CROP} px")
        return f.flatten(1).clone()


class Head(nn.Module):
    """The folded VGG16 classifier on 512 features; dropout masks may be given explicitly.

    Explicit masks (``forward(x, masks=(m1, m2))``, entries 0/1) let the training loop draw
    them from a generator keyed by (seed, epoch, batch) over the *global* batch, so a DDP run
    on any number of ranks applies the same masks to the same samples as a 1-rank run.
    """

    shift: torch.Tensor  # buffers (register_buffer below)
    scale: torch.Tensor

    def __init__(self, hidden: int = HIDDEN, n_classes: int = N_CLASSES, p: float = DROPOUT):
        super().__init__()
        self.fc1 = nn.Linear(FEATURE_DIM, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, n_classes)
        self.p = p
        # input standardisation (identity by default = torchvision's classifier); see set_standardisation
        self.register_buffer("shift", torch.zeros(FEATURE_DIM))
        self.register_buffer("scale", torch.ones(FEATURE_DIM))

    def set_standardisation(self, feats: torch.Tensor) -> None:
        """Centre inputs on the per-feature mean of ``feats`` (N, 512) and divide by their overall std.

        Used with a randomly initialised backbone, whose features are ~0.04 (measured on the
        test stores) where ImageNet features are O(1): without it the head barely moves. One
        scale for all features (not per feature): near-constant (dead) features must not be
        blown up by a tiny per-feature std.
        """
        with torch.no_grad():
            mean = feats.mean(0)
            self.shift.copy_(mean)
            self.scale.fill_(1.0 / float((feats - mean).std().clamp_min(1e-12)))

    def _drop(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if not self.training or self.p == 0:
            return h
        if mask is None:
            return F.dropout(h, self.p, training=True)
        return h * mask / (1.0 - self.p)

    def forward(self, x: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        m1, m2 = masks if masks is not None else (None, None)
        x = (x - self.shift) * self.scale
        h = self._drop(F.relu(self.fc1(x)), m1)
        h = self._drop(F.relu(self.fc2(h)), m2)
        return self.fc3(h)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups that make a step of this head equal to one of the unfolded classifier."""
        return [
            {"params": list(self.fc1.parameters()), "lr": lr * FOLD_FACTOR},
            {"params": list(self.fc2.parameters()) + list(self.fc3.parameters()), "lr": lr},
        ]


def fold_classifier(classifier: nn.Sequential, hidden: int = HIDDEN) -> Head:
    """The exact folded equivalent of a torchvision VGG16 classifier (for a 1x1 backbone map)."""
    fc1, fc2, fc3 = (cast(nn.Linear, classifier[i]) for i in (0, 3, 6))
    head = Head(hidden=fc1.out_features, n_classes=fc3.out_features)
    with torch.no_grad():
        head.fc1.weight.copy_(fc1.weight.view(fc1.out_features, FEATURE_DIM, FOLD_FACTOR).sum(-1))
        head.fc1.bias.copy_(fc1.bias)
        head.fc2.load_state_dict(fc2.state_dict())
        head.fc3.load_state_dict(fc3.state_dict())
    return head


def init_head(vgg: VGG, seed: int, pretrained_fc: bool) -> Head:
    """The trainable head for a training seed.

    With pretrained weights the FC layers start from the file's (folded) layers and only the new
    2-class layer is drawn from ``seed``; with random init all three are drawn from ``seed``
    (torchvision's VGG init: normal(0, 0.01) weights, zero biases).
    """
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if pretrained_fc:
            head = fold_classifier(vgg.classifier)
            nn.init.normal_(head.fc3.weight, 0, 0.01)
            nn.init.zeros_(head.fc3.bias)
        else:
            head = Head()
            for lin in (head.fc1, head.fc2, head.fc3):
                nn.init.normal_(lin.weight, 0, 0.01)
                nn.init.zeros_(lin.bias)
            # the unfolded fc1 has 49 blocks of N(0, 0.01): their sum is N(0, 0.01 * 7)
            with torch.no_grad():
                head.fc1.weight.mul_(FOLD_FACTOR ** 0.5)
    finally:
        torch.random.set_rng_state(gen_state)
    return head
