"""Training throughput and the cost of a sweep, feature bank vs per-epoch backbone passes.

Prints (all measured in this run, on this machine):
- the fp32 matrix-multiply rate (GFLOP/s, square matmuls): the machine's baseline;
- FLOPs per image: VGG16 backbone at the crop size, the folded head (forward), the unfolded
  torchvision classifier (forward) for comparison;
- training images/s with the feature bank (head forward + backward only) and with per-epoch
  augmentation (backbone forward without autograd + head), each with its ratio
  achieved FLOP/s / matmul FLOP/s;
- checkpoint write time per epoch;
- the extrapolated cost of a sweep (seeds x (random split + every hold-out)) both ways.

Run: ``.venv/bin/python -m benchmarks.bench_train [--quick] [--pool N] [--massifs M] [--epochs E]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avalanche_hpc.learn.features import DEFAULT_VIEWS, centre_views, crop_batch
from avalanche_hpc.learn.model import Backbone, Head, build_vgg16, init_head
from avalanche_hpc.learn.train import save_torch
from avalanche_hpc.learn.weights import resolve_weights


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timed(lambda: torch.mm(a, b), reps) / 1e9


def conv_flops(vgg, crop: int) -> float:
    """Multiply-adds x2 of the 13 convolutions for one crop x crop image."""
    total, size = 0.0, crop
    for m in vgg.features:
        if isinstance(m, torch.nn.Conv2d):
            total += 2 * m.in_channels * m.out_channels * 9 * size * size
        elif isinstance(m, torch.nn.MaxPool2d):
            size //= 2
    return total


def head_flops(head: Head) -> float:
    return 2 * sum(lin.in_features * lin.out_features for lin in (head.fc1, head.fc2, head.fc3))


def timed(fn, reps: int) -> float:
    """Best of ``reps`` calls (seconds): the machine is shared, the minimum is the least disturbed."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--pool", type=int, default=1316, help="pool size (paper: 658 positives + 658 negatives)")
    ap.add_argument("--massifs", type=int, default=16, help="hold-outs in the sweep (paper: 16 mountain chains)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=250, help="epochs per run (upper bound; early stopping is less)")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    reps = 2 if args.quick else 5
    torch.manual_seed(0)
    crop, b = 50, args.batch

    peak = matmul_gflops(1024 if args.quick else 2048, reps)
    vgg = build_vgg16(resolve_weights("none"))
    backbone = Backbone(vgg)
    head = init_head(None, 0, pretrained_fc=False)
    f_bb, f_head = conv_flops(vgg, crop), head_flops(head)
    f_unfolded = 2 * sum(m.in_features * m.out_features for m in vgg.classifier if isinstance(m, torch.nn.Linear))
    print(f"threads: {torch.get_num_threads()}  fp32 matmul: {peak:.1f} GFLOP/s")
    print(f"FLOPs/image: backbone {f_bb / 1e9:.3f} G at {crop}x{crop}; folded head fwd {f_head / 1e6:.1f} M "
          f"(unfolded torchvision classifier fwd {f_unfolded / 1e6:.1f} M)")

    patches = np.random.default_rng(0).normal(size=(b, 3, 64, 64)).astype(np.float32)
    views = centre_views(b, 64, crop)[:, 0]
    x_img = crop_batch(patches, np.arange(b), views, crop)
    feats = backbone(x_img)
    y = torch.randint(0, 2, (b,))
    opt = torch.optim.Adam(head.param_groups(1e-5))

    def head_step():
        head.train()
        opt.zero_grad()
        F.cross_entropy(head(feats), y).backward()
        opt.step()

    def per_epoch_step():
        f = backbone(crop_batch(patches, np.arange(b), views, crop))
        head.train()
        opt.zero_grad()
        F.cross_entropy(head(f), y).backward()
        opt.step()

    t_head = timed(head_step, reps * 3) / b
    t_bb = timed(lambda: backbone(x_img), reps) / b
    t_full = timed(per_epoch_step, reps) / b
    train_flops_head = 3 * f_head  # forward + backward (2x)
    print(f"bank training:      {1 / t_head:8.0f} images/s  "
          f"({train_flops_head / t_head / 1e9:.1f} GFLOP/s = {train_flops_head / t_head / 1e9 / peak:.2f} of matmul)")
    print(f"per-epoch training: {1 / t_full:8.0f} images/s  "
          f"({(f_bb + train_flops_head) / t_full / 1e9:.1f} GFLOP/s = "
          f"{(f_bb + train_flops_head) / t_full / 1e9 / peak:.2f} of matmul)")
    print(f"backbone inference: {1 / t_bb:8.0f} images/s  ({f_bb / t_bb / 1e9:.1f} GFLOP/s = "
          f"{f_bb / t_bb / 1e9 / peak:.2f} of matmul)")
    with tempfile.TemporaryDirectory() as d:
        state = {"head": head.state_dict(), "optimizer": opt.state_dict()}
        t_ck = timed(lambda: save_torch(state, Path(d) / "checkpoint.pt"), 1 if args.quick else 2)
        size = (Path(d) / "checkpoint.pt").stat().st_size
    print(f"checkpoint: {size / 1e6:.0f} MB written atomically in {t_ck:.2f} s (once per epoch)")

    # sweep: seeds x (random + hold-outs); each run trains on ~60% of the pool and evaluates the rest
    runs = args.seeds * (1 + args.massifs)
    n_train, n_eval = int(0.6 * args.pool), args.pool - int(0.6 * args.pool)
    k = DEFAULT_VIEWS
    bank_cost = args.pool * (k + 1) * t_bb + runs * args.epochs * (n_train * t_head + t_ck)
    per_epoch_cost = runs * (args.epochs * (n_train * t_full + t_ck) + n_eval * t_bb)
    print(f"sweep: {args.seeds} seeds x (random + {args.massifs} hold-outs) = {runs} runs, pool {args.pool}, "
          f"{args.epochs} epochs each, K = {k} views")
    print(f"  feature bank: {bank_cost / 3600:8.2f} h  (bank {args.pool * (k + 1) * t_bb / 60:.1f} min once, "
          f"then {args.epochs * (n_train * t_head + t_ck):.0f} s per run)")
    print(f"  per-epoch:    {per_epoch_cost / 3600:8.2f} h  ({args.epochs * n_train * t_full / 60:.1f} min per run)")
    print(f"  ratio per-epoch / bank: {per_epoch_cost / bank_cost:.1f}x")


if __name__ == "__main__":
    main()
