"""Dataset readers: they describe a split (arrays or file lists, labels); they never decode.

``DATASETS`` is the one place that says, per dataset, which splits exist, which one trains and
which ones evaluate (the first of several evaluation splits chooses, the last is reported)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import cifar, clothing1m, fashion_mnist
from .base import DatasetError, Split


@dataclass(frozen=True)
class DatasetInfo:
    splits: tuple[str, ...]
    """Every split the reader knows (what ``lacol-convert`` converts by default)."""
    train: str
    """The split training reads."""
    eval: tuple[str, ...]
    """Evaluation splits: one (reported), or (validation, test): the validation split chooses the
    best epoch, the test split is reported."""
    load: Callable[[str, str | Path | None], Split]
    """``load(split, root)``; root None: the dataset's default place."""


DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(("train", "test"), "train", ("test",), fashion_mnist.load),
    "cifar10": DatasetInfo(("train", "test"), "train", ("test",),
                           lambda split, root: cifar.load("cifar10", split, root or "data")),
    "cifar100": DatasetInfo(("train", "test"), "train", ("test",),
                            lambda split, root: cifar.load("cifar100", split, root or "data")),
    "clothing1m": DatasetInfo(tuple(clothing1m.SPLITS), "noisy_train", ("clean_val", "clean_test"),
                              lambda split, root: clothing1m.load(split, root or "data/clothing1m")),
}


def dataset_info(dataset: str) -> DatasetInfo:
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[dataset]


def load_split(dataset: str, split: str, root: str | Path | None = None) -> Split:
    """One split of a named dataset. ``root`` None means the dataset's default place."""
    return dataset_info(dataset).load(split, root)


__all__ = ["DATASETS", "DatasetError", "DatasetInfo", "Split", "dataset_info", "load_split", "cifar",
           "clothing1m", "fashion_mnist"]
