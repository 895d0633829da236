"""Data assembly, in one place below the trainer: the training split (noise, subset), the
evaluation splits, and a loader of any backend from the data config (``{backend: builders}``).

The trainer, ``lacol eval``/``predict`` and ``lacol-bench`` call ``make_loader``; none of them
names a backend or a file format. ``d`` is a ``data_config.DataConfig`` (the data section of
lacol's config)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .batch import EvalLoader, TrainLoader
from .formats import beton_path, list_path, read_file_list, read_meta
from .noise import NoisyLabels, make_noise
from .sources import dataset_info, load_split
from .sources.base import DatasetError, Split
from .sharding import Shard
from .views import ViewSpec


def train_split(d, noise_file: Path | None = None) -> Split:
    """The training split with its noisy labels, optionally a fixed subset, without the rows
    held out for validation (``train_and_val``)."""
    return train_and_val(d, noise_file)[0]


def train_and_val(d, noise_file: Path | None = None) -> tuple[Split, Split | None]:
    """The training split (noisy labels, optionally a fixed subset) and the validation split held
    out of it (``d.val_size`` rows with their noisy labels, or None). Synthetic noise is drawn
    once and kept in ``noise_file`` (read back when it exists), so a resumed run trains on the
    same labels.

    Rows: one fixed permutation of the split (the same for every seed and noise draw); training
    takes its first ``train_subset`` rows (all but the held-out ones without a subset) and
    validation its last ``val_size``, so the two are disjoint and a subset's rows do not move
    when validation is added."""
    split = load_split(d.dataset, dataset_info(d.dataset).train, d.root)
    if d.label_file is not None:
        split = relabelled(split, Path(d.label_file))
    if d.noise != "none":
        if noise_file is not None and noise_file.is_file():
            noise = NoisyLabels.load(noise_file)
            check_noise(noise, d, len(split), noise_file)
        else:
            noise = make_noise(split, d.dataset, d.noise, d.noise_rate, d.noise_seed, d.cifar_n_file)
            if noise_file is not None:
                noise.save(noise_file)
        split = split.with_labels(noise.labels)
    n, val_size = len(split), d.val_size
    if not d.train_subset and not val_size:
        return split, None
    n_train = d.train_subset or n - val_size
    if n_train < 1 or n_train + val_size > n:
        raise DatasetError(f"{split.name} has {n} samples: data.train_subset={d.train_subset} and "
                           f"data.val_size={val_size} do not fit; lower one of them")
    # its own seed stream: default_rng(0) would be the very permutation that symmetric noise
    # with noise_seed 0 flips first, and the subset would be all noisy
    rows = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(1,))).permutation(n)
    train = split.subset(rows[:n_train])
    if not val_size:
        return train, None
    val = split.subset(rows[n - val_size:])
    return train, replace(val, name=f"{val.name}:val")


def relabelled(split: Split, path: Path) -> Split:
    """``split`` with the labels of a ``key label`` file (``data.label_file``: e.g. ``lacol audit
    --relabel``'s output); every key of the split must be in it."""
    from .sources.clothing1m import read_kv

    if split.files is None:
        raise DatasetError(f"data.label_file={path}: {split.name} is an in-memory dataset (no file keys); "
                           f"label files name the files of file datasets")
    if not path.is_file():
        raise DatasetError(f"data.label_file={path}: no such file")
    kv = read_kv(path, len(split.classes))
    missing = next((k for k in split.files if str(k) not in kv), None)
    if missing is not None:
        raise DatasetError(f"{path}: key {missing!r} of {split.name} has no label; a label file lists every "
                           f"training key")
    return split.with_labels(np.fromiter((kv[str(k)] for k in split.files), dtype=np.int64, count=len(split)))


def cv_split(split: Split, folds: int, fold: int) -> tuple[Split, Split]:
    """(training rows, held-out rows) of fold ``fold`` of ``folds``: a fixed permutation of the
    split's rows cut into equal parts, the same for every seed."""
    rows = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(3,))).permutation(len(split))
    held = np.zeros(len(split), dtype=bool)
    held[np.array_split(rows, folds)[fold]] = True
    return split.subset(np.flatnonzero(~held)), split.subset(np.flatnonzero(held))


def check_noise(noise: NoisyLabels, d, n: int, path: Path) -> None:
    """A kept noise file must be the noise the config asks for: a resumed or re-run folder with
    other noise settings would otherwise train on the old labels while reporting the new ones."""
    want = {"dataset": d.dataset, "kind": d.noise, "seed": d.noise_seed, "samples": n}
    have = {"dataset": noise.dataset, "kind": noise.kind, "seed": noise.seed, "samples": len(noise.labels)}
    if d.noise.startswith("cifar-n"):
        have["kind"] = want["kind"] if noise.kind.startswith(d.noise) else noise.kind
    else:
        want["rate"], have["rate"] = d.noise_rate, noise.rate
    if want != have:
        diff = ", ".join(f"{k} {have[k]!r} (config: {want[k]!r})" for k in want if want[k] != have[k])
        raise DatasetError(f"{path} holds other label noise than the config asks for: {diff}. Use another "
                           f"train.name, or delete {path.name} (and the run's checkpoints) to draw it again")


def eval_splits(d) -> dict[str, Split]:
    """The dataset's evaluation splits by name (``sources.DATASETS``)."""
    return {name: load_split(d.dataset, name, d.root) for name in dataset_info(d.dataset).eval_for(d.root)}


def _split_name(split: Split) -> str:
    return split.name.split("/")[-1].split(":")[0]  # a held-out validation split reads its parent's files


def _dali_rows(d, split: Split) -> np.ndarray | None:
    """File datasets: the rows of the checked list (``lacol-convert DATASET --to dali``), mapped
    to this split's rows (it may be a subset); in-memory datasets: None (all rows)."""
    if split.files is None:
        return None
    name = _split_name(split)
    listed = np.zeros(split.source_len, dtype=bool)
    # the list names rows of the full split; a subset keeps the rows it has
    full = load_split(d.dataset, name, d.root) if split.source_len != len(split) else split
    listed[read_file_list(list_path(d.dali.dir, d.dataset, name), full)] = True
    return np.flatnonzero(listed[split.source_index])


def _torch(d, split, views, shard):
    from .torch_loader import TorchEvalLoader, TorchLoader

    kw = dict(num_workers=d.num_workers, decode_size=d.decode_size)
    if views is None:
        return TorchEvalLoader(split, shard, view_size=d.image_size, **kw)
    return TorchLoader(split, views, shard, **kw)


def _ffcv(d, split, views, shard):
    from .ffcv_loader import FfcvEvalLoader, FfcvLoader

    path = beton_path(d.ffcv.dir, d.dataset, _split_name(split))
    stored = read_meta(path).get("image", {})
    if split.files is not None and stored.get("storage") == "jpeg" and stored["size"][0] != d.decode_size:
        # the views would be cut from another square than the other backends decode to
        raise DatasetError(f"{path} stores {stored['size'][0]} px squares but data.decode_size is {d.decode_size}: "
                           f"set data.decode_size={stored['size'][0]}, or convert again with --size {d.decode_size}")
    kw = dict(num_workers=d.num_workers, os_cache=d.ffcv.os_cache)
    if views is None:
        return FfcvEvalLoader(split, path, shard, view_size=d.image_size, **kw)
    return FfcvLoader(split, path, views, shard, order=d.ffcv.order, **kw)


def _dali(d, split, views, shard):
    from .dali_loader import DaliEvalLoader, DaliLoader

    kw = dict(num_workers=d.dali.threads or d.num_workers, decode_size=d.decode_size, rows=_dali_rows(d, split))
    if views is None:
        return DaliEvalLoader(split, shard, view_size=d.image_size, **kw)
    return DaliLoader(split, views, shard, hw_decoder_load=d.dali.hw_decoder_load, **kw)


BACKENDS = {"torch": _torch, "ffcv": _ffcv, "dali": _dali}
"""``data.backend`` -> builder(d, split, views or None for evaluation, shard: ``Shard``). Its own
settings, if any, are a sub-section of the data section (``data_config.py``)."""


def make_loader(d, split: Split, views: tuple[ViewSpec, ...] | None, *, rank: int = 0, world: int = 1,
                device="cpu", seed: int = 0, dtype: torch.dtype = torch.float32) -> TrainLoader | EvalLoader:
    """A loader of backend ``d.backend`` for one rank: a training loader of ``views`` (batches of
    ``d.batch_size``, views seeded from ``seed``, in ``dtype``: the training dtype), or, with
    ``views`` None, an evaluation loader (centre views of ``d.image_size``, batches of
    ``d.eval_batch_size``, fp32)."""
    if views is None:
        shard = Shard(d.eval_batch_size, rank, world, device=device)
    else:
        shard = Shard(d.batch_size, rank, world, seed, device, dtype)
    return BACKENDS[d.backend](d, split, views, shard)
