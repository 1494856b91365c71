"""The head's training step written out: forward, loss and backward of one or more stacked heads.

Both trainers call ``head_step``: ``train.train_run`` with one head (its parameters viewed as a
stack of one) and ``sweep.train_sweep`` with ``a`` heads stacked along a leading run axis. The same
function means the same kernels (``torch.baddbmm``/``torch.bmm``, each slice of the stack computed
alone) on the same padded batch, so a run trained alone and the same run in a sweep follow
bit-identical trajectories (``tests/test_56_sweep.py``); the Adam update that follows is
torch's fused kernel in both (``torch.optim.Adam(fused=True)`` / ``torch._fused_adam_``).

Written out rather than autograd because the features need no gradient (the backbone is frozen):
no graph, no input gradient of fc1, gradients written in place into the optimizer's tensors, and
ReLU and dropout folded into one 0/2 mask. Measured ~1.3x faster than autograd for one head
(``benchmarks/bench_train.py``).
"""

from __future__ import annotations

import torch

from avalanche_hpc.learn.model import DROPOUT


def head_step(p: list[torch.Tensor], g: list[torch.Tensor], shift: torch.Tensor, scale: torch.Tensor,
              x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
              masks: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Loss and gradients of ``a`` stacked heads; returns each head's summed loss ``(a,)``.

    ``p``/``g``: the six parameters (``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``,
    ``fc3.weight``, ``fc3.bias``, ``nn.Linear`` layout) and the tensors their gradients are written
    into, each stacked ``(a, ...)``. ``shift`` (a, 512) and ``scale`` (a,): the input
    standardisation. ``x`` (a, M, 512) features, ``y`` (a, M) labels, ``w`` (a, M) loss weights (1 /
    the global batch size; 0 for padding rows), ``masks`` 2 x (a, M, hidden) dropout keep masks (0/1).
    The gradient is that of ``sum_i w_i nll_i`` (the mean loss of the batch).
    """
    w1, b1, w2, b2, w3, b3 = p
    g1, gb1, g2, gb2, g3, gb3 = g
    keep = 1.0 / (1.0 - DROPOUT)
    with torch.no_grad():
        xs = (x - shift[:, None, :]) * scale[:, None, None]
        z1 = torch.baddbmm(b1.unsqueeze(1), xs, w1.transpose(1, 2))
        e1 = (z1 > 0) * (masks[0] * keep)  # relu and dropout as one 0/2 mask
        h1 = z1.mul_(e1)
        z2 = torch.baddbmm(b2.unsqueeze(1), h1, w2.transpose(1, 2))
        e2 = (z2 > 0) * (masks[1] * keep)
        h2 = z2.mul_(e2)
        logits = torch.baddbmm(b3.unsqueeze(1), h2, w3.transpose(1, 2))
        logp = torch.log_softmax(logits, dim=2)
        nll = -logp.gather(2, y.unsqueeze(2)).squeeze(2)  # (a, M)
        loss = (nll * (w > 0)).sum(1)
        # d(sum_i w_i nll_i)/d logits = w_i (softmax - onehot)
        d3 = logp.exp_()
        d3.scatter_add_(2, y.unsqueeze(2), torch.full_like(d3[..., :1], -1.0))
        d3.mul_(w.unsqueeze(2))
        torch.bmm(d3.transpose(1, 2), h2, out=g3)
        torch.sum(d3, 1, out=gb3)
        d2 = torch.bmm(d3, w3).mul_(e2)
        torch.bmm(d2.transpose(1, 2), h1, out=g2)
        torch.sum(d2, 1, out=gb2)
        d1 = torch.bmm(d2, w2).mul_(e1)
        torch.bmm(d1.transpose(1, 2), xs, out=g1)
        torch.sum(d1, 1, out=gb1)
    return loss


def empty_batch(a: int, m: int, n_in: int, hidden: int, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zeroed ``x`` (a, m, n_in), ``y`` (a, m), ``w`` (a, m) and two masks (a, m, hidden) for
    ``head_step``: rows left at zero are padding (loss weight 0)."""
    return (torch.zeros((a, m, n_in), device=device), torch.zeros((a, m), dtype=torch.int64, device=device),
            torch.zeros((a, m), device=device), torch.zeros((a, m, hidden), device=device),
            torch.zeros((a, m, hidden), device=device))
