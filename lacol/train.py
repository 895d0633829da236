"""The Accelerate loop: build, train (step, evaluate, checkpoint, log), summarise.

Distributed and precision go through one ``Accelerator``. Loaders shard themselves by
(process_index, num_processes) and are not passed through ``prepare``; their position is the
registered ``TrainState`` (epoch, step in epoch), so a resumed run replays the same batches and
views. Checkpoints are ``save_state`` folders written under a temporary name and renamed.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.augment import lacol_views
from pipelines.noise import NoisyLabels, make_noise
from pipelines.sources import load_split
from pipelines.sources.base import Split
from pipelines.torch_loader import TorchEvalLoader, TorchLoader

from .config import Config, ConfigError, save_config
from .display import Display
from .losses import Dist, Method
from .models import Network, build_model

EVAL_SPLITS = {"clothing1m": ("clean_val", "clean_test")}
TRAIN_SPLIT = {"clothing1m": "noisy_train"}


@dataclass
class TrainState:
    """Where the loop is; saved with every checkpoint (``register_for_checkpointing``)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_val: float = -1.0
    best_val_test: float = float("nan")
    global_batch: int = 0
    """Samples per optimiser step when this state was saved (resuming with another world size
    maps the position inside the epoch by samples seen)."""

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, d: dict) -> None:
        self.__dict__.update(d)


# ------------------------------------------------------------------------------------ data

def train_split(cfg: Config, run_dir: Path | None) -> Split:
    """The training split with its noisy labels (synthetic noise drawn once and kept in the run
    folder as noise.npz, so a resumed run trains on the same labels), optionally a subset."""
    d = cfg.data
    split = load_split(d.dataset, TRAIN_SPLIT.get(d.dataset, "train"), d.root)
    if d.noise != "none":
        path = run_dir / "noise.npz" if run_dir else None
        if path is not None and path.is_file():
            noise = NoisyLabels.load(path)
        else:
            noise = make_noise(split, d.dataset, d.noise, d.noise_rate, d.noise_seed, d.cifar_n_file)
            if path is not None:
                noise.save(path)
        split = split.with_labels(noise.labels)
    if d.train_subset:
        # its own seed stream: default_rng(0) would be the very permutation that symmetric noise
        # with noise_seed 0 flips first, and the subset would be all noisy
        rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(1,)))
        split = split.subset(rng.permutation(len(split))[: d.train_subset])
    return split


def eval_splits(cfg: Config) -> dict[str, Split]:
    d = cfg.data
    return {name: load_split(d.dataset, name, d.root) for name in EVAL_SPLITS.get(d.dataset, ("test",))}


def views_for(cfg: Config):
    d = cfg.data
    views = lacol_views(d.image_size, pad=d.pad, magnitude=d.magnitude, num_ops=d.num_ops, crop=d.crop,
                        flip=d.flip, cutout=d.cutout)
    return views if cfg.loss.method == "lacol" else views[:1]


def _beton(cfg: Config, split_name: str) -> Path:
    from tools.beton import beton_path

    return beton_path(cfg.data.ffcv_dir, cfg.data.dataset, split_name)


def _dali_rows(cfg: Config, split: Split):
    """File datasets: the rows of the checked list (``lacol-convert DATASET --to dali``), mapped
    to this split's rows (it may be a subset); in-memory datasets: all rows."""
    if split.files is None:
        return None
    from tools.beton import list_path, read_file_list

    name = split.name.split("/")[-1]
    listed = np.zeros(split.source_len, dtype=bool)
    # the list names rows of the full split; a subset keeps the rows it has
    full = load_split(cfg.data.dataset, name, cfg.data.root) if split.source_len != len(split) else split
    listed[read_file_list(list_path(cfg.data.dali_dir, cfg.data.dataset, name), full)] = True
    return np.flatnonzero(listed[split.source_index])


def make_train_loader(cfg: Config, split: Split, device, rank: int, world: int):
    d = cfg.data
    if d.backend == "ffcv":
        from pipelines.ffcv_loader import FfcvLoader

        return FfcvLoader(split, _beton(cfg, TRAIN_SPLIT.get(d.dataset, "train")), views_for(cfg),
                          batch_size=d.batch_size, device=device, rank=rank, world=world, seed=cfg.train.seed,
                          num_workers=d.num_workers, order=d.ffcv_order, os_cache=d.os_cache)
    if d.backend == "dali":
        from pipelines.dali_loader import DaliLoader

        return DaliLoader(split, views_for(cfg), batch_size=d.batch_size, device=device, rank=rank, world=world,
                          seed=cfg.train.seed, num_workers=d.num_workers, decode_size=d.decode_size,
                          rows=_dali_rows(cfg, split))
    return TorchLoader(split, views_for(cfg), batch_size=d.batch_size, device=device, rank=rank, world=world,
                       seed=cfg.train.seed, num_workers=d.num_workers, image_size=d.decode_size)


def make_eval_loader(cfg: Config, split: Split, device, rank: int, world: int):
    d = cfg.data
    if d.backend == "ffcv":
        from pipelines.ffcv_loader import FfcvEvalLoader

        return FfcvEvalLoader(split, _beton(cfg, split.name.split("/")[-1]), size=d.image_size,
                              batch_size=d.eval_batch_size, device=device, rank=rank, world=world,
                              num_workers=d.num_workers, os_cache=d.os_cache)
    if d.backend == "dali":
        from pipelines.dali_loader import DaliEvalLoader

        return DaliEvalLoader(split, size=d.image_size, batch_size=d.eval_batch_size, device=device, rank=rank,
                              world=world, num_workers=d.num_workers, decode_size=d.decode_size,
                              rows=_dali_rows(cfg, split))
    return TorchEvalLoader(split, size=d.image_size, batch_size=d.eval_batch_size, device=device, rank=rank,
                           world=world, num_workers=d.num_workers, image_size=d.decode_size)


# ------------------------------------------------------------------------------- schedule

def lr_factor(cfg: Config, epoch_float: float) -> float:
    o = cfg.optim
    f = min(1.0, epoch_float / o.warmup_lr_epochs) if o.warmup_lr_epochs > 0 else 1.0
    if o.schedule == "cosine":
        return f * 0.5 * (1 + math.cos(math.pi * min(epoch_float / o.epochs, 1.0)))
    return f * o.gamma ** sum(epoch_float >= m for m in o.milestones)


# ------------------------------------------------------------------------------ evaluate

@torch.no_grad()
def evaluate(accelerator, model, loader) -> dict:
    """Top-1 accuracy over the split, every sample counted once (padding deduplicated by index)."""
    model.eval()
    preds, labels, index = [], [], []
    for batch in loader:
        with accelerator.autocast():
            logits, _ = model(batch.image, embed=False)
        preds.append(logits.argmax(1))
        labels.append(batch.label)
        index.append(batch.index)
    p, y, i = (accelerator.gather(torch.cat(t)).cpu().numpy() for t in (preds, labels, index))
    _, first = np.unique(i, return_index=True)
    return {"acc": float((p[first] == y[first]).mean()), "n": int(len(first))}


# ---------------------------------------------------------------------------- checkpoints

def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("step_*"))
    return found[-1] if found else None


def save_checkpoint(accelerator, run_dir: Path, state: TrainState, keep: int) -> None:
    """save_state into a temporary folder, then rename: a killed save never looks complete."""
    root = run_dir / "checkpoints"
    final = root / f"step_{state.global_step:09d}"
    tmp = root / f".tmp_step_{state.global_step:09d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_weights(model: Network, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------- metrics

class MetricsLog:
    """metrics.jsonl (one JSON object per line, flushed) and TensorBoard when installed; main
    process only."""

    def __init__(self, path: Path, enabled: bool, cfg: Config):
        self.file = open(path, "a", buffering=1) if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(path.parent / "tb"))
            except Exception:  # tensorboard not installed: the jsonl file is the record
                self.tb = None

    def write(self, record: dict) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('kind', 'step')}/{k}", v, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def selection_stats(selected: torch.Tensor, index: torch.Tensor, label: torch.Tensor, clean: torch.Tensor):
    """(selected, selected & clean, clean, known) counts over samples whose clean label is known;
    ``clean`` lives on the training device, so no host round trip."""
    c = clean[index]
    known = c >= 0
    is_clean = (c == label) & known
    sel = selected & known
    return torch.stack([sel.sum(), (sel & is_clean).sum(), is_clean.sum(), known.sum()]).float()


# ------------------------------------------------------------------------------------ train

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
    # the embedding head is idle in warm-up epochs (and in the lambda_MS = lambda_SC = 0 ablation):
    # DDP must not wait for its gradients
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(mixed_precision=t.mixed_precision, cpu=on_cpu, kwargs_handlers=[ddp],
                              gradient_accumulation_steps=cfg.optim.grad_accum, step_scheduler_with_optimizer=False)
    set_seed(t.seed)
    return accelerator


def train(cfg: Config, resume: bool = False) -> dict:
    """Train one run into ``out_dir/run_name``; returns the summary (also summary.json)."""
    accelerator = setup(cfg)
    try:
        return _train(cfg, accelerator, resume)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # gloo ranks abort at exit otherwise


def _train(cfg: Config, accelerator, resume: bool) -> dict:
    t, o = cfg.train, cfg.optim
    run_dir = Path(t.out_dir) / cfg.run_name
    main = accelerator.is_main_process
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume and latest_checkpoint(run_dir) is not None:
            raise FileExistsError(f"{run_dir} already holds checkpoints: pass --resume to continue it, "
                                  f"or choose another train.name")
        save_config(cfg, run_dir / "config.yaml")
    accelerator.wait_for_everyone()
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device

    split = train_split(cfg, run_dir) if main else None  # the main process draws the noise once
    accelerator.wait_for_everyone()
    if not main:
        split = train_split(cfg, run_dir)
    clean = torch.from_numpy(split.clean_labels).to(device)
    loader = make_train_loader(cfg, split, device, rank, world)
    evals = {name: make_eval_loader(cfg, s, device, rank, world) for name, s in eval_splits(cfg).items()}
    if len(loader) == 0:
        raise ValueError(f"data.batch_size={cfg.data.batch_size} x {world} processes exceeds the "
                         f"{len(split)} training samples: lower the batch size")

    model = build_model(cfg.model.arch, split.num_classes, split.channels, cfg.model.width,
                        cfg.model.embed_dim, cfg.model.pretrained)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                weight_decay=o.weight_decay)
    steps_per_epoch = len(loader)
    if cfg.model.sync_bn and world > 1:
        if device.type == "cpu":
            raise ConfigError("model.sync_bn needs GPUs (torch's SyncBatchNorm does not run on CPU)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cfg.model.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    global_batch = cfg.data.batch_size * world * o.grad_accum
    state = TrainState(global_batch=global_batch)
    accelerator.register_for_checkpointing(state)
    method = Method(cfg.loss, split.num_classes, Dist(rank, world))

    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
        accelerator.load_state(str(ckpt))
        accelerator.print(f"resumed from {ckpt} (epoch {state.epoch}, step {state.step_in_epoch} of it)")
        if state.global_batch != global_batch:  # another world size: same samples seen, new step size
            old, seen = state.global_batch, state.step_in_epoch * state.global_batch
            state.step_in_epoch, state.global_batch = seen // global_batch, global_batch
            accelerator.print(f"global batch {global_batch} (was {old}): continuing at step "
                              f"{state.step_in_epoch} of epoch {state.epoch}, by samples seen")

    log = MetricsLog(run_dir / "metrics.jsonl", main, cfg)
    if resume:  # steps after the checkpoint were logged before the stop and are logged again
        log.write({"kind": "resume", "epoch": state.epoch, "step": state.global_step})
    display = Display(cfg, main and t.progress, steps_per_epoch, has_val=len(evals) > 1)
    gen = torch.Generator(device=device)
    history = []
    if resume and (run_dir / "history.json").is_file():
        history = [h for h in json.loads((run_dir / "history.json").read_text()) if h["epoch"] < state.epoch]
    accelerator.print(f"{cfg.run_name}: {len(split)} training samples, {world} process(es) x batch "
                      f"{cfg.data.batch_size} x accum {o.grad_accum} = global batch "
                      f"{global_batch}, {steps_per_epoch} steps/epoch, "
                      f"{accelerator.device}, mixed_precision={accelerator.mixed_precision}")
    first_epoch = state.epoch
    try:
        with display:
            for epoch in range(state.epoch, o.epochs):
                epoch_stats = _train_epoch(cfg, accelerator, model, optimizer, method, loader,
                                           state, epoch, clean, gen, log, display, run_dir)
                results = {name: evaluate(accelerator, model, ev) for name, ev in evals.items()}
                row = {"kind": "epoch", "epoch": epoch, "step": state.global_step, **epoch_stats,
                       **{f"{n}_acc": r["acc"] for n, r in results.items()},
                       **{f"{n}_n": r["n"] for n, r in results.items()}}
                if "clean_val" in results:
                    if results["clean_val"]["acc"] > state.best_val:
                        state.best_val = results["clean_val"]["acc"]
                        state.best_val_test = results["clean_test"]["acc"]
                        if main:
                            save_weights(accelerator.unwrap_model(model), run_dir / "best.safetensors")
                    row["best_val_test_acc"] = state.best_val_test
                history.append(row)
                log.write(row)
                display.epoch_row(row)
                state.epoch, state.step_in_epoch = epoch + 1, 0
                if main:
                    write_atomic(run_dir / "history.json", json.dumps(history))
                save_checkpoint(accelerator, run_dir, state, t.keep_checkpoints)
                if t.stop_after and epoch + 1 - first_epoch >= t.stop_after and epoch + 1 < o.epochs:
                    accelerator.print(f"stopped after epoch {epoch + 1} of {o.epochs} (train.stop_after); "
                                      f"--resume continues")
                    break
    finally:
        log.close()
    summary = summarise(cfg, history, state)
    if main and state.epoch >= o.epochs:
        save_weights(accelerator.unwrap_model(model), run_dir / "model.safetensors")
        write_atomic(run_dir / "dataset.json", json.dumps({"classes": list(split.classes), "mean": list(split.mean),
                                                           "std": list(split.std), "channels": split.channels}))
        write_atomic(run_dir / "summary.json", json.dumps(summary, indent=1))
    accelerator.wait_for_everyone()
    return summary


def _train_epoch(cfg, accelerator, model, optimizer, method, loader, state: TrainState,
                 epoch: int, clean, gen, log: MetricsLog, display, run_dir: Path) -> dict:
    t, o = cfg.train, cfg.optim
    steps = len(loader)
    model.train()
    loader.set_epoch(epoch, start=state.step_in_epoch)
    display.start_epoch(epoch, state.step_in_epoch)
    sums: dict[str, torch.Tensor] = {}  # on the device: no host sync on steps that do not log
    sel_tot = torch.zeros(4, device=accelerator.device)
    n_steps, n_samples, t0 = 0, 0, time.perf_counter()
    t_last = t0
    # gathered losses sample negatives over the global batch: the same draw on every process
    rank_seed = 0 if cfg.loss.gather else accelerator.process_index
    for batch in loader:
        gen.manual_seed(((t.seed * 1_000_003 + epoch) * 1_000_003 + state.step_in_epoch) * 1_009 + rank_seed)
        # the schedule is a function of the position in training, so it survives a change of world size
        lr = o.lr * lr_factor(cfg, epoch + (state.step_in_epoch // o.grad_accum * o.grad_accum) / steps)
        for g in optimizer.param_groups:
            g["lr"] = lr
        with accelerator.accumulate(model):
            out = method(model, batch, epoch, gen)
            accelerator.backward(out.loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        state.step_in_epoch += 1
        state.global_step += 1
        n_steps += 1
        b = len(batch) * accelerator.num_processes
        n_samples += b
        for k, v in (("loss", out.value), *out.terms.items()):
            sums[k] = sums.get(k, 0.0) + v
        sel = None
        if out.selected is not None:
            sel = selection_stats(out.selected, batch.index, batch.label, clean)
            sel_tot += sel
        if state.global_step % t.log_every == 0:
            now = time.perf_counter()
            record = {"kind": "step", "epoch": epoch, "step": state.global_step, "lr": lr, "loss": float(out.value),
                      **{k: float(v) for k, v in out.terms.items()},
                      "samples_per_s": b * t.log_every / max(now - t_last, 1e-9)}
            t_last = now
            if sel is not None:
                s = accelerator.reduce(sel, "sum").cpu()
                record.update(selected_rate=float(s[0] / max(b, 1)), precision=float(s[1] / s[0].clamp_min(1)),
                              recall=float(s[1] / s[2].clamp_min(1)), class_counts=out.class_counts.int().tolist())
            log.write(record)
            display.step(state.step_in_epoch, record)
        if t.checkpoint_every and state.global_step % t.checkpoint_every == 0 and accelerator.sync_gradients:
            save_checkpoint(accelerator, run_dir, state, t.keep_checkpoints)
    dt = time.perf_counter() - t0
    stats = {k: float(v) / max(n_steps, 1) for k, v in sums.items()}
    stats.update(lr=optimizer.param_groups[0]["lr"], seconds=dt, samples_per_s=n_samples / max(dt, 1e-9))
    sel_tot = accelerator.reduce(sel_tot, "sum").cpu()
    if sel_tot[3] > 0:
        stats.update(selected_rate=float(sel_tot[0] / max(n_samples, 1)),
                     precision=float(sel_tot[1] / sel_tot[0].clamp_min(1)),
                     recall=float(sel_tot[1] / sel_tot[2].clamp_min(1)))
    return stats


def summarise(cfg: Config, history: list[dict], state: TrainState) -> dict:
    key = "clean_test_acc" if cfg.data.dataset in EVAL_SPLITS else "test_acc"
    accs = [h[key] for h in history]
    last = history[-1] if history else {}
    out = {"run": cfg.run_name, "method": cfg.loss.method, "noise": cfg.data.noise,
           "noise_rate": cfg.data.noise_rate, "seed": cfg.train.seed, "epochs": len(history),
           "final_test_acc": accs[-1] if accs else float("nan"),
           "last10_test_acc": float(np.mean(accs[-10:])) if accs else float("nan"),
           "final_precision": last.get("precision"), "final_selected_rate": last.get("selected_rate"),
           "final_recall": last.get("recall"),
           "train_seconds": float(sum(h.get("seconds", 0.0) for h in history)),
           "num_processes": state.global_batch // (cfg.data.batch_size * cfg.optim.grad_accum)}
    if cfg.data.dataset in EVAL_SPLITS:
        out["best_val_acc"], out["best_val_test_acc"] = state.best_val, state.best_val_test
    return out
