"""The trainer on real Fashion-MNIST: it learns, it resumes to the same weights after a kill, its
run folder serves `lacol eval` and `lacol predict`, and config errors name the key."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lacol.cli import main as lacol
from lacol.config import ConfigError, load_config

from lacol.train import train

from conftest import RECIPE, TRAIN_SMALL as SMALL, stopped_copy  # noqa: E402



def test_config_errors_name_the_key_and_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"loss.class_weight='inverse'.*'paper', 'paper_mean1', 'balanced', 'none'"):
        load_config(None, ["loss.class_weight=inverse"])
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.learning_rate'.*lr"):
        load_config(None, ["optim.learning_rate=0.1"])
    with pytest.raises(ConfigError, match=r"data.batch_size='big': expected an integer"):
        load_config(None, ["data.batch_size=big"])
    assert load_config(None, ["optim.weight_decay=1e-4"]).optim.weight_decay == 1e-4  # YAML 1.1 reads text
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"  # not False
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  arch: vgg\n")
    with pytest.raises(ConfigError, match=r"model.arch='vgg'.*'resnet50'"):
        load_config(bad)
    for recipe in Path("configs").glob("*.yaml"):
        load_config(recipe)  # every shipped recipe is valid
    with pytest.raises(ConfigError, match="merged into train.deterministic"):
        load_config(None, ["loss.deterministic=true"])


def test_backend_sub_sections_and_moved_keys(tmp_path):
    from lacol.config import config_from_dict, config_yaml, read_run_config, same_experiment
    import yaml

    cfg = load_config(None, ["data.ffcv.order=random", "data.dali.threads=8", "model.bn_stats=mixed"])
    assert (cfg.data.ffcv.order, cfg.data.dali.threads, cfg.model.bn_stats) == ("random", 8, "mixed")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  ffcv:\n    os_cache: false\n  dali:\n    hw_decoder_load: 0.0\n")
    got = load_config(recipe).data
    assert got.ffcv.os_cache is False and got.dali.hw_decoder_load == 0.0 and got.ffcv.dir == "data/ffcv"
    for old, new in (("data.ffcv_dir=x", "data.ffcv.dir"), ("data.dali_threads=2", "data.dali.threads"),
                     ("loss.bn_stats=mixed", "model.bn_stats")):
        with pytest.raises(ConfigError, match=f"is now {new}: set that instead"):
            load_config(None, [old])
    with pytest.raises(ConfigError, match=r"data.ffcv is a sub-section.*dir, order, os_cache"):
        load_config(None, ["data.ffcv=random"])
    with pytest.raises(ConfigError, match=r"data.ffcv.nope.*data.ffcv has dir, order, os_cache"):
        load_config(None, ["data.ffcv.nope=1"])
    with pytest.raises(ConfigError, match=r"data.dali.hw_decoder_load=1.5: must be in \[0, 1\]"):
        load_config(None, ["data.dali.hw_decoder_load=1.5"])
    # a run folder written before the keys moved (the second sweep's, as kept in results/) reads
    # back with its values in their new places, and is the same experiment as today's config of it
    old = Path("results/sweep/sweep3-fashion_mnist-lacol_semi-symmetric0.2-s1-n1")
    stored = yaml.safe_load((old / "config.yaml").read_text())
    assert "ffcv_dir" in stored["data"] and "bn_stats" in stored["loss"]
    stored["data"]["os_cache"], stored["loss"]["bn_stats"] = False, "mixed"  # non-defaults are carried
    carried = config_from_dict(stored)
    assert carried.data.ffcv.os_cache is False and carried.model.bn_stats == "mixed"
    asked = load_config(RECIPE, ["loss.method=lacol_semi", "data.noise=symmetric", "data.noise_rate=0.2",
                                 "train.seed=1", "data.noise_seed=1", "train.threads=1"])
    same_experiment(old, asked)  # what `lacol compare --reuse` asks of a kept run
    assert read_run_config(old).data.ffcv.dir == "data/ffcv"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(config_yaml(asked))
    assert "ffcv_dir" not in config_yaml(asked) and read_run_config(tmp_path / "run") == asked


def test_a_missing_triton_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    with pytest.raises(ConfigError, match=r"loss.kernel=triton needs Triton"):
        load_config(None, ["loss.kernel=triton"])


def test_two_epochs_on_real_fashion_mnist_learn(tmp_path, capsys):
    cfg = load_config(RECIPE, [*SMALL, f"train.out_dir={tmp_path}", "train.name=learn"])
    summary = train(cfg)
    printed = capsys.readouterr().out  # train.progress=false: no bar, but the per-epoch lines
    assert printed.count("test acc=") == 2, printed
    assert summary["epochs"] == 2
    assert summary["final_test_acc"] > 0.45  # chance is 0.1
    run = tmp_path / "learn"
    assert {"config.yaml", "model.safetensors", "metrics.jsonl", "summary.json", "noise.npz",
            "dataset.json"} <= {p.name for p in run.iterdir()}
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lacol_steps = [s for s in steps if s["kind"] == "step" and s["epoch"] == 1]
    assert len(lacol_steps) == 32
    for key in ("ls", "ms", "sc", "lr", "selected_rate", "precision", "recall", "class_counts", "samples_per_s"):
        assert key in lacol_steps[0], key
    assert 0 < lacol_steps[-1]["precision"] <= 1
    epochs = [s for s in steps if s["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [0, 1] and "test_acc" in epochs[-1]


def test_eval_and_predict_from_the_run_folder(tmp_path, capsys, fmnist_test_image):
    cfg = load_config(RECIPE, [*SMALL, "optim.epochs=1", f"train.out_dir={tmp_path}", "train.name=r"])
    summary = train(cfg)
    capsys.readouterr()
    assert lacol(["eval", "--run", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"test: accuracy {100 * summary['final_test_acc']:.2f}% over 10000 samples" in out
    assert lacol(["predict", "--run", str(tmp_path / "r"), "--topk", "2", str(fmnist_test_image)]) == 0
    line = capsys.readouterr().out.strip()
    classes = json.loads((tmp_path / "r" / "dataset.json").read_text())["classes"]
    assert line.startswith(str(fmnist_test_image)) and sum(c in line for c in classes) >= 2
    assert lacol(["eval", "--run", str(tmp_path / "missing")]) == 2
    assert lacol(["train", "data.dataset=cifar10", f"data.root={tmp_path / 'nowhere'}"]) == 2  # names where it looked
    assert lacol(["train", f"model.pretrained={tmp_path / 'none.pth'}", f"train.out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "none.pth" in err


@pytest.fixture
def fmnist_test_image(tmp_path, fmnist_train):
    path = tmp_path / "item.png"
    Image.fromarray(fmnist_train.images[0, :, :, 0]).resize((56, 56)).save(path)
    return path


def _cmd(out_dir, name, *extra):
    return [sys.executable, "-m", "lacol.cli", "train", *SMALL, "optim.epochs=3", "train.checkpoint_every=4",
            f"train.out_dir={out_dir}", f"train.name={name}", *extra]


def test_kill_mid_epoch_then_resume_gives_the_same_weights(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    subprocess.run(_cmd(tmp_path, "whole"), check=True, env=env, capture_output=True, timeout=600)
    proc = subprocess.Popen(_cmd(tmp_path, "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    # wait for a checkpoint inside the second epoch (steps 33..64), then kill without warning
    while time.time() < deadline and not list(ckpts.glob("step_00000004[0-9]")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    assert lacol([*_cmd(tmp_path, "killed")[3:], "--resume"]) == 0
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist = json.loads((tmp_path / "killed" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    # the killed epoch's means continue the sums its checkpoint held: the uninterrupted rows
    whole = json.loads((tmp_path / "whole" / "history.json").read_text())
    timing = {"seconds", "samples_per_s"}
    assert [{k: v for k, v in h.items() if k not in timing} for h in hist] == \
           [{k: v for k, v in h.items() if k not in timing} for h in whole]
    # the label audit's record (epochs 1 and 2, the kill inside epoch 1) is the uninterrupted one
    with np.load(tmp_path / "whole" / "audit.npz") as w, np.load(tmp_path / "killed" / "audit.npz") as k:
        assert w.files == k.files
        for name in w.files:
            assert np.array_equal(w[name], k[name]), name
        assert w["seen"].all() and list(w["epochs"]) == [1, 2]


def test_a_run_folder_with_checkpoints_needs_resume(tmp_path):
    cfg = load_config(RECIPE, [*SMALL, "optim.epochs=1", f"train.out_dir={tmp_path}", "train.name=x"])
    train(cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)


def test_clothing1m_recipe_selects_on_clean_val_and_reports_its_test(tmp_path, clothing_root):
    """The Clothing1M recipe's loop on Clothing1M-layout JPEGs (small CNN and size, so it fits CI)."""
    cfg = load_config("configs/clothing1m.yaml", [
        f"data.root={clothing_root}", "data.decode_size=40", "data.image_size=32", "data.batch_size=32",
        "data.num_workers=1", "data.eval_batch_size=32", "model.arch=small_cnn", "optim.epochs=2",
        "optim.milestones=[1]", "train.mixed_precision=no", "train.threads=1", f"train.out_dir={tmp_path}",
        "train.name=c1m"])
    summary = train(cfg)
    hist = json.loads((tmp_path / "c1m" / "history.json").read_text())
    best = max(hist, key=lambda h: h["clean_val_acc"])
    assert summary["best_val_acc"] == best["clean_val_acc"]
    assert summary["best_val_test_acc"] == best["clean_test_acc"]
    assert (tmp_path / "c1m" / "best.safetensors").is_file()
    assert hist[-1]["precision"] is not None  # clean labels of noisy_train are known in the sample


def test_cifar10_recipe_runs_on_the_release_format(tmp_path):
    from conftest import write_cifar

    write_cifar(tmp_path / "data", "cifar10", n_train=256, n_test=64)
    cfg = load_config("configs/cifar10.yaml", [
        f"data.root={tmp_path / 'data'}", "data.batch_size=32", "model.arch=small_cnn", "optim.epochs=2",
        "optim.milestones=[1]", "loss.warmup_epochs=1", "train.mixed_precision=bf16", "train.threads=1",
        f"train.out_dir={tmp_path}", "train.name=c10"])
    summary = train(cfg)
    assert summary["epochs"] == 2 and 0 <= summary["final_test_acc"] <= 1
    assert summary["final_precision"] is not None


def test_resume_across_the_warmup_boundary_is_exact(tmp_path):
    """Warm-up epochs make the weak view alone; a run stopped at the end of warm-up and resumed
    ends with the weights of an uninterrupted run."""
    common = [*SMALL, "optim.epochs=2", "loss.warmup_epochs=1", f"train.out_dir={tmp_path}"]
    whole = train(load_config(RECIPE, [*common, "train.name=whole"]))
    train(load_config(RECIPE, [*common, "train.name=split", "train.stop_after=1"]))
    resumed = train(load_config(RECIPE, [*common, "train.name=split"]), resume=True)
    assert resumed["final_test_acc"] == whole["final_test_acc"]
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_grad_accum_windows_close_at_epoch_ends_and_resume_exactly(tmp_path):
    """optim.grad_accum=3 over 32 batches an epoch: windows of 3 from each epoch's first batch,
    the last cut to 2, checkpoints at window ends only. Resuming from a mid-epoch checkpoint
    ends with the uninterrupted run's weights (nothing was pending when it was written)."""
    common = [*SMALL, "optim.epochs=2", "optim.grad_accum=3", "train.checkpoint_every=10",
              "train.keep_checkpoints=100", f"train.out_dir={tmp_path}"]
    train(load_config(RECIPE, [*common, "train.name=whole"]))
    steps = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "whole" / "checkpoints").glob("step_*"))
    assert steps == [12, 21, 30, 32, 41, 50, 62, 64]  # window ends (3, 6, .., 30, 32; then 35, .., 62, 64)
    stopped_copy(tmp_path / "whole", tmp_path / "split", 41)
    train(load_config(RECIPE, [*common, "train.name=split"]), resume=True)
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    one = train(load_config(RECIPE, [*SMALL, "optim.epochs=2", f"train.out_dir={tmp_path}", "train.name=one"]))
    c = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert not all(torch.equal(a[k], c[k]) for k in a) and one["epochs"] == 2  # accumulation changed the steps
