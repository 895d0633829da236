"""The description of one dataset split: where its images are and what its labels say.

A source never decodes images. In-memory datasets (Fashion-MNIST, CIFAR) carry a uint8 array;
file datasets (Clothing1M) carry relative paths under a root, resolved when a loader decodes them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A dataset is missing or malformed; the message names the file and the fix."""


def _odd(key: str) -> bool:
    return key.startswith(("/", ".")) or "/." in key or "//" in key or "\\" in key or key[1:2] == ":"


def normal_keys(keys: list[str], path, line_numbers) -> list[str]:
    """``normal_key`` of each key of ``path``; one quick pass when every key is already in the
    common spelling (1M keys: a fraction of a second), and only then ``line_numbers()`` (each
    key's line, for errors) is computed."""
    if not any(map(_odd, keys)):
        return keys
    return [normal_key(k, f"{path}:{n}") for k, n in zip(keys, line_numbers())]


def normal_key(key: str, where: str) -> str:
    """The one path rule of file datasets: a key names a file under the dataset root by a
    relative path without ``..``; ``./a.jpg`` and ``a//b.jpg`` are spelled ``a.jpg`` and
    ``a/b.jpg`` (so one file is one key). Symlinks under the root are followed by the readers
    (``decode.check_readable``: to regular files only). ``where``: the file and line, for errors."""
    if not _odd(key):
        return key  # the common spelling: nothing to normalise
    if key.startswith("/") or key[1:2] == ":":
        raise DatasetError(f"{where}: key {key!r} is an absolute path; keys are relative to the dataset root")
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DatasetError(f"{where}: key {key!r} climbs out with '..'; keys name files under the dataset root")
    return "/".join(parts)


class Keys(Sequence[str]):
    """File keys as one UTF-8 byte buffer and (N+1,) int64 offsets, read like a list of str.

    A ``list[str]`` of 1M paths is 1M Python objects: a forked DataLoader worker that reads them
    writes their reference counts, so page by page every worker ends up with a private copy (~80
    B per key). Here a worker reads two integers and a few bytes of numpy arrays, which it never
    writes: the pages stay shared."""

    __slots__ = ("buf", "offsets")

    def __init__(self, buf: np.ndarray, offsets: np.ndarray):
        self.buf, self.offsets = buf, offsets

    @classmethod
    def of(cls, keys) -> "Keys":
        if isinstance(keys, Keys):
            return keys
        encoded = [k.encode("utf-8") for k in keys]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        if isinstance(i, np.ndarray) and i.ndim:
            return self.take(i)
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"key {i} of {len(self)}")
        return self.buf[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8")

    def __iter__(self):
        data, off = self.buf.tobytes(), self.offsets.tolist()
        return (data[a:b].decode("utf-8") for a, b in zip(off, off[1:]))

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def __repr__(self) -> str:
        return f"Keys({len(self)} keys, {self.buf.nbytes:,} bytes)"

    def take(self, idx) -> "Keys":
        """The keys at ``idx``, as another ``Keys`` (vectorised: no Python string is made)."""
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        start, lengths = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # every byte of the result: its key's start plus its place within the key
        pos = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Keys(self.buf[pos], offsets)


@dataclass
class Split:
    """One split of a dataset.

    Exactly one of ``images`` and ``files`` is set.
    """

    name: str
    """Dataset and split, e.g. ``fashion_mnist/train``."""
    labels: np.ndarray
    """(N,) int64: the labels training sees (noisy where the dataset is noisy)."""
    clean_labels: np.ndarray
    """(N,) int64: the true label where known, -1 where unknown."""
    classes: tuple[str, ...]
    """Class names, index = label."""
    images: np.ndarray | None = None
    """(N, H, W, C) uint8, for in-memory datasets."""
    files: Sequence[str] | None = None
    """Paths relative to ``root``, for file datasets (stored as ``Keys``: one byte buffer, so
    forked loader workers share it instead of copying it)."""
    root: Path | None = None
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    """Per-channel normalisation mean, in 0..255 units."""
    std: tuple[float, ...] = (63.75, 63.75, 63.75)
    extra: dict = field(default_factory=dict)
    """Dataset-specific arrays, e.g. CIFAR-100 ``coarse_labels`` and ``fine_to_coarse``."""

    def __post_init__(self) -> None:
        if (self.images is None) == (self.files is None):
            raise ValueError("Split needs exactly one of images= and files=")
        n = len(self)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.clean_labels = np.asarray(self.clean_labels, dtype=np.int64)
        if self.labels.shape != (n,) or self.clean_labels.shape != (n,):
            raise ValueError(
                f"{self.name}: {n} images but labels {self.labels.shape}, "
                f"clean_labels {self.clean_labels.shape}"
            )
        if self.files is not None and not isinstance(self.files, Keys):
            self.files = Keys.of(self.files)
        if self.images is not None and self.images.ndim == 3:
            self.images = self.images[..., None]

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        """Channels of the decoded images: 1 for gray in-memory data, else 3."""
        return self.images.shape[-1] if self.images is not None else 3

    def path(self, i: int) -> Path:
        return self.root / self.files[i]

    def with_labels(self, labels: np.ndarray, name: str | None = None) -> "Split":
        """A copy training on other (e.g. synthetic noisy) labels; clean labels kept."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != self.labels.shape:
            raise DatasetError(
                f"{self.name}: label file has {labels.shape[0]} labels, the split has {len(self)}"
            )
        return replace(self, name=name or self.name, labels=labels, extra=dict(self.extra))

    def subset(self, indices: np.ndarray) -> "Split":
        """A split of the given rows (for quick runs); indices refer to this split."""
        idx = np.asarray(indices)
        extra = dict(self.extra)
        # rows of the full split, so a converted copy of it (a .beton) maps back
        extra["source_index"] = self.source_index[idx]
        extra["source_len"] = self.source_len
        return replace(
            self, labels=self.labels[idx], clean_labels=self.clean_labels[idx],
            images=None if self.images is None else self.images[idx],
            files=None if self.files is None else self.files.take(idx), extra=extra,
        )

    @property
    def source_index(self) -> np.ndarray:
        """(N,) each row's index in the full split it was taken from (``subset``)."""
        return self.extra.get("source_index", np.arange(len(self)))

    @property
    def source_len(self) -> int:
        """Length of the full split this one was taken from."""
        return self.extra.get("source_len", len(self))
