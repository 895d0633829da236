"""Fashion-MNIST from its four IDX files (plain or gzipped).

Default folder: Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``).
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .base import DatasetError, Split

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
ASYMMETRIC = {
    # T-shirt<->Shirt, Pullover<->Coat, Sandal->Sneaker->Ankle boot; Trouser, Dress and Bag have
    # no look-alike and keep their labels
    "asymmetric": {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 9},
    # CDR's map (Xia et al., ICLR 2021; its code's ``noisify_fashion_mnist_asymmetric``): 0->6, 2->4, 5<->7
    "asymmetric_cdr": {0: 6, 2: 4, 5: 7, 7: 5},
}
"""Asymmetric noise maps (``data.noise``), class -> the class it flips to."""
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(
        f"Fashion-MNIST: no {stem}[.gz] in {root}. Install Debian's dataset-fashion-mnist "
        f"(apt-get install dataset-fashion-mnist) or set data.root to a folder with the four IDX files."
    )


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic, dims as big-endian int32, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a cut .gz ends early (EOFError)
        raise DatasetError(f"{path}: cannot be read ({e}); download or install it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: {len(raw)} bytes, shorter than its own header (truncated file?)")
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(int)
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise DatasetError(f"{path}: {len(raw)} bytes, header promises {expected} (truncated file?)")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(split: str = "train", root: str | Path | None = None) -> Split:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000) as (N, 28, 28, 1) uint8."""
    if split not in _FILES:
        raise DatasetError(f"Fashion-MNIST split {split!r}: choose one of {sorted(_FILES)}")
    root = Path(root) if root else DEBIAN_ROOT
    images = read_idx(_find(root, _FILES[split][0]))
    labels = read_idx(_find(root, _FILES[split][1])).astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
        raise DatasetError(f"Fashion-MNIST in {root}: images {images.shape} and labels {labels.shape}; expected "
                           f"(N, 28, 28) and (N,): are the image and label files swapped?")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"Fashion-MNIST in {root}: {images.shape[0]} images, {labels.shape[0]} labels")
    if labels.size and labels.max() >= len(CLASSES):
        bad = int(np.argmax(labels >= len(CLASSES)))
        raise DatasetError(f"{_find(root, _FILES[split][1])}: label {labels[bad]} at row {bad}; Fashion-MNIST "
                           f"labels are 0..{len(CLASSES) - 1}")
    return Split(f"fashion_mnist/{split}", labels, labels.copy(), CLASSES, images=images,
                 mean=(72.94,), std=(90.02,))
