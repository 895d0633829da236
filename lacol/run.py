"""A run folder, as one object: ``config.yaml``, ``noise.npz``, ``metrics.jsonl`` (+ TensorBoard),
``history.json``, ``checkpoints/``, weights, ``dataset.json`` and ``summary.json``.

Every write happens on the main process alone and is atomic (``pipelines.fileio``); on the other
processes the object is silent, so the loop never checks its rank. ``save_checkpoint`` and
``load_checkpoint`` are collective (every process calls them). Nothing in a run folder is
pickled: tensors are safetensors, everything else JSON, so resuming a folder someone handed you
runs no code from it."""
from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path

import torch

from pipelines.fileio import atomic_json, atomic_path, atomic_write

from .config import Config, config_yaml, same_experiment


ACCELERATE_FILES = ("optimizer.bin", "random_states_0.pkl", "pytorch_model.bin", "custom_checkpoint_0.pkl")
"""Files of accelerate's save_state (pickles): a checkpoint holding them and no state.json is of
the older format, refused by name."""


class RunFolder:
    def __init__(self, path: Path, accelerator):
        self.path, self.acc = Path(path), accelerator
        self.main = accelerator.is_main_process
        self.checkpoints = self.path / "checkpoints"
        self._log = None
        self._lock = None  # the open .lock file while this process writes the folder
        self.trackers = False  # Accelerate's trackers (train.trackers) started by ``create``

    @property
    def noise_file(self) -> Path:
        return self.path / "noise.npz"

    def create(self, cfg: Config, resume: bool) -> None:
        """Make the folder and save the resolved config; a fresh run refuses a folder that holds
        checkpoints (``--resume`` continues it)."""
        if self.main:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock()
            if not resume and self.latest_checkpoint() is not None:
                raise FileExistsError(f"{self.path} already holds checkpoints: pass --resume to continue it, "
                                      f"or choose another train.name")
            if self.latest_checkpoint() is not None or (self.path / "summary.json").is_file():
                same_experiment(self.path, cfg)  # before anything in the folder is written
            atomic_write(self.path / "config.yaml", config_yaml(cfg))
        self.acc.wait_for_everyone()
        if cfg.train.trackers:  # on every process: Accelerate keeps trackers on the main one only
            logs = str(self.path / "trackers")
            self.acc.init_trackers(cfg.run_name, config=flat_config(cfg),
                                   init_kwargs={"wandb": {"dir": logs}} if "wandb" in cfg.train.trackers else {})
            self.trackers = True

    def lock(self) -> None:
        """Hold the folder's advisory lock (``.lock``, flock: the kernel drops it when the process
        dies, so a kill -9 leaves no stale lock) until ``close``; a second writer is refused with
        the holder's PID, before it writes anything."""
        import fcntl
        import os

        f = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise FileExistsError(f"{self.path} is in use by process {holder} (another lacol train or compare "
                                  f"writing it): wait for it to end, or choose another train.name") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock = f

    # ------------------------------------------------------------------------- checkpoints

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint (a folder appears under its final name only when complete)."""
        found = sorted(self.checkpoints.glob("step_*"))
        return found[-1] if found else None

    def save_checkpoint(self, model, optimizer, state, keep: int, extra: dict | None = None) -> None:
        """The model, the optimiser, the loop's position, each process's RNG state and ``extra``
        tensors (the label audit's record), written into a temporary folder and renamed when every
        process has written; the oldest beyond ``keep`` are removed. No pickle: tensors as
        safetensors, the rest as JSON."""
        from safetensors.torch import save_file

        final = self.checkpoints / f"step_{state.global_step:09d}"
        tmp = self.checkpoints / f".tmp_step_{state.global_step:09d}"
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                tmp.mkdir(parents=True)
                save_file(self._weights(model), str(tmp / "model.safetensors"))
                tensors, rest = split_optimizer_state(optimizer.state_dict())
                save_file(tensors, str(tmp / "optimizer.safetensors"))
                (tmp / "optimizer.json").write_text(json.dumps(rest))
                (tmp / "state.json").write_text(json.dumps(state.state_dict()))
                if extra:
                    save_file({k: v.contiguous() for k, v in extra.items()}, str(tmp / "extra.safetensors"))
            except Exception as e:  # a full disk: safetensors raises its own error, not an OSError
                shutil.rmtree(tmp, ignore_errors=True)
                last = self.latest_checkpoint()
                kept = f"the last good checkpoint {last.name} is intact" if last else "no earlier checkpoint"
                why = "no space left" if "No space" in str(e) or getattr(e, "errno", None) == errno.ENOSPC else str(e)
                raise OSError(getattr(e, "errno", None) or errno.ENOSPC, f"{why} writing a checkpoint ({kept}; "
                              f"--resume continues from it)", str(self.checkpoints)) from None
        self.acc.wait_for_everyone()
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(tmp / f"rng_{self.acc.process_index}.safetensors"))
        self.acc.wait_for_everyone()
        if self.main:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in sorted(self.checkpoints.glob("step_*"))[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()

    def load_checkpoint(self, model, optimizer, state, extra=None) -> Path:
        """The newest readable checkpoint into ``model``, ``optimizer`` and ``state`` (every
        process); ``extra(tensors)`` receives its extra tensors when it has any. A checkpoint
        that cannot be read (truncated or damaged files) is reported and the next older one
        loaded; none readable is an error naming each."""
        found = sorted(self.checkpoints.glob("step_*"), reverse=True)
        if not found:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.checkpoints}")
        problems = []
        for ckpt in found:
            if not (ckpt / "state.json").is_file() and any((ckpt / f).exists() for f in ACCELERATE_FILES):
                raise FileNotFoundError(f"{ckpt} is an older checkpoint format (pickled by accelerate), which is "
                                        f"not loaded: nothing in a run folder is unpickled. Start the run again")
            try:
                self._load(ckpt, model, optimizer, state, extra)
            except Exception as e:  # noqa: BLE001 - any damage: fall back to the previous checkpoint
                problems.append(f"{ckpt.name}: {type(e).__name__}: {str(e)[:200]}")
                self.acc.print(f"--resume: {ckpt} cannot be read ({problems[-1]}); trying the previous checkpoint")
                continue
            if problems:
                self.acc.print(f"--resume: continuing from {ckpt.name}, the newest readable checkpoint")
            return ckpt
        raise FileNotFoundError(f"--resume: no readable checkpoint in {self.checkpoints}: " + "; ".join(problems))

    def _load(self, ckpt: Path, model, optimizer, state, extra) -> None:
        from safetensors.torch import load_file

        weights = load_file(str(ckpt / "model.safetensors"))
        opt = join_optimizer_state(load_file(str(ckpt / "optimizer.safetensors")),
                                   json.loads((ckpt / "optimizer.json").read_text()))
        loop = json.loads((ckpt / "state.json").read_text())
        more = load_file(str(ckpt / "extra.safetensors")) if (ckpt / "extra.safetensors").is_file() else None
        rng_file = ckpt / f"rng_{self.acc.process_index}.safetensors"
        rng = load_file(str(rng_file)) if rng_file.is_file() else None  # absent when resuming with more processes
        # everything read: only now change the model, optimiser and loop
        plain = self.acc.unwrap_model(model)
        plain = getattr(plain, "_orig_mod", plain)  # a compiled model: its module takes the plain names
        plain.load_state_dict(weights)
        optimizer.load_state_dict(opt)
        state.load_state_dict(loop)
        if extra is not None and more is not None:
            extra(more)
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])

    # ----------------------------------------------------------------------------- records

    def log(self, record: dict) -> None:
        """One line of metrics.jsonl (flushed) and, with ``train.trackers``, the same scalars to
        each tracker as ``<kind>/<name>`` at the record's step."""
        if not self.main:
            return
        if self._log is None:
            self._log = open(self.path / "metrics.jsonl", "a", buffering=1)
        self._log.write(json.dumps(strict(record)) + "\n")
        if self.trackers:
            kind = record.get("kind", "step")
            scalars = {f"{kind}/{k}": v for k, v in record.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch")}
            if scalars:
                self.acc.log(scalars, step=record.get("step", 0))

    def history(self, before_epoch: int) -> list[dict]:
        """history.json's rows of the epochs before ``before_epoch`` (a resumed run's past)."""
        path = self.path / "history.json"
        if not path.is_file():
            return []
        return [h for h in json.loads(path.read_text()) if h["epoch"] < before_epoch]

    def write_json(self, name: str, obj, indent: int | None = 1) -> None:
        """Strict JSON (a non-finite number is written as null), atomically."""
        if self.main:
            atomic_json(self.path / name, strict(obj), indent=indent)

    def save_weights(self, model, name: str) -> None:
        """The unwrapped model's state dict as safetensors."""
        if not self.main:
            return
        from safetensors.torch import save_file

        with atomic_path(self.path / name) as tmp:
            save_file(self._weights(model), str(tmp))

    def _weights(self, model) -> dict:
        """The unwrapped model's state dict on the host, as safetensors takes it (the key names
        of the plain model: torch.compile's ``_orig_mod.`` prefix removed)."""
        return {k.replace("_orig_mod.", ""): v.detach().cpu().contiguous()
                for k, v in self.acc.unwrap_model(model).state_dict().items()}

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
        self._log = None
        if self.trackers:
            self.acc.end_training()
            self.trackers = False
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None


def flat_config(cfg: Config) -> dict:
    """The resolved config as one level of ``section.key`` scalars (what trackers take as
    hyper-parameters: TensorBoard's hparams refuse lists and None)."""
    return {f"{section}.{k}": (v if isinstance(v, (bool, int, float, str)) else str(v))
            for section, values in cfg.to_dict().items() for k, v in values.items()}


def split_optimizer_state(sd: dict) -> tuple[dict, dict]:
    """An optimiser's state_dict as (tensors by "param.name", the rest as JSON-able data)."""
    tensors, state = {}, {}
    for param, entries in sd["state"].items():
        state[str(param)] = {}
        for name, v in entries.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{param}.{name}"] = v.detach().cpu().contiguous()
                state[str(param)][name] = {"tensor": f"{param}.{name}"}
            else:
                state[str(param)][name] = v
    return tensors, {"state": state, "param_groups": sd["param_groups"]}


def join_optimizer_state(tensors: dict, rest: dict) -> dict:
    """``split_optimizer_state`` inverted."""
    state = {int(param): {name: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                          for name, v in entries.items()}
             for param, entries in rest["state"].items()}
    return {"state": state, "param_groups": rest["param_groups"]}


def strict(obj):
    """``obj`` with every non-finite float replaced by None: JSON any parser reads."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj
