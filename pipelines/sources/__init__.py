"""Dataset readers: they describe a split (arrays or file lists, labels); they never decode."""
from __future__ import annotations

from pathlib import Path

from . import cifar, clothing1m, fashion_mnist
from .base import DatasetError, Split

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "clothing1m")


def load_split(dataset: str, split: str, root: str | Path | None = None) -> Split:
    """One split of a named dataset. ``root`` None means the dataset's default place."""
    if dataset == "fashion_mnist":
        return fashion_mnist.load(split, root)
    if dataset in ("cifar10", "cifar100"):
        return cifar.load(dataset, split, root or "data")
    if dataset == "clothing1m":
        return clothing1m.load(split, root or "data/clothing1m")
    raise DatasetError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")


__all__ = ["DATASETS", "DatasetError", "Split", "load_split", "cifar", "clothing1m", "fashion_mnist"]
