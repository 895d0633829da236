"""One writer per run folder (issue 25, item 4): a second `lacol train` on a folder in use is
refused, naming the holder's PID, before it writes anything; the lock dies with its process."""
import os
import signal
import subprocess
import sys

from lacol.cli import main as lacol

TINY = ["data.train_subset=256", "data.batch_size=64", "data.noise=symmetric", "data.noise_rate=0.2", "optim.epochs=1",
        "loss.warmup_epochs=1", "train.threads=1", "train.progress=false", "data.val_size=0"]


def test_a_folder_in_use_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"f = open({str(run / '.lock')!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.write(str(os.getpid())); "
        "f.flush(); print('held', flush=True); time.sleep(120)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["train", *TINY, f"train.out_dir={tmp_path}", "train.name=r"]
        assert lacol(args) == 2
        err = capsys.readouterr().err
        assert f"in use by process {holder.pid}" in err and err.count("\n") == 1
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert lacol(args) == 0  # the kernel dropped the killed holder's lock
    assert (run / "summary.json").is_file() and (run / ".lock").read_text().strip() == str(os.getpid())
