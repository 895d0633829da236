"""Files that are either complete or absent: every writer in the project goes through here."""
from __future__ import annotations

import json
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class OutputError(FileExistsError):
    """A path to write that exists and is not a regular file: a device, FIFO, socket or folder."""


def output_target(path: str | Path) -> Path:
    """The one rule for every path the project writes: a regular file or a new path is replaced
    (atomically, by ``atomic_path``); a symlink is written through to its target (atomically
    there); anything else that exists (a device, a FIFO, a socket, a folder) is refused with an
    ``OutputError`` naming it, and nothing is written. Returns the path to replace."""
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    if stat.S_ISREG(mode):
        return target
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    via = f" (the symlink's target {target})" if target != path else ""
    raise OutputError(f"{path}{via} is {kind}: refused, nothing written; name a regular file or a new path")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (``output_target``'s: a symlink's target) to write;
    renamed onto it when the block ends, removed if it raises. A reader never sees a half-written
    ``path``."""
    path = output_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
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
