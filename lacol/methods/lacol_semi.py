"""``lacol_semi``: LaCoL plus the parts that measured best on noisy validation of the
development draw (BENCHMARKS.md, "Choosing lacol_semi"): the unselected samples pseudo-labelled
by an EMA teacher. Its settings are ``defaults`` (applied whenever it runs); a recipe's
``methods.lacol_semi`` block and the command line override them."""
from __future__ import annotations

from .lacol import LaCoL
from .registry import register


@register
class LaCoLSemi(LaCoL):
    name = "lacol_semi"
    colour = "tab:green"
    defaults = {"loss.pseudo_threshold": 0.95, "loss.ema_decay": 0.99}
