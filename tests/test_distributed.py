"""Real processes with gloo on CPU, started by `accelerate launch` (torchrun underneath): two ranks
train, match one process on the same global batch, survive a change of world size on resume, and
run as two "machines" on loopback."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lacol.config import load_config
from lacol.train import train

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "configs" / "fashion_mnist.yaml"
SMALL = ["data.train_subset=2048", "data.batch_size=32", "data.noise=symmetric", "data.noise_rate=0.4",
         "optim.epochs=2", "loss.warmup_epochs=1", "train.threads=1", "train.progress=false", "train.cpu=true",
         "train.log_every=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args, port: int, machines: int = 1, machine_rank: int = 0, processes: int = 2) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", str(machines), "--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no", *args]


def env() -> dict:
    """Subprocesses import this checkout (not whichever one pip installed in editable mode)."""
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=path)


def run(cmd, timeout=600):
    p = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-5000:]}"
    return p


def train_cmd(out_dir, name, *extra):
    return ["-m", "lacol.cli", "train", *SMALL, f"train.out_dir={out_dir}", f"train.name={name}", *extra]


def test_two_processes_train_two_epochs(tmp_path):
    run(launch(*train_cmd(tmp_path, "two"), port=free_port()))
    run_dir = tmp_path / "two"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_processes"] == 2  # two ranks formed the group: global batch = 2 x 32
    assert summary["epochs"] == 2 and summary["final_test_acc"] > 0.3
    assert len(list((run_dir / "checkpoints").glob("step_*"))) == 1 + 1  # the last two kept, one set
    assert not list((run_dir / "checkpoints").glob(".tmp*"))
    assert [p.name for p in run_dir.glob("metrics*")] == ["metrics.jsonl"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]  # written once, by the main process only
    assert all(r["test_n"] == 10000 for r in epochs)  # every test sample counted exactly once
    steps = [r for r in rows if r["kind"] == "step"]
    assert len(steps) == 2 * (2048 // 64)  # 32 steps an epoch of global batch 64
    with np.load(run_dir / "audit.npz") as a:  # both ranks' rows in one record: every row seen once
        assert a["seen"].shape == (1, 2048) and a["seen"].all()
        assert ((a["prob"] >= 0) & (a["prob"] <= 1)).all()
    assert sum(steps[-1]["class_counts"]) <= 64


def test_two_processes_with_gather_match_one_process_on_the_global_batch(tmp_path):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    run([sys.executable, "tests/dist_parity.py", str(one)])
    run(launch("tests/dist_parity.py", str(two), port=free_port()))
    a, b = torch.load(one), torch.load(two)
    assert a["world"] == 1 and b["world"] == 2
    for step in range(2):
        for k in ("loss", "ls", "ms", "sc"):
            assert float(b[f"{k}{step}"]) == pytest.approx(float(a[f"{k}{step}"]), rel=1e-5, abs=1e-6), (k, step)
        torch.testing.assert_close(b[f"grad{step}"], a[f"grad{step}"], rtol=1e-4, atol=1e-6)
    assert float(a["ms1"]) > 0 and float(a["sc1"]) > 0


def test_resume_across_world_sizes(tmp_path):
    three = ["optim.epochs=3", "train.stop_after=1"]
    train(load_config(RECIPE, [*SMALL, *three, f"train.out_dir={tmp_path}", "train.name=r"]))  # 1 process
    assert not (tmp_path / "r" / "summary.json").exists()
    p = run(launch(*train_cmd(tmp_path, "r", *three), "--resume", port=free_port()))  # 2 processes
    assert "global batch 64 (was 32): continuing at step 0 of epoch 1" in p.stdout
    summary = train(load_config(RECIPE, [*SMALL, "optim.epochs=3", f"train.out_dir={tmp_path}", "train.name=r"]),
                    resume=True)  # back to 1 process
    assert summary["epochs"] == 3 and summary["num_processes"] == 1
    hist = json.loads((tmp_path / "r" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    assert [h["step"] for h in hist] == [64, 64 + 32, 64 + 32 + 64]  # 1, 2, then 1 process(es)


def test_two_machines_on_loopback(tmp_path):
    port = free_port()
    procs = [subprocess.Popen(launch(*train_cmd(tmp_path, "nodes"), port=port, machines=2, machine_rank=r, processes=2),
                              cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    try:
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    summary = json.loads((tmp_path / "nodes" / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["epochs"] == 2


def test_two_ranks_train_through_unreadable_files(tmp_path, clothing_root):
    """Clothing1M-layout JPEGs, a fifth of them unreadable, two gloo ranks: the reference loader
    refills each dropped slot from the split, so both ranks' batches keep the size the loss's
    all-gather assumes and the run finishes, naming the files it skipped."""
    import shutil

    from pipelines.sources import clothing1m

    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root)
    split = clothing1m.load("noisy_train", root)
    for i in range(0, 160, 5):
        split.path(i).write_bytes(b"")
    p = run(launch("-m", "lacol.cli", "train", "--config", "configs/clothing1m.yaml", f"data.root={root}",
                   "data.decode_size=40", "data.image_size=32", "data.batch_size=16", "data.num_workers=1",
                   "data.eval_batch_size=32", "model.arch=small_cnn", "optim.epochs=1", "optim.milestones=[]",
                   "train.mixed_precision=no", "train.threads=1", "train.cpu=true", "train.progress=false",
                   "train.log_every=1", f"train.out_dir={tmp_path}", "train.name=bad", port=free_port()))
    summary = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["epochs"] == 1
    rows = [json.loads(line) for line in (tmp_path / "bad" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    assert len(steps) == 160 // 32  # 5 full global batches of 2 x 16
    assert "unreadable image" in p.stderr and any(str(split.path(i)) in p.stderr for i in range(0, 160, 5))
