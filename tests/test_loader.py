import numpy as np
import pytest
import torch

from pipelines.views import lacol_views
from pipelines.batch import ViewBatch
from pipelines.sharding import Shard, shard_indices
from pipelines.sources import DatasetError, clothing1m
from pipelines.torch_loader import TorchEvalLoader, TorchLoader


from conftest import check_batch as _check_batch  # noqa: E402


def test_in_memory_views_pair_labels_with_indices(fmnist_train):
    split = fmnist_train.subset(np.arange(1000)).with_labels((np.arange(1000) * 7) % 10)
    loader = TorchLoader(split, lacol_views(28, pad=4), Shard(batch_size=128, seed=0))
    batches = list(loader)
    assert len(batches) == len(loader) == 7
    for b in batches:
        _check_batch(b, split, 28, 1)
    moved = batches[0].to("cpu")
    assert isinstance(moved, ViewBatch) and len(moved) == 128 and torch.equal(moved.strong, batches[0].strong)
    # The weak view of a sample is its image shifted by at most 4 px: its mean pixel is close.
    b = batches[0]
    raw = b.weak * split.std[0] + split.mean[0]
    src = torch.from_numpy(split.images[b.index.numpy()]).float().permute(0, 3, 1, 2)
    assert (raw.mean((1, 2, 3)) - src.mean((1, 2, 3))).abs().max() < 40
    corr = np.corrcoef(raw.mean((1, 2, 3)).numpy(), src.mean((1, 2, 3)).numpy())[0, 1]
    assert corr > 0.9


@pytest.mark.parametrize("augment_in", ["workers", "device"])
def test_file_views(clothing_root, augment_in):
    split = clothing1m.load("noisy_train", clothing_root)
    loader = TorchLoader(split, lacol_views(64), Shard(batch_size=32), num_workers=2, decode_size=72, augment_in=augment_in)
    assert loader.augment_in == augment_in
    batches = list(loader)
    assert len(batches) == 5
    for b in batches:
        _check_batch(b, split, 64, 3)
        assert not torch.equal(b.strong, b.strong2) and not torch.equal(b.weak, b.strong)
    seen = torch.cat([b.index for b in batches])
    assert len(set(seen.tolist())) == 160
    # Views are reproducible per epoch, and differ between epochs.
    loader.set_epoch(0)
    again = next(iter(loader))
    assert torch.equal(again.index, batches[0].index) and torch.equal(again.strong, batches[0].strong)
    loader.set_epoch(1)
    assert not torch.equal(next(iter(loader)).index, batches[0].index)


def test_corrupt_files_are_counted_and_skipped(clothing_root, tmp_path, caplog):
    import shutil
    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root)
    split = clothing1m.load("noisy_train", root)
    split.path(3).write_bytes(b"")                                       # zero bytes
    split.path(5).write_bytes(split.path(5).read_bytes()[:200])          # truncated
    split.path(7).unlink()                                               # missing
    loader = TorchLoader(split, lacol_views(64), Shard(batch_size=32), decode_size=72, num_workers=1)
    sizes = [len(b) for b in loader]
    assert sizes == [32] * 5  # dropped and refilled: every batch full
    assert set(loader.skipped) == {str(split.path(i)) for i in (3, 5, 7)}
    assert "skipped" in caplog.text


def test_bad_files_keep_every_ranks_batches_full_and_resume_alike(clothing_root, tmp_path):
    """With two ranks and a third of the files unreadable, each rank's batches keep the size the
    loss's all-gather expects, hold no unreadable row, and refill the same way when resumed."""
    import shutil
    root = tmp_path / "c1m"
    shutil.copytree(clothing_root, root)
    split = clothing1m.load("noisy_train", root)
    bad = set(range(0, 160, 3))
    for i in bad:
        split.path(i).write_bytes(b"not an image")
    for rank in (0, 1):
        loader = TorchLoader(split, lacol_views(32), Shard(batch_size=16, rank=rank, world=2, seed=4), decode_size=40,
                             num_workers=1)
        batches = list(loader)
        assert [len(b) for b in batches] == [16] * 5
        assert not bad & {int(i) for b in batches for i in b.index}
        loader.set_epoch(0, start=3)
        assert [torch.equal(a.index, b.index) for a, b in zip(batches[3:], loader)] == [True, True]
    for i in range(160):
        split.path(i).write_bytes(b"")
    with pytest.raises(DatasetError, match="unreadable files while filling one batch"):
        next(iter(TorchLoader(split, lacol_views(32), Shard(batch_size=16), decode_size=40, num_workers=1)))


def test_sharding_two_ranks_disjoint_and_complete():
    n = 1003
    for epoch in (0, 1):
        a = shard_indices(n, 0, 2, epoch, seed=1, shuffle=True, drop_last=False, batch_size=64)
        b = shard_indices(n, 1, 2, epoch, seed=1, shuffle=True, drop_last=False, batch_size=64)
        assert len(a) == len(b) == 502
        assert set(a) | set(b) == set(range(n)) and len(set(a) & set(b)) <= 1  # one wrap-around pad
        ta = shard_indices(n, 0, 2, epoch, seed=1, shuffle=True, drop_last=True, batch_size=64)
        tb = shard_indices(n, 1, 2, epoch, seed=1, shuffle=True, drop_last=True, batch_size=64)
        assert len(ta) == len(tb) == 448 and not set(ta) & set(tb)


def test_loaders_on_two_ranks(fmnist_train):
    split = fmnist_train.subset(np.arange(600))
    seen = []
    for rank in (0, 1):
        loader = TorchLoader(split, lacol_views(28, pad=4), Shard(batch_size=50, rank=rank, world=2))
        assert len(loader) == 6
        seen.append(torch.cat([b.index for b in loader]).tolist())
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) == len(seen[1]) == 300
    ev = [torch.cat([b.index for b in TorchEvalLoader(split, Shard(batch_size=64, rank=r, world=2), view_size=28)])
          for r in (0, 1)]
    assert set(ev[0].tolist()) | set(ev[1].tolist()) == set(range(600)) and len(ev[0]) == len(ev[1]) == 300


def test_eval_loader_files(clothing_root):
    split = clothing1m.load("clean_test", clothing_root)
    batches = list(TorchEvalLoader(split, Shard(batch_size=10), view_size=64, decode_size=72, num_workers=1))
    idx = torch.cat([b.index for b in batches])
    assert sorted(idx.tolist()) == list(range(32))
    assert batches[0].image.shape == (10, 3, 64, 64)
    assert (torch.cat([b.label for b in batches]).numpy() == split.labels[idx.numpy()]).all()


def test_bench_loader_runs(clothing_root, capsys):
    from tools.bench import main
    assert main(["loader", "--root", str(clothing_root), "--batches", "1", "--warmup", "1",
                 "--repeats", "1", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "peer" in out and "torch" in out and "vs peer" in out
    assert main(["loader", "--root", str(clothing_root), "--batches", "100"]) == 2


def test_bench_parse_runs(capsys):
    from tools.bench import main
    assert main(["parse", "--lines", "2000"]) == 0
    assert "2000 keys (144 with clean labels)" in capsys.readouterr().out


def test_bench_step_train_and_sampler_run(clothing_root, capsys):
    """The GPU benchmarks' commands run end to end on a CPU at toy sizes (their figures mean
    something only on a GPU)."""
    from tools.bench import main
    assert main(["step", "--arch", "small_cnn", "--size", "28", "--batch-size", "16", "--dtype", "fp32",
                 "--steps", "2", "--warmup", "1"]) == 0
    assert "samples/s" in capsys.readouterr().out
    assert main(["train", "--root", str(clothing_root), "--backends", "torch", "--arch", "small_cnn", "--size", "32",
                 "--batch-size", "16", "--workers", "1", "--steps", "2", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "step (synthetic" in out and "torch" in out
    assert main(["sampler", "--sizes", "256", "--repeats", "1"]) == 0
    assert "speed-up" in capsys.readouterr().out


def test_gpu_check_says_it_needs_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: make gpu-check runs for real")
    from tools.gpu_check import main
    assert main([str(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
