"""What only a CUDA GPU can show (skipped without one; ``make gpu-check`` runs them): DALI's GPU
graph, views made on the GPU against the CPU engine, and training steps that never wait for the
host (``torch.cuda.set_sync_debug_mode("error")``). The kernels' CUDA checks are test_kernels.py."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from tools.clothing1m_sample import build

    return build(tmp_path_factory.mktemp("c1m"), 256, 32, 32, synthetic=True, workers=4)


def test_views_on_the_gpu_match_the_cpu_engine():
    """Same plan, same views: at most one uint8 level apart (a fused multiply-add the GPU compiler
    may form in a blend), on at most 0.1% of the values; fp32. Made under sync-debug "error"."""
    from pipelines.augment import Augmenter
    from pipelines.views import lacol_views

    x = torch.randint(0, 256, (64, 40, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cpu = Augmenter(lacol_views(32, pad=4), (127.0,) * 3, (64.0,) * 3, engine="auto")
    gpu = Augmenter(lacol_views(32, pad=4), (127.0,) * 3, (64.0,) * 3)
    x_gpu = x.cuda()
    for seed in range(3):
        cpu.reseed(seed)
        gpu.reseed(seed)
        if seed:  # after the first batch (which uploads the normalisation rows): no host sync at all
            torch.cuda.set_sync_debug_mode("error")
        try:
            views = gpu(x_gpu)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        for a, b in zip(cpu(x), views):
            diff = (a - b.cpu()).abs()
            assert diff.max() <= 1 / 64 + 1e-6 and (diff > 0).float().mean() < 1e-3


def test_dali_gpu_graph(synthetic_root):
    pytest.importorskip("nvidia.dali")
    from pipelines.dali_loader import DaliLoader
    from pipelines.sharding import Shard
    from pipelines.sources import clothing1m
    from pipelines.views import lacol_views

    split = clothing1m.load("noisy_train", synthetic_root)
    loader = DaliLoader(split, lacol_views(224), Shard(batch_size=32, device="cuda", dtype=torch.bfloat16), num_workers=4)
    batches = list(loader)
    assert len(batches) == 8
    b = batches[0]
    for v in (b.weak, b.strong, b.strong2):
        assert v.is_cuda and v.dtype == torch.bfloat16 and v.shape == (32, 3, 224, 224)
        assert v.is_contiguous(memory_format=torch.channels_last)
    assert b.label.is_cuda and torch.equal(b.label.cpu(), torch.from_numpy(split.labels)[b.index.cpu()])
    assert len({i for b in batches for i in b.index.tolist()}) == 256


def test_training_steps_never_wait_for_the_host():
    """The model, the method and the optimiser under sync-debug "error": any host sync raises."""
    from lacol.config import LossConfig
    from lacol.methods import build_method
    from lacol.models import build_model
    from pipelines.batch import ViewBatch

    model = build_model("resnet18", 10, 3).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = build_method(LossConfig(warmup_epochs=0, class_floor=0.3), 10, seed=0, device="cuda",
                    clean=torch.randint(0, 10, (64,), device="cuda"))
    views = [torch.randn(64, 3, 32, 32, device="cuda", dtype=torch.bfloat16)
             .contiguous(memory_format=torch.channels_last) for _ in range(3)]
    batch = ViewBatch(*views, torch.randint(0, 10, (64,), device="cuda"), torch.arange(64, device="cuda"))
    for step in range(3):
        if step == 1:
            torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = method(model, batch, epoch=0, step=step)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(out.loss).item()
