"""A run folder, as one object: ``config.yaml``, ``noise.npz``, ``metrics.jsonl`` (+ TensorBoard),
``history.json``, ``checkpoints/``, weights, ``dataset.json`` and ``summary.json``.

Every write happens on the main process alone and is atomic (``pipelines.fileio``); on the other
processes the object is silent, so the loop never checks its rank. ``save_checkpoint`` and
``load_checkpoint`` are collective (every process calls them)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipelines.fileio import atomic_json, atomic_path, atomic_write

from .config import Config, config_yaml


class RunFolder:
    def __init__(self, path: Path, accelerator):
        self.path, self.acc = Path(path), accelerator
        self.main = accelerator.is_main_process
        self.checkpoints = self.path / "checkpoints"
        self._log = self._tb = None

    @property
    def noise_file(self) -> Path:
        return self.path / "noise.npz"

    def create(self, cfg: Config, resume: bool) -> None:
        """Make the folder and save the resolved config; a fresh run refuses a folder that holds
        checkpoints (``--resume`` continues it)."""
        if self.main:
            self.path.mkdir(parents=True, exist_ok=True)
            if not resume and self.latest_checkpoint() is not None:
                raise FileExistsError(f"{self.path} already holds checkpoints: pass --resume to continue it, "
                                      f"or choose another train.name")
            atomic_write(self.path / "config.yaml", config_yaml(cfg))
        self.acc.wait_for_everyone()

    # ------------------------------------------------------------------------- checkpoints

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint (a folder appears under its final name only when complete)."""
        found = sorted(self.checkpoints.glob("step_*"))
        return found[-1] if found else None

    def save_checkpoint(self, state, keep: int) -> None:
        """``save_state`` into a temporary folder, renamed when every process has written; the
        oldest beyond ``keep`` are removed."""
        final = self.checkpoints / f"step_{state.global_step:09d}"
        tmp = self.checkpoints / f".tmp_step_{state.global_step:09d}"
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp))
        self.acc.wait_for_everyone()
        if self.main:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in sorted(self.checkpoints.glob("step_*"))[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()

    def load_checkpoint(self) -> Path:
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.checkpoints}")
        self.acc.load_state(str(ckpt))
        return ckpt

    # ----------------------------------------------------------------------------- records

    def log(self, record: dict) -> None:
        """One line of metrics.jsonl (flushed) and TensorBoard scalars when installed."""
        if not self.main:
            return
        if self._log is None:
            self._log = open(self.path / "metrics.jsonl", "a", buffering=1)
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.path / "tb"))
            except Exception:  # tensorboard not installed: the jsonl file is the record
                self._tb = None
        self._log.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record.get('kind', 'step')}/{k}", v, step)

    def history(self, before_epoch: int) -> list[dict]:
        """history.json's rows of the epochs before ``before_epoch`` (a resumed run's past)."""
        path = self.path / "history.json"
        if not path.is_file():
            return []
        return [h for h in json.loads(path.read_text()) if h["epoch"] < before_epoch]

    def write_json(self, name: str, obj, indent: int | None = 1) -> None:
        if self.main:
            atomic_json(self.path / name, obj, indent=indent)

    def save_weights(self, model, name: str) -> None:
        """The unwrapped model's state dict as safetensors."""
        if not self.main:
            return
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.acc.unwrap_model(model).state_dict().items()}
        with atomic_path(self.path / name) as tmp:
            save_file(state, str(tmp))

    def close(self) -> None:
        for f in (self._log, self._tb):
            if f is not None:
                f.close()
        self._log = self._tb = None
