"""The DALI backend in CPU mode (``device_id=None``), on real JPEGs (Clothing1M layout built from
Fashion-MNIST at test time) and on arrays (Fashion-MNIST)."""
import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from pipelines.views import lacol_views  # noqa: E402
from pipelines.dali_loader import DaliEvalLoader, DaliLoader  # noqa: E402
from pipelines.sources import DatasetError, clothing1m, fashion_mnist  # noqa: E402
from pipelines.torch_loader import TorchLoader  # noqa: E402
from pipelines.sharding import Shard  # noqa: E402
from pipelines.formats import list_path, read_file_list  # noqa: E402
from tools.beton import convert_file_list  # noqa: E402

from conftest import check_batch as _check_batch  # noqa: E402


@pytest.fixture(scope="module")
def lists(clothing_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("dali")
    for name in ("noisy_train", "clean_test"):
        convert_file_list(clothing1m.load(name, clothing_root), "clothing1m", name,
                          list_path(out, "clothing1m", name), workers=2, progress=False)
    return out


def _rows(lists, split, name):
    return read_file_list(list_path(lists, "clothing1m", name), split)


def test_file_views_shapes_labels_and_independent_views(clothing_root, lists):
    split = clothing1m.load("noisy_train", clothing_root)
    loader = DaliLoader(split, lacol_views(64), Shard(batch_size=32), rows=_rows(lists, split, "noisy_train"))
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    for b in batches:
        _check_batch(b, split, 64, 3)
        assert not torch.equal(b.strong, b.strong2) and not torch.equal(b.weak, b.strong)
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(160))


def test_array_views(fmnist_train):
    split = fmnist_train.subset(np.arange(600)).with_labels((np.arange(600) * 7) % 10)
    loader = DaliLoader(split, lacol_views(28, pad=4), Shard(batch_size=128))
    batches = list(loader)
    assert len(batches) == len(loader) == 4  # drop_last: 600 // 128
    for b in batches:
        _check_batch(b, split, 28, 1)
        assert not torch.equal(b.strong, b.strong2)
    # the weak view is the image shifted by at most 4 px: its mean pixel stays close
    b = batches[0]
    raw = b.weak * split.std[0] + split.mean[0]
    src = torch.from_numpy(split.images[b.index.numpy()]).float()
    assert np.corrcoef(raw.mean((1, 2, 3)).numpy(), src.mean((1, 2, 3)).numpy())[0, 1] > 0.9


def test_same_batches_as_the_reference_and_statistics_agree(clothing_root, lists):
    split = clothing1m.load("noisy_train", clothing_root)
    dali = DaliLoader(split, lacol_views(224), Shard(batch_size=32, seed=5), rows=_rows(lists, split, "noisy_train"))
    ref = TorchLoader(split, lacol_views(224), Shard(batch_size=32, seed=5), decode_size=256, num_workers=2)
    stats = {"dali": [], "torch": []}
    for a, b in zip(dali, ref):
        assert torch.equal(a.index, b.index) and torch.equal(a.label, b.label)
        for key, batch in (("dali", a), ("torch", b)):
            stats[key].append(torch.stack([torch.stack([v.mean((0, 2, 3)), v.std((0, 2, 3))])
                                           for v in (batch.weak, batch.strong, batch.strong2)]))
    d, t = torch.stack(stats["dali"]).mean(0), torch.stack(stats["torch"]).mean(0)
    assert (d[0] - t[0]).abs().max() < 0.03  # weak: the same crops of the same images, other resamplers
    # strong views: DALI's RandAugment op set and ranges differ from torchvision's; statistics stay close
    assert (d[1:] - t[1:]).abs().max() < 0.25  # measured up to 0.18 (std: DALI's ops change contrast less)


def test_two_ranks_disjoint_and_complete(clothing_root, lists):
    split = clothing1m.load("noisy_train", clothing_root)
    seen = []
    for rank in range(2):
        loader = DaliLoader(split, lacol_views(32), Shard(batch_size=16, rank=rank, world=2),
                            rows=_rows(lists, split, "noisy_train"))
        seen.append(torch.cat([b.index for b in loader]).tolist())
        assert len(seen[-1]) == 80
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(160))
    loader.set_epoch(1)
    assert torch.cat([b.index for b in loader]).tolist() != seen[1]
    loader.set_epoch(0, start=3)  # resuming: the same samples from batch 3 on
    assert torch.cat([b.index for b in loader]).tolist() == seen[1][48:]


def test_eval_covers_every_sample_once(clothing_root, lists):
    split = clothing1m.load("clean_test", clothing_root)
    seen = []
    for rank in range(3):
        loader = DaliEvalLoader(split, Shard(batch_size=8, rank=rank, world=3), view_size=64,
                                rows=_rows(lists, split, "clean_test"))
        for b in loader:
            assert b.image.shape[1:] == (3, 64, 64)
            assert (b.label.numpy() == split.labels[b.index.numpy()]).all()
            seen += b.index.tolist()
    assert len(seen) == 33 and set(seen) == set(range(32))


def test_bad_files_are_left_out_of_the_list_and_reported(clothing_root, tmp_path):
    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root)
    split = clothing1m.load("noisy_train", root)
    split.path(3).write_bytes(b"")
    split.path(5).write_bytes(split.path(5).read_bytes()[:1500])
    out = list_path(tmp_path / "lists", "clothing1m", "noisy_train")
    r = convert_file_list(split, "clothing1m", "noisy_train", out, workers=2, max_bad=0.05, progress=False)
    assert r.num_samples == 158
    report = json.loads(out.with_name("clothing1m_noisy_train.report.json").read_text())
    assert sorted(s["index"] for s in report["skipped"]) == [3, 5]
    rows = read_file_list(out, split)
    loader = DaliLoader(split, lacol_views(32), Shard(batch_size=16), rows=rows)
    assert sorted(loader.skipped) == sorted(split.files[i] for i in (3, 5))
    seen = torch.cat([b.index for b in loader]).tolist()
    assert len(seen) == 144 == len(set(seen)) and not {3, 5} & set(seen)  # 158 // 16 full batches
    with pytest.raises(DatasetError, match="--to dali"):
        read_file_list(tmp_path / "none.dali.txt", split)
    other = clothing1m.load("clean_test", root)
    with pytest.raises(DatasetError, match="other data"):
        read_file_list(out, other)


def test_training_on_the_dali_backend(tmp_path):
    from lacol.config import load_config
    from lacol.train import train

    from conftest import RECIPE

    cfg = load_config(RECIPE, ["data.backend=dali", "data.train_subset=1024", "data.batch_size=64",
                               "data.noise=symmetric", "data.noise_rate=0.2", "optim.epochs=2",
                               "loss.warmup_epochs=1", "train.threads=1", "train.progress=false",
                               f"train.out_dir={tmp_path}", "train.name=r"])
    summary = train(cfg)
    assert summary["final_test_acc"] > 0.3  # chance is 0.1


def test_bench_loader_dali(clothing_root, lists, capsys):
    from tools.bench import main as bench

    assert bench(["loader", "--root", str(clothing_root), "--dali-dir", str(lists), "--backends", "dali",
                  "--batches", "2", "--warmup", "1", "--repeats", "1", "--batch-size", "16"]) == 0
    assert "dali" in capsys.readouterr().out


def test_array_data_needs_no_list():
    with pytest.raises(DatasetError, match="in-memory"):
        convert_file_list(fashion_mnist.load("test"), "fashion_mnist", "test", "/tmp/x.dali.txt")


def test_files_dali_cannot_decode_are_left_out_and_named(clothing_root, tmp_path):
    """PIL opens a GIF named .jpg; DALI's decoder does not: the --to dali check uses DALI's own
    decoder, and a loader given such a file anyway names it in its error."""
    from PIL import Image

    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root)
    split = clothing1m.load("noisy_train", root)
    with Image.open(split.path(7)) as img:
        img.convert("RGB").save(split.path(7), "GIF")
    out = list_path(tmp_path / "lists", "clothing1m", "noisy_train")
    r = convert_file_list(split, "clothing1m", "noisy_train", out, workers=2, max_bad=0.05, progress=False)
    assert [s["index"] for s in r.skipped] == [7] and "DALI's decoder" in r.skipped[0]["reason"]
    assert 7 not in read_file_list(out, split)
    loader = DaliLoader(split, lacol_views(32), Shard(batch_size=16))  # every row, unchecked
    with pytest.raises(DatasetError, match=str(split.files[7]).replace(".", r"\.")):
        for _ in loader:
            pass


def test_exif_orientation_one_rule_across_backends(clothing_root, tmp_path):
    """A photo stored sideways with EXIF orientation 6 (rotate 90° clockwise to view): red left
    half, blue right half as stored, so red on top once upright. The PIL decode (torch backend,
    the .beton conversion, predict) and DALI's decoder give the same upright picture."""
    from PIL import Image

    from pipelines.decode import decode_square
    from pipelines.torch_loader import TorchEvalLoader

    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root)
    split = clothing1m.load("clean_test", root)
    stored = np.zeros((300, 400, 3), np.uint8)
    stored[:, :200, 0] = 255
    stored[:, 200:, 2] = 255
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(split.path(2), "JPEG", quality=95, exif=exif.tobytes())
    px = decode_square(split.path(2), 64).astype(float)
    assert px[:20, :, 0].mean() > 200 and px[-20:, :, 2].mean() > 200  # upright: red on top
    images = {}
    for name, cls in (("torch", TorchEvalLoader), ("dali", DaliEvalLoader)):
        for b in cls(split, Shard(batch_size=8), view_size=64, decode_size=64, num_workers=1):
            hit = (b.index == 2).nonzero()
            if len(hit):
                images[name] = b.image[hit[0, 0]].float()
    for im in images.values():
        assert im[0, :20].mean() > im[0, -20:].mean() + 1 and im[2, -20:].mean() > im[2, :20].mean() + 1
    assert (images["torch"] - images["dali"]).abs().mean() < 0.1  # resize filters differ a little


def _gpu_graph(split, views, size):
    from pipelines.dali_loader import _Epochs

    epochs = _Epochs(split, views, batch_size=16, device="cuda:0", num_workers=2, decode_size=size)
    return epochs.pipeline(np.arange(32), seed=3)


@pytest.mark.parametrize("data", ["files", "arrays"])
def test_the_gpu_graph_checks_against_dalis_schemas(data, clothing_root, fmnist_train):
    """The GPU graph (nvJPEG decode or an uploaded array, three views, RandAugment in DALI's
    conditionals), traced without CUDA: every operator supported on its device, inputs where the
    schema takes them, argument inputs from CPU nodes, arguments valid, specs serialisable."""
    from pipelines.dali_loader import graph_problems

    if data == "files":
        pipe = _gpu_graph(clothing1m.load("noisy_train", clothing_root), lacol_views(224), 256)
    else:
        pipe = _gpu_graph(fmnist_train, lacol_views(28, pad=2), 28)
    checked, problems = graph_problems(pipe)
    assert problems == [] and checked > 300, (checked, problems[:5])
    devices = {n._op.device for n in pipe._ops}
    assert {"gpu", "cpu"} <= devices and ("mixed" in devices) == (data == "files")


def test_the_graph_check_catches_each_kind_of_defect():
    """Planted: an operator on a device it has no backend for (the trace accepts it, the schema
    check names it), and an argument input from a GPU node (DALI's front end refuses it while
    the graph is traced, which is where the check builds every graph)."""
    from nvidia.dali import fn, pipeline_def, types

    from pipelines.dali_loader import graph_problems

    @pipeline_def
    def no_backend():
        return fn.resize(fn.external_source(name="x", dtype=types.UINT8, layout="HWC"), device="mixed", resize_x=4)

    checked, problems = graph_problems(no_backend(batch_size=4, num_threads=1, device_id=0))
    assert checked == 2 and len(problems) == 1 and "no mixed backend" in problems[0], problems

    @pipeline_def
    def gpu_argument():
        img = fn.external_source(name="x", dtype=types.UINT8, layout="HWC").gpu()
        return fn.crop_mirror_normalize(img, dtype=types.FLOAT, mirror=fn.random.coin_flip().gpu())

    with pytest.raises(ValueError, match="Named arguments must be on CPU"):
        gpu_argument(batch_size=4, num_threads=1, device_id=0)
