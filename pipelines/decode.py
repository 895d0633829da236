"""Image files to uint8 pixels: the one decode every PIL path shares (the reference backend's
workers, the converters, ``lacol predict``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def decode_square(path: str | Path, size: int, mode: str = "RGB") -> np.ndarray:
    """Decode an image file to (size, size, 3) uint8 RGB (``mode`` "L": (size, size) gray): shorter
    side resized to ``size``, the central square kept. Raises on unreadable files (callers count
    and skip those)."""
    return open_square(path, size, mode)[0]


def open_square(path: str | Path, size: int, mode: str = "RGB") -> tuple[np.ndarray, str, str]:
    """``decode_square`` and what the file held: (pixels, its format, e.g. "JPEG" or "PNG", and
    its mode, e.g. "RGB", "CMYK" or "L"). Decodes by content, so a PNG named .jpg decodes."""
    with Image.open(path) as img:
        fmt, src_mode = img.format, img.mode
        w, h = img.size
        if img.format == "JPEG":
            img.draft(mode, (max(size, round(size * w / h)), max(size, round(size * h / w))))
            w, h = img.size
        img = img.convert(mode)
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        img = img.resize((size, size), Image.BILINEAR, box=box, reducing_gap=None if side < 2 * size else 2.0)
        return np.asarray(img), fmt, src_mode
