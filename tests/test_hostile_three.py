"""Round three of the hostile list, the one-line cases (issue 25, items 12 and 13): each input
that gave a traceback or a silent wrong result is one line naming the file or key."""
import json

import pytest

from lacol.cli import main as lacol

TINY = ["data.train_subset=256", "data.batch_size=64", "data.noise=symmetric", "data.noise_rate=0.2", "data.val_size=0",
        "optim.epochs=2", "loss.warmup_epochs=1", "train.threads=1", "train.progress=false"]


def _one_line(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words) and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("h3")
    assert lacol(["train", *TINY, f"train.out_dir={out}", "train.name=r"]) == 0
    return out / "r"


def test_predict_on_a_decompression_bomb_is_one_line(run, tmp_path, capsys):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # a header saying 30000 x 30000 (900 MP, over PIL's limit): a 60-byte file
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    assert lacol(["predict", "--run", str(run), str(bomb)]) == 2
    _one_line(capsys, str(bomb), "DecompressionBomb")


def test_a_cut_audit_record_is_one_line(run, tmp_path, capsys):
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in ("config.yaml", "dataset.json"):
        (cut / f).write_bytes((run / f).read_bytes())
    data = (run / "audit.npz").read_bytes()
    (cut / "audit.npz").write_bytes(data[: len(data) // 2])
    assert lacol(["audit", "--run", str(cut)]) == 2
    _one_line(capsys, "audit.npz", "not a complete audit record")


def test_a_state_epoch_past_the_run_is_refused(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "r"
    shutil.copytree(run, copy)
    (ckpt,) = sorted((copy / "checkpoints").glob("step_*"))[-1:]
    state = json.loads((ckpt / "state.json").read_text())
    (ckpt / "state.json").write_text(json.dumps({**state, "epoch": 1000}))
    assert lacol(["train", *TINY, f"train.out_dir={tmp_path}", "train.name=r", "--resume"]) == 2
    _one_line(capsys, "state.json", "epoch 1000")


def test_file_data_with_no_workers_and_a_seed_twice(tmp_path, capsys, clothing_root):
    assert lacol(["train", "data.dataset=clothing1m", f"data.root={clothing_root}", "data.noise=none",
                  "data.num_workers=0", "data.val_size=0", "data.train_subset=0", "model.arch=small_cnn", "data.image_size=28", "data.decode_size=32",
                  "optim.epochs=1", "loss.warmup_epochs=1", "train.progress=false", f"train.out_dir={tmp_path}"]) == 2
    _one_line(capsys, "data.num_workers >= 1")
    assert lacol(["compare", "--seeds", "0,0", *TINY]) == 2
    _one_line(capsys, "--seeds", "each seed once")


def test_yaml_nested_too_deep_or_self_referential(tmp_path, capsys):
    deep = tmp_path / "deep.yaml"
    deep.write_text("data: " + "[" * 5000 + "]" * 5000 + "\n")
    alias = tmp_path / "alias.yaml"
    alias.write_text("a: &x [*x]\n")
    for f in (deep, alias):
        assert lacol(["train", "--config", str(f)]) == 2
        _one_line(capsys, str(f))


def test_audit_refuses_a_key_list_changed_since_training(clothing_root, tmp_path, capsys):
    """Item 10: the audit names the files the run trained on, or refuses."""
    import shutil

    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root)
    assert lacol(["train", "data.dataset=clothing1m", f"data.root={root}", "data.noise=none", "data.val_size=0",
                  "data.train_subset=0", "model.arch=small_cnn", "model.width=8", "data.image_size=28",
                  "data.decode_size=32", "data.batch_size=16", "data.num_workers=1", "optim.epochs=2",
                  "loss.warmup_epochs=1", "train.threads=1", "train.progress=false", f"train.out_dir={tmp_path}",
                  "train.name=c"]) == 0
    assert lacol(["audit", "--run", str(tmp_path / "c"), "--top", "0"]) == 0
    capsys.readouterr()
    keys = root / "noisy_train_key_list.txt"
    lines = keys.read_text().splitlines()
    keys.write_text("\n".join(reversed(lines)) + "\n")
    assert lacol(["audit", "--run", str(tmp_path / "c"), "--top", "0"]) == 2
    _one_line(capsys, "noisy_train_key_list.txt", "not the list")
    keys.write_text("\n".join(lines[:40]) + "\n")
    assert lacol(["audit", "--run", str(tmp_path / "c"), "--top", "0"]) == 2
    _one_line(capsys, "noisy_train_key_list.txt", "lists 40 files")
