"""A user's own data: a folder per class, or path,label lists; every backend reads them, synthetic
noise goes on top, lacol-convert converts them, lacol audit names their files."""
import json

import numpy as np
import pytest
from PIL import Image

from lacol.cli import main as lacol
from lacol.config import ConfigError, load_config
from lacol.train import train
from pipelines.sources import DatasetError, load_split
from tools.convert import main as convert

CLASSES = ("cat", "dog", "fox")


def _image(path, k, i):
    rng = np.random.default_rng(i)
    img = np.full((32, 32, 3), 40, dtype=np.uint8)
    img[4 + 8 * k: 12 + 8 * k] = 200  # a band per class, so one epoch learns something
    img = np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    for split, n in (("train", 24), ("test", 6)):
        for k, c in enumerate(CLASSES):
            for i in range(n):
                _image(root / split / c / ("sub" if i % 5 == 0 else "") / f"{i:03d}.jpg", k, 100 * k + i)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def own_list(tmp_path_factory, own_folder):
    root = tmp_path_factory.mktemp("list")
    (root / "imgs").symlink_to(own_folder / "train")
    (root / "test_imgs").symlink_to(own_folder / "test")
    rows = ["path,label,clean_label"]
    for k, c in enumerate(CLASSES):
        for i in range(24):
            rows.append(f"imgs/{c}/{'sub/' if i % 5 == 0 else ''}{i:03d}.jpg,{c},{c if i % 2 else ''}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "test.tsv").write_text("".join(f"test_imgs/{c}/{'sub/' if i % 5 == 0 else ''}{i:03d}.jpg\t{k}\n"
                                           for k, c in enumerate(CLASSES) for i in range(6)))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def test_a_folder_per_class_reads_as_a_split(own_folder):
    s = load_split("folder", "train", own_folder)
    assert s.classes == CLASSES and len(s) == 72 and s.extra["skipped"] == 1
    assert (s.clean_labels == -1).all() and np.bincount(s.labels).tolist() == [24, 24, 24]
    assert s.files[0].startswith("train/cat/") and (own_folder / s.files[0]).is_file()
    t = load_split("folder", "test", own_folder)
    assert (t.clean_labels == t.labels).all()
    with pytest.raises(DatasetError, match="val: no such folder"):
        load_split("folder", "val", own_folder)


def test_a_label_list_reads_as_a_split(own_list):
    s = load_split("list", "train", own_list)
    assert s.classes == CLASSES and len(s) == 72
    assert (s.clean_labels[1::2] == s.labels[1::2]).all() and (s.clean_labels[0::2] == -1).all()
    t = load_split("list", "test", own_list)
    assert len(t) == 18 and (t.clean_labels == t.labels).all()
    bad = own_list / "bad"
    bad.mkdir()
    (bad / "train.csv").write_text("a.jpg,cat\nb.jpg,wolf\n")
    (bad / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(DatasetError, match=r"train.csv:2: label 'wolf' is not a class"):
        load_split("list", "train", bad)


@pytest.mark.parametrize("kind", ["folder", "list"])
@pytest.mark.parametrize("backend", ["torch", "ffcv", "dali"])
def test_one_epoch_on_every_backend(kind, backend, own_folder, own_list, tmp_path):
    root = own_folder if kind == "folder" else own_list
    if backend == "ffcv":
        pytest.importorskip("ffcv")
        assert convert([kind, "--to", "ffcv", "--root", str(root), "--out", str(tmp_path / "ffcv"), "--size", "32",
                        "--workers", "1", "--no-progress"]) == 0
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
        assert convert([kind, "--to", "dali", "--root", str(root), "--out", str(tmp_path / "dali"), "--size", "32",
                        "--workers", "1", "--no-progress"]) == 0
    cfg = load_config(None, [f"data.dataset={kind}", f"data.root={root}", f"data.backend={backend}",
                             "data.noise=symmetric", "data.noise_rate=0.2", "data.batch_size=16", "data.image_size=32",
                             "data.decode_size=32", "data.num_workers=1", "data.eval_batch_size=16",
                             f"data.ffcv.dir={tmp_path / 'ffcv'}", f"data.dali.dir={tmp_path / 'dali'}",
                             "model.arch=small_cnn", "model.width=8", "optim.epochs=2", "loss.warmup_epochs=1",
                             "train.threads=1", "train.progress=false", f"train.out_dir={tmp_path}", "train.name=own"])
    summary = train(cfg)
    assert summary["epochs"] == 2 and 0 <= summary["final_test_acc"] <= 1
    run = tmp_path / "own"
    assert json.loads((run / "dataset.json").read_text())["classes"] == list(CLASSES)
    if backend == "torch":  # the audit names the user's files
        assert lacol(["audit", "--run", str(run), "--top", "3", "--out", str(tmp_path / "issues.csv")]) == 0
        assert f"{'train' if kind == 'folder' else 'imgs'}/" in (tmp_path / "issues.csv").read_text()


def test_the_config_asks_the_dataset_entry():
    with pytest.raises(ConfigError, match="clothing1m's labels are already noisy"):
        load_config(None, ["data.dataset=clothing1m", "data.noise=symmetric"])
    with pytest.raises(ConfigError, match="'folder', 'list'"):
        load_config(None, ["data.dataset=imagenet"])
