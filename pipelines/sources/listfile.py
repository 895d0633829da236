"""``data.dataset=list``: a user's images named by label files, one per split, paths relative to
the root (the layout of Clothing1M-style releases and of most label exports).

    root/train.csv | train.tsv     path,label[,clean_label]   (TSV: tab-separated)
    root/val.csv                   optional: a validation split
    root/test.csv                  the reported split
    root/classes.txt               optional: one class name per line (index = line)

A first line whose label is not a label (``path,label``) is a header and skipped. Labels are
class indices (0..C-1, C from classes.txt or the largest index + 1) or class names (then the
classes are the sorted names of train's labels). The clean label column is optional: empty or
-1 where unknown; val and test without it take their labels as the reference.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .base import DatasetError, Split, normal_key
from .folder import MEAN, STD

SPLITS = ("train", "val", "test")


def _root(root) -> Path:
    if root is None:
        raise DatasetError("data.dataset=list needs data.root: the folder holding train.csv (or .tsv) and the images")
    return Path(root)


def _file(root: Path, split: str) -> Path | None:
    for suffix in (".csv", ".tsv"):
        if (root / f"{split}{suffix}").is_file():
            return root / f"{split}{suffix}"
    return None


def present(root) -> tuple[str, ...]:
    root = _root(root)
    return tuple(s for s in SPLITS if s == "train" or _file(root, s) is not None)


def evaluation(root) -> tuple[str, ...]:
    return tuple(s for s in present(root) if s != "train")


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    delim = "\t" if path.suffix == ".tsv" else ","
    rows = [(n, [c.strip() for c in r]) for n, r in enumerate(csv.reader(text.splitlines(), delimiter=delim), 1)
            if any(c.strip() for c in r)]
    if rows and rows[0][1][1:2] and rows[0][1][1].lower() in ("label", "labels", "class", "noisy_label"):
        rows = rows[1:]  # a header
    for n, r in rows:
        if len(r) not in (2, 3):
            raise DatasetError(f"{path}:{n}: {r!r}: expected path{delim}label[{delim}clean_label]")
    return rows


def _classes(root: Path) -> tuple[str, ...] | None:
    f = root / "classes.txt"
    if not f.is_file():
        return None
    names = tuple(line.strip() for line in f.read_text(encoding="utf-8-sig").splitlines() if line.strip())
    if len(names) < 2:
        raise DatasetError(f"{f}: {len(names)} class name(s); a classifier needs at least 2")
    return names


def classes_of(root: Path) -> tuple[str, ...]:
    named = _classes(root)
    train = _file(root, "train")
    if train is None:
        raise DatasetError(f"{root}: no train.csv or train.tsv (lines path,label[,clean_label])")
    labels = [r[1] for _, r in _rows(train)]
    if all(v.isdigit() for v in labels):
        c = max(int(v) for v in labels) + 1 if labels else 0
        if named is not None:
            if c > len(named):
                raise DatasetError(f"{train}: label {c - 1} but {root / 'classes.txt'} names {len(named)} classes")
            return named
        return tuple(str(i) for i in range(max(c, 2)))
    return named or tuple(sorted(set(labels)))


def load(split: str, root) -> Split:
    root = _root(root)
    if split not in SPLITS:
        raise DatasetError(f"list split {split!r}: choose one of {', '.join(SPLITS)}")
    classes = classes_of(root)
    path = _file(root, split)
    if path is None:
        raise DatasetError(f"{root}: no {split}.csv or {split}.tsv (lines path,label[,clean_label])")
    index = {c: i for i, c in enumerate(classes)}

    def label(v: str, n: int, column: str) -> int:
        if v.isdigit() and int(v) < len(classes) and v not in index:
            return int(v)
        if v in index:
            return index[v]
        raise DatasetError(f"{path}:{n}: {column} {v!r} is not a class (0..{len(classes) - 1} or one of "
                           f"{', '.join(classes[:5])}{'...' if len(classes) > 5 else ''})")

    keys, y, clean = [], [], []
    for n, r in _rows(path):
        keys.append(normal_key(r[0], f"{path}:{n}"))
        y.append(label(r[1], n, "label"))
        c = r[2] if len(r) == 3 else ""
        clean.append(-1 if c in ("", "-1") else label(c, n, "clean label"))
    if not keys:
        raise DatasetError(f"{path}: no rows")
    y_arr, clean_arr = np.asarray(y, dtype=np.int64), np.asarray(clean, dtype=np.int64)
    if split != "train" and (clean_arr < 0).all():
        clean_arr = y_arr.copy()  # an evaluation split's labels are its reference
    return Split(f"list/{split}", y_arr, clean_arr, classes, files=keys, root=root, mean=MEAN, std=STD)
