"""What every backend shares: which dataset indices each rank reads in an epoch, the views' seeds,
the batch count, and the ViewBatch built from a backend's views."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .batch import ViewBatch


@dataclass(frozen=True)
class Shard:
    """What every loader of one process is given, whatever its backend: its batch size, its
    rank among ``world`` processes, the seed of its order and views, the device its batches
    land on and the dtype of the training views (evaluation views stay fp32)."""

    batch_size: int
    rank: int = 0
    world: int = 1
    seed: int = 0
    device: str | torch.device = "cpu"
    dtype: torch.dtype = torch.float32

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch size {self.batch_size}: must be >= 1")
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside world size {self.world}")

    def indices(self, n: int, epoch: int, *, shuffle: bool, drop_last: bool) -> np.ndarray:
        """``shard_indices`` of this process."""
        return shard_indices(n, self.rank, self.world, epoch, self.seed, shuffle=shuffle, drop_last=drop_last,
                             batch_size=self.batch_size)

    def deal(self, order: np.ndarray, *, drop_last: bool) -> np.ndarray:
        """``deal`` of a global order to this process."""
        return deal(order, self.rank, self.world, drop_last=drop_last, batch_size=self.batch_size)

    def view_seed(self, epoch: int) -> int:
        """``view_seed`` of this process in ``epoch``."""
        return view_seed(self.seed, epoch, self.rank)


def shard_indices(n: int, rank: int, world: int, epoch: int, seed: int, *, shuffle: bool,
                  drop_last: bool, batch_size: int) -> np.ndarray:
    """Indices for ``rank`` in ``epoch``.

    One permutation per epoch (same on every rank: seed + epoch), dealt round-robin to ranks.
    ``drop_last`` (training): every rank gets the same number of full batches and the remainder
    is dropped, so no rank waits at the end of an epoch. Otherwise (evaluation): the order is
    padded by wrapping around until every rank holds the same count; the padded samples repeat
    indices, which metrics deduplicate by index.
    """
    order = np.random.default_rng(seed + epoch).permutation(n) if shuffle else np.arange(n)
    return deal(order, rank, world, drop_last=drop_last, batch_size=batch_size)


def deal(order: np.ndarray, rank: int, world: int, *, drop_last: bool, batch_size: int) -> np.ndarray:
    """``rank``'s share of a global ``order`` (the same on every rank), dealt round-robin, with
    ``shard_indices``' rules for the end of an epoch."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    n = len(order)
    if drop_last:
        per_rank = (n // world) // batch_size * batch_size
        return order[rank::world][:per_rank]
    per_rank = -(-n // world)
    order = np.resize(order, per_rank * world)  # wraps around
    return order[rank::world]


def view_seed(seed: int, epoch: int, rank: int) -> int:
    """The augmentation seed of one rank in one epoch: different per rank and per epoch, and the
    same again on resume."""
    return (seed * 1_000_003 + epoch) * 1_009 + rank


def batch_seed(epoch_seed: int, batch_no: int) -> int:
    """The views' seed of one batch, from its rank's epoch seed (``view_seed``): the same wherever
    the views are made (worker or device) and when an epoch resumes at that batch."""
    return epoch_seed * 1_000_003 + batch_no


def num_batches(n: int, batch_size: int) -> int:
    """Batches of at most ``batch_size`` that ``n`` samples make (the last one may be short)."""
    return -(-n // batch_size)


def view_batch(views, label: torch.Tensor, index: torch.Tensor) -> ViewBatch:
    """A ViewBatch from a backend's views: (weak, strong, strong2), (weak, strong) for a method
    that needs one strong view, or (weak,) alone for an epoch or method that needs none (the
    missing fields are None)."""
    weak, strong, strong2 = (*views, None, None)[:3]
    return ViewBatch(weak, strong, strong2, label, index)


def upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``: to a GPU through pinned memory, without waiting (a pageable
    copy would make the host wait for the GPU's stream every batch); elsewhere as it is."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
