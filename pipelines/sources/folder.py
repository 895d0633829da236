"""``data.dataset=folder``: a user's images as one folder per class (the layout of WebVision,
Food-101N, ANIMAL-10N and most scraped sets).

    root/train/<class>/**/<image>     the training split (its labels: the folder names)
    root/val/<class>/**/<image>       optional: a validation split (chooses the best epoch)
    root/test/<class>/**/<image>      the reported split

Class names are train's folder names, sorted (index = position); val and test may hold a subset
of them. Files whose suffix is not an image's are skipped and counted (``extra["skipped"]``).
Training labels are what the folders say (the clean label is unknown, -1); val and test labels
are taken as the reference. Images stay files: every backend decodes them (ffcv and dali after
``lacol-convert folder --to ffcv|dali``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import DatasetError, Split

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"})
# ImageNet statistics (0..255): the usual start for web photos and pretrained encoders
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
SPLITS = ("train", "val", "test")


def _root(root) -> Path:
    if root is None:
        raise DatasetError("data.dataset=folder needs data.root: the folder holding train/<class>/... "
                           "(and test/, optionally val/)")
    return Path(root)


def classes_of(root: Path) -> tuple[str, ...]:
    train = root / "train"
    if not train.is_dir():
        raise DatasetError(f"{train}: no such folder; data.dataset=folder reads root/train/<class>/<image> "
                           f"(set data.root to the folder above train/)")
    names = tuple(sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if len(names) < 2:
        raise DatasetError(f"{train}: {len(names)} class folder(s); a classifier needs at least 2 "
                           f"(one folder per class under train/)")
    return names


def present(root) -> tuple[str, ...]:
    """The splits this folder has (train always)."""
    root = _root(root)
    return tuple(s for s in SPLITS if s == "train" or (root / s).is_dir())


def evaluation(root) -> tuple[str, ...]:
    """(val, test) with a val folder, else (test,)."""
    return tuple(s for s in present(root) if s != "train")


def load(split: str, root) -> Split:
    root = _root(root)
    if split not in SPLITS:
        raise DatasetError(f"folder split {split!r}: choose one of {', '.join(SPLITS)}")
    classes = classes_of(root)
    where = root / split
    if not where.is_dir():
        raise DatasetError(f"{where}: no such folder; make it with one folder per class "
                           f"({', '.join(classes[:3])}...)" + (" to evaluate on" if split == "test" else ""))
    index = {c: i for i, c in enumerate(classes)}
    keys, labels, skipped = [], [], 0
    for name in sorted(p.name for p in where.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if name not in index:
            raise DatasetError(f"{where / name}: class {name!r} is not a folder of {root / 'train'}; "
                               f"its classes are {', '.join(classes)}")
        for dirpath, dirnames, filenames in os.walk(where / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith("."):
                    keys.append(Path(dirpath, f).relative_to(root).as_posix())
                    labels.append(index[name])
                else:
                    skipped += 1
    if not keys:
        raise DatasetError(f"{where}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
    y = np.asarray(labels, dtype=np.int64)
    clean = np.full_like(y, -1) if split == "train" else y.copy()
    return Split(f"folder/{split}", y, clean, classes, files=keys, root=root, mean=MEAN, std=STD,
                 extra={"skipped": skipped})
