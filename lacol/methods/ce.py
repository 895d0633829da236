"""``ce``: plain CE on the weak view, every sample (the literature's baseline)."""
from __future__ import annotations

from .base import Method
from .registry import register


@register
class CE(Method):
    name = "ce"
    colour = "tab:gray"
    terms = ("ce",)
    uses_warmup = False

    def train_step(self, model, batch, epoch, step):
        return self.warmup_step(model, batch, penalty=False)
