"""The one contract between pipelines/ and lacol/."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator, Protocol, runtime_checkable

import torch


class _Batch:
    """What both batch kinds share: a length (the label count) and a move to a device."""

    label: torch.Tensor

    def __len__(self) -> int:
        return self.label.shape[0]

    def to(self, device, non_blocking: bool = True):
        return type(self)(*(None if (v := getattr(self, f.name)) is None else v.to(device, non_blocking=non_blocking)
                            for f in fields(self)))


@dataclass
class ViewBatch(_Batch):
    """Three views of B samples, on the training device.

    ``weak``, ``strong``, ``strong2``: float (B, C, H, W), normalised, channels_last memory format;
    C is 3 for colour data and 1 for gray data (Fashion-MNIST), which is kept single-channel.
    ``strong`` and ``strong2`` are None from a loader built for the weak view alone.
    ``label``: (B,) int64 noisy label; ``index``: (B,) int64 dataset index of each sample.
    """

    weak: torch.Tensor
    strong: torch.Tensor | None
    strong2: torch.Tensor | None
    label: torch.Tensor
    index: torch.Tensor


@dataclass
class EvalBatch(_Batch):
    """One centre view per sample: ``image`` float (B, C, H, W) channels_last, ``label`` the
    evaluation (clean) label, ``index`` the dataset index (deduplicate padded samples by it)."""

    image: torch.Tensor
    label: torch.Tensor
    index: torch.Tensor


@runtime_checkable
class TrainLoader(Protocol):
    """What the trainer asks of a training loader; every backend (``pipelines/build.py``'s table)
    implements it. A loader shards itself by (rank, world) and is never passed through
    ``accelerator.prepare``."""

    skipped: list[str]
    """Files of the split this loader cannot read (named in a warning or the converter's report)."""

    def __iter__(self) -> Iterator[ViewBatch]:
        """This rank's batches of the epoch set last, from its batch ``start``, every batch equal
        in size (the remainder of an epoch is dropped)."""

    def __len__(self) -> int:
        """Batches in a whole epoch for this rank."""

    def set_epoch(self, epoch: int, start: int = 0, num_views: int | None = None) -> None:
        """Next iteration: epoch ``epoch`` from its batch ``start`` (a resumed epoch gives the same
        batches); ``num_views`` 1 makes the weak view alone (warm-up), None every view the loader
        was built with."""


class EpochPosition:
    """Where a training loader stands, as ``TrainLoader.set_epoch`` sets it: the epoch, its first
    batch, the views. The backends inherit it instead of each writing the same body."""

    epoch: int = 0
    start: int = 0
    num_views: int | None = None

    def set_epoch(self, epoch: int, start: int = 0, num_views: int | None = None) -> None:
        """``TrainLoader.set_epoch``."""
        self.epoch, self.start, self.num_views = epoch, start, num_views


@runtime_checkable
class EvalLoader(Protocol):
    """An evaluation loader: every sample of the split once per rank share (padding repeats
    indices, which metrics deduplicate), as EvalBatch."""

    def __iter__(self) -> Iterator[EvalBatch]: ...

    def __len__(self) -> int: ...
