"""lacol-noise: make a label-noise file for a dataset's train split, print its realised rate and
transition matrix.

    lacol-noise --dataset fashion_mnist --kind instance --rate 0.4 --seed 0 --out noise/fm_inst40.npz
"""
from __future__ import annotations

import argparse
import sys

from pipelines.fileio import output_target
from pipelines.noise import KINDS, make_noise, report
from pipelines.sources import DATASETS, DatasetError, load_split


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lacol-noise", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=[d for d in DATASETS if d != "clothing1m"])
    p.add_argument("--root", default=None, help="dataset folder (default: the dataset's default place)")
    p.add_argument("--kind", required=True, help=f"one of {', '.join(KINDS)}; cifar-n as cifar-n:KEY")
    p.add_argument("--rate", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cifar-n-file", default=None)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        output_target(a.out)  # before any work: a device, FIFO or folder named as --out is refused
        split = load_split(a.dataset, "train", a.root)
        noise = make_noise(split, a.dataset, a.kind, a.rate, a.seed, a.cifar_n_file)
    except (DatasetError, ValueError, OSError) as e:
        print(f"lacol-noise: {e}", file=sys.stderr)
        return 2
    report(noise, split.classes)
    print(f"wrote {noise.save(a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
