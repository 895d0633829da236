"""No host sync in a training step that does not log: the step's aten ops, recorded under a
dispatch mode on a CPU, contain none of the ops that make a GPU wait for the host."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lacol.config import LossConfig, load_config
from lacol.dist import Dist
from lacol.methods import build_method
from lacol.models import build_model
from pipelines.batch import ViewBatch

SYNCING = {"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::masked_select",
           "aten::bincount", "aten::unique", "aten::_unique2", "aten::masked_scatter", "aten::is_nonzero",
           "aten::equal", "aten::allclose"}


class SyncRecorder(TorchDispatchMode):
    """Records each sync-forcing op: the names above, boolean-mask indexing, tensors built from
    host data (lift_fresh: torch.tensor(...)), and copies between devices."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name in SYNCING or name.startswith("aten::lift_fresh"):
            self.found.append(name)
        elif name.startswith("aten::index") and len(args) > 1 and isinstance(args[1], (list, tuple)) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            self.found.append(name + " (boolean mask)")
        elif name == "aten::_to_copy" and "device" in kwargs and torch.device(kwargs["device"]) != args[0].device:
            self.found.append(name + " (to another device)")
        return func(*args, **kwargs)


def _batch(b=32, classes=10):
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(b, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last) for _ in range(3)]
    return ViewBatch(*views, torch.randint(0, classes, (b,), generator=g), torch.arange(b))


def test_the_recorder_sees_a_sync():
    x = torch.randn(8)
    with SyncRecorder() as rec:
        x[x > 0].sum()
        float(x.sum())
        torch.bincount(torch.tensor([1, 2]))
    assert {"aten::_local_scalar_dense", "aten::bincount", "aten::lift_fresh"} <= set(rec.found)
    assert any("boolean mask" in f for f in rec.found)


@pytest.mark.parametrize("loss", [{}, {"class_floor": 0.3}, {"class_weight": "paper", "ls_views": 2},
                                  {"train_view": "weak", "sc_similarity": "dot"}, {"warmup_epochs": 1}])
def test_a_method_step_forces_no_sync(loss):
    model = build_model("small_cnn", 10, 1, width=8)
    batch = _batch()
    method = build_method(LossConfig(**{"warmup_epochs": 0, **loss}), 10, Dist(), seed=1,
                    clean=torch.randint(0, 10, (32,)))
    with SyncRecorder() as rec:
        out = method(model, batch, epoch=0, step=3)
        out.loss.backward()
    assert rec.found == [], rec.found
    assert torch.isfinite(out.loss)


def test_a_non_logging_trainer_step_forces_no_sync(tmp_path):
    """The trainer's step (Accelerate's accumulate, the optimiser, the method) on a real batch."""
    from conftest import RECIPE, TRAIN_SMALL as SMALL

    from pipelines.sources import DatasetError, fashion_mnist

    try:  # make gpu-check runs this file on a GPU host, which has no Fashion-MNIST
        fashion_mnist.load("test")
    except DatasetError as e:
        pytest.skip(f"needs Fashion-MNIST: {e}")

    from lacol.train import Trainer, setup

    cfg = load_config(RECIPE, [*SMALL, "loss.warmup_epochs=0", "loss.class_floor=0.3", f"train.out_dir={tmp_path}",
                               "train.name=sync"])
    trainer = Trainer(cfg, setup(cfg), resume=False)
    batches = iter(trainer.loader)
    trainer.step(next(batches), 0, 0.05)  # the first step creates the optimiser's state
    batch = next(batches)
    with SyncRecorder() as rec:
        out, _ = trainer.step(batch, 0, 0.05)
    assert rec.found == [], rec.found
    assert out.selection is not None


class OpCounter(SyncRecorder):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return super().__torch_dispatch__(func, types, args, kwargs)


def _device_ops(b: int, seed: int, views) -> OpCounter:
    """Ops of the batched engine's device side (unpack the uploaded plan, make every view), with
    the plans drawn and packed on the host beforehand."""
    from pipelines.augment import Augmenter, batched_view, pack_plan, plan_width, unpack_plan

    x = torch.randint(0, 256, (b, 36, 36, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    aug = Augmenter(views, (127.0,) * 3, (64.0,) * 3, seed=seed, engine="batched")
    packed = torch.cat([pack_plan(aug.plan(b, 36, 36, v), v) for v in views], 1)
    with OpCounter() as rec:
        col = 0
        for v in views:
            batched_view(x, v, unpack_plan(packed[:, col:col + plan_width(v)], v))
            col += plan_width(v)
    return rec


@pytest.mark.parametrize("crop", ["random", "rrc"])
def test_the_batched_view_engine_does_the_same_work_for_any_batch_and_draw(crop):
    """The aten ops of a batch of views do not grow with the batch or depend on the ops drawn,
    and none waits for the host: on a GPU, a fixed number of kernel launches per batch."""
    from pipelines.views import lacol_views

    views = lacol_views(32, pad=4, crop=crop, cutout=0.25)
    counts = {(b, seed): _device_ops(b, seed, views) for b in (8, 64) for seed in (0, 1)}
    assert len({r.ops for r in counts.values()}) == 1, {k: r.ops for k, r in counts.items()}
    assert all(r.found == [] for r in counts.values()), [r.found for r in counts.values()]
