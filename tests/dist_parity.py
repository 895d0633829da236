"""Helper of tests/test_distributed.py (not a test file): two optimiser steps of LaCoL on a fixed
global batch of real Fashion-MNIST views, written to OUT as losses and gradients.

One process: ``python tests/dist_parity.py OUT``; two: ``accelerate launch --multi_gpu
--num_processes 2 tests/dist_parity.py OUT``, each rank taking its half of the same batch, with
``loss.gather`` on. Batch norm runs on running statistics (eval mode), so what is compared is the
losses' global statistics, not per-process batch statistics (SyncBatchNorm does not run on CPU).
"""
import sys

import torch
from accelerate import Accelerator

from lacol.config import LossConfig
from lacol.dist import Dist
from lacol.methods import build_method
from lacol.models import build_model
from pipelines.augment import Augmenter
from pipelines.views import lacol_views
from pipelines.batch import ViewBatch
from pipelines.noise import make_noise
from pipelines.sources import load_split

GLOBAL_BATCH = 32


def main(path: str) -> None:
    acc = Accelerator(cpu=True)
    rank, world = acc.process_index, acc.num_processes
    split = load_split("fashion_mnist", "train")
    labels = torch.from_numpy(make_noise(split, "fashion_mnist", "symmetric", 0.4, seed=0).labels)
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model, opt = acc.prepare(model, opt)
    model.eval()
    method = build_method(LossConfig(warmup_epochs=0, gather=True, class_floor=0.3), 10, Dist(rank, world))
    aug = Augmenter(lacol_views(28, pad=4), split.mean, split.std, seed=0)
    per = GLOBAL_BATCH // world
    record = {}
    for step in range(2):
        rows = torch.arange(step * GLOBAL_BATCH, (step + 1) * GLOBAL_BATCH)
        views = aug(torch.from_numpy(split.images[rows.numpy()]))
        mine = slice(rank * per, (rank + 1) * per)
        batch = ViewBatch(*(v[mine] for v in views), labels[rows][mine], rows[mine])
        out = method(model, batch, epoch=0, step=step)
        acc.backward(out.loss)
        record[f"loss{step}"] = out.value
        record.update({f"{k}{step}": v for k, v in out.terms.items()})
        record[f"grad{step}"] = torch.cat([p.grad.flatten() for p in model.parameters()]).clone()
        opt.step()
        opt.zero_grad()
    record["world"] = world
    if acc.is_main_process:
        torch.save(record, path)
    acc.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
