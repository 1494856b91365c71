"""Precision and memory layout of the frozen backbone, chosen by measurement on this machine.

bfloat16 is not a free win everywhere: on a CPU with matrix units (Intel AMX, ``amx_bf16``) a
bf16 convolution runs several times faster than fp32, on one without them it runs at about half
the fp32 rate. So the backbone's precision is a setting:

- ``"fp32"``: float32, NCHW (the reference);
- ``"bf16"``: bfloat16 with channels-last tensors (oneDNN's AMX path on CPU; the tensor cores'
  on CUDA): a bf16 copy of the frozen weights made once (autocast would cast the 15 M weights
  at every call: at a batch of 8 that cast cost more than the bf16 convolutions saved), inputs
  cast to bf16, features returned as float32 - the arithmetic of autocast without its casts;
- ``"auto"`` (default): ``probe()`` times the backbone (CPU time on a CPU: robust on a shared
  machine) on a small batch in each mode (fp32 NCHW,
  fp32 channels-last, bf16 channels-last), checks that bf16 features agree with fp32 ones
  (relative error below ``BF16_MAX_REL_ERROR``), and takes the fastest mode that passes; bf16
  only when it is at least ``BF16_MIN_SPEEDUP`` x faster than the best fp32 mode. The result is
  kept per machine (``~/.cache/avalanche-hpc/precision-{machine}.json``, machine = CPU model and
  bf16/AMX flags, torch version, GPU name; ``AVALANCHE_HPC_CACHE`` moves the folder), so a loaded
  moment does not flip the choice from one run to the next, and per experiment
  (``runs/{experiment}/precision-{device}.json``), so every run of an experiment uses the
  bank of the same mode. ``AVALANCHE_HPC_PRECISION`` (fp32, fp32-cl, bf16) overrides both
  without a probe (e.g. to pin a cluster's choice in a job script).

The chosen mode is part of a run's settings (``config.json``) and of the feature bank's key: bf16
features differ from fp32 ones in the third significant digit, so banks of the two never mix.
The measured speed and accuracy change are in docs/benchmarks.md. The trained head stays fp32:
its products are skinny (batch 64) and its Adam update is memory-bound, where autocast's weight
casts cost more than bf16 saves (measured by ``benchmarks/bench_train.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from avalanche_hpc.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("fp32", "fp32-cl", "bf16")
ENV = "AVALANCHE_HPC_PRECISION"
BF16_MIN_SPEEDUP = 1.2
BF16_MAX_REL_ERROR = 0.02
_MEMO: dict[str, Probe] = {}


@dataclass(frozen=True)
class Probe:
    """What ``probe`` measured (images/s per mode) and chose."""

    device: str
    images_per_s: dict[str, float]
    bf16_rel_error: float
    chosen: str
    source: str  # "probe" or "env"

    def as_record(self) -> dict:
        return asdict(self)


def check_mode(mode: str) -> str:
    if mode not in (*MODES, "auto"):
        raise ConfigError(f"precision {mode!r}: use auto, {', '.join(MODES)}")
    return mode


def autocast(mode: str, device: torch.device):
    """The autocast context of ``mode`` (a no-op for the fp32 modes)."""
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(mode: str) -> torch.memory_format:
    return torch.contiguous_format if mode == "fp32" else torch.channels_last


def apply(module: nn.Module, mode: str) -> nn.Module:
    """Put ``module``'s (fp32) weights in ``mode``'s memory layout, in place (reversible)."""
    return module.to(memory_format=memory_format(mode))


def prepare(features: nn.Module, mode: str) -> nn.Module:
    """The module that runs ``mode``: ``features`` itself (fp32: as it is; fp32-cl: channels-last),
    or a channels-last bf16 copy (bf16; ``features`` keeps its fp32 weights)."""
    if mode == "fp32-cl":
        apply(features, mode)
    if mode != "bf16":
        return features
    import copy

    return copy.deepcopy(features).to(dtype=torch.bfloat16).to(memory_format=torch.channels_last)


def run_features(module: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """``module(x)`` (a module from ``prepare(., mode)``) in ``mode``, float32 out; ``x`` on its device."""
    if mode == "bf16":
        x = x.to(torch.bfloat16)
    if mode != "fp32":  # fp32: the caller's layout (detect/ chooses its own)
        x = x.contiguous(memory_format=memory_format(mode))
    with torch.inference_mode():
        out = module(x)
    return out.float()


def probe(features: nn.Module, device: torch.device, crop: int = 50, batch: int = 8, reps: int = 3) -> Probe:
    """Time ``features`` (a VGG16 ``features`` block) in every mode; choose. Memoised per device."""
    key = str(device)
    env = os.environ.get(ENV)
    if env:
        if env not in MODES:
            raise ConfigError(f"{ENV}={env!r}: use one of {', '.join(MODES)} (or unset it to measure)")
        return Probe(key, {}, float("nan"), env, "env")
    if key in _MEMO:
        return _MEMO[key]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, crop, crop, generator=g).to(device)
    outs, best = {}, dict.fromkeys(MODES, float("inf"))
    bf16 = prepare(features, "bf16")
    runner = {"fp32": features, "fp32-cl": features, "bf16": bf16}
    for mode in MODES:  # warm-up (oneDNN primitive creation)
        apply(features, "fp32-cl" if mode == "fp32-cl" else "fp32")
        run_features(runner[mode], x, mode)
    # CPU: this process's CPU time (time slices taken by other jobs on a shared machine do not count);
    # CUDA: wall time after a synchronize
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    for _ in range(reps):  # modes interleaved: a change of load on a shared machine hits every mode
        for mode in MODES:
            apply(features, "fp32-cl" if mode == "fp32-cl" else "fp32")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = clock()
            outs[mode] = run_features(runner[mode], x, mode)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[mode] = max(min(best[mode], clock() - t), 1e-9)
    rate = {m: batch / t for m, t in best.items()}
    apply(features, "fp32")
    ref = outs["fp32"]
    err = float((outs["bf16"] - ref).norm() / ref.norm().clamp_min(1e-30))
    fp32_best = max(("fp32", "fp32-cl"), key=lambda m: rate[m])
    chosen = fp32_best
    if rate["bf16"] >= BF16_MIN_SPEEDUP * rate[fp32_best] and err <= BF16_MAX_REL_ERROR:
        chosen = "bf16"
    result = Probe(key, {m: round(r, 1) for m, r in rate.items()}, err, chosen, "probe")
    log.info("backbone precision probe on %s: %s img/s, bf16 relative error %.2g -> %s",
             key, result.images_per_s, err, chosen)
    _MEMO[key] = result
    return result


def resolve(mode: str, features_factory, device: torch.device, crop: int = 50) -> tuple[str, Probe | None]:
    """The concrete mode for ``mode`` ("auto" -> the probe's choice, via ``features_factory()``)."""
    check_mode(mode)
    if mode != "auto":
        return mode, None
    p = probe(features_factory(), device, crop)
    return p.chosen, p


def recorded_precision(experiment_dir, device: torch.device) -> str | None:
    """The mode an experiment recorded (``AVALANCHE_HPC_PRECISION`` first), or None; never probes."""
    import json
    from pathlib import Path

    env = os.environ.get(ENV)
    if env in MODES:
        return env
    try:
        chosen = json.loads((Path(experiment_dir) / f"precision-{device.type}.json").read_text(encoding="utf-8"))["chosen"]
    except (OSError, ValueError, KeyError):
        return None
    return chosen if chosen in MODES else None


def experiment_precision(experiment_dir, mode: str, features_factory, device: torch.device, crop: int = 50) -> str:
    """The concrete mode of an experiment: ``mode`` itself, or for "auto" the probe's choice.

    The choice is measured once per experiment and device type and kept in
    ``runs/{experiment}/features/precision-{device type}.json`` (with the figures), so every seed
    and split of the experiment uses the same mode and the same feature bank.
    """
    import json
    from pathlib import Path

    from avalanche_hpc.atomic import write_json

    check_mode(mode)
    if mode != "auto":
        return mode
    if os.environ.get(ENV):
        return probe(None, device, crop).chosen  # type: ignore[arg-type]  # env: no module needed
    path = Path(experiment_dir) / f"precision-{device.type}.json"
    machine = machine_cache_path(device)
    for known in (path, machine):
        if known.is_file():
            try:
                chosen = json.loads(known.read_text(encoding="utf-8"))["chosen"]
                if chosen in MODES:
                    if known != path:
                        write_json(path, json.loads(known.read_text(encoding="utf-8")))
                    return chosen
            except (OSError, ValueError, KeyError):
                pass
    p = probe(features_factory(), device, crop)
    if p.source == "probe":
        write_json(path, p.as_record())
        try:
            write_json(machine, {**p.as_record(), "machine": machine_ident(device)})
        except OSError as e:  # a read-only home: the experiment's file still pins the choice
            log.warning("precision probe not cached in %s: %s", machine, e)
    return p.chosen


def machine_ident(device: torch.device) -> str:
    """What decides the fastest mode: CPU model and its bf16/AMX flags, torch version, GPU name."""
    import platform

    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = " ".join(sorted(w for w in line.split() if "bf16" in w or w.startswith("amx")))
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return f"{model}|{flags}|torch {torch.__version__}|{device.type}|{gpu}"


def machine_cache_path(device: torch.device):
    from pathlib import Path

    from avalanche_hpc.digest import sha256_text

    folder = Path(os.environ.get("AVALANCHE_HPC_CACHE") or Path.home() / ".cache" / "avalanche-hpc")
    return folder / f"precision-{sha256_text(machine_ident(device))[:12]}.json"
