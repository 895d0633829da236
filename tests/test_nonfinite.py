"""A non-finite loss stops the run (issue 25, item 5): one line naming the step, the term and
the keys most likely at fault; the last good checkpoint stays; no NaN weights are saved. The
guard adds no host sync to a step (tests/test_sync.py runs the trainer's step with it)."""
import json

import torch

from lacol.cli import main as lacol
from lacol.losses import NonFiniteLoss
from lacol.train import FiniteGuard

TINY = ["data.train_subset=512", "data.batch_size=64", "data.noise=symmetric", "data.noise_rate=0.2", "data.val_size=0",
        "optim.epochs=2", "loss.warmup_epochs=0", "train.threads=1", "train.progress=false", "train.log_every=2"]


def test_the_guard_names_the_first_bad_step_and_term():
    g = FiniteGuard("cpu")
    g.update(7, torch.tensor(1.0), {"ls": torch.tensor(1.0), "ms": torch.tensor(0.5)})
    g.check(None, None)  # finite so far: nothing to say (cfg is not read)
    g.update(8, torch.tensor(float("nan")), {"ls": torch.tensor(1.0), "ms": torch.tensor(float("inf"))})
    g.update(9, torch.tensor(float("nan")), {"ls": torch.tensor(float("nan")), "ms": torch.tensor(float("nan"))})
    from lacol.config import load_config

    try:
        g.check(load_config(None, []), lambda: "runs/x/checkpoints/step_000000008")
    except NonFiniteLoss as e:
        msg = str(e)
    assert "at step 8 (L_MS)" in msg and "loss.tau=0.2" in msg and "step_000000008" in msg


def test_a_diverging_run_stops_keeps_its_last_good_checkpoint_and_saves_no_weights(tmp_path, capsys):
    # epoch 0 at lr 0.05 is fine; the milestone multiplies it by 1e12 for epoch 1
    run = tmp_path / "nan"
    args = ["train", *TINY, "optim.schedule=multistep", "optim.milestones=[1]", "optim.gamma=1e12",
            f"train.out_dir={tmp_path}", "train.name=nan"]
    assert lacol(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the loss became non-finite at step" in err[0] and "optim.lr" in err[0], err
    assert "step_000000008" in err[0]  # epoch 0's checkpoint (8 steps of 64)
    assert not (run / "model.safetensors").exists() and not (run / "summary.json").exists()
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_000000008"]
    state = json.loads((run / "checkpoints" / "step_000000008" / "state.json").read_text())
    assert state["epoch"] == 1


def test_audit_predict_and_eval_refuse_a_diverged_runs_files(tmp_path, capsys):
    import numpy as np
    from safetensors.torch import load_file, save_file

    run = tmp_path / "ok"
    assert lacol(["train", *TINY, f"train.out_dir={tmp_path}", "train.name=ok"]) == 0
    weights = load_file(str(run / "model.safetensors"))
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = weights[name] * float("nan")
    save_file(weights, str(run / "model.safetensors"))
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    capsys.readouterr()
    for cmd in (["eval", "--run", str(run)], ["predict", "--run", str(run), str(image)]):
        assert lacol(cmd) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{name} holds NaN" in err[0], err
    with np.load(run / "audit.npz", allow_pickle=False) as z:
        rec = {k: z[k] for k in z.files}
    rec["prob"] = np.full_like(rec["prob"], np.nan)
    np.savez(run / "audit.npz", **rec)
    assert lacol(["audit", "--run", str(run)]) == 2
    assert "NaN probabilities" in capsys.readouterr().err
