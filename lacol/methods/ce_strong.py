"""``ce_strong``: plain CE on the strong view(s), every sample, weight 1: the fair control (the
loss of LaCoL's views, warm-up, epochs and schedule, without selection)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import StepOutput, selection_stats
from .base import Method
from .registry import register


@register
class CEStrong(Method):
    name = "ce_strong"
    colour = "tab:blue"
    terms = ("ls",)

    def num_views(self, epoch: int) -> int:
        if self.in_warmup(epoch):
            return 1
        return 3 if self.cfg.ls_views == 2 and self.cfg.train_view == "strong" else 2

    def train_step(self, model, batch, epoch, step):
        (logits_w, logits_s, *rest), _ = self.forward_views(model, batch, embed=False)
        y, index = batch.label, batch.index
        logits = logits_w if self.cfg.train_view == "weak" else logits_s
        if self.cfg.ls_views == 2 and rest:
            logits, y2 = torch.cat([logits, rest[0]]), y.repeat(2)
        else:
            y2 = y
        loss = F.cross_entropy(logits, y2)  # equal batches on every rank: DDP's mean is global
        value = self._global_mean(loss)
        everyone = torch.ones_like(y, dtype=torch.bool)
        counts = self.class_counts(y, everyone)
        stats = None if self.clean is None else selection_stats(everyone, index, y, self.clean)
        return StepOutput(loss, {"ls": value}, everyone, counts, stats, value=value,
                          p_weak=logits_w.detach().softmax(1))
