"""Training throughput and the cost of a sweep: batched feature-bank sweep vs per-epoch backbone passes.

Prints (all measured in this run, on this machine) and, with ``--json PATH``, writes as JSON:
- the matrix-multiply rate in fp32 and bf16 (GFLOP/s, square matmuls): the machine's baseline;
- FLOPs per image: VGG16 backbone at the crop size, the folded head (forward), the unfolded
  torchvision classifier (forward) for comparison, and the head's training step (what it needs:
  forward, weight gradients, input gradients of fc2 and fc3);
- the backbone's images/s in each precision mode (``learn/precision.py``: fp32 NCHW, fp32
  channels-last, bf16 autocast channels-last), the mode the start-up probe chooses, and the
  relative error of bf16 features against fp32;
- head training images/s: one run as ``train_run`` steps it (``learn/step.py``, fused Adam), and the
  batched sweep step (``sweep.StackedHeads``: ``slots`` runs per step, bmm, one fused Adam),
  each as a fraction of the fp32 matmul rate (the head trains in fp32);
- per-epoch training images/s (backbone in the chosen mode + head step), checkpoint write time;
- the extrapolated cost of a sweep (seeds x (random split + every hold-out)) both ways, from
  the per-step costs measured here, and the sweep's FLOP floor (backbone FLOPs at the matmul rate
  of its precision + head FLOPs at the fp32 rate).

Run: ``.venv/bin/python -m benchmarks.bench_train [--quick] [--json PATH] [--pool N] [--massifs M] [--epochs E]``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from avalanche_hpc.learn import precision
from avalanche_hpc.learn.features import DEFAULT_VIEWS, centre_views, crop_batch
from avalanche_hpc.learn.model import Backbone, Head, build_vgg16, init_head
from avalanche_hpc.learn.step import head_step as head_step_fn
from avalanche_hpc.learn.sweep import StackedHeads
from avalanche_hpc.learn.train import save_torch
from avalanche_hpc.learn.weights import resolve_weights


def matmul_gflops(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / timed(lambda: torch.mm(a, b), reps) / 1e9


def memory_gbs(mib: int = 256, reps: int = 5) -> float:
    """Streaming memory bandwidth (GB/s): ``a += b`` over two ``mib`` MiB float32 arrays (2 reads, 1 write)."""
    n = mib * 2**20 // 4
    a, b = torch.ones(n), torch.ones(n)
    return 3 * n * 4 / timed(lambda: a.add_(b), reps) / 1e9


def adam_bytes(n_params: int) -> int:
    """Bytes one Adam step must move: read weight, gradient and both moments, write weight and moments."""
    return 7 * 4 * n_params


def head_roofline(f_train: float, n_params: int, batch: int, peak_gflops: float, bw_gbs: float) -> float:
    """Upper bound on the head step's fraction of the matmul rate at this batch: its products at the
    matmul rate plus the Adam step at the memory bandwidth (which it cannot beat: Adam is one pass
    over the weights, its gradient and moments, with ~1 FLOP per byte)."""
    t_flops = batch * f_train / (peak_gflops * 1e9)
    return t_flops / (t_flops + adam_bytes(n_params) / (bw_gbs * 1e9))


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


def head_train_flops(head: Head) -> float:
    """Forward + weight gradients (2x forward) + input gradients of fc2 and fc3 (the features need none)."""
    inner = 2 * sum(lin.in_features * lin.out_features for lin in (head.fc2, head.fc3))
    return 2 * head_flops(head) + inner


CLOCK = {"fn": time.perf_counter, "scale": 1.0}


def use_clock(kind: str) -> None:
    """``wall`` (default): elapsed seconds. ``cpu``: this process's CPU seconds / torch's threads, i.e.
    the wall time the same work takes when the threads have their cores to themselves - the figure
    that survives a machine shared with other jobs (time slices lost to them are not counted)."""
    if kind == "cpu":
        CLOCK.update(fn=time.process_time, scale=1.0 / torch.get_num_threads())
    else:
        CLOCK.update(fn=time.perf_counter, scale=1.0)


def timed(fn, reps: int) -> float:
    """Best of ``reps`` calls (seconds): the machine is shared, the minimum is the least disturbed."""
    clock, scale = CLOCK["fn"], CLOCK["scale"]
    fn()
    best = float("inf")
    for _ in range(reps):
        t = clock()
        fn()
        best = min(best, (clock() - t) * scale)
    return best


def measure(args) -> dict:
    reps = 2 if args.quick else 5
    torch.manual_seed(0)
    crop, b = 50, args.batch
    out: dict = {"threads": torch.get_num_threads(), "batch": b, "quick": bool(args.quick), "clock": args.clock}

    out["matmul_gflops"] = matmul_gflops(1024 if args.quick else 2048, reps)
    out["matmul_gflops_bf16"] = matmul_gflops(1024 if args.quick else 2048, reps, torch.bfloat16)
    out["memory_gbs"] = memory_gbs(reps=reps)
    vgg = build_vgg16(resolve_weights("none"))
    backbone = Backbone(vgg)
    head = init_head(torch.nn.Module(), 0, pretrained_fc=False)
    f_bb, f_head, f_train = conv_flops(vgg, crop), head_flops(head), head_train_flops(head)
    out["flops_backbone"], out["flops_head_fwd"], out["flops_head_train"] = f_bb, f_head, f_train
    out["flops_unfolded_classifier_fwd"] = 2 * sum(m.in_features * m.out_features for m in vgg.classifier
                                                   if isinstance(m, torch.nn.Linear))

    patches = np.random.default_rng(0).normal(size=(b, 3, 64, 64)).astype(np.float32)
    views = centre_views(b, 64, crop)[:, 0]
    x_img = crop_batch(patches, np.arange(b), views, crop)

    # backbone: every precision mode, and what the start-up probe chooses
    rates, feats_by_mode = {}, {}
    for mode in precision.MODES:
        backbone.set_precision(mode)
        rates[mode] = b / timed(lambda: backbone(x_img), reps)
        feats_by_mode[mode] = backbone(x_img)
    ref = feats_by_mode["fp32"]
    out["backbone_img_s_by_mode"] = rates
    out["bf16_feature_rel_error"] = float((feats_by_mode["bf16"] - ref).norm() / ref.norm())
    chosen = precision.probe(vgg.features, torch.device("cpu"), crop).chosen
    backbone.set_precision(chosen)
    out["precision_chosen"] = chosen
    out["backbone_img_s"] = rates[chosen]
    bb_peak = out["matmul_gflops_bf16"] if chosen == "bf16" else out["matmul_gflops"]
    out["backbone_fraction_of_matmul"] = f_bb * rates[chosen] / 1e9 / bb_peak

    # head: one run as train_run steps it (learn/step.py on a stack of one, then the fused Adam)
    feats = backbone(x_img)
    y = torch.randint(0, 2, (b,))
    opt = torch.optim.Adam(head.param_groups(1e-5), fused=True)
    params = list(head.parameters())
    for q in params:
        q.grad = torch.zeros_like(q)
    one = ([q.detach().unsqueeze(0) for q in params], [q.grad.unsqueeze(0) for q in params])
    keep1 = torch.from_numpy(np.random.default_rng(1).integers(0, 2, size=(2, 1, b, head.fc2.in_features))
                             .astype(np.float32))

    def head_step():
        head_step_fn(one[0], one[1], head.shift[None], head.scale[:1], feats[None], y[None],
                     torch.full((1, b), 1.0 / b), (keep1[0], keep1[1]))
        opt.step()

    def per_epoch_step():
        f = backbone(crop_batch(patches, np.arange(b), views, crop))
        head_step_fn(one[0], one[1], head.shift[None], head.scale[:1], f[None], y[None],
                     torch.full((1, b), 1.0 / b), (keep1[0], keep1[1]))
        opt.step()

    t_head_single = timed(head_step, reps * 2) / b
    # the batched sweep step: `slots` runs at once
    slots = args.slots
    heads = StackedHeads(slots, torch.device("cpu"), head.fc2.in_features, feats.shape[1], 2)
    for s in range(slots):
        heads.load(s, head)
    xs = feats.unsqueeze(0).expand(slots, -1, -1).contiguous()
    ys = y.unsqueeze(0).expand(slots, -1).contiguous()
    ws = torch.full((slots, b), 1.0 / b)
    keep = torch.from_numpy(np.random.default_rng(1).integers(0, 2, size=(2, slots, b, heads.p[2].shape[1]))
                            .astype(np.float32))
    t_head = timed(lambda: heads.step(slots, xs, ys, ws, (keep[0], keep[1]), 1e-5), reps * 2) / (slots * b)
    t_adam = timed(lambda: heads._adam(slots, 1e-5), reps) / (slots * b)
    peak = out["matmul_gflops"]
    out["head_img_s_single_run"] = 1 / t_head_single
    out["head_img_s"] = 1 / t_head
    out["head_slots"] = slots
    out["head_fraction_of_matmul"] = f_train / t_head / 1e9 / peak
    out["head_fraction_of_matmul_single_run"] = f_train / t_head_single / 1e9 / peak
    out["head_adam_share"] = t_adam / t_head
    # the roofline: what the step could reach at this batch, and the batch where it allows 0.7
    n_params = sum(p.numel() for p in head.parameters() if p.requires_grad)
    out["head_params"] = n_params
    out["head_fraction_bound"] = head_roofline(f_train, n_params, b, peak, out["memory_gbs"])
    adam_s = adam_bytes(n_params) / (out["memory_gbs"] * 1e9)
    out["batch_for_fraction_0_7"] = math.ceil(0.7 / 0.3 * adam_s * peak * 1e9 / f_train)
    # the batched step at other batch sizes (same runs, same slots)
    by_batch = {}
    for bb in args.batches:
        xb = torch.randn(slots, bb, feats.shape[1])
        yb = torch.randint(0, 2, (slots, bb))
        wb = torch.full((slots, bb), 1.0 / bb)
        kb = (torch.randint(0, 2, (slots, bb, heads.p[2].shape[1])).float(),
              torch.randint(0, 2, (slots, bb, heads.p[2].shape[1])).float())
        tb = timed(lambda: heads.step(slots, xb, yb, wb, kb, 1e-5), reps * 2) / (slots * bb)  # noqa: B023
        by_batch[str(bb)] = {"img_s": 1 / tb, "fraction_of_matmul": f_train / tb / 1e9 / peak,
                             "fraction_bound": head_roofline(f_train, n_params, bb, peak, out["memory_gbs"])}
    out["head_by_batch"] = by_batch
    t_bb = 1 / rates[chosen]
    t_full = timed(per_epoch_step, reps) / b
    out["per_epoch_img_s"] = 1 / t_full
    with tempfile.TemporaryDirectory() as d:
        state = {"head": head.state_dict(), "optimizer": opt.state_dict()}
        t_ck = timed(lambda: save_torch(state, Path(d) / "checkpoint.pt"), 1 if args.quick else 2)
        out["checkpoint_mb"] = (Path(d) / "checkpoint.pt").stat().st_size / 1e6
    out["checkpoint_s"] = t_ck

    # sweep: seeds x (random + hold-outs); each run trains on ~60% of the pool and evaluates the rest
    runs = args.seeds * (1 + args.massifs)
    n_train, n_eval = int(0.6 * args.pool), args.pool - int(0.6 * args.pool)
    k, e = DEFAULT_VIEWS, args.epochs
    bank_s = args.pool * (k + 1) * t_bb
    train_s = runs * e * n_train * t_head
    ckpt_s = runs * t_ck * (1 + train_s / 600.0 / runs)  # at the end of each run + one round per 600 s
    out["sweep"] = {"runs": runs, "pool": args.pool, "epochs": e, "views": k, "n_train": n_train}
    out["sweep_s_bank"] = bank_s + train_s + ckpt_s
    out["sweep_s_bank_features"] = bank_s
    out["sweep_s_per_epoch"] = runs * (e * (n_train * t_full + t_ck) + n_eval * t_bb)
    out["sweep_ratio_per_epoch_over_bank"] = out["sweep_s_per_epoch"] / out["sweep_s_bank"]
    floor = (args.pool * (k + 1) * f_bb / bb_peak + runs * e * n_train * f_train / peak) / 1e9
    out["sweep_s_flop_floor"] = floor
    out["sweep_over_flop_floor"] = out["sweep_s_bank"] / floor
    # the same sweep, per-epoch loop with an fp32 backbone (today's reference before the probe)
    t_full_fp32 = t_full - t_bb + 1 / rates["fp32"]
    out["sweep_s_per_epoch_fp32_backbone"] = runs * (e * (n_train * t_full_fp32 + t_ck) + n_eval / rates["fp32"])
    out["sweep_ratio_per_epoch_fp32_over_bank"] = out["sweep_s_per_epoch_fp32_backbone"] / out["sweep_s_bank"]
    return out


def report(o: dict) -> None:
    print(f"threads: {o['threads']}  matmul: fp32 {o['matmul_gflops']:.1f} GFLOP/s, bf16 {o['matmul_gflops_bf16']:.1f} GFLOP/s")
    print(f"FLOPs/image: backbone {o['flops_backbone'] / 1e9:.3f} G at 50x50; folded head fwd "
          f"{o['flops_head_fwd'] / 1e6:.1f} M (unfolded torchvision classifier fwd "
          f"{o['flops_unfolded_classifier_fwd'] / 1e6:.1f} M); head training step {o['flops_head_train'] / 1e6:.1f} M")
    modes = ", ".join(f"{m} {r:.0f}" for m, r in o["backbone_img_s_by_mode"].items())
    print(f"backbone inference: {modes} images/s; probe chose {o['precision_chosen']} "
          f"({o['backbone_fraction_of_matmul']:.2f} of its matmul rate); bf16 features vs fp32: relative error "
          f"{o['bf16_feature_rel_error']:.2g}")
    print(f"head training, one run (train_run):  {o['head_img_s_single_run']:8.0f} images/s "
          f"({o['head_fraction_of_matmul_single_run']:.2f} of fp32 matmul)")
    print(f"head training, sweep of {o['head_slots']} (bmm):   {o['head_img_s']:8.0f} images/s "
          f"({o['head_fraction_of_matmul']:.2f} of fp32 matmul; Adam {o['head_adam_share']:.0%} of the step)")
    print(f"memory {o['memory_gbs']:.1f} GB/s: Adam moves {adam_bytes(o['head_params']) / 1e6:.0f} MB per run and step, "
          f"so at batch {o['batch']} the step can reach at most {o['head_fraction_bound']:.2f} of the matmul rate "
          f"(0.7 needs a batch >= {o['batch_for_fraction_0_7']})")
    for bb, r in o["head_by_batch"].items():
        print(f"  sweep step at batch {bb:>4}: {r['img_s']:6.0f} images/s = {r['fraction_of_matmul']:.2f} of fp32 matmul "
              f"(roofline bound {r['fraction_bound']:.2f})")
    print(f"per-epoch training: {o['per_epoch_img_s']:8.0f} images/s (backbone {o['precision_chosen']} + head)")
    print(f"checkpoint: {o['checkpoint_mb']:.0f} MB written atomically in {o['checkpoint_s']:.2f} s")
    s = o["sweep"]
    print(f"sweep: {s['runs']} runs, pool {s['pool']}, {s['epochs']} epochs each, K = {s['views']} views "
          f"(extrapolated from the per-step costs above)")
    print(f"  batched bank sweep: {o['sweep_s_bank'] / 3600:8.2f} h  (bank {o['sweep_s_bank_features'] / 60:.1f} min once); "
          f"FLOP floor {o['sweep_s_flop_floor'] / 3600:.2f} h -> {o['sweep_over_flop_floor']:.2f}x the floor")
    print(f"  per-epoch loop:     {o['sweep_s_per_epoch'] / 3600:8.2f} h  (backbone {o['precision_chosen']}); "
          f"{o['sweep_s_per_epoch_fp32_backbone'] / 3600:.2f} h with an fp32 backbone")
    print(f"  ratio per-epoch / bank: {o['sweep_ratio_per_epoch_over_bank']:.1f}x "
          f"({o['sweep_ratio_per_epoch_fp32_over_bank']:.1f}x against the fp32 per-epoch loop)")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    ap.add_argument("--pool", type=int, default=1316, help="pool size (paper: 658 positives + 658 negatives)")
    ap.add_argument("--massifs", type=int, default=16, help="hold-outs in the sweep (paper: 16 mountain chains)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=250, help="epochs per run (upper bound; early stopping is less)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=lambda v: [int(x) for x in v.split(",") if x], default=[64, 128, 256, 512],
                    help="batch sizes at which the batched step is also timed (comma-separated; '' for none)")
    ap.add_argument("--slots", type=int, default=4, help="runs per batched sweep step")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: elapsed time; cpu: process CPU time / threads (for a machine shared with other jobs)")
    args = ap.parse_args(argv)
    use_clock(args.clock)
    o = measure(args)
    report(o)
    if args.json is not None:
        write_figures(args.json, o)
    return o


def write_figures(path: Path, figures: dict) -> None:
    """The figures as JSON (atomic), with the UTC time of the run."""
    import datetime as dt

    from avalanche_hpc.atomic import write_json

    write_json(path, {**figures, "measured_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    print(f"figures -> {path}")


if __name__ == "__main__":
    main()
