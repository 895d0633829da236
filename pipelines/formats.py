"""The on-disk formats the converters (``tools/``) write and the backends read: where a split's
.beton or DALI file list lives, and their readers. Writers stay in ``tools/beton.py``."""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np

from .fileio import atomic_json
from .sources.base import DatasetError, Split

FORMAT = "lacol-ffcv/2"
"""The .beton sidecar's format tag; a sidecar of another format is refused (convert again).
/2: the sidecar carries the .beton's checksum (``checksum``)."""

_BLOCK = 16 << 20


def checksum(path: str | Path) -> dict:
    """{"crc32": hex, "bytes": n} of a whole file (header, metadata, data region and allocation
    table), read in 16 MiB blocks. CRC-32 (zlib, several GB/s on one core) against corruption:
    a flipped or overwritten region, a truncated copy, not a forger."""
    crc, n = 0, 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            crc, n = zlib.crc32(block, crc), n + len(block)
    return {"crc32": f"{crc:08x}", "bytes": n}


_verified: dict[tuple, bool] = {}


def verify_beton(path: str | Path, meta: dict | None = None, *, force: bool = False) -> dict:
    """Check a .beton against the checksum its sidecar recorded; a DatasetError naming the file
    when it differs (the file was damaged or changed after conversion). Done once per file and
    state: a stamp ``X.beton.verified`` (size, mtime, checksum) beside it, when the folder is
    writable, spares later opens the read; ``force`` reads it again (``lacol-convert --verify``)."""
    path = Path(path)
    meta = meta or read_meta(path)
    want = meta.get("checksum")
    st = os.stat(path)
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, json.dumps(want, sort_keys=True))
    stamp = path.with_name(path.name + ".verified")
    if not force:
        if _verified.get(key):
            return want
        try:
            if json.loads(stamp.read_text()) == {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "checksum": want}:
                _verified[key] = True
                return want
        except (OSError, ValueError):
            pass
    if st.st_size != want["bytes"]:
        raise DatasetError(f"{path}: {st.st_size} bytes, its sidecar recorded {want['bytes']}: the file was cut or "
                           f"changed after conversion; convert it again (lacol-convert DATASET --to ffcv)")
    got = checksum(path)
    if got != want:
        raise DatasetError(f"{path}: checksum {got['crc32']}, its sidecar recorded {want['crc32']}: the file was "
                           f"damaged or changed after conversion; convert it again (lacol-convert DATASET --to ffcv)")
    _verified[key] = True
    try:
        atomic_json(stamp, {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "checksum": want})
    except OSError:
        pass  # a read-only data folder: verified again by the next process
    return want


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
    c = meta.get("checksum")
    if not (isinstance(c, dict) and isinstance(c.get("crc32"), str) and isinstance(c.get("bytes"), int)):
        raise DatasetError(f"{side}: no valid checksum entry: convert again")
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
