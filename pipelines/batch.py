"""The one contract between pipelines/ and lacol/."""
from __future__ import annotations

from dataclasses import dataclass, fields

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
