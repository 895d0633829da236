"""A full disk while a checkpoint is written (issue 25, items 11 and 14): one line naming the
folder, its temporary files removed, the last good checkpoint intact and resumable; a killed
writer's stale temporary file is removed at the next write; a checkpoint step is written once."""
import os
import subprocess
import sys

import safetensors.torch

from lacol.cli import main as lacol
from pipelines.fileio import atomic_write

TINY = ["data.train_subset=256", "data.batch_size=64", "data.noise=symmetric", "data.noise_rate=0.2", "data.val_size=0",
        "optim.epochs=3", "loss.warmup_epochs=1", "train.threads=1", "train.progress=false"]


def test_disk_full_during_a_checkpoint(tmp_path, monkeypatch, capsys):
    real, calls = safetensors.torch.save_file, []

    def full(tensors, path, *a, **k):
        calls.append(path)
        if "step_000000008" in path:  # the second epoch's checkpoint: the disk is full
            raise safetensors.SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    args = ["train", *TINY, f"train.out_dir={tmp_path}", "train.name=r"]
    assert lacol(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoints" in err[0] and "no space left" in err[0], err
    assert "step_000000004 is intact" in err[0]
    ckpts = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_000000004"]  # no .tmp_step_* left
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert lacol([*args, "--resume"]) == 0 and (tmp_path / "r" / "model.safetensors").is_file()


def test_stale_temporary_files_of_killed_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".flags.csv.tmp-{dead}"
    stale.write_text("half")
    alive = tmp_path / f".flags.csv.tmp-{os.getppid()}"  # a live writer's is left alone
    alive.write_text("busy")
    atomic_write(tmp_path / "flags.csv", "whole")
    assert not stale.exists() and alive.exists() and (tmp_path / "flags.csv").read_text() == "whole"


def test_a_checkpoint_on_the_epoch_end_is_written_once(tmp_path, monkeypatch):
    from lacol.run import RunFolder

    steps = []
    save = RunFolder.save_checkpoint
    monkeypatch.setattr(RunFolder, "save_checkpoint",
                        lambda self, m, o, state, *a, **k: (steps.append(state.global_step), save(self, m, o, state, *a, **k)))
    assert lacol(["train", *TINY, "train.checkpoint_every=2", f"train.out_dir={tmp_path}", "train.name=r"]) == 0
    assert len(steps) == len(set(steps)), steps  # 4 steps an epoch: steps 2, 4 (epoch end), 6, 8, 10, 12
