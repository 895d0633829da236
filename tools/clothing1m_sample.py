"""Build a small dataset in the Clothing1M release layout from real Fashion-MNIST images.

Each image is upscaled to a random 240-400 px size, tinted (a random garment colour on a random
background, with a soft gradient) and saved as JPEG, so decoding costs what real web photos of
that size cost. Labels: ``noisy_label_kv.txt`` carries 38% symmetric noise (Clothing1M's estimated
rate); ``clean_label_kv.txt`` the true labels of the clean subsets; class names are Fashion-MNIST's.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.noise import symmetric
from pipelines.sources import fashion_mnist


def _render(args) -> None:
    out, key, pixels, seed = args
    rng = np.random.default_rng(seed)
    w, h = (int(v) for v in rng.integers(240, 401, size=2))
    gray = np.asarray(Image.fromarray(pixels).resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0
    fg, bg = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    ramp = np.linspace(0.85, 1.15, h, dtype=np.float32)[:, None, None]
    rgb = (gray[..., None] * fg + (1 - gray[..., None]) * bg) * ramp
    path = out / key
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)


def _synthetic(n: int, seed: int):
    """(images (n, 28, 28) uint8, labels): ten classes of soft blobs at class-specific places, for
    hosts without Fashion-MNIST (the offline GPU machine); decoding cost is what matters there."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    yy, xx = np.mgrid[:28, :28]
    cy, cx = 6 + 16 * (labels // 5), 4 + 5 * (labels % 5)
    r = rng.uniform(3, 7, n)
    img = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / (2 * r[:, None, None] ** 2))
    img = img + rng.normal(0, 0.05, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), labels


def build(out: str | Path, num_train: int = 2048, num_val: int = 256, num_test: int = 256,
          clean_fraction: float = 0.25, noise_rate: float = 0.38, seed: int = 0,
          fmnist_root: str | Path | None = None, workers: int = 2, synthetic: bool = False) -> Path:
    """Write the layout under ``out``; returns ``out``. Deterministic given the arguments.
    ``synthetic``: generated images instead of Fashion-MNIST's (same layout, sizes and JPEGs)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    if synthetic:
        pixels, labels = _synthetic(num_train + num_val + num_test, seed)
        classes = tuple(f"class{i}" for i in range(10))
    else:
        train = fashion_mnist.load("train", fmnist_root)
        test = fashion_mnist.load("test", fmnist_root)
        tr = rng.choice(len(train), num_train, replace=False)
        te = rng.choice(len(test), num_val + num_test, replace=False)
        pixels = np.concatenate([train.images[tr], test.images[te]])[..., 0]
        labels = np.concatenate([train.labels[tr], test.labels[te]])
        classes = train.classes
    keys = [f"images/{i % 10}/{(i // 10) % 100:02d}/{i:07d}.jpg" for i in range(len(labels))]
    jobs = [(out, k, p, seed * 7919 + i) for i, (k, p) in enumerate(zip(keys, pixels))]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_render, jobs, chunksize=64))

    noisy = symmetric(labels[:num_train], noise_rate, len(classes), seed)
    n_clean = int(clean_fraction * num_train)
    clean_train = keys[:n_clean]
    val, test_keys = keys[num_train:num_train + num_val], keys[num_train + num_val:]

    def write(name: str, lines) -> None:
        (out / name).write_text("".join(f"{line}\n" for line in lines))

    write("noisy_label_kv.txt", (f"{k} {y}" for k, y in zip(keys[:num_train], noisy)))
    clean_keys = clean_train + val + test_keys
    clean_labels = np.concatenate([labels[:n_clean], labels[num_train:]])
    write("clean_label_kv.txt", (f"{k} {y}" for k, y in zip(clean_keys, clean_labels)))
    write("noisy_train_key_list.txt", keys[:num_train])
    write("clean_train_key_list.txt", clean_train)
    write("clean_val_key_list.txt", val)
    write("clean_test_key_list.txt", test_keys)
    write("category_names_eng.txt", classes)
    return out
