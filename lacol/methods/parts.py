"""The parts a selecting method may switch on (``lacol/methods/base.py``, ``SelectingMethod``):
the EMA teacher, the eval-pass selection by a two-component mixture on the losses, and the
pseudo-labels' statistics."""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..models import set_views


def _plain(model):
    """The module under DDP's and torch.compile's wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class EmaTeacher:
    """An exponential moving average of the trained model's weights (and of its batch-norm running
    statistics), in eval mode, never trained: teacher <- d * teacher + (1 - d) * student after
    each optimiser step t, with Mean Teacher's ramp d = min(decay, (1 + t) / (10 + t)), so the
    teacher is not held near its random initialisation for the first 1 / (1 - decay) steps (ELR+
    and Mean Teacher use decay 0.997-0.999)."""

    def __init__(self, model, decay: float):
        self.decay = decay
        self.steps = torch.zeros((), dtype=torch.long)
        self.model = copy.deepcopy(_plain(model)).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model) -> None:
        s, t = _plain(model).state_dict(keep_vars=True), self.model.state_dict(keep_vars=True)
        step = int(self.steps)  # a host integer: no device sync
        d = min(self.decay, (1 + step) / (10 + step))
        self.steps += 1
        floats = [k for k in t if t[k].is_floating_point()]
        torch._foreach_lerp_([t[k].data for k in floats], [s[k].data for k in floats], 1.0 - d)
        for k in t:
            if not t[k].is_floating_point():
                t[k].data.copy_(s[k].data)  # counters (num_batches_tracked)

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax of the teacher's logits on ``x`` (eval mode: running statistics)."""
        set_views(self.model, None)
        logits, _ = self.model(x, embed=False)
        return logits.float().softmax(1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"method.ema.{k}": v.detach().cpu() for k, v in self.model.state_dict().items()}
        out["method.ema_steps"] = self.steps.clone().reshape(1)
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        own = self.model.state_dict()
        found = {k.removeprefix("method.ema."): v for k, v in tensors.items() if k.startswith("method.ema.")}
        if not found:
            return  # a checkpoint from before the teacher: it starts from the resumed weights
        missing = set(own) - set(found)
        if missing:
            raise KeyError(f"the checkpoint's EMA teacher lacks {sorted(missing)[:3]}: it is from another model")
        self.model.load_state_dict(found)
        if "method.ema_steps" in tensors:
            self.steps = tensors["method.ema_steps"].reshape(()).long().clone()


def gmm_clean_probability(x: np.ndarray, iters: int = 30, reg: float = 5e-4) -> np.ndarray:
    """P(low-mean component | x) of a two-component 1-D Gaussian mixture fitted by EM to ``x``
    (DivideMix's rule on per-sample losses, min-max normalised first)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 4 or np.ptp(x) <= 0:
        return np.ones(len(x))
    x = (x - x.min()) / np.ptp(x)
    mu = np.quantile(x, [0.1, 0.9])
    var = np.full(2, max(x.var(), reg))
    pi = np.array([0.5, 0.5])
    for _ in range(iters):
        logp = -0.5 * (x[:, None] - mu) ** 2 / var - 0.5 * np.log(2 * np.pi * var) + np.log(pi)
        logp -= logp.max(1, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(1, keepdims=True)
        nk = r.sum(0) + 1e-12
        mu = (r * x[:, None]).sum(0) / nk
        var = (r * (x[:, None] - mu) ** 2).sum(0) / nk + reg
        pi = nk / len(x)
    return r[:, int(np.argmin(mu))]


def gmm_selection(probs: np.ndarray, labels: np.ndarray, num_classes: int, threshold: float = 0.5) -> np.ndarray:
    """Per class of the given label, the samples whose CE loss the mixture calls clean (P > threshold):
    each class is judged against its own losses, so a hard class is not emptied by an easy one."""
    loss = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
    keep = np.zeros(len(labels), dtype=bool)
    for k in range(num_classes):
        rows = np.flatnonzero(labels == k)
        if len(rows):
            keep[rows] = gmm_clean_probability(loss[rows]) > threshold
    return keep


def pseudo_stats(mask: torch.Tensor, unselected: torch.Tensor, target: torch.Tensor, clean: torch.Tensor):
    """(pseudo-labelled, pseudo-labelled correctly, unselected, known) over the samples whose clean
    label is known (``clean`` -1 elsewhere); on the device, no host sync."""
    known = clean >= 0
    m = mask & known
    return torch.stack([m.sum(), (m & (target == clean)).sum(), (unselected & known).sum(), known.sum()]).float()
