"""CIFAR-10 and CIFAR-100 from the python pickle release.

``root`` holds ``cifar-10-batches-py/`` or ``cifar-100-python/`` (or is that folder itself).
CIFAR-100 carries fine labels as labels, and ``extra['coarse_labels']`` plus the fine->coarse map
``extra['fine_to_coarse']`` read from the data (used by the asymmetric noise model).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..safe_pickle import UnsafePickle, load_file
from .base import DatasetError, Split

# Per-channel mean and std of the train images, 0..255 units.
_STATS = {
    "cifar10": ((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    "cifar100": ((129.30, 124.07, 112.43), (68.17, 65.39, 70.42)),
}
_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta"),
}


CIFAR10_ASYMMETRIC = {"asymmetric": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}}
"""CIFAR-10's asymmetric map (Patrini et al. 2017): truck->automobile, bird->airplane, deer->horse,
cat<->dog."""


def superclass_map(fine_to_coarse) -> dict[int, int]:
    """CIFAR-100's asymmetric map: each class flips to the next class of its superclass (the
    classes of a superclass in index order, cyclic), from the fine->coarse map the data carries."""
    import numpy as np

    mapping = {}
    for sc in np.unique(fine_to_coarse):
        members = np.flatnonzero(fine_to_coarse == sc)
        mapping.update({int(a): int(b) for a, b in zip(members, np.roll(members, -1))})
    return mapping


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(
            f"CIFAR: missing {path}. Download the python release (cifar-10-python.tar.gz or "
            f"cifar-100-python.tar.gz from the CIFAR page), extract it, and set data.root to its parent."
        )
    try:  # a restricted unpickler: arrays and plain data only, never code from the file
        return load_file(path, encoding="bytes")
    except UnsafePickle as e:
        raise DatasetError(f"CIFAR: {path} is not a CIFAR python-release file: {e}") from e
    except Exception as e:  # a truncated or foreign file
        raise DatasetError(f"CIFAR: cannot read {path} as a python-release pickle: {e}") from e


def _get(d: dict, key: str, path: Path):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DatasetError(f"CIFAR: {path} has no key {key!r} (keys: {sorted(map(str, d))[:8]})")


def load(name: str, split: str = "train", root: str | Path = "data") -> Split:
    """``name`` is cifar10 or cifar100; ``split`` train (50,000) or test (10,000); images (N,32,32,3)."""
    if name not in _LAYOUT:
        raise DatasetError(f"unknown CIFAR variant {name!r}: choose cifar10 or cifar100")
    if split not in ("train", "test"):
        raise DatasetError(f"CIFAR split {split!r}: choose train or test")
    folder, train_files, test_files, meta_file = _LAYOUT[name]
    root = Path(root)
    base = root if root.name == folder else root / folder
    images, labels, coarse = [], [], []
    for fname in train_files if split == "train" else test_files:
        path = base / fname
        d = _unpickle(path)
        data = np.asarray(_get(d, "data", path), dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(f"CIFAR: {path} data has shape {data.shape}, expected (N, 3072)")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(_get(d, "labels" if name == "cifar10" else "fine_labels", path)))
        if name == "cifar100":
            coarse.append(np.asarray(_get(d, "coarse_labels", path)))
    meta_path = base / meta_file
    meta = _unpickle(meta_path)
    key = "label_names" if name == "cifar10" else "fine_label_names"
    classes = tuple(c.decode() if isinstance(c, bytes) else c for c in _get(meta, key, meta_path))
    y = np.concatenate(labels).astype(np.int64)
    if y.min() < 0 or y.max() >= len(classes):
        raise DatasetError(f"CIFAR: labels in {base} outside 0..{len(classes) - 1}")
    extra = {}
    if name == "cifar100":
        c = np.concatenate(coarse).astype(np.int64)
        f2c = np.full(len(classes), -1, dtype=np.int64)
        f2c[y] = c
        if (f2c[y] != c).any() or (f2c < 0).any():
            raise DatasetError(f"CIFAR-100: {base} has an inconsistent fine->coarse labelling")
        extra = {"coarse_labels": c, "fine_to_coarse": f2c}
    return Split(f"{name}/{split}", y, y.copy(), classes, images=np.ascontiguousarray(np.concatenate(images)),
                 mean=_STATS[name][0], std=_STATS[name][1], extra=extra)
