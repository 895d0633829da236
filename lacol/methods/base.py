"""What every method shares: the call the trainer makes, the warm-up step, the hooks, and the
selection flow (with its optional parts) of the methods that select.

A method is one class with a ``name`` (its ``loss.method`` value, registered in
``lacol/methods/__init__.py``) and a few declarations the trainer, the display, ``lacol plot``
and ``tools/sweep.py`` read instead of fixed lists:

- ``terms``: the loss terms its steps report after warm-up (keys of ``StepOutput.terms``);
- ``selects``: whether it chooses samples (selection precision and recall mean something);
- ``uses_warmup``: whether ``loss.warmup_epochs`` of CE on the weak view come first;
- ``colour``: its line colour in ``lacol plot``;
- ``defaults``: ``section.key`` settings applied whenever it runs (before the recipe's
  ``methods.<name>`` block and the command line's overrides);
- ``num_views(epoch)``: the views a step of that epoch needs.

Hooks the trainer calls (no-ops here): ``before_epoch(epoch, predict)`` at an epoch's first step
(``predict(model)`` is an eval-mode pass over the training split), ``after_step(model)`` after
each optimiser step, ``eval_model(model)`` (the weights evaluated and saved), and
``state_dict``/``load_state_dict`` (tensors added to a checkpoint, so a resume is exact).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..config import LossConfig
from ..dist import Dist
from ..losses import StepOutput, class_weights, resolve_kernels, select, selection_stats, weighted_ce
from ..models import set_views
from . import parts


class Method:
    """The base: CE on the weak view in warm-up; ``train_step`` after it."""

    name: ClassVar[str] = ""
    terms: ClassVar[tuple[str, ...]] = ()
    selects: ClassVar[bool] = False
    uses_warmup: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}
    colour: ClassVar[str] = "black"
    """Its line colour in ``lacol plot``."""

    def __init__(self, cfg: LossConfig, num_classes: int, dist: Dist | None = None, *, seed: int = 0,
                 device="cpu", clean: torch.Tensor | None = None, deterministic: bool = False,
                 num_samples: int | None = None):
        self.cfg, self.num_classes, self.dist = cfg, num_classes, dist or Dist()
        device = torch.device(device)
        self.device = device
        self.ms, self.sc = resolve_kernels(cfg.kernel, device, deterministic, sc_grad=cfg.sc_grad)
        self.seed, self.clean = seed, clean
        self.num_samples = num_samples
        self.gen = torch.Generator(device=device)
        # gathered losses draw negatives over the global batch: the same draw on every process
        self.rank_seed = 0 if cfg.gather else self.dist.rank

    # ------------------------------------------------------------------ declarations

    @property
    def warmup_epochs(self) -> int:
        return self.cfg.warmup_epochs if self.uses_warmup else 0

    def in_warmup(self, epoch: int) -> bool:
        return epoch < self.warmup_epochs

    def needs_strong(self, epoch: int) -> bool:
        """Whether a step of ``epoch`` needs a strong view."""
        return self.num_views(epoch) > 1

    def num_views(self, epoch: int) -> int:
        return 1

    # ------------------------------------------------------------------ hooks

    def attach(self, model) -> None:
        """Once the trainer's model exists (before a resume loads the checkpoint's state)."""

    def passes_before(self, epoch: int) -> bool:
        """Whether ``before_epoch`` makes an eval-mode pass over the training split in ``epoch``."""
        return False

    def before_epoch(self, epoch: int, predict) -> None:
        """At the first step of ``epoch`` (not when a resume continues inside it)."""

    def after_step(self, model) -> None:
        """After each optimiser step (``model``: the trained model, wrapped or not)."""

    def eval_model(self, model):
        """The weights evaluated and saved."""
        return model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    # ------------------------------------------------------------------ the step

    def __call__(self, model, batch, epoch: int, step: int = 0) -> StepOutput:
        """The losses of step ``step`` of epoch ``epoch`` on ``batch``."""
        if self.in_warmup(epoch):
            return self.warmup_step(model, batch)
        return self.train_step(model, batch, epoch, step)

    def train_step(self, model, batch, epoch: int, step: int) -> StepOutput:
        raise NotImplementedError

    def warmup_step(self, model, batch, penalty: bool = True) -> StepOutput:
        """CE on the weak view; with ``loss.warmup_penalty`` beta (and ``penalty``), plus beta x
        the mean negative entropy of the predictions (a confidence penalty)."""
        set_views(model, None)
        logits, _ = model(batch.weak, embed=False)
        logits = logits.float()
        loss = F.cross_entropy(logits, batch.label)  # equal batches on every rank: DDP's mean is global
        p = logits.detach().softmax(1)
        beta = self.cfg.warmup_penalty if penalty else 0.0
        if beta > 0:
            logp = logits.log_softmax(1)
            neg_entropy = (logp.exp() * logp).sum(1).mean()
            terms = {"ce": self._global_mean(loss), "penalty": self._global_mean(neg_entropy)}
            loss = loss + beta * neg_entropy
            value = self._global_mean(loss)
            return StepOutput(loss, terms, value=value, p_weak=p)
        value = self._global_mean(loss)
        return StepOutput(loss, {"ce": value}, value=value, p_weak=p)

    def forward_views(self, model, batch, embed: bool):
        """One forward of the concatenated views: (per-view fp32 logits, embeddings or None)."""
        b = len(batch)
        views = [v for v in (batch.weak, batch.strong, batch.strong2) if v is not None]
        set_views(model, b)
        logits, z = model(torch.cat(views), embed=embed)
        set_views(model, None)
        return logits.float().split(b), z

    # ------------------------------------------------------------------ shared helpers

    def class_counts(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked samples per class over the global batch (float (C,)), by index_add_: no boolean
        indexing and no bincount, which sync with the host."""
        return self.dist.all_reduce(torch.zeros(self.num_classes, device=y.device).index_add_(0, y, mask.float()))

    def _global_mean(self, t: torch.Tensor) -> torch.Tensor:
        """A term's value for the whole global batch (the mean of the processes' scaled terms)."""
        return self.dist.all_reduce(t.detach()) / self.dist.world

    def strong_logits(self, logits_s, logits_s2):
        """The strong logits the pseudo-labels train on (both strong views with ``loss.ls_views``
        2) and how many views that is."""
        if self.cfg.ls_views == 2 and logits_s2 is not None:
            return torch.cat([logits_s, logits_s2]), 2
        return logits_s, 1


class SelectingMethod(Method):
    """The selection flow: a sample is trained on its label (L_LS, class-weighted) when it is
    selected; the metric-space terms come from subclasses (``metric_terms``).

    Parts any selecting method may switch on, each by its own key (``LossConfig``):
    ``loss.ema_decay`` (an EMA teacher whose weak-view predictions select and pseudo-label),
    ``loss.selection=gmm`` (per class, a two-component mixture on the losses of an eval-mode pass
    over the training split at each epoch start), ``loss.pseudo_threshold`` (the unselected
    samples' confident predictions as the strong view's targets, class-balanced),
    ``loss.warmup_penalty`` (a confidence penalty in warm-up)."""

    selects = True
    metric: ClassVar[bool] = False

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.teacher: parts.EmaTeacher | None = None
        self.train_mask: torch.Tensor | None = None
        """(N,) bool over the training split: the eval-pass selection of this epoch."""
        self.pass_stats: dict[str, float] = {}

    def num_views(self, epoch: int) -> int:
        """Views a step needs: the weak view alone in warm-up; weak and strong (a second strong
        view when L_LS trains on two); all three for the metric terms."""
        c = self.cfg
        if self.in_warmup(epoch):
            return 1
        if self.uses_metric:
            return 3
        return 3 if c.ls_views == 2 and c.train_view == "strong" else 2

    @property
    def uses_metric(self) -> bool:
        c = self.cfg
        return self.metric and (c.lambda_ms > 0 or c.lambda_sc > 0)

    # ------------------------------------------------------------------ hooks: the parts

    def attach(self, model) -> None:
        if self.cfg.ema_decay > 0 and self.teacher is None:
            self.teacher = parts.EmaTeacher(model, self.cfg.ema_decay)

    def after_step(self, model) -> None:
        if self.teacher is not None:
            self.teacher.update(model)

    def eval_model(self, model):
        return self.teacher.model if self.teacher is not None and self.cfg.ema_eval else model

    def passes_before(self, epoch: int) -> bool:
        return self.cfg.selection == "gmm" and not self.in_warmup(epoch)

    def before_epoch(self, epoch: int, predict) -> None:
        if not self.passes_before(epoch):
            return
        index, probs, labels = predict(self.teacher.model if self.teacher is not None else None)
        keep = parts.gmm_selection(probs, labels, self.num_classes)
        n = self.num_samples or int(index.max()) + 1
        mask = np.zeros(n, dtype=bool)
        mask[index] = keep
        self.train_mask = torch.from_numpy(mask).to(self.device)
        self.pass_stats = {"pass_selected_rate": float(keep.mean())}

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {} if self.teacher is None else self.teacher.state_dict()
        if self.train_mask is not None:
            out["method.train_mask"] = self.train_mask.cpu()
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.teacher is not None:
            self.teacher.load_state_dict(tensors)
        if "method.train_mask" in tensors:
            self.train_mask = tensors["method.train_mask"].to(self.device).bool()
            self.pass_stats = {"pass_selected_rate": float(tensors["method.train_mask"].float().mean())}

    # ------------------------------------------------------------------ the step

    def selection_probs(self, batch, p_w: torch.Tensor) -> torch.Tensor:
        """The weak-view probabilities that select and pseudo-label: the teacher's, or the student's."""
        if self.teacher is None:
            return p_w
        return self.teacher.probs(batch.weak)

    def train_step(self, model, batch, epoch: int, step: int) -> StepOutput:
        c, d = self.cfg, self.dist
        b, y = len(batch), batch.label
        (logits_w, logits_s, *rest), z = self.forward_views(model, batch, embed=self.uses_metric)
        logits_s2 = rest[0] if rest else None
        p_w = logits_w.detach().softmax(1)
        p_sel = self.selection_probs(batch, p_w)
        world = float(d.world)  # a Python number: a tensor built from it would be a host copy every step
        gather = c.gather and d.world > 1
        offset = d.rank * b if gather else 0
        y_all = d.all_gather(y) if gather else y
        p_all = d.all_gather(p_w) if gather else p_w
        if c.selection == "gmm" and self.train_mask is not None:
            selected = self.train_mask[batch.index]
        else:
            ps_all = p_all if p_sel is p_w else (d.all_gather(p_sel) if gather else p_sel)
            selected = select(ps_all, y_all, c.class_floor)[offset: offset + b]  # the floor sees the global batch
        counts = self.class_counts(y, selected)
        mu = class_weights(counts, c.class_weight)
        if c.train_view == "weak":
            l_ls = weighted_ce(logits_w, y, selected, mu, normaliser=counts.sum())
        elif c.ls_views == 1:
            l_ls = weighted_ce(logits_s, y, selected, mu, normaliser=counts.sum())
        else:  # both strong views: twice the supervised signal from a forward already paid for
            l_ls = weighted_ce(torch.cat([logits_s, logits_s2]), y.repeat(2), selected.repeat(2), mu,
                               normaliser=2 * counts.sum())
        loss = l_ls = world * l_ls
        terms = {"ls": l_ls}
        stats = {}
        if c.pseudo_threshold > 0:
            l_pl, pl_stats = self.pseudo_label_loss(p_sel, selected, logits_s, logits_s2, batch.index)
            loss = loss + c.lambda_pl * world * l_pl
            terms["pl"] = world * l_pl
            if pl_stats is not None:
                stats["pseudo"] = pl_stats
        if self.uses_metric:
            loss, terms = self.metric_terms(loss, terms, z, b, y_all, logits_w, p_w, p_all, offset, epoch, step, gather)
        terms = {k: self._global_mean(v) for k, v in terms.items()}
        sel_stats = None if self.clean is None else selection_stats(selected, batch.index, y, self.clean)
        return StepOutput(loss, terms, selected, counts, sel_stats, value=self._global_mean(loss), p_weak=p_sel,
                          stats=stats)

    def pseudo_label_loss(self, p_sel, selected, logits_s, logits_s2, index):
        """CE of the strong view(s) against the confident predictions of the unselected samples,
        class-balanced; divided by the global count of unselected samples (FixMatch's mean over
        the unlabelled batch). Returns (loss, (4,) pseudo-label statistics or None)."""
        c = self.cfg
        conf, target = p_sel.max(1)
        unselected = ~selected
        mask = unselected & (conf >= c.pseudo_threshold)
        w = class_weights(self.class_counts(target, mask), c.pseudo_balance)
        n_unselected = self.dist.all_reduce(unselected.sum().float())
        logits, views = self.strong_logits(logits_s, logits_s2)
        l_pl = weighted_ce(logits, target.repeat(views), mask.repeat(views), w, normaliser=views * n_unselected)
        stats = None if self.clean is None else parts.pseudo_stats(mask, unselected, target, self.clean[index])
        return l_pl, stats

    def metric_terms(self, loss, terms, z, b, y_all, logits_w, p_w, p_all, offset, epoch, step, gather):
        raise NotImplementedError
