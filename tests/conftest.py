"""Shared fixtures: real Fashion-MNIST, and small datasets written in their release formats."""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.sources import fashion_mnist

# Before any test module imports Triton (tests/test_aot.py's tools.aot does, and Triton reads the
# switch once): without a GPU its kernels run in the interpreter (tests/test_kernels.py); the
# ahead-of-time compiles run in worker processes that drop the switch.
if "triton" not in sys.modules:
    import torch

    os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")


@pytest.fixture(scope="session")
def fmnist_train():
    return fashion_mnist.load("train")


@pytest.fixture(scope="session")
def clothing_root(tmp_path_factory) -> Path:
    """A Clothing1M-layout folder of real Fashion-MNIST images as 240-400 px JPEGs."""
    from tools.clothing1m_sample import build

    return build(tmp_path_factory.mktemp("clothing1m"), num_train=160, num_val=32, num_test=32, workers=2)


def write_cifar(root: Path, name: str, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """Write a tiny CIFAR python release (same keys, dtypes and shapes as the real one)."""
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        per = n_train // 5
        for i in range(1, 6):
            d = {b"data": rng.integers(0, 256, (per, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, per).tolist()}
            (folder / f"data_batch_{i}").write_bytes(pickle.dumps(d))
        d = {b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n_test).tolist()}
        (folder / "test_batch").write_bytes(pickle.dumps(d))
        meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta))
        return folder
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    f2c = np.repeat(np.arange(20), 5)
    rng.shuffle(f2c)  # like the real map: superclasses are not contiguous fine-label ranges
    for split, n in (("train", n_train), ("test", n_test)):
        fine = np.concatenate([np.arange(100), rng.integers(0, 100, max(0, n - 100))])[:n]
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": fine.tolist(),
             b"coarse_labels": f2c[fine].tolist()}
        (folder / split).write_bytes(pickle.dumps(d))
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return folder


# ------------------------------------------------------------------ helpers the test files share

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "fashion_mnist.yaml"
"""The default recipe."""

TRAIN_SMALL = ["data.train_subset=2048", "data.batch_size=64", "data.noise=symmetric", "data.noise_rate=0.2",
         "optim.epochs=2", "loss.warmup_epochs=1", "train.threads=1", "train.progress=false", "train.log_every=1"]
"""A few-second training run of the default recipe (test_train's and the hostile tests')."""


def check_batch(b, split, size, channels):
    import torch

    from pipelines.batch import ViewBatch

    assert isinstance(b, ViewBatch)
    for v in (b.weak, b.strong, b.strong2):
        assert v.shape == (len(b), channels, size, size) and v.dtype == torch.float32
        assert v.is_contiguous(memory_format=torch.channels_last)
        # Normalised: black and white map to (0 - mean)/std and (255 - mean)/std.
        lo = min((0 - m) / s for m, s in zip(split.mean, split.std))
        hi = max((255 - m) / s for m, s in zip(split.mean, split.std))
        assert v.min() >= lo - 1e-4 and v.max() <= hi + 1e-4
    assert b.label.dtype == torch.int64 and b.index.dtype == torch.int64
    assert (b.label.numpy() == split.labels[b.index.numpy()]).all()


def stopped_copy(whole, split, last_step: int) -> None:
    """``split``: a copy of the finished run ``whole`` as if it had stopped after checkpoint
    ``last_step`` (later checkpoints and the end's files removed), ready for ``--resume``."""
    import shutil

    shutil.copytree(whole, split)
    for p in (split / "checkpoints").glob("step_*"):
        if int(p.name.split("_")[1]) > last_step:
            shutil.rmtree(p)
    for f in ("model.safetensors", "best.safetensors", "summary.json"):
        (split / f).unlink(missing_ok=True)
