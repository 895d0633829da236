"""Files a user hands us that try to run code: each payload would create a marker file if it ran."""
import pickle

import numpy as np
import pytest
import torch

from pipelines import noise
from pipelines.sources import DatasetError, cifar
from pipelines.safe_pickle import UnsafePickle, load_file


class Payload:
    """Unpickling this calls os.system("touch MARKER")."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_the_payload_runs_under_plain_pickle(tmp_path):
    """The control: plain pickle.loads runs it, so the tests below mean something."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


def test_safe_unpickler_refuses_code_and_reads_arrays(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"a": Payload(marker)}))
    with pytest.raises(UnsafePickle, match="posix.system|os.system|nt.system"):
        load_file(path)
    assert not marker.exists()
    data = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2], "f": np.float32(2.5)}
    for protocol in (2, 4, 5):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        back = load_file(path, encoding="bytes")
        assert np.array_equal(back[b"data"], data[b"data"]) and back["labels"] == [1, 2]


def test_a_cifar_batch_with_a_payload_is_refused(tmp_path):
    from conftest import write_cifar

    root = write_cifar(tmp_path / "c", "cifar10")
    assert len(cifar.load("cifar10", "train", root)) == 60  # the release format still reads
    marker = tmp_path / "ran"
    batch = next(root.rglob("data_batch_1"))
    batch.write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}))
    with pytest.raises(DatasetError, match="not a CIFAR python-release file"):
        cifar.load("cifar10", "train", root)
    assert not marker.exists()


def test_a_cifar_n_file_with_a_payload_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save({"worse_label": Payload(marker)}, path)  # a torch.save zip, as the release
    with pytest.raises(DatasetError, match="not a CIFAR-N label file"):
        noise.load_cifar_n(path, "worse_label", 10)
    path.write_bytes(pickle.dumps({"worse_label": Payload(marker)}))  # a plain pickle
    with pytest.raises(DatasetError, match="not a CIFAR-N label file"):
        noise.load_cifar_n(path, "worse_label", 10)
    assert not marker.exists()


def test_resuming_a_run_folder_runs_no_code_from_it(tmp_path):
    """Checkpoints hold safetensors and JSON only; pickles planted in one (accelerate's file names)
    are never opened, and a checkpoint of the older pickled format is refused by name."""
    from conftest import RECIPE, TRAIN_SMALL as SMALL

    from lacol.config import load_config
    from lacol.train import train

    common = [*SMALL, "optim.epochs=2", f"train.out_dir={tmp_path}", "train.name=r"]
    train(load_config(RECIPE, [*common, "train.stop_after=1"]))
    (ckpt,) = (tmp_path / "r" / "checkpoints").glob("step_*")
    assert {p.suffix for p in ckpt.iterdir()} == {".safetensors", ".json"}
    marker = tmp_path / "ran"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin"):
        (ckpt / name).write_bytes(pickle.dumps(Payload(marker)))
    assert train(load_config(RECIPE, common), resume=True)["epochs"] == 2
    assert not marker.exists()
    (ckpt,) = sorted((tmp_path / "r" / "checkpoints").glob("step_*"))[-1:]
    (ckpt / "state.json").unlink()
    (ckpt / "random_states_0.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(FileNotFoundError, match="older checkpoint format"):  # a finished run resumes from it too
        train(load_config(RECIPE, common), resume=True)
    assert not marker.exists()


def test_resume_skips_a_damaged_checkpoint_and_says_which(tmp_path, capsys):
    """A newest checkpoint with a truncated file (a full disk, a copy cut short) is reported and
    the previous one loaded; the run then ends as an uninterrupted one."""
    from conftest import RECIPE, TRAIN_SMALL as SMALL

    from lacol.config import load_config
    from lacol.train import train

    common = [*SMALL, "optim.epochs=3", "train.keep_checkpoints=3", f"train.out_dir={tmp_path}"]
    whole = train(load_config(RECIPE, [*common, "train.name=whole"]))
    train(load_config(RECIPE, [*common, "train.name=r", "train.stop_after=2"]))
    first, newest = sorted((tmp_path / "r" / "checkpoints").glob("step_*"))
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    resumed = train(load_config(RECIPE, [*common, "train.name=r"]), resume=True)
    out = capsys.readouterr().out
    assert f"{newest} cannot be read" in out and f"continuing from {first.name}" in out
    assert resumed["final_test_acc"] == whole["final_test_acc"]
    for ckpt in (tmp_path / "r" / "checkpoints").glob("step_*"):  # none readable: an error naming each
        (ckpt / "state.json").write_text("{")
    with pytest.raises(FileNotFoundError, match="no readable checkpoint.*JSONDecodeError"):
        train(load_config(RECIPE, [*common, "train.name=r"]), resume=True)


def test_config_values_that_cannot_be_right_are_errors():
    from lacol.config import ConfigError, load_config

    for bad, words in (("optim.lr=nan", "finite"), ("loss.tau=inf", "finite"), ("loss.lambda_ms=nan", "finite"),
                       ("optim.lr=-0.1", ">= 0"), ("train.name=../elsewhere", "plain folder name"),
                       ("train.name=/tmp/x", "plain folder name"), ("train.threads=-1", ">= 0"),
                       ("data.eval_batch_size=0", ">= 1"), ("data.image_size=0", ">= 1"),
                       ("train.log_every=0", ">= 1")):
        with pytest.raises(ConfigError, match=words):
            load_config(None, [bad])


def test_a_kept_noise_file_must_match_the_config(tmp_path):
    """A re-run of a folder with other noise settings is an error naming both, not a silent
    training on the old labels."""
    from lacol.config import load_config
    from pipelines.build import train_split

    d = load_config(None, ["data.noise=symmetric", "data.noise_rate=0.2"]).data
    path = tmp_path / "noise.npz"
    first = train_split(d, path)
    assert np.array_equal(train_split(d, path).labels, first.labels)  # kept and reused
    for change, words in (("data.noise_rate=0.4", "rate 0.2 .config: 0.4"), ("data.noise_seed=3", "seed 0"),
                          ("data.noise=asymmetric", "kind 'symmetric'")):
        other = load_config(None, ["data.noise=symmetric", "data.noise_rate=0.2", change]).data
        with pytest.raises(DatasetError, match=words):
            train_split(other, path)


def test_metrics_files_are_strict_json(tmp_path):
    import json

    from lacol.run import strict

    assert json.dumps(strict({"a": float("nan"), "b": [1.0, float("inf")], "c": "x"})) == \
        '{"a": null, "b": [1.0, null], "c": "x"}'


def _odd_entries(clothing_root, tmp_path):
    """A Clothing1M copy whose noisy_train names, at row 3, a symlink out of the root to a real
    image (followed: images kept on another disk), at row 5 a FIFO named .jpg, at row 7 a symlink
    to a FIFO (both refused, never opened)."""
    import os
    import shutil

    from pipelines.sources import clothing1m

    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root)
    split = clothing1m.load("noisy_train", root)
    outside = tmp_path / "outside.jpg"
    shutil.copy(split.path(0), outside)
    split.path(3).unlink()
    split.path(3).symlink_to(outside)
    split.path(5).unlink()
    os.mkfifo(split.path(5))
    os.mkfifo(tmp_path / "pipe")
    split.path(7).unlink()
    split.path(7).symlink_to(tmp_path / "pipe")
    return root


def test_entries_that_are_not_regular_files_are_never_read(clothing_root, tmp_path):
    """The reference loader skips and names them, without hanging on the FIFOs; the symlink out
    of the root leads to a regular file and is read."""
    from pipelines.sources import clothing1m
    from pipelines.sharding import Shard
    from pipelines.torch_loader import TorchLoader
    from pipelines.views import lacol_views

    split = clothing1m.load("noisy_train", _odd_entries(clothing_root, tmp_path))
    loader = TorchLoader(split, lacol_views(64), Shard(batch_size=32), decode_size=72, num_workers=1)
    assert sum(len(b) for b in loader) == 160  # refilled from the split
    assert set(loader.skipped) == {str(split.path(i)) for i in (5, 7)}


def test_the_converter_reports_them_and_stores_none(clothing_root, tmp_path):
    pytest.importorskip("ffcv")
    import json

    from pipelines.sources import clothing1m
    from tools.beton import convert_split

    split = clothing1m.load("noisy_train", _odd_entries(clothing_root, tmp_path))
    out = tmp_path / "out" / "x.beton"
    r = convert_split(split, "clothing1m", "noisy_train", out, workers=1, max_bad=0.1, progress=False)
    assert r.num_samples == 160 - 2
    report = json.loads((tmp_path / "out" / "x.report.json").read_text())
    reasons = {s["index"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {5, 7} and all("not a regular file" in v for v in reasons.values())


def test_one_path_rule_for_keys(clothing_root, tmp_path):
    """Issue 25, items 6, 9, 13: a key with '..' or an absolute path is refused where it is
    listed (so no backend, DALI's list check included, can be handed a file outside the root); one
    key spelled three ways is one key (a second listing is named with both lines); a symlinked
    images/ folder (another disk) trains and converts."""
    import shutil

    from pipelines.formats import read_file_list
    from pipelines.sources import DatasetError, clothing1m

    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root, symlinks=True)
    keys = root / "noisy_train_key_list.txt"
    lines = keys.read_text().splitlines()
    for bad, words in (("../secret.jpg", "climbs out with '..'"), ("/etc/passwd", "absolute path"),
                       ("images/x/../../../secret.jpg", "climbs out")):
        keys.write_text("\n".join([bad, *lines[1:]]) + "\n")
        with pytest.raises(DatasetError, match=f"noisy_train_key_list.txt:1: key .*{words}"):
            clothing1m.load("noisy_train", root)
    first = lines[0]
    keys.write_text("\n".join([first, "./" + first, *lines[1:]]) + "\n")
    with pytest.raises(DatasetError, match=r"noisy_train_key_list.txt:2: key '.*' is listed again \(first at line 1\)"):
        clothing1m.load("noisy_train", root)
    keys.write_text("\n".join(["./" + first, *lines[1:]]) + "\n")  # labels are found for the normal spelling
    split = clothing1m.load("noisy_train", root)
    assert split.files[0] == first
    # a DALI list handed over naming a file outside the root matches no row: refused
    bad_list = tmp_path / "clothing1m_noisy_train.dali.txt"
    bad_list.write_text("../secret.jpg 0\n")
    with pytest.raises(DatasetError, match="does not name a file"):
        read_file_list(bad_list, split)
    # images/ on another disk: the folder is a symlink
    elsewhere = tmp_path / "disk2" / "images"
    shutil.move(str(root / "images"), elsewhere)
    (root / "images").symlink_to(elsewhere)
    from pipelines.sharding import Shard
    from pipelines.torch_loader import TorchLoader
    from pipelines.views import lacol_views

    split = clothing1m.load("noisy_train", root)
    loader = TorchLoader(split, lacol_views(32), Shard(batch_size=32), decode_size=36, num_workers=1)
    assert sum(len(b) for b in loader) == 160 and loader.skipped == []


def _copy_lists(clothing_root, tmp_path):
    """A Clothing1M root whose text files are copies (images linked), to damage one at a time."""
    import shutil

    root = tmp_path / "c1m"
    root.mkdir()
    (root / "images").symlink_to(clothing_root / "images")
    for f in clothing_root.glob("*.txt"):
        shutil.copy(f, root / f.name)
    return root


def test_label_lists_that_are_wrong_say_where(clothing_root, tmp_path):
    """Conflicting labels for one key, a key listed twice in a split, a byte-order mark, non-UTF-8
    text and a 23-digit label: an error naming the file and line (or the BOM read as text)."""
    from pipelines.sources import clothing1m
    from pipelines.sources.base import DatasetError

    root = _copy_lists(clothing_root, tmp_path)
    kv = root / "noisy_label_kv.txt"
    lines = kv.read_text().splitlines()
    key, label = lines[0].split()
    kv.write_text("\n".join([*lines, f"{key} {label}"]) + "\n")  # the same label again: harmless
    assert len(clothing1m.load("noisy_train", root)) == 160
    kv.write_text("\n".join([*lines, f"{key} {(int(label) + 1) % 14}"]) + "\n")
    with pytest.raises(DatasetError, match=rf"noisy_label_kv.txt:{len(lines) + 1}: key '{key}' is labelled .* line 1"):
        clothing1m.load("noisy_train", root)
    kv.write_text("\n".join(lines) + "\n")
    keys = root / "noisy_train_key_list.txt"
    klines = keys.read_text().splitlines()
    keys.write_text("\n".join([*klines, klines[2]]) + "\n")
    with pytest.raises(DatasetError, match=rf"noisy_train_key_list.txt:{len(klines) + 1}: .* listed again .*line 3"):
        clothing1m.load("noisy_train", root)
    keys.write_bytes(b"\xef\xbb\xbf" + ("\n".join(klines) + "\n").encode())  # a BOM (Windows editors)
    assert clothing1m.load("noisy_train", root).files[0] == klines[0]
    keys.write_bytes(("\n".join(klines) + "\n").encode() + b"\xff\xfe bad\n")
    with pytest.raises(DatasetError, match="noisy_train_key_list.txt: not UTF-8"):
        clothing1m.load("noisy_train", root)
    keys.write_text("\n".join(klines) + "\n")
    kv.write_text("\n".join([*lines[:-1], f"{lines[-1].split()[0]} 12345678901234567890123"]) + "\n")
    with pytest.raises(DatasetError, match=rf"noisy_label_kv.txt:{len(lines)}: .*expected"):
        clothing1m.load("noisy_train", root)


def test_fashion_mnist_files_that_are_wrong_say_which(tmp_path):
    """A cut .gz, a header longer than the file, labels out of range, swapped files."""
    import gzip
    import shutil

    from pipelines.sources import fashion_mnist
    from pipelines.sources.base import DatasetError

    src = fashion_mnist.DEBIAN_ROOT
    root = tmp_path / "fm"
    root.mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        f = fashion_mnist._find(src, stem)
        shutil.copy(f, root / f.name)
    images = fashion_mnist._find(root, "t10k-images-idx3-ubyte")
    labels = fashion_mnist._find(root, "t10k-labels-idx1-ubyte")
    raw_labels = gzip.decompress(labels.read_bytes()) if labels.suffix == ".gz" else labels.read_bytes()
    assert len(fashion_mnist.load("test", root)) == 10000
    good = images.read_bytes()
    images.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.*(cannot be read|truncated)"):
        fashion_mnist.load("test", root)
    images.write_bytes(good)
    bad = bytearray(raw_labels)
    bad[8 + 17] = 12  # row 17
    labels.write_bytes(gzip.compress(bytes(bad)) if labels.suffix == ".gz" else bytes(bad))
    with pytest.raises(DatasetError, match="label 12 at row 17.*0..9"):
        fashion_mnist.load("test", root)
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00\x00") if labels.suffix == ".gz" else b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DatasetError, match="shorter than its own header"):
        fashion_mnist.load("test", root)


def test_one_line_errors_for_a_bad_recipe_and_bad_images(tmp_path, capsys):
    """A YAML syntax error names the file, line and column; predict on text, an empty file or a
    folder names the file; all exit 2 without a traceback."""
    from lacol.cli import main as lacol

    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  batch_size: [1\n")
    assert lacol(["train", "--config", str(bad)]) == 2
    assert f"{bad}:3:1: not valid YAML" in capsys.readouterr().err
    bad.write_bytes(b"data:\n  dataset: \xff\xfe\n")
    assert lacol(["train", "--config", str(bad)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    text, empty = tmp_path / "notes.jpg", tmp_path / "empty.png"
    text.write_text("not an image")
    empty.write_bytes(b"")
    from conftest import RECIPE, TRAIN_SMALL as SMALL

    from lacol.config import load_config
    from lacol.train import train

    train(load_config(RECIPE, [*SMALL, "optim.epochs=1", f"train.out_dir={tmp_path}", "train.name=run"]))
    capsys.readouterr()
    for f in (text, empty, tmp_path):
        assert lacol(["predict", "--run", str(run), str(f)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lacol predict: ") and str(f) in err and "Traceback" not in err


def test_bad_pretrained_files_too_large_a_batch_and_an_unwritable_out_dir_are_one_line(tmp_path, capsys):
    """A cut or foreign ``model.pretrained`` file, a batch larger than the data, and an output
    folder that cannot be written (here a file where the folder should be): exit 2, one line
    naming the file or key, no traceback."""
    from conftest import RECIPE, TRAIN_SMALL as SMALL

    from lacol.cli import main as lacol

    good = {"conv1.weight": torch.zeros(2, 2)}
    from safetensors.torch import save_file

    save_file(good, str(tmp_path / "w.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:40])
    torch.save(good, tmp_path / "w.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "w.pth").read_bytes()[:100])
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    (tmp_path / "afile").write_text("")
    base = ["train", "--config", str(RECIPE), *SMALL, f"train.out_dir={tmp_path}"]
    cases = {"model.pretrained=" + str(tmp_path / "cut.safetensors"): "not a readable .safetensors file",
             "model.pretrained=" + str(tmp_path / "cut.pth"): "not a readable .pth file",
             "model.pretrained=" + str(tmp_path / "list.pth"): "holds list, not a dict of named tensors",
             "data.batch_size=100000": "data.batch_size=100000 x 1 processes exceeds",
             f"train.out_dir={tmp_path / 'afile'}": "afile/x: Not a directory"}
    for override, message in cases.items():
        assert lacol([*base, "train.name=x", override]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lacol train: ") and message in err and "Traceback" not in err, err
        assert "weights_only set to `False`" not in err  # never torch's advice to run the file's code


def test_bench_on_a_bad_root_is_one_line(tmp_path, capsys):
    from tools.bench import main as bench

    assert bench(["loader", "--root", str(tmp_path / "none"), "--backends", "torch", "--batches", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lacol-bench loader: ") and "category_names_eng.txt" in err and "Traceback" not in err
    from tools.convert import main as convert

    (tmp_path / "afile").write_text("")
    assert convert(["fashion_mnist", "--to", "ffcv", "--out", str(tmp_path / "afile"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lacol-convert: ") and "afile" in err and "writable --out" in err


def test_eval_and_predict_on_damaged_weights_are_one_line(tmp_path, capsys):
    from conftest import RECIPE, TRAIN_SMALL as SMALL

    from lacol.cli import main as lacol
    from lacol.config import load_config
    from lacol.train import train

    train(load_config(RECIPE, [*SMALL, "optim.epochs=1", "loss.warmup_epochs=1", f"train.out_dir={tmp_path}",
                               "train.name=run"]))
    w = tmp_path / "run" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    capsys.readouterr()
    assert lacol(["eval", "--run", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lacol eval: ") and "model.safetensors: cannot be loaded" in err and "Traceback" not in err
