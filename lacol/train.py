"""The Accelerate loop: build, train (step, log, checkpoint, evaluate, record), summarise.

Distributed and precision go through one ``Accelerator``. Loaders (``pipelines.build``) shard
themselves by (process_index, num_processes) and are not passed through ``prepare``; their
position is the registered ``TrainState`` (epoch, step in epoch), so a resumed run replays the
same batches and views. The run folder (``run.py``) writes on the main process only.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.build import cv_split, eval_splits, make_loader, train_and_val
from pipelines.fileio import atomic_npz
from pipelines.sources import dataset_info

from . import audit
from .config import Config, ConfigError
from .display import Display
from .evaluation import evaluate, predict_probs
from .dist import Dist
from .losses import NonFiniteLoss
from .methods import build_method
from .models import build_model
from .run import RunFolder


@dataclass
class TrainState:
    """Where the loop is; saved with every checkpoint (as JSON)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_val: float = -1.0
    best_val_test: float = float("nan")
    best_val_epoch: int = -1
    global_batch: int = 0
    """Samples per optimiser step when this state was saved (resuming with another world size
    maps the position inside the epoch by samples seen)."""

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, d: dict) -> None:
        self.__dict__.update(d)


def lr_factor(cfg: Config, epoch_float: float) -> float:
    o = cfg.optim
    f = min(1.0, epoch_float / o.warmup_lr_epochs) if o.warmup_lr_epochs > 0 else 1.0
    if o.schedule == "cosine":
        return f * 0.5 * (1 + math.cos(math.pi * min(epoch_float / o.epochs, 1.0)))
    return f * o.gamma ** sum(epoch_float >= m for m in o.milestones)


def setup(cfg: Config):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    AcceleratorState._reset_state()  # runs in one process (lacol compare, tests) may differ in precision
    t = cfg.train
    on_cpu = t.cpu or not torch.cuda.is_available()
    if t.mixed_precision == "fp16" and on_cpu:
        raise ConfigError("train.mixed_precision=fp16 needs a GPU (Accelerate silently turns autocast off "
                          "on CPU): use bf16 on CPU")
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif not on_cpu:  # fixed-shape batches: let cuDNN pick the fastest convolution once
        torch.backends.cudnn.benchmark = True
    # the embedding head is idle in warm-up epochs (and in the lambda_MS = lambda_SC = 0 ablation):
    # DDP must not wait for its gradients
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # optim.grad_accum is done by Trainer.step, not Accelerate: its windows would run across epoch
    # ends (our loaders are not Accelerate's), leaving gradients pending at an epoch-end checkpoint
    trackers = {}
    if t.trackers:  # their logs go under the run folder
        from accelerate.utils import ProjectConfiguration

        run_dir = Path(t.out_dir) / cfg.run_name
        trackers = dict(log_with=t.trackers, project_config=ProjectConfiguration(
            project_dir=str(run_dir), logging_dir=str(run_dir / "trackers")))
    accelerator = Accelerator(mixed_precision=t.mixed_precision, cpu=on_cpu, kwargs_handlers=[ddp],
                              step_scheduler_with_optimizer=False, **trackers)
    set_seed(t.seed)
    return accelerator


def train(cfg: Config, resume: bool = False) -> dict:
    """Train one run into ``out_dir/run_name``; returns the summary (also summary.json)."""
    accelerator = setup(cfg)
    try:
        return Trainer(cfg, accelerator, resume).train()
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # gloo ranks abort at exit otherwise


class Trainer:
    """One run's state: config, accelerator, run folder, data, model, optimiser, method, position."""

    def __init__(self, cfg: Config, accelerator, resume: bool):
        self.cfg, self.acc = cfg, accelerator
        d, o = cfg.data, cfg.optim
        rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
        self.run = RunFolder(Path(cfg.train.out_dir) / cfg.run_name, accelerator)
        self.run.create(cfg, resume)
        # the main process draws the noise once (into the run folder); the others read it
        self.split, val = train_and_val(d, self.run.noise_file) if self.run.main else (None, None)
        accelerator.wait_for_everyone()
        if self.split is None:
            self.split, val = train_and_val(d, self.run.noise_file)
        self.heldout = None
        if d.cv_folds:
            self.split, self.heldout = cv_split(self.split, d.cv_folds, d.cv_fold)
        # the method before the loaders: it says which views each epoch needs
        self.method = build_method(cfg.loss, self.split.num_classes, Dist(rank, world), seed=cfg.train.seed,
                                   device=device, clean=torch.from_numpy(self.split.clean_labels).to(device),
                                   deterministic=cfg.train.deterministic, num_samples=len(self.split))
        strong = any(self.method.num_views(e) > 1 for e in range(o.epochs))
        # views in the dtype the model computes in: bf16 under bf16 on a GPU (the CPU engine is fp32)
        dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" and device.type == "cuda" else torch.float32
        self.loader = make_loader(d, self.split, d.views(strong), rank=rank, world=world, device=device,
                                  seed=cfg.train.seed, dtype=dtype)
        if len(self.loader) == 0:
            raise ConfigError(f"data.batch_size={d.batch_size} x {world} processes exceeds the "
                             f"{len(self.split)} training samples: lower the batch size")
        evals = eval_splits(d) if val is None else {"val": val, **eval_splits(d)}  # validation first
        empty = [name for name, e in evals.items() if len(e) == 0]
        if empty:
            raise ValueError(f"{d.dataset}: evaluation split(s) {', '.join(empty)} hold no samples "
                             f"(root {d.root or 'default'}): check the dataset folder and its label lists")
        self.evals = {name: make_loader(d, s, None, rank=rank, world=world, device=device)
                      for name, s in evals.items()}
        # clean labels of held-out (noisy) validation rows: reported beside the noisy accuracy, never used to choose
        self.val_clean = None if val is None else val.clean_labels
        if val is not None and self.run.main:
            self.run.write_json("val_rows.json", {"rows_of_train_split": val.source_index.tolist(),
                                                  "noisy": int((val.labels != val.clean_labels).sum())},
                                indent=None)
        self.model, self.optimizer = self._model_and_optimizer(world, device)
        self.state = TrainState(global_batch=d.batch_size * world * o.grad_accum)
        self.method.attach(self.model)
        self.train_pass = None  # the eval-mode loader over the training split, built when a method asks
        warm = min(self.method.warmup_epochs, o.epochs)
        self.evidence = (audit.Evidence(len(self.split), warm, o.epochs - warm, device)
                         if cfg.train.audit and o.epochs > warm else None)
        self.partial, self.counts, self.sums, self.sel_tot, self.stat_tot = None, None, {}, None, {}
        if resume:
            self._resume()
        self.history = self.run.history(self.state.epoch) if resume else []
        self.display = Display(cfg, self.run.main, len(self.loader), evals=tuple(self.evals))
        self.guard = FiniteGuard(device)
        accelerator.print(f"{cfg.run_name}: {len(self.split)} training samples, {world} process(es) x batch "
                          f"{d.batch_size} x accum {o.grad_accum} = global batch {self.state.global_batch}, "
                          f"{len(self.loader)} steps/epoch, {device}, mixed_precision={accelerator.mixed_precision}")

    def _model_and_optimizer(self, world: int, device):
        m, o = self.cfg.model, self.cfg.optim
        model = build_model(m.arch, self.split.num_classes, self.split.channels, m.width, m.embed_dim, m.pretrained,
                            m.embed_from, m.bn_stats)
        if m.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                    weight_decay=o.weight_decay)
        if m.sync_bn and world > 1:
            if device.type == "cpu":
                raise ConfigError("model.sync_bn needs GPUs (torch's SyncBatchNorm does not run on CPU)")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if m.compile:
            model = torch.compile(model)
        return self.acc.prepare(model, optimizer)

    def _resume(self) -> None:
        ckpt = self.run.load_checkpoint(self.model, self.optimizer, self.state, extra=self._load_extra)
        s = self.state
        if not (0 <= s.epoch <= self.cfg.optim.epochs and s.step_in_epoch >= 0 and s.global_step >= 0):
            raise FileNotFoundError(f"{ckpt}/state.json: epoch {s.epoch}, step {s.step_in_epoch} is outside this "
                                    f"run's 0..{self.cfg.optim.epochs} epochs: the checkpoint is damaged or from "
                                    f"another run; remove it to resume from the one before")
        self.acc.print(f"resumed from {ckpt} (epoch {s.epoch}, step {s.step_in_epoch} of it)")
        global_batch = self.cfg.data.batch_size * self.acc.num_processes * self.cfg.optim.grad_accum
        if s.global_batch != global_batch:  # another world size: same samples seen, new step size
            old, seen = s.global_batch, s.step_in_epoch * s.global_batch
            s.step_in_epoch, s.global_batch = seen // global_batch, global_batch
            self.acc.print(f"global batch {global_batch} (was {old}): continuing at step "
                           f"{s.step_in_epoch} of epoch {s.epoch}, by samples seen")
        # steps after the checkpoint were logged before the stop and are logged again
        self.run.log({"kind": "resume", "epoch": s.epoch, "step": s.global_step})

    # --------------------------------------------------------------------------- the loop

    def train(self) -> dict:
        cfg, state, t = self.cfg, self.state, self.cfg.train
        first_epoch = state.epoch
        try:
            with self.display:
                for epoch in range(state.epoch, cfg.optim.epochs):
                    if state.step_in_epoch == 0:  # a resume inside the epoch has the method's state of its start
                        self.method.before_epoch(epoch, self.predict_train)
                    # warm-up epochs make the weak view alone
                    self.loader.set_epoch(epoch, start=state.step_in_epoch, num_views=self.method.num_views(epoch))
                    stats = self.train_epoch(epoch)
                    row = {"kind": "epoch", "epoch": epoch, "step": state.global_step, **stats,
                           **self.evaluate_all()}
                    state.epoch, state.step_in_epoch = epoch + 1, 0
                    self.record(row)
                    self.checkpoint()
                    if t.stop_after and epoch + 1 - first_epoch >= t.stop_after and epoch + 1 < cfg.optim.epochs:
                        self.acc.print(f"stopped after epoch {epoch + 1} of {cfg.optim.epochs} (train.stop_after); "
                                       f"--resume continues")
                        break
        finally:
            self.run.close()
        return self.finish()

    def train_epoch(self, epoch: int) -> dict:
        """One epoch from ``state.step_in_epoch``; returns its means (one host sync, at the end).
        A resumed epoch continues the sums its checkpoint held, so its means are those of the
        uninterrupted epoch."""
        t, o, state = self.cfg.train, self.cfg.optim, self.state
        steps = len(self.loader)
        self.model.train()
        self.display.start_epoch(epoch, state.step_in_epoch)
        part = self.partial if state.step_in_epoch > 0 else None
        self.partial = None
        # on the device: no host sync on steps that do not log
        self.sums: dict[str, torch.Tensor] = {} if part is None else part["sums"]
        self.sel_tot = torch.zeros(4, device=self.acc.device) if part is None else part["sel"]
        self.stat_tot = {} if part is None else part["stats"]
        self.counts = [0, 0, 0.0] if part is None else part["counts"]  # steps, samples, seconds before a resume
        t0 = time.perf_counter()
        self.t_last, self.t_epoch = t0, t0
        mark = state.global_step // max(t.checkpoint_every, 1)  # the checkpoint_every block last saved
        for batch in self.loader:
            # the schedule is a function of the position in training, so it survives a change of world size
            lr = o.lr * lr_factor(self.cfg, epoch + (state.step_in_epoch // o.grad_accum * o.grad_accum) / steps)
            out, stepped = self.step(batch, epoch, lr, steps)
            self.counts[0] += 1
            self.counts[1] += len(batch) * self.acc.num_processes
            for k, v in (("loss", out.value), *out.terms.items()):
                self.sums[k] = self.sums.get(k, 0.0) + v
            if out.selection is not None:
                self.sel_tot += out.selection
            for k, v in out.stats.items():
                self.stat_tot[k] = self.stat_tot[k] + v if k in self.stat_tot else v.clone()
            if state.global_step % t.log_every == 0:
                self.guard.check(self.cfg, self.run.latest_checkpoint)  # the logging step syncs anyway
                self.log_step(epoch, lr, out, len(batch) * self.acc.num_processes)
            # at the first window end in each block of checkpoint_every steps (with grad_accum 1:
            # every checkpoint_every steps)
            if t.checkpoint_every and stepped and state.global_step // t.checkpoint_every != mark:
                mark = state.global_step // t.checkpoint_every
                if state.step_in_epoch < steps:  # at the epoch's last step the epoch end checkpoints it
                    self.checkpoint()
        n_steps, n_samples = self.counts[0], self.counts[1]
        dt = self.counts[2] + time.perf_counter() - t0
        stats = {k: float(v) / max(n_steps, 1) for k, v in self.sums.items()}
        stats.update(lr=self.optimizer.param_groups[0]["lr"], seconds=dt, samples_per_s=n_samples / max(dt, 1e-9))
        stats.update(selection_rates(self.acc.reduce(self.sel_tot, "sum").cpu(), n_samples))
        for k, v in sorted(self.stat_tot.items()):
            stats.update(count_rates(k, self.acc.reduce(v, "sum").cpu()))
        stats.update(getattr(self.method, "pass_stats", {}))
        self.sums, self.sel_tot, self.counts, self.stat_tot = {}, None, None, {}  # the epoch-end checkpoint carries no partial epoch
        return stats

    def step(self, batch, epoch: int, lr: float, steps: int | None = None):
        """One micro-batch; the optimiser steps at the end of each ``optim.grad_accum`` window.
        Windows start at each epoch's first batch and the last one of an epoch is cut short, so no
        gradient is pending at an epoch end or a checkpoint (taken at window ends only), and a
        resume starts a window. Each micro-batch's loss is divided by its window's length: the
        step follows the mean over the window (the losses' batch statistics stay per micro-batch).
        ``steps``: the epoch's batch count. Returns (the step's output, whether the optimiser stepped)."""
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        accum, i = self.cfg.optim.grad_accum, self.state.step_in_epoch
        window = accum if steps is None else min(accum, steps - (i - i % accum))  # None: no epoch end near
        last = i % accum == window - 1
        with contextlib.nullcontext() if last else self.acc.no_sync(self.model):  # DDP all-reduces at the end
            out = self.method(self.model, batch, epoch, i)
            self.guard.update(self.state.global_step, out.loss, out.terms)
            if self.evidence is not None and out.p_weak is not None:
                self.evidence.record(epoch, batch.index, out.p_weak, batch.label, out.selected)
            self.acc.backward(out.loss / window if window > 1 else out.loss)
        if last:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.method.after_step(self.model)
        self.state.step_in_epoch += 1
        self.state.global_step += 1
        return out, last

    def predict_train(self, model=None):
        """(index, probabilities, noisy labels) of every training sample from an eval-mode pass
        (evaluation view) with ``model`` (default: the trained model); the model's mode is restored."""
        if self.train_pass is None:
            self.train_pass = make_loader(self.cfg.data, self.split, None, rank=self.acc.process_index,
                                          world=self.acc.num_processes, device=self.acc.device)
        model = self.model if model is None else model
        was = model.training
        try:
            return predict_probs(self.acc, model, self.train_pass)
        finally:
            model.train(was)

    def write_heldout(self) -> None:
        """The held-out fold's predicted probabilities (evaluation view, final weights):
        ``heldout_probs.npz`` with rows of the full training split, noisy and clean labels."""
        h, d = self.heldout, self.cfg.data
        loader = make_loader(d, h, None, rank=self.acc.process_index, world=self.acc.num_processes,
                             device=self.acc.device)
        index, probs, _ = predict_probs(self.acc, self.model, loader)
        if self.run.main:
            atomic_npz(self.run.path / "heldout_probs.npz", rows=h.source_index[index], probs=probs,
                       labels=h.labels[index], clean=h.clean_labels[index])

    def checkpoint(self) -> None:
        """A checkpoint of the loop (collective), with the audit's record so far and, inside an
        epoch, the epoch's sums so far (its means after a resume are the uninterrupted ones);
        never of weights a non-finite loss has touched."""
        self.guard.check(self.cfg, self.run.latest_checkpoint)
        extra = {} if self.evidence is None else self.evidence.combined(self.acc.num_processes)
        extra.update(self.method.state_dict())
        if self.counts is not None:  # inside an epoch
            extra.update({f"epoch.sum.{k}": torch.as_tensor(v).detach().float().reshape(1).cpu()
                          for k, v in self.sums.items()})
            extra["epoch.sel"] = self.acc.reduce(self.sel_tot.clone(), "sum").cpu()
            extra.update({f"epoch.stat.{k}": self.acc.reduce(v.clone(), "sum").cpu() for k, v in self.stat_tot.items()})
            seconds = self.counts[2] + time.perf_counter() - self.t_epoch
            extra["epoch.counts"] = torch.tensor([self.counts[0], self.counts[1], seconds], dtype=torch.float64)
        self.run.save_checkpoint(self.model, self.optimizer, self.state, self.cfg.train.keep_checkpoints, extra)

    def _load_extra(self, tensors: dict) -> None:
        """A checkpoint's extra tensors: the audit's record and a partial epoch's sums."""
        if self.evidence is not None and "audit.prob" in tensors:
            self.evidence.load(tensors)
        self.method.load_state_dict(tensors)
        if "epoch.counts" in tensors:
            dev = self.acc.device
            c = tensors["epoch.counts"].tolist()
            sel = tensors["epoch.sel"].to(dev)  # summed over processes: kept by the main process alone
            main = self.acc.is_main_process
            stats = {k.removeprefix("epoch.stat."): v.to(dev) if main else torch.zeros_like(v, device=dev)
                     for k, v in tensors.items() if k.startswith("epoch.stat.")}
            self.partial = {"stats": stats, "sums": {k.removeprefix("epoch.sum."): v.to(dev).reshape(()) for k, v in tensors.items()
                                     if k.startswith("epoch.sum.")},
                            "sel": sel if self.acc.is_main_process else torch.zeros_like(sel),
                            "counts": [int(c[0]), int(c[1]), float(c[2])]}

    def log_step(self, epoch: int, lr: float, out, b: int) -> None:
        """A metrics line: the one step in ``train.log_every`` that syncs with the host, once (every
        value it reports crosses in one copy)."""
        names = ["loss", *out.terms]
        parts = [out.value.reshape(1).float(), *(v.reshape(1).float() for v in out.terms.values())]
        if out.selection is not None:
            parts += [self.acc.reduce(out.selection, "sum"), out.class_counts.float()]
        host = torch.cat(parts).cpu()
        now, every = time.perf_counter(), self.cfg.train.log_every
        record = {"kind": "step", "epoch": epoch, "step": self.state.global_step, "lr": lr,
                  **{k: float(v) for k, v in zip(names, host)},
                  "samples_per_s": b * every / max(now - self.t_last, 1e-9)}
        self.t_last = now
        if out.selection is not None:
            sel = host[len(names):len(names) + 4]
            record.update(selection_rates(sel, b), class_counts=host[len(names) + 4:].int().tolist())
        self.run.log(record)
        self.display.step(self.state.step_in_epoch, record)

    def evaluate_all(self) -> dict:
        """Accuracy on every evaluation split; with a validation split, the test accuracy at the
        best validation epoch so far (and those weights, as best.safetensors)."""
        model = self.method.eval_model(self.model)
        results = {name: evaluate(self.acc, model, ev, self.val_clean if name == "val" else None)
                   for name, ev in self.evals.items()}
        row = {**{f"{n}_acc": r["acc"] for n, r in results.items()}, **{f"{n}_n": r["n"] for n, r in results.items()}}
        if "clean_acc" in results.get("val", {}):
            row["val_clean_acc"] = results["val"]["clean_acc"]
        if len(results) > 1:
            v, te = list(results.values())[0], list(results.values())[-1]  # (validation, test)
            if v["acc"] > self.state.best_val:
                self.state.best_val, self.state.best_val_test = v["acc"], te["acc"]
                self.state.best_val_epoch = self.state.epoch
                self.run.save_weights(model, "best.safetensors")
            row["best_val_test_acc"] = self.state.best_val_test
        return row

    def record(self, row: dict) -> None:
        self.history.append(row)
        self.run.log(row)
        self.display.epoch_row(row)
        self.run.write_json("history.json", self.history, indent=None)

    def finish(self) -> dict:
        self.guard.check(self.cfg, self.run.latest_checkpoint)
        summary = summarise(self.cfg, self.history, self.state)
        if self.state.epoch >= self.cfg.optim.epochs:
            s = self.split
            self.run.save_weights(self.method.eval_model(self.model), "model.safetensors")
            facts = {"classes": list(s.classes), "mean": list(s.mean), "std": list(s.std), "channels": s.channels}
            if s.files is not None:  # what the audit's rows name: lacol audit refuses a list changed since
                facts["files"] = {"count": len(s), "sha256": audit.files_digest(s.files)}
            self.run.write_json("dataset.json", facts, indent=None)
            self.run.write_json("summary.json", summary)
            if self.heldout is not None:
                self.write_heldout()
            if self.evidence is not None:
                tensors = self.evidence.combined(self.acc.num_processes)  # collective
                if self.run.main:
                    audit.write(self.run.path / "audit.npz", tensors, first=self.evidence.first, labels=s.labels,
                                clean=s.clean_labels, rows=s.source_index, method=self.cfg.loss.method,
                                classes=s.classes)
        self.acc.wait_for_everyone()
        return summary


class FiniteGuard:
    """The first step whose total loss is not finite, and which loss terms were not finite then,
    kept on the device (a few ops per step, no host sync); ``check`` reads it where the loop
    syncs anyway (logging steps, checkpoints, the end) and stops the run there."""

    def __init__(self, device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.flags: dict[str, torch.Tensor] = {}
        self.total = torch.zeros((), dtype=torch.bool, device=device)

    def update(self, step: int, loss: torch.Tensor, terms: dict) -> None:
        bad = ~torch.isfinite(loss.detach())
        new = bad & (self.first < 0)
        self.first = torch.where(new, self.first.new_full((), step), self.first)  # a fill: no host copy
        self.total = self.total | new
        for k, v in terms.items():
            was = self.flags.get(k, torch.zeros_like(new))
            self.flags[k] = torch.where(new, ~torch.isfinite(v.detach()), was)

    def check(self, cfg, latest_checkpoint) -> None:
        """Stop the run if a loss was non-finite (``latest_checkpoint()``: the one to name)."""
        first = int(self.first)  # a host sync: only where the loop syncs anyway
        if first < 0:
            return
        checkpoint = latest_checkpoint()
        names = {"ls": "L_LS", "ms": "L_MS", "sc": "L_SC", "ce": "CE", "pl": "L_PL", "penalty": "the warm-up penalty"}
        terms = [names.get(k, k) for k, v in self.flags.items() if bool(v)] or ["the total"]
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written before it"
        keys = f"optim.lr={cfg.optim.lr:g}"
        if "L_MS" in terms or "L_SC" in terms:
            keys += f", loss.tau={cfg.loss.tau:g}, loss.rho={cfg.loss.rho:g}"
        if cfg.train.mixed_precision == "fp16":
            keys += ", train.mixed_precision=fp16 (try bf16)"
        raise NonFiniteLoss(f"the loss became non-finite at step {first} ({', '.join(terms)}): training stopped "
                            f"and no weights were saved after it; {kept}. Most likely at fault: {keys} "
                            f"(optim.gamma={cfg.optim.gamma:g} multiplies the lr at each milestone)")


def selection_rates(s: torch.Tensor, n_samples: int) -> dict:
    """Selected rate, precision and recall from summed ``losses.selection_stats`` (on the host);
    empty where no clean label is known."""
    if s[3] <= 0:
        return {}
    return {"selected_rate": float(s[0] / max(n_samples, 1)), "precision": float(s[1] / s[0].clamp_min(1)),
            "recall": float(s[1] / s[2].clamp_min(1))}


def count_rates(name: str, s: torch.Tensor) -> dict:
    """Rates from a method's summed (4,) counts (on the host): ``pseudo``: (pseudo-labelled,
    correct, unselected, known) as pseudo_rate (of the unselected), pseudo_precision, and
    pseudo_recall (correct pseudo-labels per unselected sample); empty without clean labels."""
    if s[3] <= 0:
        return {}
    if name == "pseudo":
        return {"pseudo_rate": float(s[0] / s[2].clamp_min(1)), "pseudo_precision": float(s[1] / s[0].clamp_min(1)),
                "pseudo_recall": float(s[1] / s[2].clamp_min(1))}
    return {f"{name}_{i}": float(v) for i, v in enumerate(s)}


def summarise(cfg: Config, history: list[dict], state: TrainState) -> dict:
    evals = dataset_info(cfg.data.dataset).eval_for(cfg.data.root)
    key = f"{evals[-1]}_acc"
    accs = [h[key] for h in history]
    last = history[-1] if history else {}
    out = {"run": cfg.run_name, "method": cfg.loss.method, "noise": cfg.data.noise,
           "noise_rate": cfg.data.noise_rate, "seed": cfg.train.seed, "epochs": len(history),
           "final_test_acc": accs[-1] if accs else float("nan"),
           "last10_test_acc": float(np.mean(accs[-10:])) if accs else float("nan"),
           "final_precision": last.get("precision"), "final_selected_rate": last.get("selected_rate"),
           "final_recall": last.get("recall"), "final_pseudo_precision": last.get("pseudo_precision"),
           "final_pseudo_recall": last.get("pseudo_recall"), "final_pseudo_rate": last.get("pseudo_rate"),
           "samples_per_s": float(np.mean([h["samples_per_s"] for h in history if "samples_per_s" in h
                                           and h["epoch"] >= min(cfg.loss.warmup_epochs, len(history) - 1)]))
           if history else float("nan"),
           "train_seconds": float(sum(h.get("seconds", 0.0) for h in history)),
           "num_processes": state.global_batch // (cfg.data.batch_size * cfg.optim.grad_accum)}
    if len(evals) > 1 or cfg.data.val_size:
        out["best_val_acc"], out["best_val_test_acc"] = state.best_val, state.best_val_test
        out["best_val_epoch"] = state.best_val_epoch
        if cfg.data.val_size and history:
            out["final_val_acc"] = history[-1].get("val_acc")
    return out
