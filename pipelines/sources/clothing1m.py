"""Clothing1M in its release layout, unchanged.

    root/images/<a>/<bc>/<name>.jpg
    root/noisy_label_kv.txt           "<images/...jpg> <label>" per line (1M lines)
    root/clean_label_kv.txt           same format, the human-checked labels
    root/noisy_train_key_list.txt     one image key per line
    root/clean_train_key_list.txt
    root/clean_val_key_list.txt
    root/clean_test_key_list.txt
    root/category_names_eng.txt       one class name per line

Splits: ``noisy_train`` (noisy labels; clean labels attached where clean_label_kv has the key),
``clean_train``, ``clean_val``, ``clean_test`` (clean labels). Image files are not touched here:
a missing or corrupt image is found, counted and skipped by the loader that decodes it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import keylists
from .base import DatasetError, Split, normal_key, normal_keys

# ImageNet statistics (0..255), matching ImageNet-pretrained encoders.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
SPLITS = {
    "noisy_train": "noisy_train_key_list.txt",
    "clean_train": "clean_train_key_list.txt",
    "clean_val": "clean_val_key_list.txt",
    "clean_test": "clean_test_key_list.txt",
}


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(
            f"Clothing1M: missing {path}. Set data.root to the folder of the Clothing1M release "
            f"(images/, noisy_label_kv.txt, clean_label_kv.txt, the *_key_list.txt files, "
            f"category_names_eng.txt)."
        )
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is dropped
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 4]!r}); save it "
                           f"as UTF-8") from None


def _bad_line(path: Path, lines: list[str], ok, expected: str):
    for n, line in enumerate(lines, 1):
        if line.strip() and not ok(line):
            raise DatasetError(f"{path}:{n}: {line[:80]!r}: expected {expected}")
    raise AssertionError("no bad line found")  # pragma: no cover: callers saw one


def read_kv(path: Path, num_classes: int) -> dict[str, int]:
    """Parse a ``<key> <label>`` file into a dict, checking every line (1M lines in ~1 s)."""
    lines = _lines(path)
    fields = [line.split() for line in lines if line.strip()]
    expected = f"'<relative image path> <label 0..{num_classes - 1}>'"

    def ok(line):
        f = line.split()
        return len(f) == 2 and f[1].isdigit() and int(f[1]) < num_classes

    if any(len(f) != 2 for f in fields):
        _bad_line(path, lines, ok, expected)
    try:
        labels = np.array([f[1] for f in fields]).astype(np.int64)
    except (ValueError, OverflowError):
        _bad_line(path, lines, ok, expected)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        _bad_line(path, lines, ok, expected)
    keys = normal_keys([f[0] for f in fields], path, lambda: [n for n, line in enumerate(lines, 1) if line.strip()])
    out = dict(zip(keys, labels.tolist()))
    if len(out) != len(fields):  # a key listed twice: the same label is harmless, two labels are not
        first: dict[str, tuple[int, int]] = {}
        for n, f in enumerate((line.split() for line in lines), 1):
            if not f:
                continue
            k = normal_key(f[0], f"{path}:{n}")  # one key spelled two ways is one key
            if k in first and first[k][1] != int(f[1]):
                raise DatasetError(f"{path}:{n}: key {f[0]!r} is labelled {f[1]} here and {first[k][1]} at line "
                                   f"{first[k][0]}; keep one label per key")
            first.setdefault(k, (n, int(f[1])))
    return out


def read_classes(root: Path) -> tuple[str, ...]:
    names = tuple(line.strip() for line in _lines(root / "category_names_eng.txt") if line.strip())
    if not names:
        raise DatasetError(f"{root / 'category_names_eng.txt'} lists no class names")
    return names


def _load_fast(root: Path, split: str, list_path: Path, num_classes: int, cache: dict):
    """(keys, labels, clean labels) from the byte-array readers (``keylists``), or None where a
    file is not in the common spelling or a key is missing: then the line reader below decides
    and names the line."""
    got = keylists.read_keys(list_path)
    if got is None:
        return None
    keys, hashed = got

    def labels(name: str):
        if ("fast", name) not in cache:
            cache[("fast", name)] = keylists.read_labels(root / name, num_classes)
        return cache[("fast", name)]

    clean = labels("clean_label_kv.txt")
    source = labels("noisy_label_kv.txt") if split == "noisy_train" else clean
    if clean is None or source is None:
        return None
    y, found = source.lookup(hashed)
    if not found.all():
        return None
    return keys, y, clean.lookup(hashed)[0]


def load(split: str = "noisy_train", root: str | Path = "data/clothing1m", *,
         _kv_cache: dict | None = None) -> Split:
    """One Clothing1M split; ``_kv_cache`` lets a caller reading several splits parse each kv once."""
    if split not in SPLITS:
        raise DatasetError(f"Clothing1M split {split!r}: choose one of {sorted(SPLITS)}")
    root = Path(root)
    classes = read_classes(root)
    cache = _kv_cache if _kv_cache is not None else {}

    def kv(name: str) -> dict[str, int]:
        if name not in cache:
            cache[name] = read_kv(root / name, len(classes))
        return cache[name]

    list_path = root / SPLITS[split]
    fast = _load_fast(root, split, list_path, len(classes), cache)
    if fast is not None:
        keys, labels, clean_labels = fast
        return Split(f"clothing1m/{split}", labels, clean_labels, classes, files=keys, root=root,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD)
    lines = _lines(list_path)
    numbers = lambda: [n for n, line in enumerate(lines, 1) if line.strip()]  # noqa: E731 (for errors only)
    keys = normal_keys([line.strip() for line in lines if line.strip()], list_path, numbers)
    if len(set(keys)) != len(keys):
        seen: dict[str, int] = {}
        for n, k in zip(numbers(), keys):
            if k in seen:
                raise DatasetError(f"{list_path}:{n}: key {k!r} is listed again (first at line {seen[k]}); a "
                                   f"split lists each image once")
            seen.setdefault(k, n)
    clean = kv("clean_label_kv.txt")
    source = kv("noisy_label_kv.txt") if split == "noisy_train" else clean
    try:
        labels = np.fromiter((source[k] for k in keys), dtype=np.int64, count=len(keys))
    except KeyError as e:
        n = next(i for i, k in enumerate(keys, 1) if k not in source)
        kv_name = "noisy_label_kv.txt" if split == "noisy_train" else "clean_label_kv.txt"
        raise DatasetError(f"{list_path}:{n}: key {e.args[0]!r} has no label in {root / kv_name}") from None
    clean_labels = np.fromiter((clean.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
    return Split(f"clothing1m/{split}", labels, clean_labels, classes, files=keys, root=root,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD)
