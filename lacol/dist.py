"""The collectives the losses and methods use, over ``world`` processes (identities on one)."""
from __future__ import annotations

import torch


class Dist:
    """This process's place among ``world`` processes and the collectives the losses need
    (identities on one process)."""

    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        t = t.clone()
        torch.distributed.all_reduce(t)
        return t

    def all_gather(self, t: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """Rows of every process, in rank order; with ``grad``, gradients flow back to the owner."""
        if self.world == 1:
            return t
        if grad:
            from torch.distributed.nn.functional import all_gather
            return torch.cat(all_gather(t))
        out = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(out, t.contiguous())
        return torch.cat(out)
