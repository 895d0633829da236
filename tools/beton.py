"""Dataset splits to FFCV .beton files (``lacol-convert DATASET --to ffcv``), and to checked file
lists for the DALI backend (``--to dali``, at the end of this module).

Fields, in order: ``image``, ``label`` (the split's labels: noisy for Clothing1M's noisy_train),
``clean_label`` (-1 where unknown) and ``index`` (the row of the source split, so a loader maps a
sample back to the labels training uses, synthetic noise included).

Images:
- in-memory datasets (Fashion-MNIST, CIFAR) are stored raw, as ``NDArrayField`` uint8 (H, W, C);
- file datasets (Clothing1M) are decoded once, resized (shorter side to ``size``, bilinear, the
  central ``size`` x ``size`` square kept: ``pipelines.decode.decode_square``, the same
  decode the reference backend does) and re-encoded as JPEG of ``quality`` into an
  ``RGBImageField``, so every stored image has one shape and decodes in well under a millisecond.

A file conversion runs in two passes. Pass 1 (parallel over ``workers`` processes, the cost):
decode, resize and encode each image into a temporary blob; images that cannot be decoded are
skipped and listed. Pass 2: FFCV's writer copies the encoded bytes of the good images into the
.beton. Everything is written under temporary names and renamed at the end, so an interrupted
conversion never leaves a file that looks complete. Beside ``X.beton``: ``X.beton.json`` (what
is stored and how, and the file's CRC-32 checksum, checked on first open by the ffcv backend and
by ``lacol-convert --verify``) and ``X.report.json`` (skipped and converted files).
"""
from __future__ import annotations

import io
import os
import time
import types
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.decode import check_readable, open_square
from pipelines.fileio import atomic_json, atomic_path, atomic_write, remove_stale
from pipelines.formats import FORMAT, beton_path, checksum
from pipelines.sources import DATASETS, DatasetError, Split, load_split

@dataclass
class ConvertResult:
    path: Path
    num_samples: int
    skipped: list[dict] = field(default_factory=list)
    converted: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return (self.num_samples + len(self.skipped)) / max(self.seconds, 1e-9)


# ------------------------------------------------------------------------- pass 1: decode

def encode_file(args) -> tuple[bytes | None, str, str]:
    """(JPEG bytes or None, status, detail) of one image file; status: ok | converted | skipped.
    ``quality`` None: only check that the file decodes (b"" for a good file)."""
    path, root, size, quality = args
    try:
        check_readable(path, root)  # inside the root, a regular file: before anything opens it
        if os.path.getsize(path) == 0:
            return None, "skipped", "zero-byte file"
        pixels, fmt, mode = open_square(path, size)
    except FileNotFoundError:
        return None, "skipped", "missing file"
    except DatasetError as e:
        return None, "skipped", str(e)
    except Exception as e:  # truncated, corrupt, not an image: PIL's message says which
        return None, "skipped", f"{type(e).__name__}: {e}"
    buf = io.BytesIO()
    if quality is not None:
        Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    notes = []
    if fmt != "JPEG":
        notes.append(f"{fmt} data in a {Path(path).suffix or 'suffixless'} file")
    if mode != "RGB":
        notes.append(f"{mode} converted to RGB")
    return buf.getvalue(), ("converted" if notes else "ok"), "; ".join(notes)


def decode_pass(split: Split, title: str, bar, result: "ConvertResult", workers: int, size_quality,
                blob: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode every file of ``split`` in parallel (``encode_file``), recording skipped and
    converted files in ``result``; with ``blob``, the encoded bytes are appended to it.
    Returns (ok per row, byte offsets into the blob)."""
    n = len(split)
    task = bar.add_task(title, total=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    jobs = ((str(split.path(i)), str(split.root), *size_quality) for i in range(n))
    with open(blob or os.devnull, "wb") as f, ProcessPoolExecutor(workers, initializer=die_with_parent) as pool:
        for i, (data, status, detail) in enumerate(pool.map(encode_file, jobs, chunksize=32)):
            if data is None:
                ok[i] = False
                result.skipped.append({"index": i, "file": split.files[i], "reason": detail})
            else:
                f.write(data)
                if status == "converted":
                    result.converted.append({"index": i, "file": split.files[i], "note": detail})
            offsets[i + 1] = offsets[i] + (0 if data is None else len(data))
            bar.advance(task)
    return ok, offsets


def write_report(out: Path, dataset: str, split_name: str, n: int, written: int, result: "ConvertResult",
                 max_bad: float) -> None:
    """``out``'s report (skipped and converted files) beside it; fails past ``max_bad``."""
    report = {"dataset": dataset, "split": split_name, "source_images": n, "written": int(written),
              "skipped": result.skipped, "converted": result.converted}
    path = out.with_name(out.name.split(".")[0] + ".report.json")
    atomic_json(path, report)
    bad = len(result.skipped) / max(n, 1)
    if bad > max_bad:
        raise DatasetError(
            f"{dataset}/{split_name}: {len(result.skipped)} of {n} images ({bad:.2%}) could not be "
            f"decoded, more than --max-bad {max_bad:.2%}; the files are listed in {path} "
            f"(fix or remove them, or raise --max-bad)")
    if written == 0:
        raise DatasetError(f"{dataset}/{split_name}: no image could be decoded; see {path}")


# --------------------------------------------------------------------- pass 2: the writer

def _write_jpeg_bytes(self, destination, value, malloc) -> None:
    """RGBImageField.encode for bytes already encoded in pass 1: (uint8 array, height, width)."""
    data, height, width = value
    destination["mode"] = 0  # ffcv's IMAGE_MODES["jpg"]
    destination["height"], destination["width"] = height, width
    destination["data_ptr"], storage = malloc(data.nbytes)
    storage[:] = data


class _Samples:
    """The indexable dataset FFCV's writer reads: (image, label, clean label, index) per row."""

    def __init__(self, split: Split, blob: Path | None = None, offsets: np.ndarray | None = None,
                 size: int = 0):
        self.split, self.blob_path, self.offsets, self.size = split, blob, offsets, size
        self.blob = None

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        s = self.split
        if s.images is not None:
            image = s.images[i]
        else:
            if self.blob is None:  # opened in the writer's worker process
                self.blob = np.memmap(self.blob_path, dtype=np.uint8, mode="r")
            image = (np.asarray(self.blob[self.offsets[i]:self.offsets[i + 1]]), self.size, self.size)
        return image, int(s.labels[i]), int(s.clean_labels[i]), int(i)


def die_with_parent() -> None:
    """In a worker process (Linux): be sent SIGTERM when the converting process dies, even by
    SIGKILL, instead of decoding on for nobody."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their queue closes
        pass


class _RichTqdm:
    """Stands in for the tqdm bar inside ffcv.writer, reporting to a rich progress task."""

    progress = None
    task = None

    def __init__(self, total=None, **_):
        if self.progress is not None:
            self.progress.update(self.task, total=total, completed=0)

    def update(self, n: int = 1) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)

    def close(self) -> None:
        pass


def _progress(enabled: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    class Rate(TextColumn):
        def __init__(self):
            super().__init__("")

        def render(self, task):
            speed = task.finished_speed or task.speed
            return f"{speed:,.0f} img/s" if speed else "- img/s"

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled)


def convert_split(split: Split, dataset: str, split_name: str, out: str | Path, *, size: int = 256,
                  quality: int = 90, workers: int | None = None, max_bad: float = 0.01,
                  progress: bool = True) -> ConvertResult:
    """Write ``split`` to the .beton ``out`` (and its two sidecar files); see the module doc."""
    from ffcv import writer as ffcv_writer
    from ffcv.fields import IntField, NDArrayField, RGBImageField

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a conversion killed earlier left its temporary files: remove them (not a running one's)
    remove_stale(out, (".{name}.tmp-*", "{name}.jpeg-tmp-*"))
    # the sidecar is the mark of a complete .beton: written last, so it goes first
    sidecar = out.with_name(out.name + ".json")
    sidecar.unlink(missing_ok=True)
    out.with_name(out.name + ".verified").unlink(missing_ok=True)
    workers = workers or os.cpu_count() or 1
    blob = out.with_name(out.name + f".jpeg-tmp-{os.getpid()}")
    result = ConvertResult(out, 0)
    t0 = time.perf_counter()
    n = len(split)
    try:
        with atomic_path(out) as tmp:  # renamed last: the .beton only appears complete
            with _progress(progress) as bar:
                good = np.arange(n)
                if split.images is None:
                    image_field = RGBImageField(write_mode="jpg", jpeg_quality=quality)
                    image_field.encode = types.MethodType(_write_jpeg_bytes, image_field)
                    ok, offsets = decode_pass(split, f"{dataset}/{split_name}: decode", bar, result, workers,
                                              (size, quality), blob)
                    good = np.flatnonzero(ok)
                    samples = _Samples(split, blob, offsets, size)
                    image_meta = {"storage": "jpeg", "quality": quality, "size": [size, size, 3],
                                  "resize": f"shorter side to {size} (bilinear, JPEG draft scaling first), "
                                            f"central {size}x{size} kept",
                                  "encoder": f"Pillow {Image.__version__}"}
                else:
                    shape = split.images.shape[1:]
                    image_field = NDArrayField(np.dtype("uint8"), shape)
                    samples = _Samples(split)
                    image_meta = {"storage": "raw", "size": list(shape)}
                write_report(out, dataset, split_name, n, len(good), result, max_bad)
                fields = {"image": image_field, "label": IntField(), "clean_label": IntField(), "index": IntField()}
                _RichTqdm.progress, _RichTqdm.task = bar, bar.add_task(f"{dataset}/{split_name}: write .beton",
                                                                       total=len(good))
                saved_tqdm, ffcv_writer.tqdm = ffcv_writer.tqdm, _RichTqdm
                try:
                    w = ffcv_writer.DatasetWriter(str(tmp), fields, num_workers=min(workers, 4))
                    w.from_indexed_dataset(samples, indices=good, chunksize=256)
                finally:
                    ffcv_writer.tqdm = saved_tqdm
                    _RichTqdm.progress = None
            result.num_samples = int(len(good))
            digest = checksum(tmp)  # of the bytes about to be renamed into place
            result.seconds = time.perf_counter() - t0
            meta = {"format": FORMAT, "dataset": dataset, "split": split_name, "num_samples": result.num_samples,
                    "source_images": n, "source": str(split.root) if split.root else split.name,
                    "fields": {"image": type(image_field).__name__, "label": "IntField",
                               "clean_label": "IntField (-1: unknown)", "index": "IntField (row of the source split)"},
                    "image": image_meta, "classes": list(split.classes), "skipped": len(result.skipped),
                    "converted": len(result.converted), "seconds": round(result.seconds, 2), "checksum": digest,
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_json(sidecar, meta)  # after the .beton's rename: a sidecar means the .beton beside it is whole
    finally:
        blob.unlink(missing_ok=True)
    return result


def convert_dataset(dataset: str, root: str | Path | None, out_dir: str | Path, splits=None,
                    **kw) -> list[ConvertResult]:
    """Every split of a dataset (or ``splits``) to ``out_dir/{dataset}_{split}.beton``."""
    results = []
    for name in splits or DATASETS[dataset].splits:
        split = load_split(dataset, name, root)
        results.append(convert_split(split, dataset, name, beton_path(out_dir, dataset, name), **kw))
    return results


# ---------------------------------------------------------------------- DALI file lists

def convert_file_list(split: Split, dataset: str, split_name: str, out: str | Path, *,
                      workers: int | None = None, max_bad: float = 0.01, progress: bool = True,
                      size: int = 256) -> ConvertResult:
    """``lacol-convert clothing1m --to dali``: every image is decoded once by PIL (in parallel) and
    the ones PIL reads once more by DALI's own decoder (``dali_check``) to find the ones DALI would
    fail on; the others are listed, one ``relative/path row`` line
    each (DALI's file_list format, the row of the split as the label), in ``out``, with the same
    report as the .beton conversion beside it. Written under a temporary name and renamed."""
    if split.files is None:
        raise DatasetError(f"{dataset}: in-memory data needs no file list (the dali backend reads its arrays)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = ConvertResult(out, 0)
    t0 = time.perf_counter()
    with _progress(progress) as bar:
        ok, _ = decode_pass(split, f"{dataset}/{split_name}: check", bar, result, workers or os.cpu_count() or 1,
                            (size, None))
    from pipelines.dali_loader import dali_check  # PIL decodes what DALI may not (a GIF named .jpg)

    rows = np.flatnonzero(ok)
    for pos, reason in dali_check([str(split.path(i)) for i in rows], workers or 1).items():
        ok[rows[pos]] = False
        result.skipped.append({"index": int(rows[pos]), "file": split.files[rows[pos]], "reason": reason})
    result.skipped.sort(key=lambda r: r["index"])
    good = np.flatnonzero(ok)
    write_report(out, dataset, split_name, len(split), len(good), result, max_bad)
    atomic_write(out, "".join(f"{split.files[i]} {i}\n" for i in good))
    result.num_samples, result.seconds = int(len(good)), time.perf_counter() - t0
    return result
