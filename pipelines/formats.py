"""The on-disk formats the converters (``tools/``) write and the backends read: where a split's
.beton or DALI file list lives, and their readers. Writers stay in ``tools/beton.py``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .sources.base import DatasetError, Split

FORMAT = "lacol-ffcv/1"
"""The .beton sidecar's format tag; a sidecar of another format is refused (convert again)."""


def beton_path(out_dir: str | Path, dataset: str, split: str) -> Path:
    """Where the converter writes (and the ffcv backend looks for) one split."""
    return Path(out_dir) / f"{dataset}_{split}.beton"


def read_meta(path: str | Path) -> dict:
    """The sidecar of a .beton; a clear error when the file or its sidecar is missing."""
    path = Path(path)
    side = path.with_name(path.name + ".json")
    if not path.is_file():
        raise DatasetError(f"{path}: no such .beton; make it with `lacol-convert DATASET --to ffcv "
                           f"--root ROOT --out {path.parent}`")
    if not side.is_file():
        raise DatasetError(f"{side}: missing; {path} was not written by lacol-convert (or is incomplete): "
                           f"convert again")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{side}: not the JSON lacol-convert writes ({e}): convert again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        meta = meta if isinstance(meta, dict) else {}
        raise DatasetError(f"{side}: format {meta.get('format')!r}, expected {FORMAT!r}: convert again")
    return meta


def list_path(out_dir: str | Path, dataset: str, split: str) -> Path:
    """Where ``--to dali`` writes (and the dali backend looks for) one split's file list."""
    return Path(out_dir) / f"{dataset}_{split}.dali.txt"


def read_file_list(path: str | Path, split: Split) -> np.ndarray:
    """The split rows a ``--to dali`` list names (checked against the split's files)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file list; make it with `lacol-convert {split.name.split('/')[0]} "
                           f"--to dali --root ROOT --out {path.parent}`")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        rel, _, row = line.rpartition(" ")
        if not row.isdigit() or int(row) >= len(split) or split.files[int(row)] != rel:
            raise DatasetError(f"{path}:{n}: {line!r} does not name a file of {split.name} with its row; "
                               f"the list was made from other data: convert again")
        rows.append(int(row))
    return np.asarray(rows, dtype=np.int64)
