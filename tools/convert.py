"""lacol-convert: dataset conversion tools.

    lacol-convert fmnist-clothing1m --out data/bench_clothing1m --num-train 2048
        a Clothing1M-layout folder of real Fashion-MNIST images as 240-400 px JPEGs (benchmarks, tests)
    lacol-convert clothing1m --to ffcv --root data/clothing1m --out data/ffcv [--splits noisy_train,...]
    lacol-convert fashion_mnist|cifar10|cifar100 --to ffcv [--root ROOT] --out data/ffcv
        each split to OUT/{dataset}_{split}.beton (tools/beton.py: fields, image storage, reports)
    lacol-convert clothing1m --to dali --root data/clothing1m --out data/dali
        each split's decodable files to OUT/clothing1m_{split}.dali.txt, for the dali backend
    lacol-convert --verify data/ffcv/*.beton   (or: lacol-convert verify ...)
        re-read each .beton and check it against the checksum its sidecar recorded at conversion
        (the ffcv backend checks once per file on first open and leaves X.beton.verified beside it)
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from pipelines.sources import DatasetError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lacol-convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("fmnist-clothing1m", help="Clothing1M-layout sample data from Fashion-MNIST")
    s.add_argument("--out", required=True)
    s.add_argument("--num-train", type=int, default=2048)
    s.add_argument("--num-val", type=int, default=256)
    s.add_argument("--num-test", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fmnist-root", default=None)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--force", action="store_true", help="write into a non-empty --out (its files are replaced)")
    from pipelines.sources import DATASETS

    for name, info in DATASETS.items():
        s = sub.add_parser(name, help=f"{name} splits to another format")
        s.add_argument("--to", choices=("ffcv", "dali"), required=True,
                       help="ffcv: .beton files; dali: checked file lists (file datasets) for the dali backend")
        s.add_argument("--root", default=None, help="dataset folder (default: the dataset's default place)")
        s.add_argument("--out", default=None, help="output folder (default data/ffcv or data/dali)")
        s.add_argument("--splits", type=lambda v: v.split(","), default=None,
                       help=f"comma-separated, of {','.join(info.splits)} (default: every split --root has)")
        s.add_argument("--size", type=int, default=256, help="file datasets: stored square side")
        s.add_argument("--quality", type=int, default=90, help="file datasets: JPEG quality")
        s.add_argument("--workers", type=int, default=None, help="decoding processes (default: every core)")
        s.add_argument("--max-bad", type=float, default=0.01,
                       help="fail when more than this fraction of a split's images cannot be decoded")
        s.add_argument("--no-progress", action="store_true")
        s.add_argument("--force", action="store_true", help="replace outputs of these splits that exist already")
        s.add_argument("--skip-done", action="store_true",
                       help="restart an interrupted conversion: skip the splits whose output is complete (a split "
                            "cut short left nothing under its final name and is converted again from its start)")
    s = sub.add_parser("verify", help="check .beton files against their recorded checksums")
    s.add_argument("paths", nargs="+", metavar="FILE.beton")
    command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--verify"]:
        argv[0] = "verify"
    a = p.parse_args(argv)
    if a.cmd == "verify":
        return _verify(a.paths)
    if command_line:  # a plain kill (SIGTERM) unwinds, so temporary files are removed
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.workers is None:
        a.workers = os.cpu_count() or 1
    if a.cmd in DATASETS and a.splits is None:
        try:
            a.splits = list(DATASETS[a.cmd].splits_for(a.root))
        except DatasetError as e:
            print(f"lacol-convert {a.cmd}: {e}", file=sys.stderr)
            return 2
    problem = _check_args(a)
    if problem:
        print(f"lacol-convert {a.cmd}: {problem}", file=sys.stderr)
        return 2
    if a.cmd in DATASETS:
        return _convert(a)
    if a.cmd == "fmnist-clothing1m":
        from tools.clothing1m_sample import build

        t = time.perf_counter()
        try:
            out = build(a.out, a.num_train, a.num_val, a.num_test, seed=a.seed,
                        fmnist_root=a.fmnist_root, workers=a.workers)
        except DatasetError as e:
            print(f"lacol-convert: {e}", file=sys.stderr)
            return 2
        n = a.num_train + a.num_val + a.num_test
        print(f"wrote {n} images to {out} in {time.perf_counter() - t:.1f} s")
    return 0


def _verify(paths) -> int:
    """Each .beton re-read in full against its sidecar's checksum; exit 2 if any differs."""
    from pipelines.formats import verify_beton

    bad = 0
    for path in paths:
        try:
            c = verify_beton(path, force=True)
            print(f"{path}: ok ({c['bytes']:,} bytes, crc32 {c['crc32']})")
        except (DatasetError, OSError) as e:
            bad += 1
            print(f"lacol-convert: {e}", file=sys.stderr)
    return 2 if bad else 0


def _complete(path: Path, to: str) -> bool:
    """A split's output is whole: a .beton with its sidecar (written after the .beton's rename), or
    a DALI list (written atomically under its final name)."""
    return path.is_file() and (to != "ffcv" or path.with_name(path.name + ".json").is_file())


def _check_args(a) -> str | None:
    """The first bad option of a conversion, as the message to print; None when all are fine."""
    if a.workers is not None and a.workers < 1:
        return f"--workers {a.workers}: must be >= 1"
    size = getattr(a, "size", None)
    if size is not None and not 8 <= size <= 4096:
        return f"--size {size}: the stored square side must be in 8..4096"
    if not 1 <= getattr(a, "quality", 90) <= 100:
        return f"--quality {a.quality}: must be in 1..100"
    max_bad = getattr(a, "max_bad", 0.0)
    if not (max_bad == max_bad and 0 <= max_bad <= 1):  # NaN compares unequal to itself
        return f"--max-bad {max_bad}: a fraction in [0, 1]"
    if a.cmd == "fmnist-clothing1m":
        for opt, v in (("--num-train", a.num_train), ("--num-val", a.num_val), ("--num-test", a.num_test)):
            if v < 1:
                return f"{opt} {v}: must be >= 1"
        if a.num_train + a.num_val + a.num_test > 70_000:
            return (f"--num-train + --num-val + --num-test = {a.num_train + a.num_val + a.num_test}: Fashion-MNIST has "
                    f"70,000 images")
        out = Path(a.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not a.force:
            return (f"--out {out} exists and is not empty (a dataset folder there would be overwritten): choose a "
                    f"new folder, or pass --force")
    elif a.cmd != "verify" and not a.force:
        from pipelines.formats import beton_path, list_path

        where = beton_path if a.to == "ffcv" else list_path
        out = a.out or f"data/{a.to}"
        if getattr(a, "skip_done", False):
            done = [name for name in a.splits if _complete(where(out, a.cmd, name), a.to)]
            for name in done:
                print(f"lacol-convert: {where(out, a.cmd, name)} is complete: skipped (--skip-done)")
            a.splits = [name for name in a.splits if name not in done]
            return None  # what is left of the others is incomplete: converted again, replaced
        there = [str(where(out, a.cmd, name)) for name in a.splits if where(out, a.cmd, name).exists()]
        if there:
            return f"{', '.join(there)} exist already: pass --force to replace them, or choose another --out"
    return None


def _convert(a) -> int:
    from tools.beton import convert_dataset

    bad = sorted(set(a.splits) - set(_splits(a.cmd)))
    if bad:
        print(f"lacol-convert: {a.cmd} has no split(s) {bad}; choose from {','.join(_splits(a.cmd))}", file=sys.stderr)
        return 2
    out = a.out or f"data/{a.to}"
    if not a.splits:
        print("lacol-convert: every split asked for is complete already (--skip-done): nothing to do")
        return 0
    try:
        if a.to == "dali":
            from pipelines.sources import load_split
            from pipelines.formats import list_path
            from tools.beton import convert_file_list

            results = [convert_file_list(load_split(a.cmd, name, a.root), a.cmd, name, list_path(out, a.cmd, name),
                                         workers=a.workers, max_bad=a.max_bad, progress=not a.no_progress)
                       for name in a.splits]
        else:
            results = convert_dataset(a.cmd, a.root, out, a.splits, size=a.size, quality=a.quality,
                                      workers=a.workers, max_bad=a.max_bad, progress=not a.no_progress)
    except DatasetError as e:
        print(f"lacol-convert: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # --out read-only, full, or a file
        if e.filename is None:
            raise
        print(f"lacol-convert: {e.filename}: {e.strerror}; choose a writable --out with space", file=sys.stderr)
        return 2
    for r in results:
        print(f"{r.path}: {r.num_samples} images, {len(r.skipped)} skipped, {len(r.converted)} "
              f"{'converted to RGB' if a.to == 'ffcv' else 'not RGB JPEG (decodable)'} "
              f"({r.images_per_s:,.0f} images/s, {r.seconds:.1f} s)")
    return 0


def _splits(dataset: str):
    from pipelines.sources import DATASETS

    return DATASETS[dataset].splits


if __name__ == "__main__":
    sys.exit(main())
