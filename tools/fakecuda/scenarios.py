"""What the fake-CUDA check runs: the GPU paths of views, loaders and the training step, each on
"cuda" (see __init__). A scenario returns what it checked (counts), the recorder its events.
``PLANTS`` put one known defect of each kind in, to show the check sees it."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import torch

CUDA = torch.device("cuda", 0)
MEAN, STD = (127.0,) * 3, (64.0,) * 3


def views(rec) -> dict:
    """The batched view engine through ``upload``: fp32 and bf16 outputs, all three views and the
    weak view alone; outputs on the device, in the dtype, channels_last."""
    from pipelines.augment import Augmenter
    from pipelines.sharding import upload
    from pipelines.views import lacol_views

    made = 0
    for dtype in (torch.float32, torch.bfloat16):
        for crop in ("random", "rrc"):
            aug = Augmenter(lacol_views(32, pad=4, crop=crop, cutout=0.25), MEAN, STD, out_dtype=dtype)
            for num_views in (None, 1):
                x = torch.randint(0, 256, (16, 36, 36, 3), dtype=torch.uint8)
                for v in aug(upload(x, CUDA), num_views=num_views):
                    _check_view(v, dtype)
                    made += 1
    return {"views": made}


def _check_view(v, dtype):
    assert v.device == CUDA and v.dtype == dtype, (v.device, v.dtype)
    assert v.is_contiguous(memory_format=torch.channels_last)


def _memory_split(n=96):
    from pipelines.sources.base import Split

    g = np.random.default_rng(0)
    return Split("fake/train", g.integers(0, 10, n), g.integers(0, 10, n), tuple(map(str, range(10))),
                 images=g.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), mean=(127.0,), std=(64.0,))


def _data_config(**kw):
    from pipelines.data_config import DataConfig

    base = dict(dataset="fashion_mnist", noise="none", batch_size=32, eval_batch_size=32, num_workers=1,
                image_size=28, pad=2)
    return DataConfig(**{**base, **kw})


def _drain(loader, batches=2) -> int:
    from pipelines.batch import EvalBatch

    n = 0
    for b in loader:
        tensors = [b.image] if isinstance(b, EvalBatch) else [b.weak, b.strong, b.strong2]
        for t in [*tensors, b.label, b.index]:
            assert t.device == CUDA, t.device
        n += 1
        if n == batches:
            break
    return n


def loaders_memory(rec) -> dict:
    """The reference backend on in-memory data (views made on the device), training and eval."""
    from pipelines.build import make_loader

    split, d = _memory_split(), _data_config()
    return {"train": _drain(make_loader(d, split, d.views(), device=CUDA, dtype=torch.bfloat16)),
            "eval": _drain(make_loader(d, split, None, device=CUDA))}


@contextlib.contextmanager
def _file_split():
    from pipelines.sources import load_split
    from tools.clothing1m_sample import build

    with tempfile.TemporaryDirectory() as tmp:
        root = build(Path(tmp) / "c1m", 96, 32, 32, synthetic=True, workers=1)
        yield root, load_split("clothing1m", "noisy_train", root)


def loaders_files(rec) -> dict:
    """The reference backend on JPEG files with DataLoader workers (through ``make_loader``: views
    on the device), with the views made in the workers instead, and the eval loader."""
    from pipelines.build import make_loader
    from pipelines.sharding import Shard
    from pipelines.torch_loader import TorchLoader

    out = {}
    with _file_split() as (root, split):
        d = _data_config(dataset="clothing1m", root=str(root), image_size=32, decode_size=36, pad=0)
        out["train (views on the device)"] = _drain(make_loader(d, split, d.views(), device=CUDA))
        out["train (views in workers)"] = _drain(TorchLoader(split, d.views(), Shard(batch_size=32, device=CUDA),
                                                             num_workers=1, decode_size=36, augment_in="workers"))
        out["eval"] = _drain(make_loader(d, split, None, device=CUDA))
    return out


def loaders_ffcv(rec) -> dict:
    """The FFCV backend's device hand-off (a .beton of the same files; views on the device)."""
    try:
        import ffcv  # noqa: F401
    except ImportError:
        return {"skipped": "ffcv does not import"}
    from pipelines.build import make_loader
    from pipelines.formats import beton_path
    from tools.beton import convert_split

    with _file_split() as (root, split):
        with _paused(rec):  # the conversion is host work (numba, files), not a GPU path
            convert_split(split, "clothing1m", "noisy_train", beton_path(root / "ffcv", "clothing1m", "noisy_train"),
                          size=36, progress=False)
        d = _data_config(dataset="clothing1m", root=str(root), backend="ffcv", image_size=32, decode_size=36, pad=0)
        d.ffcv.dir = str(root / "ffcv")
        return {"train": _drain(make_loader(d, split, d.views(), device=CUDA)),
                "eval": _drain(make_loader(d, split, None, device=CUDA))}


@contextlib.contextmanager
def _paused(rec):
    from torch.utils._python_dispatch import _pop_mode_temporarily

    with _pop_mode_temporarily(), _pop_mode_temporarily():  # the recorder, then the fake mode
        yield


STEP_SETTINGS = [
    {"method": "lacol"}, {"method": "lacol", "class_floor": 0.3, "class_weight": "paper", "ls_views": 2},
    {"method": "lacol", "train_view": "weak", "sc_similarity": "dot"}, {"method": "lacol", "kernel": "triton"},
    {"method": "lacol", "kernel": "triton", "class_weight": "none"}, {"method": "selection"},
    {"method": "ce_strong"}, {"method": "ce"}, {"method": "lacol", "warmup_epochs": 1},
    # lacol_semi's parts: the EMA teacher (its update after the optimiser step), class-balanced
    # pseudo-labels, the eval pass's selection mask indexed on the device, L_SC's gradient through
    # the weak probabilities; and the warm-up's confidence penalty
    {"method": "lacol_semi", "pseudo_threshold": 0.5, "ema_decay": 0.99, "selection": "gmm"},
    {"method": "lacol_semi", "pseudo_threshold": 0.5, "ema_decay": 0.99, "sc_grad": "through"},
    {"method": "lacol_semi", "warmup_epochs": 1, "warmup_penalty": 0.1},
]


def step(rec, settings=None) -> dict:
    """Training steps on the device: every method and kernel setting, bf16 autocast, backward,
    SGD with momentum, the label audit's record; two steps each (the first makes the optimiser's
    state)."""
    from lacol.audit import Evidence
    from lacol.config import LossConfig
    from lacol.methods import build_method
    from lacol.models import build_model
    from pipelines.batch import ViewBatch

    done = 0
    for setting in settings or STEP_SETTINGS:
        with rec.setup():
            torch.__future__.set_overwrite_module_params_on_conversion(True)  # fake tensors cannot be swapped
            model = build_model("small_cnn", 10, 3, width=8).to(CUDA, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        n = 64
        method = build_method(LossConfig(**{"warmup_epochs": 0, **setting}), 10, seed=0, device=CUDA,
                              clean=torch.randint(0, 10, (n,), device=CUDA), num_samples=n)
        with rec.setup():
            method.attach(model)  # the teacher's copy of the weights: setup, as the trainer makes it once
        if setting.get("selection") == "gmm":  # the eval pass's result (host work once per epoch) on the device
            method.train_mask = torch.arange(n, device=CUDA) % 3 > 0
        evidence = Evidence(n, 0, 2, CUDA)
        views = [torch.randn(32, 3, 28, 28, device=CUDA, dtype=torch.bfloat16)
                 .contiguous(memory_format=torch.channels_last) for _ in range(3)]
        batch = ViewBatch(*views, torch.randint(0, 10, (32,), device=CUDA), torch.randperm(n, device=CUDA)[:32])
        for i in range(2):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                assert torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16
                out = method(model, batch, epoch=0, step=i)
            if setting.get("kernel") == "triton":
                assert method.sc.__module__ == "lacol.kernels.sc", method.sc
            if out.p_weak is not None:
                evidence.record(0, batch.index, out.p_weak, batch.label, out.selected)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            method.after_step(model)
            assert out.loss.device == CUDA
        done += 1
    return {"settings": done}


SCENARIOS = {"views": views, "loaders_memory": loaders_memory, "loaders_files": loaders_files,
             "loaders_ffcv": loaders_ffcv, "step": step,
             "step_lacol": lambda rec: step(rec, STEP_SETTINGS[3:4]),  # one LaCoL step, fused kernels
             "step_semi": lambda rec: step(rec, STEP_SETTINGS[9:10])}  # lacol_semi's teacher and pseudo-labels


# ------------------------------------------------------------------------------- planted defects

def _plant_pageable(mp):
    """The old normalize: its constants moved with a pageable, blocking ``.to`` per view."""
    from pipelines.augment import Augmenter

    mp(Augmenter, "_affine_rows", lambda self, device, w: torch.stack(
        [self.inv_std.repeat(w), (-self.mean * self.inv_std).repeat(w)]).to(device))


def _plant_blocking(mp):
    """An upload through pinned memory that waits (non_blocking forgotten)."""
    import pipelines.augment
    import pipelines.torch_loader

    up = lambda t, device: t.pin_memory().to(device)  # noqa: E731
    mp(pipelines.augment, "upload", up)
    mp(pipelines.torch_loader, "upload", up)


def _plant_sync(mp):
    """A step that reads a loss term on the host (``.item()``)."""
    from lacol.methods import Method

    call = Method.__call__

    def synced(self, *a, **k):
        out = call(self, *a, **k)
        out.loss.item()
        return out

    mp(Method, "__call__", synced)


def _plant_mix(mp):
    """A host tensor in a device op (a per-class weight left on the CPU)."""
    from lacol.methods import Method

    counts = Method.class_counts
    mp(Method, "class_counts", lambda self, y, mask: counts(self, y, mask) + torch.ones(self.num_classes))


def _plant_generator(mp):
    """The negatives drawn on the device from a CPU generator."""
    from lacol.methods import Method

    init = Method.__init__

    def cpu_gen(self, *a, **k):
        init(self, *a, **k)
        self.gen = torch.Generator()

    mp(Method, "__init__", cpu_gen)


def _plant_teacher_sync(mp):
    """The EMA teacher's step counter kept on the device: reading it for the decay ramp syncs."""
    from lacol.methods.parts import EmaTeacher

    init = EmaTeacher.__init__

    def on_device(self, model, decay):
        init(self, model, decay)
        self.steps = self.steps.to(CUDA)

    mp(EmaTeacher, "__init__", on_device)


PLANTS = {"pageable": _plant_pageable, "blocking": _plant_blocking, "sync": _plant_sync, "mix": _plant_mix,
          "generator": _plant_generator, "teacher_sync": _plant_teacher_sync}
