"""Backbone input mapping: does the documented mapping (and per-patch centring) give the frozen
backbone features a linear classifier can use? Prints figures; chooses ``PATCH_CENTRING``.

For a study with a merged patch store (a *development* study: never one whose test results
are being reported), the random split of experiment ``inputs-bench`` (60/20/20 by corridor),
and two backbones:

- ``none``: torchvision's VGG16 init (seeded), as the demo trains without ImageNet weights;
- ``test-made``: a VGG16 state_dict written here (another init seed, saved and loaded through
  ``--weights PATH`` as a pretrained file is). No ImageNet weights can be downloaded on this
  machine, so this only exercises the pretrained code path (ImageNet normalisation, the file's
  FC layers); it does not show what real ImageNet features would do.

For each input mapping (``legacy``: dB / 3, the mapping before this change; ``imagenet``: the
documented mapping without centring; ``imagenet-centred``: with per-patch centring) the centre
views of every pool patch go through the frozen backbone; a logistic regression (features
standardised on the training rows, C = 1) is fitted on the training rows and scored on the
validation rows; test accuracy is printed for information only and is not used for any choice.

Rule (validation only): per-patch centring is on when it raises the validation accuracy averaged
over the two backbones.

    .venv/bin/python -m benchmarks.bench_inputs --study PATH
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from avalanche_hpc.learn.features import centre_views, prepare_patches
from avalanche_hpc.learn.inputs import map_input
from avalanche_hpc.learn.model import Backbone, build_vgg16
from avalanche_hpc.learn.splits import make_split, read_split
from avalanche_hpc.learn.weights import resolve_weights
from avalanche_hpc.store.layout import read_patches
from avalanche_hpc.study import Study

CROP = 50
MAPPINGS = {
    "legacy (dB / 3)": lambda x: torch.as_tensor(x) / 3.0,
    "imagenet": lambda x: map_input(x, centre=False),
    "imagenet-centred": lambda x: map_input(x, centre=True),
}


def features(backbone: Backbone, patches: np.ndarray, mapping, batch: int = 64) -> np.ndarray:
    v = centre_views(len(patches), patches.shape[-1], CROP)[:, 0]
    r0, c0 = int(v[0, 0]), int(v[0, 1])
    win = patches[:, :, r0:r0 + CROP, c0:c0 + CROP]
    out = [backbone(mapping(np.ascontiguousarray(win[s:s + batch]))).numpy() for s in range(0, len(win), batch)]
    return np.concatenate(out)


def probe(feats: np.ndarray, sets: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr = sets == "train"
    sc = StandardScaler().fit(feats[tr])
    clf = LogisticRegression(C=1.0, max_iter=3000).fit(sc.transform(feats[tr]), labels[tr])
    acc = {s: float((clf.predict(sc.transform(feats[sets == s])) == labels[sets == s]).mean()) for s in ("val", "test")}
    return acc["val"], acc["test"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    study = Study.load(args.study)
    table = read_split(make_split(args.study, "inputs-bench", "random", 0))
    rows = table["store_row"].to_numpy(dtype=np.int64)
    patches = prepare_patches(read_patches(study.store_path, rows))
    sets, labels = table["set"].to_numpy(), table["label"].to_numpy(dtype=np.int64)
    print(f"study {args.study}: {len(rows)} patches (train {int((sets == 'train').sum())}, "
          f"val {int((sets == 'val').sum())}, test {int((sets == 'test').sum())})")
    with tempfile.TemporaryDirectory() as tmp:
        import torchvision

        torch.manual_seed(1234)
        path = Path(tmp) / "vgg16-test-made.pth"
        torch.save(torchvision.models.vgg16(weights=None).state_dict(), path)
        backbones = {"none": resolve_weights("none"), "test-made": resolve_weights(str(path))}
        results: dict[tuple[str, str], tuple[float, float]] = {}
        for wname, resolved in backbones.items():
            bb = Backbone(build_vgg16(resolved))
            for mname, mapping in MAPPINGS.items():
                results[(wname, mname)] = probe(features(bb, patches, mapping), sets, labels)
                va, te = results[(wname, mname)]
                print(f"  weights {wname:10s} mapping {mname:18s} linear probe: val acc {va:.3f}  test acc {te:.3f}",
                      flush=True)
    gain = np.mean([results[(w, "imagenet-centred")][0] - results[(w, "imagenet")][0] for w in backbones])
    print(f"per-patch centring: mean validation-accuracy change {gain:+.3f} -> PATCH_CENTRING = {bool(gain > 0)}")


if __name__ == "__main__":
    main()
