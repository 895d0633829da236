"""The main job on the embedded default data (`make run`): Fashion-MNIST with 40% instance noise.

Until the trainer lands (lacol/), this runs the data path end to end: it makes the PTD instance
noise (printing the realised rate and transition matrix) and one epoch of LaCoL's three views
through the reference loader, reporting throughput.
"""
from __future__ import annotations

import time

import torch
from rich.console import Console

from pipelines.augment import lacol_views
from pipelines.noise import make_noise, report
from pipelines.sources import load_split
from pipelines.torch_loader import TorchLoader


def main() -> None:
    console = Console()
    split = load_split("fashion_mnist", "train")
    noise = make_noise(split, "fashion_mnist", "instance", 0.4, seed=0)
    report(noise, split.classes, console)
    noisy = split.with_labels(noise.labels)
    loader = TorchLoader(noisy, lacol_views(28, pad=4), batch_size=256, seed=0)
    t, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch)
    dt = time.perf_counter() - t
    console.print(f"one epoch of three views: {n} samples in {dt:.1f} s ({n / dt:.0f} samples/s, "
                  f"{torch.get_num_threads()} threads); last batch weak {tuple(batch.weak.shape)}")
    console.print("The LaCoL trainer (lacol train) is not built yet; see the README.")


if __name__ == "__main__":
    main()
