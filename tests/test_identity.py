"""A run folder is one experiment (issue 25, items 2 and 3): continuing or reusing a folder with
another value of a key that can change the result is refused, naming every such key and both
values, before anything in the folder is written; keys that cannot (progress, threads, logging,
workers, paths) may differ."""
import json

from lacol.cli import main as lacol

TINY = ["data.train_subset=256", "data.batch_size=64", "data.noise=symmetric", "data.noise_rate=0.2", "data.val_size=0",
        "optim.epochs=2", "loss.warmup_epochs=1", "train.threads=1", "train.progress=false", "train.stop_after=1"]


def test_resume_and_compare_refuse_another_experiment(tmp_path, capsys):
    run = tmp_path / "r"
    base = ["train", *TINY, f"train.out_dir={tmp_path}", "train.name=r"]
    assert lacol(base) == 0  # one epoch of two, checkpointed
    before = (run / "config.yaml").read_text()
    for extra, keys in ((["model.width=32"], ["model.width: 16 in the folder, 32 asked"]),
                        (["optim.lr=2.0", "train.seed=3"], ["optim.lr: 0.05", "train.seed: 0 in the folder, 3 asked"]),
                        (["optim.epochs=3"], ["optim.epochs: 2 in the folder, 3 asked"]),
                        (["data.train_subset=300"], ["data.train_subset: 256 in the folder, 300 asked"])):
        assert lacol([*base, *extra, "--resume"]) == 2
        err = capsys.readouterr().err
        assert "holds another experiment" in err and all(k in err for k in keys), err
        assert (run / "config.yaml").read_text() == before  # nothing written
    # what cannot change the result may: threads, progress, logging
    assert lacol([*base, "train.log_every=7", "train.stop_after=0", "--resume"]) == 0
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2
    assert lacol(["compare", "--methods", "lacol", "--seeds", "0", "--fixed-noise", "--reuse", *TINY[:-1],
                  f"train.out_dir={tmp_path}", "train.name=r", "optim.lr=2.0"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_a_broken_config_in_a_run_folder_is_one_line(tmp_path, capsys):
    run = tmp_path / "r"
    base = ["train", *TINY, f"train.out_dir={tmp_path}", "train.name=r"]
    assert lacol(base) == 0
    for text in ("", "[1, 2]\n", "data: 3\n", "a: &x [*x]\n", "data: " + "[" * 5000 + "]" * 5000 + "\n"):
        (run / "config.yaml").write_text(text)
        assert lacol([*base, "--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "config.yaml" in err[0], err
