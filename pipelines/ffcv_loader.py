"""FFCV backend: FFCV's loader reads and decodes a .beton (``lacol-convert DATASET --to ffcv``) in
its compiled threads, each image once, to uint8; ``augment.py`` makes the views from that decode
on the training device. A drop-in for the reference backend (``data.backend: ffcv``): the same
ViewBatch/EvalBatch, labels taken from the split (so synthetic noise applies), views seeded per
batch, ``set_epoch(epoch, start)`` to resume mid-epoch.

Order and sharding. FFCV 1.0.2's own distributed mode is RANDOM order only (a DistributedSampler
that pads by repeating samples), and its QUASI_RANDOM order refuses ``distributed=True``. So the
order is ours, handed to FFCV's epoch iterator:

- ``random``: the reference backend's order (``sharding.shard_indices``): one permutation per
  epoch dealt round-robin to ranks, equal full batches per rank. Same seed, same batches as
  ``data.backend: torch``.
- ``quasi_random`` (default for training): FFCV's page-aware QUASI_RANDOM generator (samples are
  drawn from a small window of pages at a time, so a dataset larger than RAM is read nearly
  sequentially with ``os_cache=False``), computed with the same seed on every rank and then
  dealt round-robin, so it works sharded too.
- evaluation: sequential, padded by wrapping around so every rank holds the same count (metrics
  deduplicate by index), as the reference backend.

Images the converter could not decode are not in the .beton: they are counted in ``skipped`` (and
named in the converter's report), and the order runs over the images present.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .augment import Augmenter
from .batch import EpochPosition, EvalBatch
from .formats import read_meta, verify_beton
from .sharding import Shard, batch_seed, num_batches, upload, view_batch
from .sources.base import DatasetError, Split
from .views import ViewSpec, eval_view

log = logging.getLogger(__name__)

ORDERS = ("quasi_random", "random")


def _ffcv():
    try:
        import ffcv  # noqa: F401
    except ImportError as e:
        raise DatasetError("data.backend=ffcv needs FFCV: pip install -e '.[ffcv]' (after apt-get install "
                           "pkg-config libopencv-dev libturbojpeg0-dev)") from e


class _BetonSource:
    """The .beton of a split, its rows matched to the split's rows, read by an FFCV Loader whose
    order comes from ``order_fn`` (one rank's positions in the file, for the next epoch)."""

    def __init__(self, split: Split, path: str | Path, *, batch_size: int, num_workers: int,
                 os_cache: bool, batches_ahead: int = 3):
        _ffcv()
        from ffcv.fields.basics import IntDecoder
        from ffcv.fields.ndarray import NDArrayDecoder, NDArrayField
        from ffcv.fields.rgb_image import SimpleRGBImageDecoder
        from ffcv.loader import OrderOption
        from ffcv.reader import Reader

        self.path = Path(path)
        meta = read_meta(self.path)
        verify_beton(self.path, meta)  # a damaged file would otherwise load and train on other pixels
        reader = Reader(str(self.path))
        column = {name: f"f{i}" for i, name in enumerate(reader.field_names)}
        if set(column) != {"image", "label", "clean_label", "index"}:
            raise DatasetError(f"{self.path}: fields {sorted(column)}, not lacol-convert's; convert it again")
        source_index = reader.metadata[column["index"]].astype(np.int64)
        clean = reader.metadata[column["clean_label"]].astype(np.int64)
        rows = split.source_index
        if meta["source_images"] != split.source_len:
            raise DatasetError(f"{self.path} was converted from {meta['source_images']} images, "
                               f"{split.name} has {split.source_len}: convert it again with lacol-convert")
        # the file's position of each split row (-1: not in the file: skipped by the converter)
        pos_of_source = np.full(split.source_len, -1, dtype=np.int64)
        pos_of_source[source_index] = np.arange(len(source_index))
        pos = pos_of_source[rows]
        present = pos >= 0
        if not np.array_equal(clean[pos[present]], split.clean_labels[present]):
            raise DatasetError(f"{self.path}: its clean labels differ from {split.name}'s: it was converted "
                               f"from other data; convert it again with lacol-convert")
        self.pos = pos[present]  # the file positions of the split rows it holds
        missing = np.flatnonzero(~present)
        self.skipped = [str(split.files[i]) if split.files is not None else str(i) for i in missing]
        if missing.size:
            log.warning("%s: %d image(s) of %s are not in the file (undecodable at conversion; listed in %s)",
                        self.path, missing.size, split.name, self.path.with_name(self.path.stem + ".report.json"))
        image = reader.handlers["image"]
        decoder = NDArrayDecoder() if isinstance(image, NDArrayField) else SimpleRGBImageDecoder()
        self.num_stored = len(source_index)
        # the split row of each stored ``index`` value (the file carries source-split rows)
        self.row_of_source = np.full(split.source_len, -1, dtype=np.int64)
        self.row_of_source[rows] = np.arange(len(split))
        self.order_fn = None
        self._pages = None
        self.loader = _make_ordered_loader()(
            str(self.path), batch_size=batch_size, num_workers=num_workers, os_cache=os_cache,
            order=OrderOption.SEQUENTIAL, drop_last=False, batches_ahead=batches_ahead,
            pipelines={"image": [decoder], "index": [IntDecoder()], "label": None, "clean_label": None})
        self.loader.source = self
        self.batch_size = batch_size

    def quasi_random(self, epoch: int, seed: int) -> np.ndarray:
        """FFCV's QUASI_RANDOM order over the file positions present, the same on every rank."""
        from ffcv.traversal_order.quasi_random import generate_order_inner

        if self._pages is None:  # the file's pages and the wanted samples on each, built once
            pages = self.loader.memory_manager.page_to_samples
            wanted = np.zeros(self.num_stored, dtype=bool)
            wanted[self.pos] = True
            table = np.zeros((int(max(pages)) + 1, max(len(v) for v in pages.values())), dtype=np.int64)
            sizes = np.zeros(len(table), dtype=np.int64)
            for page, samples in pages.items():
                s = np.array(sorted(samples), dtype=np.int64)
                s = s[wanted[s]]
                table[page, :len(s)], sizes[page] = s, len(s)
            self._pages = table, sizes
        table, sizes = self._pages[0].copy(), self._pages[1]  # the generator shuffles in place
        result = np.zeros(int(sizes.sum()), dtype=np.int64)
        generate_order_inner(seed * 912300 + epoch, table, sizes, result, 2 * self.batch_size)
        return result


def _make_ordered_loader():
    from ffcv.loader import Loader
    from ffcv.loader.epoch_iterator import EpochIterator
    from ffcv.pipeline.compiler import Compiler

    class OrderedLoader(Loader):
        """FFCV's Loader, iterating the positions ``source.order_fn()`` returns."""

        source: _BetonSource

        def __iter__(self):
            Compiler.set_num_threads(self.num_workers)
            order = self.source.order_fn()
            if self.code is None or self.recompile:
                self.generate_code()
            return EpochIterator(self, order)

    return OrderedLoader


class _Ring:
    """Output buffers reused every ``n`` requests of one shape (``Augmenter``'s ``alloc``): on a
    CPU, first-touch page faults on 115 MB of fresh float views per batch cost about as much
    as making a view (measured), so the train loader recycles its buffers as FFCV does its own."""

    def __init__(self, n: int):
        self.n, self.bufs = n, {}

    def __call__(self, shape, dtype, device=None) -> torch.Tensor:
        key = (tuple(shape), dtype, str(device))
        ring, i = self.bufs.get(key, ([], 0))
        if len(ring) < self.n:
            ring.append(torch.empty(shape, dtype=dtype, device=device))
        buf = ring[i % len(ring)]
        self.bufs[key] = (ring, i + 1)
        return buf


class FfcvLoader(EpochPosition):
    """Train loader over a .beton: an iterable of ViewBatch for one rank, with ``__len__`` and
    ``set_epoch``. ``views`` as ``TorchLoader``'s; ``order``: quasi_random | random (module doc).

    On a CPU device the views are made by the numba engine (``augment_numba.py``) into a ring of
    ``reuse`` buffers: a batch's tensors stay valid until ``reuse - 1`` more batches have been
    drawn (a training step is done with its batch by then; ``.clone()`` to keep one longer;
    ``reuse=0`` allocates fresh tensors). On a GPU the torch engine makes them on the device."""

    def __init__(self, split: Split, path: str | Path, views: tuple[ViewSpec, ...], shard: Shard, *,
                 num_workers: int = 2, order: str = "quasi_random", os_cache: bool = True, drop_last: bool = True,
                 reuse: int = 3):
        if order not in ORDERS:
            raise ValueError(f"order {order!r}: choose quasi_random or random")
        self.shard, self.device = shard, torch.device(shard.device)
        self.labels = torch.from_numpy(split.labels)
        self.augment = Augmenter(views, split.mean, split.std, engine="auto", out_dtype=shard.dtype)
        self.alloc = _Ring(reuse) if reuse and self.device.type == "cpu" else torch.empty
        self.source = _BetonSource(split, path, batch_size=shard.batch_size, num_workers=num_workers,
                                   os_cache=os_cache)
        self.source.order_fn = self._positions
        self.batch_size, self.world = shard.batch_size, shard.world
        self.order, self.drop_last = order, drop_last
        self.set_epoch(0)

    @property
    def skipped(self) -> list[str]:
        return self.source.skipped

    def _epoch_positions(self) -> np.ndarray:
        src = self.source
        if self.order == "random":
            return src.pos[self.shard.indices(len(src.pos), self.epoch, shuffle=True, drop_last=self.drop_last)]
        return self.shard.deal(src.quasi_random(self.epoch, self.shard.seed), drop_last=self.drop_last)

    def _positions(self) -> np.ndarray:
        return self._epoch_positions()[self.start * self.batch_size:]

    def __len__(self) -> int:
        n = len(self.source.pos)
        if self.drop_last:
            return (n // self.world) // self.batch_size
        return num_batches(num_batches(n, self.world), self.batch_size)

    def __iter__(self):
        seed = self.shard.view_seed(self.epoch)
        row_of_source = torch.from_numpy(self.source.row_of_source)
        for batch_no, (images, stored) in enumerate(self.source.loader, start=self.start):
            # FFCV hands out views of buffers it reuses a few batches later: the views are made
            # (new tensors) before the next batch is asked for.
            index = row_of_source[torch.from_numpy(stored[:, 0].astype(np.int64))]
            self.augment.reseed(batch_seed(seed, batch_no))
            views = self.augment(upload(torch.from_numpy(images), self.device), alloc=self.alloc,
                                 num_views=self.num_views)
            yield view_batch(views, upload(self.labels[index], self.device), upload(index, self.device))


class FfcvEvalLoader:
    """Eval loader over a .beton: centre views as EvalBatch, sequential, sharded without dropping."""

    def __init__(self, split: Split, path: str | Path, shard: Shard, *, view_size: int, num_workers: int = 2,
                 os_cache: bool = True):
        self.device = torch.device(shard.device)
        self.labels = torch.from_numpy(split.labels)
        self.source = _BetonSource(split, path, batch_size=shard.batch_size, num_workers=num_workers,
                                   os_cache=os_cache)
        self.source.order_fn = lambda: shard.deal(np.sort(self.source.pos), drop_last=False)
        self.augment = Augmenter([eval_view(view_size)], split.mean, split.std, engine="auto")
        self.world, self.batch_size = shard.world, shard.batch_size

    def __len__(self) -> int:
        return num_batches(num_batches(len(self.source.pos), self.world), self.batch_size)

    def __iter__(self):
        row_of_source = torch.from_numpy(self.source.row_of_source)
        for images, stored in self.source.loader:
            index = row_of_source[torch.from_numpy(stored[:, 0].astype(np.int64))]
            (image,) = self.augment(upload(torch.from_numpy(images), self.device))
            yield EvalBatch(image, upload(self.labels[index], self.device), upload(index, self.device))
