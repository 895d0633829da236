"""Reference backend: DataLoader workers only decode; augment.py makes the views on the device.

File datasets (Clothing1M): each worker decodes a whole batch (PIL, JPEG draft-mode downscaling,
shorter side to ``decode_size`` and the central ``decode_size`` square kept) into one uint8 array,
so a batch crosses the process boundary as one block. In-memory datasets (Fashion-MNIST, CIFAR)
need no decoding: batches are sliced from the array in the main process.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .augment import Augmenter
from .batch import EpochPosition, EvalBatch
from .decode import decode_square
from .sharding import Shard, batch_seed, num_batches, upload, view_batch
from .sources.base import DatasetError, Split
from .views import ViewSpec, eval_view

log = logging.getLogger(__name__)


def shared_empty(shape, dtype: torch.dtype, device=None) -> torch.Tensor:
    """An uninitialised CPU tensor in shared memory: a worker's result crosses to the main
    process by handle, without the copy DataLoader makes of ordinary tensors."""
    numel = 1
    for d in shape:
        numel *= d
    storage = torch.UntypedStorage._new_shared(numel * torch.empty((), dtype=dtype).element_size())
    return torch.tensor([], dtype=dtype).set_(storage, 0, tuple(shape))


class _DecodedBatches(torch.utils.data.Dataset):
    """Whole batches of decoded files: one (batch number, indices) item per DataLoader fetch.

    With an ``augment``, the worker also makes the views (CPU training: the worker processes are
    the training device's cores, and one process per batch keeps each batch in its cache); the
    augmenter is reseeded from the batch number, so views do not depend on which worker ran."""

    def __init__(self, split: Split, size: int, augment: Augmenter | None = None):
        self.split, self.size, self.augment = split, size, augment
        self.seed = 0
        self.num_views: int | None = None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[int, list[int]]):
        """(uint8 images or views, their rows, the rows dropped). An unreadable file is dropped
        and its slot refilled from the split (rows drawn by a generator seeded from the batch, so
        a resumed epoch refills alike): every batch keeps its size, so no batch is empty and,
        with several processes, every rank's batches stay the size the loss's all-gather expects."""
        batch_no, indices = item
        indices = list(indices)
        out = np.zeros((len(indices), self.size, self.size, 3), dtype=np.uint8)
        dropped: list[int] = []
        refill = None
        for j in range(len(indices)):
            while True:
                try:
                    out[j] = decode_square(self.split.path(indices[j]), self.size, root=self.split.root)
                    break
                except Exception:  # missing, truncated or foreign file: counted, dropped and refilled
                    dropped.append(indices[j])
                    if len(dropped) > MAX_REFILL * len(indices):
                        raise DatasetError(
                            f"{self.split.name}: {len(dropped)} unreadable files while filling one batch of "
                            f"{len(indices)} (e.g. {self.split.path(dropped[0])}): is data.root the right folder? "
                            f"check it with lacol-convert {self.split.name.split('/')[0]} --to ffcv") from None
                    refill = refill or np.random.default_rng([self.seed, batch_no, 0x5EED])
                    indices[j] = int(refill.integers(len(self.split)))
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        dropped_rows = torch.as_tensor(dropped, dtype=torch.int64)
        x = torch.from_numpy(out)
        if self.augment is None:
            return x, index, dropped_rows
        self.augment.reseed(batch_seed(self.seed, batch_no))
        return self.augment(x, alloc=shared_empty, num_views=self.num_views), index, dropped_rows


MAX_REFILL = 8
"""Refill draws allowed per slot of a batch before the data is judged unusable."""


def _as_batch(batch):
    return batch


class _Batches:
    """One rank's batches: uint8 images (B, H, W, C), or finished views when the workers augment,
    with their dataset indices. Unreadable files are counted, named in a warning, dropped and
    their slots refilled (``_DecodedBatches``), so batches keep the size ``shard_indices`` gave."""

    def __init__(self, split: Split, shard: Shard, *, shuffle: bool, drop_last: bool, num_workers: int,
                 decode_size: int, worker_augment: Augmenter | None = None, prefetch: int = 4):
        self.split, self.shard, self.batch_size = split, shard, shard.batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.num_workers, self.prefetch = num_workers, prefetch
        self.epoch = 0
        self.start = 0
        self.skipped: list[str] = []
        self.decoded = None if split.images is not None else _DecodedBatches(split, decode_size, worker_augment)
        if self.decoded is not None and num_workers < 1:
            raise DatasetError(f"{split.name}: decoding image files needs data.num_workers >= 1 (it is {num_workers})")

    def indices(self) -> np.ndarray:
        return self.shard.indices(len(self.split), self.epoch, shuffle=self.shuffle, drop_last=self.drop_last)

    def __len__(self) -> int:
        return num_batches(len(self.indices()), self.batch_size)

    def __iter__(self):
        idx = self.indices()
        chunks = [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        numbered = list(enumerate(chunks))[self.start:]
        if self.decoded is None:
            for batch_no, c in numbered:
                yield torch.from_numpy(self.split.images[c]), torch.from_numpy(c), batch_no
            return
        self.decoded.seed = self.shard.view_seed(self.epoch)
        trim_heap()  # the workers fork next: they should not map the parse's freed temporaries
        loader = torch.utils.data.DataLoader(
            self.decoded, batch_size=None, sampler=_Numbered(numbered),
            num_workers=self.num_workers, collate_fn=_as_batch, prefetch_factor=self.prefetch,
            pin_memory=torch.cuda.is_available() and self.decoded.augment is None,
        )
        for (x, index, dropped), (batch_no, _) in zip(loader, numbered):
            if len(dropped):
                bad = dropped.tolist()
                self.skipped += [str(self.split.path(i)) for i in bad]
                log.warning("skipped %d unreadable image(s), e.g. %s (%d so far); their slots refilled from "
                            "the split", len(bad), self.split.path(bad[0]), len(self.skipped))
            yield x, index, batch_no


def trim_heap() -> None:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``; elsewhere nothing). A
    1M-row list parse frees ~160 MB of temporaries that glibc keeps; a worker forked after it
    would map them all (its PSS counting a share of dead pages)."""
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


class _Numbered:
    """The DataLoader's sampler: (batch number, row list) per batch, made as the main process
    hands each batch out. (A list of every row as Python ints, made before the workers fork,
    would be N objects whose pages the main process then writes, by reference counts, while it
    iterates: each page copied leaves the workers a private copy of it, ~8 MB per worker per 1M
    rows.)"""

    def __init__(self, numbered: list[tuple[int, np.ndarray]]):
        self.numbered = numbered

    def __len__(self) -> int:
        return len(self.numbered)

    def __iter__(self):
        return ((n, c.tolist()) for n, c in self.numbered)


def _engine(split: Split) -> str:
    """In-memory data is augmented in this process (no workers are forked): the numba engine
    (bit-identical views, ~4x faster on 28 px batches) when it imports. Files are augmented in
    forked DataLoader workers, where the torch engine stays: numba's thread pool is not
    fork-safe once started."""
    return "auto" if split.images is not None else "torch"


class TorchLoader(EpochPosition):
    """Train loader: an iterable of ViewBatch for one rank, with ``__len__`` and ``set_epoch``.

    ``augment_in``: ``device`` makes the views on ``device`` from uint8 batches (the GPU path);
    ``workers`` makes them in the DataLoader workers, into shared memory (fastest when training
    on CPU); ``auto`` picks ``workers`` for image files on a CPU device, else ``device``.
    ``views``: (weak, strong, strong2), or (weak,) alone for a method that needs no strong views
    (the CE baseline), whose batches then carry None for ``strong`` and ``strong2``.
    """

    def __init__(self, split: Split, views: tuple[ViewSpec, ...], shard: Shard, *, num_workers: int = 2,
                 decode_size: int = 256, drop_last: bool = True, augment_in: str = "auto"):
        if augment_in not in ("auto", "device", "workers"):
            raise ValueError(f"augment_in {augment_in!r}: choose auto, device or workers")
        self.shard, self.device = shard, torch.device(shard.device)
        self.labels = torch.from_numpy(split.labels)
        self.augment = Augmenter(views, split.mean, split.std, engine=_engine(split), out_dtype=shard.dtype)
        if augment_in == "auto":
            augment_in = "workers" if split.images is None and self.device.type == "cpu" else "device"
        if augment_in == "workers" and split.images is not None:
            augment_in = "device"  # in-memory data has no workers; its views are made in place
        self.augment_in = augment_in
        self.source = _Batches(split, shard, shuffle=True, drop_last=drop_last, num_workers=num_workers,
                               decode_size=decode_size,
                               worker_augment=self.augment if augment_in == "workers" else None)
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start: int = 0, num_views: int | None = None) -> None:
        """``batch.TrainLoader.set_epoch``; views are seeded per batch, so a resumed epoch also
        gives the same views."""
        super().set_epoch(epoch, start, num_views)
        self.source.epoch, self.source.start = epoch, start
        if self.source.decoded is not None:
            self.source.decoded.num_views = num_views

    def __len__(self) -> int:
        return len(self.source)

    @property
    def skipped(self) -> list[str]:
        return self.source.skipped

    def __iter__(self):
        seed = self.shard.view_seed(self.epoch)
        for x, index, batch_no in self.source:
            if self.augment_in == "workers":
                views = [upload(v, self.device) for v in x]  # pinned, non-blocking
            else:
                self.augment.reseed(batch_seed(seed, batch_no))
                views = self.augment(upload(x, self.device), num_views=self.num_views)
            yield view_batch(views, upload(self.labels[index], self.device), upload(index, self.device))


class TorchEvalLoader:
    """Eval loader: centre views as EvalBatch, sharded without dropping (padding repeats indices)."""

    def __init__(self, split: Split, shard: Shard, *, view_size: int, num_workers: int = 2, decode_size: int = 256):
        self.device = torch.device(shard.device)
        self.labels = torch.from_numpy(split.labels)
        self.source = _Batches(split, shard, shuffle=False, drop_last=False, num_workers=num_workers,
                               decode_size=decode_size)
        self.augment = Augmenter([eval_view(view_size)], split.mean, split.std, engine=_engine(split))

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self):
        for x, index, _ in self.source:
            (image,) = self.augment(upload(x, self.device))
            yield EvalBatch(image, upload(self.labels[index], self.device), upload(index, self.device))
