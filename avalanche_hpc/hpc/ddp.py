"""Training under submitit: DDP ranks from SLURM, checkpoint and requeue.

One array task of the train stage is one (split, seed) run with ``nodes x tasks_per_node`` ranks
(one per GPU on a GPU node). Each rank:

1. reads its place from SLURM through ``submitit.helpers.TorchDistributedEnvironment`` (which
   exports ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK``);
2. joins the process group (``env://``): NCCL when a GPU is visible, gloo on CPU;
3. calls ``train.train_run(..., dist=DistContext(rank, world_size, backend))``: every rank walks the
   same global batch order and takes its share of each batch (the distributed sampler of
   ``train.py``), gradients are summed with ``all_reduce``, only rank 0 writes files.

Checkpoint and requeue: ``train_run`` writes ``checkpoint.pt`` atomically after every epoch and
resumes from it exactly (model, optimiser, early-stopping state, RNG). ``TrainTask`` is a
``submitit.helpers.Checkpointable``: on USR2 (``--signal=USR2@signal_delay_s`` before the time
limit, or preemption) submitit calls ``checkpoint()``, which resubmits the same task, and requeues
the SLURM job (``scontrol requeue``); the requeued job calls ``train_run`` again, which continues
from the last completed epoch. A job requeued from outside (``scontrol requeue JOBID``, node
failure) takes the same path without the ``checkpoint()`` call. At most the epoch in progress is
redone, and since every draw is keyed by (seed, epoch) the result is the one of an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import submitit
import torch

from avalanche_hpc.hpc.task import Task, configure_task_logging
from avalanche_hpc.learn.train import DistContext, train_run

if TYPE_CHECKING:  # jobspec -> stages -> ddp at run time: the spec's type only
    from avalanche_hpc.hpc.jobspec import JobSpec

log = logging.getLogger(__name__)


def init_distributed() -> DistContext | None:
    """Join the process group of this SLURM job's ranks; returns a ``train.DistContext`` or None (1 rank)."""
    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return None
    dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(dist_env.local_rank % max(1, torch.cuda.device_count()))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, init_method="env://")
    log.info("rank %d/%d (%s) master %s:%s", dist_env.rank, dist_env.world_size, backend, dist_env.master_addr,
             dist_env.master_port)
    return DistContext(rank=dist_env.rank, world_size=dist_env.world_size, backend=backend)


def close_distributed() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class TrainTask(submitit.helpers.Checkpointable):
    """One (split, seed) training run as a SLURM (array) task; requeued on USR2 and resumed."""

    def __call__(self, job: JobSpec, task: Task, **overrides: Any) -> str:
        configure_task_logging()
        split, seed = task.args
        dist = init_distributed()
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if restarts:
            log.info("train %s: restart %d of this SLURM job, resuming from the run's checkpoint", task.key, restarts)
        try:
            kwargs = {**job.train.run_kwargs(), "progress": False, **overrides}
            out = train_run(job.root, job.experiment, split, seed, dist=dist, **kwargs)
        finally:
            close_distributed()
        return str(out)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # train_run's own checkpoint.pt (written after every epoch) is the state: resubmit the same call,
        # but never with force=True: a forced run would wipe that checkpoint and start again.
        log.info("checkpoint requested (USR2/timeout/preemption): requeueing; training resumes from checkpoint.pt")
        return submitit.helpers.DelayedSubmission(TrainTask(), *args, **{**kwargs, "force": False})


class EpochPause:
    """``on_epoch_end`` hook that sleeps ``seconds`` after each epoch (picklable).

    Stretches a tiny training run so that a test or a demonstration can interrupt it mid-way
    (``scontrol requeue``, USR2) at a known point.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)

    def __call__(self, epoch: int) -> None:
        time.sleep(self.seconds)
