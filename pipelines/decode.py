"""Image files to uint8 pixels: the one decode every PIL path shares (the reference backend's
workers, the converters, ``lacol predict``)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .sources.base import DatasetError


def check_readable(path: str | Path, root: str | Path | None = None) -> None:
    """Refuse, before opening, what a reader must not read: anything that is not a regular file
    once symlinks are followed (a FIFO named .jpg, or a link to one, would block the reader for
    ever; a device would be read without end) and, given the dataset ``root``, a path that is not
    under it as written (``sources.base.normal_key`` already refuses keys with ``..`` or an
    absolute path). Symlinks under the root are followed wherever they lead (an ``images/`` kept
    on another disk, the common layout)."""
    path = Path(path)
    if root is not None and not os.path.normpath(path).startswith(os.path.normpath(root) + os.sep):
        raise DatasetError(f"{path}: not under the dataset root {root}; refused, not read")
    if not stat.S_ISREG(os.stat(path).st_mode):  # FileNotFoundError when missing
        raise DatasetError(f"{path}: not a regular file; refused, not read")


EXIF_ORIENTATION = 0x0112


def upright(img: Image.Image) -> Image.Image:
    """The one orientation rule of every backend: a file's EXIF orientation is applied (DALI's
    decoder and nvJPEG do so; PIL does not unless asked), so a photo taken sideways is trained on
    the way its viewer shows it, whichever backend reads it."""
    if img.getexif().get(EXIF_ORIENTATION, 1) in range(2, 9):
        return ImageOps.exif_transpose(img)
    return img


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit gray (PNG, TIFF: PIL modes I;16* and I) scaled to 8 bits (v / 257, rounded); PIL's
    own convert would clip every value above 255 to white."""
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")
    return img


def decode_square(path: str | Path, size: int, mode: str = "RGB", root: str | Path | None = None) -> np.ndarray:
    """Decode an image file to (size, size, 3) uint8 RGB (``mode`` "L": (size, size) gray): shorter
    side resized to ``size``, the central square kept. Raises on unreadable files and on files
    ``check_readable`` refuses (callers count and skip those)."""
    return open_square(path, size, mode, root)[0]


def open_square(path: str | Path, size: int, mode: str = "RGB",
                root: str | Path | None = None) -> tuple[np.ndarray, str, str]:
    """``decode_square`` and what the file held: (pixels, its format, e.g. "JPEG" or "PNG", and
    its mode, e.g. "RGB", "CMYK" or "L"). Decodes by content, so a PNG named .jpg decodes."""
    check_readable(path, root)
    with Image.open(path) as img:
        fmt, src_mode = img.format, img.mode
        w, h = img.size
        if img.format == "JPEG":
            img.draft(mode, (max(size, round(size * w / h)), max(size, round(size * h / w))))
        img = upright(img)
        w, h = img.size
        img = to_8bit(img).convert(mode)
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        img = img.resize((size, size), Image.BILINEAR, box=box, reducing_gap=None if side < 2 * size else 2.0)
        return np.asarray(img), fmt, src_mode
