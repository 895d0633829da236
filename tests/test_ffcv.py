"""The FFCV backend and the .beton converter, on real images: Clothing1M-layout JPEGs built from
Fashion-MNIST at test time, and Fashion-MNIST itself."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("ffcv")

from pipelines.views import lacol_views  # noqa: E402
from pipelines.ffcv_loader import FfcvEvalLoader, FfcvLoader  # noqa: E402
from pipelines.sources import DatasetError, clothing1m, fashion_mnist  # noqa: E402
from pipelines.decode import decode_square  # noqa: E402
from pipelines.torch_loader import TorchLoader  # noqa: E402
from pipelines.sharding import Shard  # noqa: E402
from pipelines.formats import beton_path  # noqa: E402
from tools.beton import convert_dataset, convert_split  # noqa: E402

from conftest import check_batch as _check_batch  # noqa: E402
from conftest import RECIPE  # noqa: E402


@pytest.fixture(scope="module")
def betons(clothing_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ffcv")
    convert_dataset("clothing1m", clothing_root, out, workers=2, progress=False)
    return out


def _read_all(path):
    """Every stored sample in file order, read through FFCV's own loader."""
    from ffcv.loader import Loader, OrderOption

    loader = Loader(str(path), batch_size=64, num_workers=1, order=OrderOption.SEQUENTIAL, drop_last=False)
    cols = [np.concatenate([np.asarray(b[k]).copy() for b in loader]) for k in range(4)]
    return cols[0], cols[1][:, 0], cols[2][:, 0], cols[3][:, 0]


@pytest.mark.parametrize("name", ["noisy_train", "clean_train", "clean_val", "clean_test"])
def test_clothing_round_trip(clothing_root, betons, name):
    split = clothing1m.load(name, clothing_root)
    path = beton_path(betons, "clothing1m", name)
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["num_samples"] == len(split) and meta["image"]["storage"] == "jpeg" and meta["image"]["quality"] == 90
    images, labels, clean, index = _read_all(path)
    assert sorted(index) == list(range(len(split)))
    assert (labels == split.labels[index]).all() and (clean == split.clean_labels[index]).all()
    assert images.shape == (len(split), 256, 256, 3)
    for j in range(0, len(split), 7):  # pixels match the source within JPEG tolerance
        src = decode_square(split.path(index[j]), 256).astype(np.float32)
        err = np.abs(images[j].astype(np.float32) - src)
        assert err.mean() < 2.5 and np.percentile(err, 99) < 16


def test_fashion_mnist_round_trip_is_exact(tmp_path):
    split = fashion_mnist.load("test")
    (r,) = convert_dataset("fashion_mnist", None, tmp_path, ["test"], progress=False)
    assert r.num_samples == 10_000 and not r.skipped
    images, labels, clean, index = _read_all(r.path)
    assert (index == np.arange(10_000)).all()
    assert np.array_equal(images, split.images) and (labels == split.labels).all() and (clean == split.labels).all()


@pytest.mark.parametrize("order", ["quasi_random", "random"])
def test_every_index_once_per_epoch_per_rank_set(clothing_root, betons, order):
    split = clothing1m.load("noisy_train", clothing_root)
    path = beton_path(betons, "clothing1m", "noisy_train")
    per_rank = []
    for rank in range(2):
        loader = FfcvLoader(split, path, lacol_views(64), Shard(batch_size=16, rank=rank, world=2), order=order)
        assert len(loader) == 5
        batches = list(loader)
        assert len(batches) == 5
        for b in batches:
            _check_batch(b, split, 64, 3)
            assert not torch.equal(b.strong, b.strong2) and not torch.equal(b.weak, b.strong)
        per_rank.append(torch.cat([b.index for b in batches]).tolist())
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(160))
    # the next epoch has another order; the same epoch again the same one
    loader.set_epoch(1)
    first = next(iter(loader)).index.tolist()
    assert first != per_rank[1][:16]
    loader.set_epoch(0)
    assert next(iter(loader)).index.tolist() == per_rank[1][:16]


def test_random_order_is_the_reference_backends(clothing_root, betons):
    split = clothing1m.load("noisy_train", clothing_root)
    ffcv = FfcvLoader(split, beton_path(betons, "clothing1m", "noisy_train"), lacol_views(64),
                      Shard(batch_size=32, seed=3), order="random")
    ref = TorchLoader(split, lacol_views(64), Shard(batch_size=32, seed=3), decode_size=256, num_workers=1)
    for a, b in zip(ffcv, ref):
        assert torch.equal(a.index, b.index) and torch.equal(a.label, b.label)


def test_resume_mid_epoch_gives_the_same_batches(clothing_root, betons):
    split = clothing1m.load("noisy_train", clothing_root)
    loader = FfcvLoader(split, beton_path(betons, "clothing1m", "noisy_train"), lacol_views(64), Shard(batch_size=32))
    loader.set_epoch(2)
    full = [(b.index.clone(), b.strong.clone()) for b in loader]  # batches live in a reused ring: copy
    loader.set_epoch(2, start=3)
    tail = [(b.index.clone(), b.strong.clone()) for b in loader]
    assert len(tail) == 2
    for (i, s), (j, t) in zip(full[3:], tail):
        assert torch.equal(i, j) and torch.equal(s, t)


def test_parity_with_reference_backend(clothing_root, betons):
    """Same shapes, dtype and normalisation; per-channel view statistics over an epoch agree. With
    the random order and the same seed, both backends draw the same views of the same samples:
    they differ only by the stored JPEG's re-encoding."""
    split = clothing1m.load("noisy_train", clothing_root)
    ffcv = FfcvLoader(split, beton_path(betons, "clothing1m", "noisy_train"), lacol_views(224), Shard(batch_size=32),
                      order="random")
    ref = TorchLoader(split, lacol_views(224), Shard(batch_size=32), decode_size=256, num_workers=2)

    def stats(loader):
        acc = {k: [] for k in ("weak", "strong", "strong2")}
        for b in loader:
            for k in acc:
                v = getattr(b, k)
                assert v.shape == (32, 3, 224, 224) and v.dtype == torch.float32
                assert v.is_contiguous(memory_format=torch.channels_last)
                acc[k].append(torch.stack([v.mean((0, 2, 3)), v.pow(2).mean((0, 2, 3))]))
        out = {}
        for k, s in acc.items():
            m, m2 = torch.stack(s).mean(0)
            out[k] = (m, (m2 - m * m).sqrt())
        return out

    a, b = stats(ffcv), stats(ref)
    for k in a:
        # normalised units (std ~1). FFCV decodes with libjpeg-turbo's fast integer IDCT
        # (TJFLAG_FASTDCT, fixed in its C extension): red and blue come out ~1.2 levels darker
        # than Pillow's decode of the same file (measured; green is unbiased), 0.02 here.
        assert (a[k][0] - b[k][0]).abs().max() < 0.03, k
        assert (a[k][1] - b[k][1]).abs().max() < 0.01, k


def test_eval_loader_covers_every_sample_once(clothing_root, betons):
    split = clothing1m.load("clean_test", clothing_root)
    seen = []
    for rank in range(3):
        loader = FfcvEvalLoader(split, beton_path(betons, "clothing1m", "clean_test"),
                                Shard(batch_size=8, rank=rank, world=3), view_size=224)
        batches = list(loader)
        assert len(batches) == len(loader)
        for b in batches:
            assert b.image.shape[1:] == (3, 224, 224)
            assert (b.label.numpy() == split.labels[b.index.numpy()]).all()
        seen += torch.cat([b.index for b in batches]).tolist()
    assert len(seen) == 33 and set(seen) == set(range(32))  # padded to 11 per rank


def _bad_images(clothing_root, tmp_path):
    """A copy of the sample data with one image of each awkward kind."""
    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root)
    split = clothing1m.load("noisy_train", root)
    p = split.path
    good = Image.open(p(0)).convert("RGB")
    p(1).write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())  # corrupt
    p(2).write_bytes(p(2).read_bytes()[:1500])  # truncated
    p(3).write_bytes(b"")  # zero bytes
    good.convert("CMYK").save(p(4), "JPEG")
    good.convert("L").save(p(5), "JPEG")
    good.save(p(6), "PNG")  # PNG data in a .jpg file
    return root, split


def test_bad_images_are_converted_or_skipped_and_reported(clothing_root, tmp_path):
    root, split = _bad_images(clothing_root, tmp_path)
    out = tmp_path / "out" / "x.beton"
    r = convert_split(split, "clothing1m", "noisy_train", out, workers=2, max_bad=0.05, progress=False)
    report = json.loads((tmp_path / "out" / "x.report.json").read_text())
    assert r.num_samples == 157 and report["written"] == 157
    skipped = {s["index"]: s["reason"] for s in report["skipped"]}
    assert sorted(skipped) == [1, 2, 3] and skipped[3] == "zero-byte file" and "truncated" in skipped[2]
    converted = {c["index"]: c["note"] for c in report["converted"]}
    assert sorted(converted) == [4, 5, 6]
    assert "CMYK" in converted[4] and "L converted" in converted[5] and "PNG data" in converted[6]
    images, _, _, index = _read_all(out)
    assert sorted(index) == sorted(set(range(160)) - {1, 2, 3})
    gray = images[list(index).index(5)]
    assert np.abs(gray[..., 0].astype(int) - gray[..., 2]).max() <= 8  # gray stays gray in RGB
    # the loader runs over what is there and counts the rest
    loader = FfcvLoader(split, out, lacol_views(32), Shard(batch_size=16), order="random")
    assert sorted(loader.skipped) == sorted(split.files[i] for i in (1, 2, 3))
    assert sum(len(b) for b in loader) == 144


def test_too_many_bad_images_fail_without_a_beton(clothing_root, tmp_path):
    root, split = _bad_images(clothing_root, tmp_path)
    out = tmp_path / "out" / "x.beton"
    with pytest.raises(DatasetError, match="max-bad"):
        convert_split(split, "clothing1m", "noisy_train", out, workers=2, max_bad=0.01, progress=False)
    assert (tmp_path / "out" / "x.report.json").is_file()
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["x.report.json"]


def test_interrupted_conversion_leaves_nothing_that_looks_complete(clothing_root, tmp_path, monkeypatch):
    from ffcv.writer import DatasetWriter

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(DatasetWriter, "from_indexed_dataset", interrupted)
    split = clothing1m.load("clean_val", clothing_root)
    with pytest.raises(KeyboardInterrupt):
        convert_split(split, "clothing1m", "clean_val", tmp_path / "v.beton", workers=2, progress=False)
    assert not [f for f in tmp_path.iterdir() if "beton" in f.name]


def test_wrong_or_missing_beton_is_a_clear_error(clothing_root, betons, tmp_path):
    test = clothing1m.load("clean_test", clothing_root)
    with pytest.raises(DatasetError, match="clean labels differ"):
        FfcvEvalLoader(test, beton_path(betons, "clothing1m", "clean_val"), Shard(batch_size=8), view_size=64)
    with pytest.raises(DatasetError, match="converted from 160 images"):
        FfcvEvalLoader(test, beton_path(betons, "clothing1m", "noisy_train"), Shard(batch_size=8), view_size=64)
    with pytest.raises(DatasetError, match="lacol-convert"):
        FfcvEvalLoader(test, tmp_path / "none.beton", Shard(batch_size=8), view_size=64)


def test_convert_cli_and_bench(clothing_root, tmp_path, capsys):
    from tools.bench import main as bench
    from tools.convert import main as convert

    assert convert(["clothing1m", "--to", "ffcv", "--root", str(clothing_root), "--out", str(tmp_path / "ffcv"),
                    "--splits", "noisy_train", "--no-progress"]) == 0
    assert "160 images, 0 skipped" in capsys.readouterr().out
    assert convert(["clothing1m", "--to", "ffcv", "--root", str(clothing_root), "--splits", "train"]) == 2
    assert bench(["loader", "--root", str(clothing_root), "--ffcv-dir", str(tmp_path / "ffcv"), "--backends",
                  "ffcv", "--batches", "2", "--warmup", "1", "--repeats", "1", "--batch-size", "16"]) == 0
    assert "ffcv" in capsys.readouterr().out
    assert bench(["convert", "--root", str(clothing_root), "--split", "clean_val"]) == 0
    assert "images/s" in capsys.readouterr().out


def test_training_on_the_ffcv_backend(tmp_path):
    from lacol.config import load_config
    from lacol.train import train

    convert_dataset("fashion_mnist", None, tmp_path / "ffcv", progress=False)
    small = ["data.train_subset=2048", "data.batch_size=64", "data.noise=symmetric", "data.noise_rate=0.2",
             "optim.epochs=2", "loss.warmup_epochs=1", "train.threads=1", "train.progress=false",
             f"train.out_dir={tmp_path}"]
    cfg = load_config(RECIPE, small + ["data.backend=ffcv", f"data.ffcv.dir={tmp_path / 'ffcv'}", "train.name=r"])
    summary = train(cfg)
    assert summary["final_test_acc"] > 0.45  # chance is 0.1; the reference backend's test asks the same
    assert cfg.data.backend == "ffcv" and (tmp_path / "r" / "metrics.jsonl").is_file()


def test_a_beton_of_another_size_or_a_damaged_sidecar_is_named(betons, clothing_root, tmp_path):
    """A .beton stores squares of one size; a config decoding to another would cut its views from
    other pixels than the other backends: an error with both fixes. A sidecar that is not JSON
    says so."""
    import shutil

    from lacol.config import load_config
    from pipelines.build import make_loader, train_split
    from pipelines.views import lacol_views

    d = load_config("configs/clothing1m.yaml", [f"data.root={clothing_root}", "data.backend=ffcv",
                                               f"data.ffcv.dir={betons}", "data.decode_size=128"]).data
    split = train_split(d)
    with pytest.raises(DatasetError, match=r"stores 256 px squares but data.decode_size is 128.*--size 128"):
        make_loader(d, split, lacol_views(64))
    shutil.copytree(betons, tmp_path / "b")
    side = beton_path(tmp_path / "b", "clothing1m", "noisy_train")
    side = side.with_name(side.name + ".json")
    side.write_text("{not json")
    d.ffcv.dir, d.decode_size = str(tmp_path / "b"), 256
    with pytest.raises(DatasetError, match=r"noisy_train.beton.json: not the JSON lacol-convert writes"):
        make_loader(d, split, lacol_views(64))


def test_conversion_removes_what_a_killed_one_left(clothing_root, tmp_path):
    """Temporary files of a conversion that was killed (its process gone) are removed when the
    next starts; a running conversion's are not. The sidecar, the mark of a whole .beton, is
    removed first and written last."""
    import subprocess
    import sys

    from tools.beton import convert_split

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    out = tmp_path / "clothing1m_clean_val.beton"
    stale = [tmp_path / f".{out.name}.tmp-{dead}", tmp_path / f"{out.name}.jpeg-tmp-{dead}"]
    for f in stale:
        f.write_bytes(b"x" * 1000)
    running = tmp_path / f".{out.name}.tmp-1"  # pid 1 always runs
    running.write_bytes(b"x")
    convert_split(clothing1m.load("clean_val", clothing_root), "clothing1m", "clean_val", out, size=64,
                  workers=1, progress=False)
    assert not any(f.exists() for f in stale) and running.exists()
    assert json.loads(out.with_name(out.name + ".json").read_text())["num_samples"] == 32


def test_a_damaged_beton_is_refused_on_first_open_and_by_verify(betons, clothing_root, tmp_path, capsys):
    """Random bytes over the middle of a .beton: FFCV would load it and decode other pixels. The
    checksum the sidecar recorded refuses it on open and in ``lacol-convert --verify``; a whole
    file passes both, and the stamp spares the next open the read."""
    from pipelines import formats
    from tools.convert import main as convert

    shutil.copytree(betons, tmp_path / "b")
    path = beton_path(tmp_path / "b", "clothing1m", "clean_val")
    split = clothing1m.load("clean_val", clothing_root)
    assert convert(["--verify", str(path)]) == 0 and "ok" in capsys.readouterr().out
    FfcvEvalLoader(split, path, Shard(batch_size=8), view_size=64)
    assert path.with_name(path.name + ".verified").is_file()
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    formats._verified.clear()
    with pytest.raises(DatasetError, match=r"clean_val.beton: checksum .* convert it again"):
        FfcvEvalLoader(split, path, Shard(batch_size=8), view_size=64)
    assert convert(["verify", str(path)]) == 2 and "checksum" in capsys.readouterr().err
    path.write_bytes(bytes(data[:mid]))  # a cut copy
    with pytest.raises(DatasetError, match=r"bytes, its sidecar recorded"):
        FfcvEvalLoader(split, path, Shard(batch_size=8), view_size=64)
