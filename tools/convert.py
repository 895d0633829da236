"""lacol-convert: dataset conversion tools.

    lacol-convert fmnist-clothing1m --out data/bench_clothing1m --num-train 2048
        a Clothing1M-layout folder of real Fashion-MNIST images as 240-400 px JPEGs (benchmarks, tests)
"""
from __future__ import annotations

import argparse
import sys
import time

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
    a = p.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
