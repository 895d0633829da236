"""Which dataset indices each rank reads in an epoch; shared by every backend."""
from __future__ import annotations

import numpy as np


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
