"""Evaluation and prediction from a finished run folder (config.yaml, weights, dataset.json)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipelines.augment import Augmenter
from pipelines.decode import decode_square
from pipelines.sources import dataset_info
from pipelines.views import eval_view

from .config import first_line, read_run_config
from .models import WeightsError, build_model


def load_run(run: str | Path, weights: str = "model.safetensors"):
    """(config, model in eval mode, dataset facts: classes, mean, std, channels) of a run folder."""
    from safetensors.torch import load_file

    run = Path(run)
    for f in ("config.yaml", weights, "dataset.json"):
        if not (run / f).is_file():
            raise FileNotFoundError(f"{run / f} is missing: is {run} a finished `lacol train` run?")
    cfg = read_run_config(run)
    info = json.loads((run / "dataset.json").read_text())
    model = build_model(cfg.model.arch, len(info["classes"]), info["channels"], cfg.model.width, cfg.model.embed_dim,
                        embed_from=cfg.model.embed_from)
    try:
        state = load_file(str(run / weights))
        model.load_state_dict(state)
    except Exception as e:  # cut or foreign file, or weights of another network
        raise WeightsError(f"{run / weights}: cannot be loaded into this run's {cfg.model.arch} ({first_line(e)}); "
                           f"the file is damaged or from another run: use model.safetensors or best.safetensors "
                           f"as the run wrote them") from None
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise WeightsError(f"{run / weights}: {bad} holds NaN or infinite values (the run diverged); its "
                           f"predictions would mean nothing: retrain (lacol train stops at a non-finite loss)")
    return cfg, model.eval(), info


def evaluate_run(run: str | Path, weights: str = "model.safetensors") -> dict:
    from accelerate import Accelerator

    from pipelines.build import eval_splits, make_loader

    from .evaluation import evaluate

    cfg, model, _ = load_run(run, weights)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    model = acc.prepare(model)
    loader = lambda s: make_loader(cfg.data, s, None, rank=acc.process_index, world=acc.num_processes,  # noqa: E731
                                   device=acc.device)
    return {name: evaluate(acc, model, loader(s)) for name, s in eval_splits(cfg.data).items()}


def _decode(path: str, size: int, mode: str) -> np.ndarray:
    """An image file's pixels, or an error naming the file (text, empty, a folder, damaged)."""
    from PIL import Image, UnidentifiedImageError

    from pipelines.sources.base import DatasetError

    try:
        return decode_square(path, size, mode)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise DatasetError(f"{path}: not an image this reads ({type(e).__name__}: {e})") from None


@torch.no_grad()
def predict(run: str | Path, images: list[str], topk: int = 3, weights: str = "model.safetensors"):
    """[(path, [(class name, probability), ...]), ...] for image files, top-k each; decoded and
    run ``data.eval_batch_size`` images at a time, so memory stays flat in the number of images."""
    cfg, model, info = load_run(run, weights)
    classes, in_ch = info["classes"], info["channels"]
    size = cfg.data.image_size
    decode = cfg.data.decode_size if dataset_info(cfg.data.dataset).files else size
    mode = "L" if in_ch == 1 else "RGB"
    view = Augmenter([eval_view(size)], info["mean"], info["std"])
    k = min(topk, len(classes))
    out = []
    for i in range(0, len(images), cfg.data.eval_batch_size):
        paths = images[i:i + cfg.data.eval_batch_size]
        batch = [_decode(path, decode, mode).reshape(decode, decode, in_ch) for path in paths]
        (x,) = view(torch.from_numpy(np.stack(batch)))
        top = model(x, embed=False)[0].float().softmax(1).topk(k, dim=1)
        out += [(p, [(classes[c], float(v)) for v, c in zip(top.values[r], top.indices[r].tolist())])
                for r, p in enumerate(paths)]
    return out
