"""Files that are either complete or absent: every writer in the project goes through here."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write (a file or a folder); renamed onto ``path`` when
    the block ends, removed if it raises. A reader never sees a half-written ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write text or bytes to ``path`` atomically."""
    with atomic_path(path) as tmp:
        (tmp.write_bytes if isinstance(data, bytes) else tmp.write_text)(data)


def atomic_json(path: str | Path, obj, indent: int | None = 1) -> None:
    """``obj`` as JSON in ``path``, atomically."""
    atomic_write(path, json.dumps(obj, indent=indent) + "\n")


def atomic_npz(path: str | Path, compressed: bool = False, **arrays) -> None:
    """Arrays as an .npz file (``np.savez``, or ``savez_compressed``) in ``path``, atomically.
    Write plain arrays only (numbers, fixed-width text): readers load with allow_pickle=False."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def remove_stale(path: str | Path, patterns: tuple[str, ...] = (".{name}.tmp-*",)) -> list[Path]:
    """Temporary files beside ``path`` left by a process that no longer runs (killed: its
    ``finally`` never ran), removed; those of a live process are left alone. Returns the removed."""
    path = Path(path)
    removed = []
    for pattern in patterns:
        for f in path.parent.glob(pattern.format(name=path.name)):
            pid = f.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            if f.is_dir():
                shutil.rmtree(f, ignore_errors=True)
            else:
                f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
