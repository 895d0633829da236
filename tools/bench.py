"""lacol-bench: throughput benchmarks, every contender measured side by side in one run.

    lacol-bench loader --root data/bench_clothing1m [--backends torch,peer] [--batches 20]
        samples/s of three views (weak + 2 RandAugment) at 224 px from Clothing1M-layout JPEGs
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
from rich.console import Console
from rich.table import Table


def _time_loader(make, batches: int, warmup: int) -> tuple[float, int]:
    """samples/s over ``batches`` batches after ``warmup`` batches (worker start-up excluded)."""
    it = iter(make())
    for _ in range(warmup):
        next(it)
    n, t = 0, time.perf_counter()
    for _ in range(batches):
        b = next(it)
        n += len(b) if hasattr(b, "__len__") and not isinstance(b, (list, tuple)) else len(b[-1])
    return n / (time.perf_counter() - t), n


def bench_loader(a) -> int:
    from pipelines.augment import lacol_views
    from pipelines.sources import load_split
    from pipelines.torch_loader import TorchLoader
    from tools.peer import peer_loader

    torch.set_num_threads(a.threads)
    split = load_split("clothing1m", "noisy_train", a.root)
    need = (a.batches + a.warmup) * a.batch_size
    if len(split) < need:
        print(f"lacol-bench: {a.root} has {len(split)} train images, the run needs {need}; "
              f"make more with lacol-convert fmnist-clothing1m --num-train {need}", file=sys.stderr)
        return 2
    makers = {
        "peer": lambda: peer_loader(split, a.batch_size, a.workers),
        "torch": lambda: TorchLoader(split, lacol_views(224), batch_size=a.batch_size, num_workers=a.workers),
        "torch-augment-in-main": lambda: TorchLoader(split, lacol_views(224), batch_size=a.batch_size,
                                                     num_workers=a.workers, augment_in="device"),
    }
    unknown = set(a.backends) - set(makers)
    if unknown:
        print(f"lacol-bench: unknown backend(s) {sorted(unknown)}; have {sorted(makers)}", file=sys.stderr)
        return 2
    results = {}
    for rep in range(a.repeats):  # interleaved repeats: a shared machine's drift hits every contender
        for name in a.backends:
            rate, _ = _time_loader(makers[name], a.batches, a.warmup)
            results.setdefault(name, []).append(rate)
    table = Table(title=f"three views/sample, 224 px, batch {a.batch_size}, {a.workers} workers, "
                        f"{a.threads} torch threads, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    table.add_column("backend")
    table.add_column("samples/s (median)", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("vs peer", justify="right")
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    for name, rate in med.items():
        ratio = f"{rate / med['peer']:.2f}x" if "peer" in med else "-"
        table.add_row(name, f"{rate:.0f}", " ".join(f"{r:.0f}" for r in results[name]), ratio)
    Console().print(table)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lacol-bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("loader", help="three-view loader throughput")
    s.add_argument("--root", default="data/bench_clothing1m")
    s.add_argument("--backends", type=lambda v: v.split(","), default=["peer", "torch"])
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--threads", type=int, default=2, help="torch intra-op threads of the main process")
    s.add_argument("--batches", type=int, default=20)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    return bench_loader(a)


if __name__ == "__main__":
    sys.exit(main())
