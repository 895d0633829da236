"""``lacol-bench step`` and ``lacol-bench train``: the consumption ceiling and the real loop.

- step: the real model + its method (three views, every loss term, backward, SGD step) on batches
  already on the device (synthetic, channels_last, in the training dtype): what training could
  reach if data cost nothing.
- train: the same step fed by a real backend through the trainer (``lacol.train.Trainer``) on a
  Clothing1M-layout folder; reports samples/s and its ratio to ``step`` measured in the same run.

Both synchronise the device before reading a clock and exclude warm-up steps.
"""
from __future__ import annotations

import time

import torch


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(run_step, steps: int, warmup: int, device) -> float:
    """Seconds per step over ``steps`` after ``warmup``."""
    for _ in range(warmup):
        run_step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        run_step()
    _sync(device)
    return (time.perf_counter() - t) / steps


def _step(arch: str, size: int, batch: int, device, *, dtype: str, compile: bool, classes: int, kernel: str,
          audit_rows: int = 0, method: str = "lacol", recipe: str | None = None):
    """(run_step, evidence, method): one three-view LaCoL step on device-resident synthetic
    batches; ``run_step(record=True)`` also records the label audit's evidence of the batch
    (rows drawn from ``audit_rows``) as the trainer does. ``recipe``: the method's settings are
    that recipe's (its ``methods:`` block) instead of the class defaults alone."""
    from lacol.audit import Evidence
    from lacol.config import load_config
    from lacol.methods import build_method
    from lacol.models import build_model
    from pipelines.batch import ViewBatch

    device = torch.device(device)
    torch.manual_seed(0)  # every method's model starts from the same weights
    model = build_model(arch, classes, 3).to(device, memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    # the method with its class defaults (lacol_semi's parts), as ``lacol train loss.method=...``
    loss_cfg = load_config(recipe, [f"loss.method={method}", "loss.warmup_epochs=0", f"loss.kernel={kernel}"]).loss
    method = build_method(loss_cfg, classes, seed=0, device=device)
    method.attach(model)
    low = dtype == "bf16"
    view_dtype = torch.bfloat16 if low and device.type == "cuda" else torch.float32
    g = torch.Generator(device).manual_seed(0)
    views = [torch.randn(batch, 3, size, size, device=device, generator=g).to(view_dtype)
             .contiguous(memory_format=torch.channels_last) for _ in range(3)]
    b = ViewBatch(*views, torch.randint(0, classes, (batch,), device=device, generator=g),
                  torch.arange(batch, device=device))
    evidence = Evidence(audit_rows, 0, 1, device) if audit_rows else None
    rows = torch.randperm(max(audit_rows, batch), device=device, generator=g)[:batch] if audit_rows else None
    position = [0]

    def run_step(record: bool = False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=low):
            out = method(model, b, epoch=0, step=position[0])
        if record:
            evidence.record(0, rows, out.p_weak, b.label, out.selected)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.after_step(model)
        position[0] += 1

    run_step.model, run_step.method = model, method
    return run_step, evidence


def step_rate(arch: str, size: int, batch: int, device, *, dtype: str = "bf16", compile: bool = False,
              classes: int = 14, kernel: str = "torch", steps: int = 20, warmup: int = 5) -> float:
    """samples/s of one three-view LaCoL step on device-resident synthetic batches."""
    run_step, _ = _step(arch, size, batch, device, dtype=dtype, compile=compile, classes=classes, kernel=kernel)
    return batch / _timed(run_step, steps, warmup, device)


def audit_cost(arch: str, size: int, batch: int, device, *, rows: int, dtype: str = "bf16", classes: int = 14,
               steps: int = 20, warmup: int = 5, rounds: int = 5) -> tuple[list[float], list[float]]:
    """The step without and with the audit's recording (``train.audit``), side by side on one
    model: ``rounds`` alternating blocks of ``steps`` each; samples/s per block of each."""
    run_step, _ = _step(arch, size, batch, device, dtype=dtype, compile=False, classes=classes, kernel="torch",
                        audit_rows=rows)
    off, on = [], []
    for _ in range(warmup):
        run_step(True)
    for r in range(rounds):
        for record in ((False, True) if r % 2 == 0 else (True, False)):  # alternate which goes first
            (on if record else off).append(batch / _timed(lambda: run_step(record), steps, 0, device))
    return off, on


def method_costs(methods: list[str], arch: str, size: int, batch: int, device, *, dtype: str = "bf16",
                 classes: int = 14, steps: int = 20, warmup: int = 5, rounds: int = 5,
                 recipe: str | None = None) -> tuple[dict[str, list[float]], dict]:
    """The step of each method side by side (one model each, the same start): ``rounds`` rounds of
    one block of ``steps`` per method, the order rotating; samples/s per block, and the built
    step of each method (``run_step.model``, ``run_step.method``)."""
    runs = {m: _step(arch, size, batch, device, dtype=dtype, compile=False, classes=classes, kernel="torch",
                     method=m, recipe=recipe)[0] for m in methods}
    for run_step in runs.values():
        for _ in range(warmup):
            run_step()
    rates: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(rounds):
        order = methods[r % len(methods):] + methods[:r % len(methods)]
        for m in order:
            rates[m].append(batch / _timed(runs[m], steps, 0, device))
    return rates, runs


def pass_seconds(model, rows: int, size: int, batch: int, device, *, channels: int = 3, repeats: int = 3) -> float:
    """Seconds of one eval-mode forward pass over ``rows`` synthetic images (batches of ``batch``
    on the device, fp32, no gradient): the pass a method makes over the training split before an
    epoch (``Trainer.predict_train``), without its loader. The median of ``repeats``."""
    device = torch.device(device)
    g = torch.Generator(device).manual_seed(1)
    x = torch.randn(batch, channels, size, size, device=device, generator=g).contiguous(
        memory_format=torch.channels_last)
    was = model.training
    model.eval()
    times = []
    with torch.no_grad():
        model(x, embed=False)  # warm-up
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            for start in range(0, rows, batch):
                model(x[:min(batch, rows - start)], embed=False)
            _sync(device)
            times.append(time.perf_counter() - t)
    model.train(was)
    return sorted(times)[len(times) // 2]


def train_rate(root: str, backend: str, arch: str, size: int, batch: int, *, workers: int, steps: int,
               warmup: int, out_dir: str, extra: tuple[str, ...] = ()) -> float:
    """samples/s of the trainer's own step fed by ``backend`` on a Clothing1M-layout ``root``
    (bf16 on a GPU, fp32 on a CPU)."""
    from lacol.config import load_config
    from lacol.train import Trainer, setup

    cuda = torch.cuda.is_available()
    cfg = load_config(None, [
        "data.dataset=clothing1m", f"data.root={root}", f"data.backend={backend}", "data.noise=none",
        f"data.batch_size={batch}", f"data.num_workers={workers}", f"data.image_size={size}", "data.pad=0",
        f"data.ffcv.dir={root}/ffcv", f"data.dali.dir={root}/dali", f"model.arch={arch}",
        "loss.warmup_epochs=0", "optim.epochs=1", f"train.mixed_precision={'bf16' if cuda else 'no'}",
        f"train.out_dir={out_dir}", f"train.name=bench-{backend}", "train.progress=false", *extra])
    trainer = Trainer(cfg, setup(cfg), resume=False)
    trainer.loader.set_epoch(0)
    batches = iter(trainer.loader)
    if len(trainer.loader) < steps + warmup:
        raise ValueError(f"{root}: {len(trainer.loader)} batches of {batch}, the run needs {steps + warmup}")
    device = trainer.acc.device
    return batch / _timed(lambda: trainer.step(next(batches), 0, 0.01), steps, warmup, device)
