"""Dataset readers: they describe a split (arrays or file lists, labels); they never decode.

``DATASETS`` is the one place that says, per dataset, which splits exist, which one trains and
which ones evaluate (the first of several evaluation splits chooses, the last is reported)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import cifar, clothing1m, fashion_mnist, folder, listfile
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
    already_noisy: bool = False
    """Its training labels are noisy as released (no synthetic noise on top by default)."""
    own_validation: bool = False
    """It has its own clean validation split (a held-out noisy one, ``data.val_size``, is refused)."""
    files: bool = False
    """Images are files decoded by the loaders (``data.decode_size`` applies), not an array."""
    present: Callable[[str | Path | None], tuple[str, ...]] | None = None
    """Datasets whose splits depend on the folder: the splits ``root`` has."""
    evaluation: Callable[[str | Path | None], tuple[str, ...]] | None = None
    """Datasets whose evaluation splits depend on the folder: those of ``root``."""
    asymmetric: dict[str, dict[int, int] | Callable] = field(default_factory=dict)
    """Its asymmetric noise maps by ``data.noise`` kind: class -> the class it flips to, or a
    function of the split's ``extra['fine_to_coarse']`` that makes that map."""
    cifar_n: tuple[str, ...] = ()
    """Its CIFAR-N human-label keys (``data.noise=cifar-n:KEY``; the first is the default)."""

    def eval_for(self, root) -> tuple[str, ...]:
        return self.eval if self.evaluation is None else self.evaluation(root)

    def splits_for(self, root) -> tuple[str, ...]:
        return self.splits if self.present is None else self.present(root)


DATASETS: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(("train", "test"), "train", ("test",), fashion_mnist.load,
                                 asymmetric=fashion_mnist.ASYMMETRIC),
    "cifar10": DatasetInfo(("train", "test"), "train", ("test",),
                           lambda split, root: cifar.load("cifar10", split, root or "data"),
                           asymmetric=cifar.CIFAR10_ASYMMETRIC,
                           cifar_n=("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3")),
    "cifar100": DatasetInfo(("train", "test"), "train", ("test",),
                            lambda split, root: cifar.load("cifar100", split, root or "data"),
                            asymmetric={"asymmetric": cifar.superclass_map}, cifar_n=("noisy_label",)),
    "clothing1m": DatasetInfo(tuple(clothing1m.SPLITS), "noisy_train", ("clean_val", "clean_test"),
                              lambda split, root: clothing1m.load(split, root or "data/clothing1m"),
                              already_noisy=True, own_validation=True, files=True),
    "folder": DatasetInfo(folder.SPLITS, "train", ("test",), folder.load, files=True, present=folder.present,
                          evaluation=folder.evaluation),
    "list": DatasetInfo(listfile.SPLITS, "train", ("test",), listfile.load, files=True, present=listfile.present,
                        evaluation=listfile.evaluation),
}


def dataset_info(dataset: str) -> DatasetInfo:
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[dataset]


def load_split(dataset: str, split: str, root: str | Path | None = None) -> Split:
    """One split of a named dataset. ``root`` None means the dataset's default place."""
    return dataset_info(dataset).load(split, root)


__all__ = ["DATASETS", "DatasetError", "DatasetInfo", "Split", "dataset_info", "load_split", "cifar",
           "clothing1m", "fashion_mnist", "folder", "listfile"]
